//! The connect flows in a real browser (headless Chromium through ChromeDriver), on a phone-sized
//! screen, as a person clicks them: CareLink's paste-back flow, a declined Dexcom sign-in, an
//! expired link, and a clinician's request followed from the e-mail it sent. Every page is
//! checked to fit the phone's width and is photographed into `target/screenshots/` (and into
//! `docs/screenshots/` with `TIDEGATE_DOCS_SCREENSHOTS=1`). The self-service Dexcom flow and the
//! dashboard are in `demo.rs`, which follows the demo's printed steps.

use std::time::Duration;

use model::DataSourceState;
use serde_json::json;
use tidegate_e2e::browser::{Chrome, PHONE};
use tidegate_e2e::mail::SmtpServer;
use tidegate_e2e::{World, spawn_world};

use crate::connect::{ALICE, link, source_state};

const CLINIC: &str = "5f1e8a0b9c7d6e5f4a3b2c1d";
const CLINICIAN: &str = "1111111111";
const WAIT: Duration = Duration::from_secs(15);

/// A browser on a phone-sized screen.
async fn phone() -> Chrome {
    let chrome = Chrome::start().await;
    chrome.viewport(PHONE, true).await;
    chrome
}

/// The page fits the phone's width, and a photograph of it is kept.
async fn looks_right(chrome: &Chrome, name: &str) {
    assert!(chrome.fits_width().await, "{name}: the page scrolls sideways on a phone ({})", chrome.url().await);
    chrome.screenshot(name).await;
}

/// The `data-result` of our result page, once it is shown.
async fn result(chrome: &Chrome) -> String {
    let el = chrome.wait_for("#result", WAIT).await;
    chrome.attr(&el, "data-result").await.unwrap_or_default()
}

