//! `tidegate demo` as a newcomer meets it: the real binary creates its database, starts
//! everything, prints its steps — and following them in a real browser (headless Chromium)
//! connects a Dexcom account through the simulator's sign-in page, fills the patient's chart on
//! the operator dashboard and tells the clinic stand-in. Screenshots of each step are kept.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tidegate_e2e::browser::{Chrome, DESKTOP, PHONE};

use crate::workers::tidegate_bin;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_printed_steps_work_in_a_browser() {
    let db = format!("tidegate_demo_{}", uuid::Uuid::new_v4().simple());
    let server = testkit::db::server_url();
    let mut child = Command::new(tidegate_bin())
        .args(["demo", "--fast", "--sandbox-listen", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TIDEGATE_CONFIG_DIR", tidegate_e2e::config_dir())
        .env("DATABASE_URL", testkit::db::with_database(&server, &db))
        .env("TIDEGATE_LISTEN", "127.0.0.1:0")
        .env("TIDEGATE_OPS_LISTEN", "127.0.0.1:0")
        .env("TIDEGATE_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tidegate demo starts");
    let stdout = child.stdout.take().unwrap();
    let mut child = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !printed.iter().any(|l: &String| l.contains("Ctrl-C stops everything")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => printed.push(l),
            Err(_) => panic!("the demo printed no steps in time: {printed:#?}"),
        }
    }
    let find = |needle: &str| -> String {
        printed
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {printed:#?}"))
            .trim()
            .to_owned()
    };
    assert!(find("DEMO SETTING").contains("Never use this in production"));
    let authorize = find("restricted_token=");
    let patient = find("export PATIENT=").trim_start_matches("export PATIENT=").to_owned();
    let api = authorize.split("/v1/oauth").next().unwrap().to_owned();

    // A printed address to open: a line of its own.
    let address = |needle: &str| -> String {
        printed
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with("http") && !l.contains(' ') && l.contains(needle))
            .unwrap_or_else(|| panic!("no address with {needle:?} in {printed:#?}"))
            .to_owned()
    };
    let dashboard = address("/admin/users/");
    let clinic_told = address("/admin/clinic/requests");
    let platform_holds = address("/admin/platform");

    // Step 1, in a browser on a phone: the printed link, "United States", sign in, Authorize.
    let chrome = Chrome::start().await;
    chrome.viewport(PHONE, true).await;
    chrome.goto(&authorize).await;
    assert!(chrome.fits_width().await);
    let us = chrome.find("a.button[href*='region=us']").await;
    assert_eq!(chrome.text(&us).await, "United States");
    chrome.click(&us).await;
    let account = chrome.wait_for("#user option[value='dexcom-001']", WAIT).await;
    chrome.click(&account).await;
    chrome.screenshot("partner-dexcom-authorize").await;
    let authorize_button = chrome.find("#approve").await;
    assert_eq!(chrome.text(&authorize_button).await, "Authorize");
    chrome.click(&authorize_button).await;
    let result = chrome.wait_for("#result", WAIT).await;
    assert_eq!(chrome.attr(&result, "data-result").await.as_deref(), Some("connected"));
    assert!(chrome.title().await.contains("Dexcom is connected"));
    assert!(chrome.fits_width().await);
    chrome.screenshot("connect-dexcom-self-service").await;

    // Step 2: the patient's chart on the dashboard fills after the first poll (within seconds).
    chrome.viewport(DESKTOP, false).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let readings = loop {
        chrome.goto(&dashboard).await;
        let counts = chrome.find("#chart-counts").await;
        let n: u64 = chrome.attr(&counts, "data-cbg").await.and_then(|v| v.parse().ok()).unwrap_or(0);
        if n > 0 {
            break n;
        }
        assert!(Instant::now() < deadline, "no glucose on the chart within 90 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(readings >= 200, "a day of 5-minute readings, got {readings}");
    assert!(chrome.try_find("svg polyline").await.is_some(), "the glucose line is drawn");
    let state = chrome.find("#sources").await;
    assert!(chrome.text(&state).await.contains("connected"));
    chrome.screenshot("dashboard-patient").await;
    let ops = dashboard.split("/admin/users/").next().unwrap().to_owned();
    chrome.goto(&format!("{ops}/admin")).await;
    assert!(chrome.body_text().await.contains("Data sources"));
    chrome.screenshot("dashboard").await;

    // Step 3: the clinic stand-in's record (JSON, shown by the browser) has the report.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        chrome.goto(&clinic_told).await;
        let v: Value = serde_json::from_str(&chrome.body_text().await).expect("the stand-in shows JSON");
        let told = v["received"].as_array().unwrap().iter().any(|r| {
            r["userId"] == tidegate::demo::PATIENT && r["status"] == 200 && r["body"][0]["state"] == "connected"
        });
        if told {
            break;
        }
        assert!(Instant::now() < deadline, "the clinic never heard: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // … and the platform's data service holds the readings, in one data set for the source.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        chrome.goto(&platform_holds).await;
        let v: Value = serde_json::from_str(&chrome.body_text().await).expect("the stand-in shows JSON");
        let sets: Vec<&Value> = v["dataSets"].as_object().unwrap().values().collect();
        if sets.len() == 1 && sets[0]["data"].as_object().is_some_and(|d| d.len() as u64 >= readings) {
            assert_eq!(sets[0]["userId"], tidegate::demo::PATIENT);
            break;
        }
        assert!(Instant::now() < deadline, "the platform never got the readings: {} sets", sets.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    chrome.quit().await;

    // The API agrees, with the printed patient token.
    let data_url = format!("{api}/v1/users/{}/data?type=cbg&limit=5", tidegate::demo::PATIENT);
    let page: Vec<Value> =
        reqwest::Client::new().get(&data_url).bearer_auth(&patient).send().await.unwrap().json().await.unwrap();
    assert_eq!(page.len(), 5);
    assert!(page.iter().all(|d| d["type"] == "cbg"));

    // Ctrl-C (SIGINT) stops it cleanly.
    let _ = Command::new("kill").arg("-INT").arg(child.0.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// The demo process, killed if the test fails before it stops it (so no demo outlives its test).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