/// At the simulator's Dexcom sign-in page: pick the account and press a button.
async fn at_dexcom(chrome: &Chrome, login: &str, button: &str) {
    let option = chrome.wait_for(&format!("#user option[value='{login}']"), WAIT).await;
    chrome.click(&option).await;
    let pressed = chrome.find(button).await;
    chrome.click(&pressed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carelink_paste_flow_in_a_browser() {
    let w = spawn_world(&[]).await;
    let token = link(&w, ALICE, "carelink").await;
    let chrome = phone().await;
    chrome.goto(&w.app.url(&format!("/v1/oauth/carelink/authorize?restricted_token={token}&region=us"))).await;
    assert!(chrome.body_text().await.contains("Copy that whole address"));
    looks_right(&chrome, "connect-carelink-paste").await;

    // "Sign in to Medtronic CareLink" opens CareLink in a new tab.
    let ours = chrome.windows().await;
    let partner_link = chrome.find("#partner-link").await;
    chrome.click(&partner_link).await;
    let deadline = std::time::Instant::now() + WAIT;
    let theirs = loop {
        if let Some(h) = chrome.windows().await.into_iter().find(|h| !ours.contains(h)) {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "the CareLink sign-in did not open in a new tab");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    chrome.switch_to(&theirs).await;
    let user = chrome.wait_for("#username option[value='carelink-001']", WAIT).await;
    chrome.click(&user).await;
    let password = chrome.find("#password").await;
    chrome.type_into(&password, "correct horse").await;
    let _ = chrome.requested_urls().await; // start the network record here
    let sign_in = chrome.find("#login").await;
    chrome.click(&sign_in).await;

    // CareLink answers with a redirect to its phone app's scheme, which the browser does not
    // open; the address is in the browser's network record, where the page says to copy it from.
    let deadline = std::time::Instant::now() + WAIT;
    let app_address = loop {
        let urls = chrome.requested_urls().await;
        if let Some(u) = urls.into_iter().find(|u| u.starts_with("com.medtronic.carepartner:/sso?")) {
            break u;
        }
        assert!(std::time::Instant::now() < deadline, "no redirect to the app scheme was seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(app_address.contains("code=") && app_address.contains("state="), "{app_address}");
    assert!(!chrome.url().await.starts_with("com.medtronic"), "the browser does not display the app address");
    chrome.close_window().await;
    chrome.switch_to(&ours[0]).await;

    // Paste it back and connect.
    let field = chrome.find("#url").await;
    chrome.type_into(&field, &app_address).await;
    let connect = chrome.find("#connect").await;
    chrome.click(&connect).await;
    assert_eq!(result(&chrome).await, "connected");
    assert!(chrome.title().await.contains("Medtronic CareLink is connected"));
    looks_right(&chrome, "connect-carelink-connected").await;
    assert_eq!(source_state(&w, ALICE, "carelink").await, Some(DataSourceState::Connected));
    crate::connect::assert_no_secret_leaked(&w).await;
    chrome.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_dexcom_sign_in_connects_nothing() {
    let w = spawn_world(&[]).await;
    let token = link(&w, ALICE, "dexcom").await;
    let chrome = phone().await;
    chrome.goto(&w.app.url(&format!("/v1/oauth/dexcom/authorize?restricted_token={token}&region=us"))).await;
    looks_right(&chrome, "partner-dexcom-sign-in").await;
    at_dexcom(&chrome, "dexcom-001", "#deny").await;
    assert_eq!(result(&chrome).await, "declined");
    assert!(chrome.body_text().await.contains("Nothing was changed"));
    looks_right(&chrome, "connect-declined").await;
    assert_eq!(source_state(&w, ALICE, "dexcom").await, None);
    chrome.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_says_what_to_do() {
    let w = spawn_world(&[]).await;
    let token = link(&w, ALICE, "dexcom").await;
    w.app.clock.advance(chrono::Duration::minutes(31));
    let chrome = phone().await;
    chrome.goto(&w.app.url(&format!("/v1/oauth/dexcom/authorize?restricted_token={token}"))).await;
    let heading = chrome.find("h1").await;
    assert_eq!(chrome.text(&heading).await, "This link has expired");
    assert!(chrome.body_text().await.contains("Ask for a new link"));
    looks_right(&chrome, "connect-link-expired").await;
    assert_eq!(source_state(&w, ALICE, "dexcom").await, None);
    chrome.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinicians_request_is_completed_from_its_email() {
    let smtp = SmtpServer::start();
    let w = spawn_world(&[
        ("TIDEGATE_MESSAGES__SMTP_URL", &smtp.url),
        ("TIDEGATE_MESSAGES__FROM", "tidegate <no-reply@tidegate.test>"),
    ])
    .await;
    admin_post(
        &w,
        "/admin/clinic/patients",
        json!({"clinicId": CLINIC, "userId": ALICE, "email": format!("{ALICE}@patients.test")}),
    )
    .await;
    assert_eq!(w.app.ask_to_connect(CLINICIAN, CLINIC, ALICE, "dexcom").await, reqwest::StatusCode::NO_CONTENT);
    assert_eq!(source_state(&w, ALICE, "dexcom").await, Some(DataSourceState::Pending));
    let outbox = w.app.outbox_worker();
    let mut mail = None;
    for _ in 0..20 {
        outbox.deliver_due().await.unwrap();
        mail = smtp.first_link();
        if mail.is_some() {
            break;
        }
        w.app.clock.advance(chrono::Duration::seconds(30));
    }
    let mail = mail.expect("the request was e-mailed");
    assert!(smtp.received().contains("Subject: Your clinic asks you to connect your Dexcom account"));

    // The patient opens the link from the e-mail, picks where the account lives and signs in.
    let chrome = phone().await;
    chrome.goto(&mail).await;
    looks_right(&chrome, "connect-dexcom-region").await;
    let us = chrome.find("a.button[href*='region=us']").await;
    assert_eq!(chrome.text(&us).await, "United States");
    chrome.click(&us).await;
    at_dexcom(&chrome, "dexcom-002", "#approve").await;
    assert_eq!(result(&chrome).await, "connected");
    looks_right(&chrome, "connect-dexcom-connected").await;
    assert_eq!(source_state(&w, ALICE, "dexcom").await, Some(DataSourceState::Connected));

    // The link is spent: opened again, it says so.
    chrome.goto(&mail).await;
    let heading = chrome.find("h1").await;
    assert_eq!(chrome.text(&heading).await, "This link was already used");
    chrome.quit().await;
}

async fn admin_post(w: &World, path: &str, body: serde_json::Value) {
    let r = w.app.http.post(w.sandbox.url(path)).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
}
