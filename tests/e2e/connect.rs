//! The connect flow over real HTTP against the simulator: Dexcom (web redirect) and CareLink
//! (paste-back), the refusals (table-driven; the reliability suite reuses it), secrets at rest,
//! replacing a connection only after a successful exchange, and revocation on disconnect.

use std::collections::HashMap;

use model::{Clock, DataSourceState, ProviderName, UserId};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tidegate_e2e::{World, logs, spawn_world};

pub const ALICE: &str = "0123456789";
pub const BOB: &str = "abcdef0123";

/// A person's browser: no automatic redirects, one cookie jar entry per flow.
pub struct Browser {
    pub http: reqwest::Client,
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            cookie: None,
        }
    }

    fn remember(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            if let Some(pair) = v.split(';').next()
                && pair.starts_with("tidegate_oauth=")
            {
                self.cookie = Some(pair.to_owned());
            }
        }
    }

    pub async fn get(&mut self, url: &str) -> reqwest::Response {
        let mut req = self.http.get(url);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        self.remember(&resp);
        resp
    }

    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.post(url).form(form);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        self.remember(&resp);
        resp
    }
}

pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_owned()
}

pub fn query(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    reqwest::Url::parse(&format!("http://x/?{q}")).unwrap().query_pairs().into_owned().collect()
}

/// A link token for `user` scoped to a provider, minted by a service.
pub async fn link(w: &World, user: &str, provider: &str) -> String {
    let exp = w.app.clock.now() + chrono::Duration::minutes(30);
    let r = w
        .app
        .http
        .post(w.app.url(&format!("/v1/users/{user}/restricted_tokens")))
        .bearer_auth(w.app.service_token())
        .json(&json!({"paths": [format!("/v1/oauth/{provider}")], "expirationTime": exp.to_rfc3339()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["userId"], user);
    body["id"].as_str().unwrap().to_owned()
}

/// Start a Dexcom flow: returns the partner sign-in URL (cookie kept in the browser).
pub async fn start_dexcom(w: &World, b: &mut Browser, token: &str) -> String {
    let r = b.get(&w.app.url(&format!("/v1/oauth/dexcom/authorize?restricted_token={token}&region=us"))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap_or_default());
    assert!(b.cookie.is_some(), "a browser-binding cookie is set");
    location(&r)
}

/// At Dexcom's page: sign in as `login` and approve (or deny); returns our callback URL.
pub async fn at_dexcom(b: &mut Browser, signin: &str, login: &str, approve: bool) -> String {
    let page = b.get(signin).await;
    assert_eq!(page.status(), 200);
    let q = query(signin);
    let form = [
        ("client_id", q["client_id"].as_str()),
        ("redirect_uri", q["redirect_uri"].as_str()),
        ("state", q["state"].as_str()),
        ("scope", q["scope"].as_str()),
        ("user", login),
        ("decision", if approve { "approve" } else { "deny" }),
    ];
    let url = signin.split('?').next().unwrap().to_owned();
    let r = b.post_form(&url, &form).await;
    assert!(r.status().is_redirection());
    location(&r)
}

pub async fn connect_dexcom(w: &World, user: &str, login: &str) -> reqwest::Response {
    let token = link(w, user, "dexcom").await;
    let mut b = Browser::new();
    let signin = start_dexcom(w, &mut b, &token).await;
    let callback = at_dexcom(&mut b, &signin, login, true).await;
    b.get(&callback).await
}

/// Start a CareLink flow: returns the partner link shown on the paste page.
pub async fn start_carelink(w: &World, b: &mut Browser, token: &str) -> String {
    let r = b.get(&w.app.url(&format!("/v1/oauth/carelink/authorize?restricted_token={token}&region=us"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    let html = r.text().await.unwrap();
    let start = html.find("id=\"partner-link\" href=\"").unwrap() + "id=\"partner-link\" href=\"".len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].replace("&amp;", "&")
}

/// At CareLink's sign-in: returns the app-scheme URL the browser stops at.
pub async fn at_carelink(b: &mut Browser, signin: &str, login: &str) -> String {
    let ua = "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0";
    let page = b.http.get(signin).header("user-agent", ua).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let q = query(signin);
    let form = [
        ("client_id", q["client_id"].as_str()),
        ("redirect_uri", q["redirect_uri"].as_str()),
        ("state", q["state"].as_str()),
        ("scope", q["scope"].as_str()),
        ("code_challenge", q["code_challenge"].as_str()),
        ("username", login),
        ("password", "whatever"),
        ("decision", "approve"),
    ];
    let url = signin.split('?').next().unwrap().to_owned();
    let r = b.http.post(&url).header("user-agent", ua).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let loc = location(&r);
    assert!(loc.starts_with("com.medtronic.carepartner:/sso?"), "{loc}");
    loc
}

pub async fn paste(w: &World, b: &mut Browser, url: &str) -> reqwest::Response {
    b.post_form(&w.app.url("/v1/oauth/carelink/redirect"), &[("url", url)]).await
}

pub async fn source_state(w: &World, user: &str, provider: &str) -> Option<DataSourceState> {
    let user = UserId::parse(user).unwrap();
    let provider = ProviderName::parse(provider).unwrap();
    w.app.store.list_data_sources(&user).await.unwrap().into_iter().find(|s| s.provider == provider).map(|s| s.state)
}

async fn count(w: &World, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&w.app.sql).await.unwrap()
}

/// Everything the simulator issued must be absent from a pg_dump and from our logs.
pub async fn assert_no_secret_leaked(w: &World) {
    let secrets: Value = w.app.http.get(w.sandbox.url("/admin/secrets")).send().await.unwrap().json().await.unwrap();
    let secrets: Vec<String> =
        secrets["secrets"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect();
    assert!(!secrets.is_empty());
    let dump_path = std::env::temp_dir().join(format!("{}.sql", w.app.db.name));
    w.app.db.dump(&dump_path).unwrap();
    let dump = std::fs::read_to_string(&dump_path).unwrap();
    std::fs::remove_file(&dump_path).ok();
    let logs = logs::captured();
    assert_none_in(&secrets, &dump, "the pg_dump");
    assert_none_in(&secrets, &logs, "the logs");
}

/// Fails when any of `secrets` occurs in `haystack` (one pass, however many secrets).
pub fn assert_none_in(secrets: &[impl AsRef<str>], haystack: &str, what: &str) {
    let finder = aho_corasick::AhoCorasick::new(secrets.iter().map(AsRef::as_ref)).expect("secret patterns");
    assert!(finder.find(haystack).is_none(), "a simulator secret is in {what}");
}

/// The first poll follows the partner's schedule policy, the same one the poll worker keeps:
/// within a minute, but never inside a maintenance blackout (Dexcom: 02:45–03:45 Los Angeles).
#[tokio::test]
async fn a_connection_made_during_a_blackout_first_polls_after_it() {
    let w = spawn_world(&[]).await;
    // 2026-03-07 03:00 PST, fifteen minutes into the window.
    let inside = chrono::DateTime::parse_from_rfc3339("2026-03-07T11:00:00Z").unwrap().to_utc();
    w.app.clock.set(inside);
    assert_eq!(connect_dexcom(&w, ALICE, "dexcom-001").await.status(), StatusCode::OK);
    let due: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT next_run_at FROM poll_schedule").fetch_one(&w.app.sql).await.unwrap();
    let window_end = chrono::DateTime::parse_from_rfc3339("2026-03-07T11:45:00Z").unwrap().to_utc();
    assert!(due >= window_end, "first poll {due} inside the blackout");
    assert!(due <= window_end + chrono::Duration::minutes(30), "first poll {due} long after the blackout");
}

#[tokio::test]
async fn dexcom_connects_with_encrypted_tokens_and_nothing_leaks() {
    let w = spawn_world(&[]).await;
    let r = connect_dexcom(&w, ALICE, "dexcom-001").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    assert!(r.text().await.unwrap().contains("data-result=\"connected\""));
    assert_eq!(source_state(&w, ALICE, "dexcom").await, Some(DataSourceState::Connected));
    let sources = w.app.store.list_data_sources(&UserId::parse(ALICE).unwrap()).await.unwrap();
    let session = w.app.store.get_provider_session(&sources[0].id).await.unwrap().unwrap();
    assert_eq!(session.region.as_deref(), Some("us"));
    assert!(!session.partner_account_id.is_empty());
    assert!(session.refresh_token.is_some());
    // First poll within a minute; a clinic report queued; audit; link consumed.
    let due: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT next_run_at FROM poll_schedule").fetch_one(&w.app.sql).await.unwrap();
    let wait = due - w.app.clock.now();
    assert!(wait > chrono::Duration::zero() && wait <= chrono::Duration::seconds(60), "{wait}");
    assert_eq!(count(&w, "SELECT count(*) FROM outbox WHERE kind = 'clinic_report'").await, 1);
    assert_eq!(count(&w, "SELECT count(*) FROM audit_log WHERE action = 'connect'").await, 1);
    assert_eq!(count(&w, "SELECT count(*) FROM link_tokens WHERE consumed_time IS NOT NULL").await, 1);
    let broken = store::lifecycle::check_invariants(&w.app.store).await.unwrap();
    assert!(broken.is_empty(), "{broken:?}");
    assert_no_secret_leaked(&w).await;
}

#[tokio::test]
async fn carelink_paste_flow_connects() {
    let w = spawn_world(&[]).await;
    let token = link(&w, ALICE, "carelink").await;
    let mut b = Browser::new();
    let signin = start_carelink(&w, &mut b, &token).await;
    let q = query(&signin);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], "com.medtronic.carepartner:/sso");
    let pasted = at_carelink(&mut b, &signin, "carelink-001").await;
    let r = paste(&w, &mut b, &pasted).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    assert_eq!(source_state(&w, ALICE, "carelink").await, Some(DataSourceState::Connected));
    let sources = w.app.store.list_data_sources(&UserId::parse(ALICE).unwrap()).await.unwrap();
    let session = w.app.store.get_provider_session(&sources[0].id).await.unwrap().unwrap();
    assert_eq!(session.partner_account_id, "carelink-001/patient");
    assert_no_secret_leaked(&w).await;
}

#[tokio::test]
async fn a_care_partner_following_several_patients_chooses_one() {
    let w = spawn_world(&[]).await;
    let token = link(&w, ALICE, "carelink").await;
    let mut b = Browser::new();
    let signin = start_carelink(&w, &mut b, &token).await;
    let pasted = at_carelink(&mut b, &signin, "carelink-004").await;
    let r = paste(&w, &mut b, &pasted).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("Whose data"), "a choice, never a guess");
    assert_eq!(source_state(&w, ALICE, "carelink").await, None, "nothing stored before the choice");
    let start = html.find("name=\"authorization\" value=\"").unwrap() + "name=\"authorization\" value=\"".len();
    let authorization = &html[start..start + 36];
    let r = b
        .post_form(
            &w.app.url("/v1/oauth/carelink/choose"),
            &[("authorization", authorization), ("patient", "carelink-002")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let sources = w.app.store.list_data_sources(&UserId::parse(ALICE).unwrap()).await.unwrap();
    let session = w.app.store.get_provider_session(&sources[0].id).await.unwrap().unwrap();
    assert_eq!(session.partner_account_id, "carelink-004/carepartner/carelink-002");
    // The held tokens are gone from the authorization row.
    assert_eq!(count(&w, "SELECT count(*) FROM oauth_authorizations WHERE pending_access_token IS NOT NULL").await, 0);
}

/// One refusal case: how to provoke it, and the status of the page.
struct Case {
    name: &'static str,
    status: StatusCode,
}

/// The table-driven refusals: each ends on a clear page and changes nothing.
#[tokio::test]
async fn refusals_change_nothing() {
    let w = spawn_world(&[]).await;
    let mut results: Vec<(Case, reqwest::Response)> = Vec::new();

    // Missing and unknown state.
    let mut b = Browser::new();
    results.push((
        Case { name: "missing state", status: StatusCode::BAD_REQUEST },
        b.get(&w.app.url("/v1/oauth/dexcom/redirect?code=abc")).await,
    ));
    results.push((
        Case { name: "unknown state", status: StatusCode::BAD_REQUEST },
        b.get(&w.app.url("/v1/oauth/dexcom/redirect?code=abc&state=nope")).await,
    ));

    // Callback from a browser without the binding cookie.
    let token = link(&w, ALICE, "dexcom").await;
    let mut b = Browser::new();
    let signin = start_dexcom(&w, &mut b, &token).await;
    let callback = at_dexcom(&mut b, &signin, "dexcom-001", true).await;
    let mut stranger = Browser::new();
    results.push((Case { name: "no binding cookie", status: StatusCode::BAD_REQUEST }, stranger.get(&callback).await));
    // …and the state is now spent: a replay from the right browser is refused too.
    results.push((Case { name: "replayed state", status: StatusCode::BAD_REQUEST }, b.get(&callback).await));

    // State from another provider: a Dexcom state delivered to the CareLink callback.
    let mut b = Browser::new();
    let signin = start_dexcom(&w, &mut b, &token).await;
    let callback = at_dexcom(&mut b, &signin, "dexcom-001", true).await;
    let cross = callback.replace("/v1/oauth/dexcom/redirect", "/v1/oauth/carelink/redirect");
    results.push((Case { name: "state from another provider", status: StatusCode::BAD_REQUEST }, b.get(&cross).await));

    // A state altered by one character, and a huge one, on an otherwise valid callback.
    let mut b = Browser::new();
    let signin = start_dexcom(&w, &mut b, &token).await;
    let callback = at_dexcom(&mut b, &signin, "dexcom-001", true).await;
    let state = query(&callback)["state"].clone();
    let flipped: String = {
        let mut c: Vec<char> = state.chars().collect();
        let last = c.len() - 1;
        c[last] = if c[last] == 'A' { 'B' } else { 'A' };
        c.into_iter().collect()
    };
    let tampered = callback.replace(&format!("state={state}"), &format!("state={flipped}"));
    results.push((Case { name: "tampered state", status: StatusCode::BAD_REQUEST }, b.get(&tampered).await));
    let huge = callback.replace(&format!("state={state}"), &format!("state={}", "A".repeat(8_000)));
    results.push((Case { name: "oversized state", status: StatusCode::BAD_REQUEST }, b.get(&huge).await));

    // Expired state (10 minutes).
    let mut b = Browser::new();
    let signin = start_dexcom(&w, &mut b, &token).await;
    let callback = at_dexcom(&mut b, &signin, "dexcom-001", true).await;
    w.app.clock.advance(chrono::Duration::minutes(11));
    results.push((Case { name: "expired state", status: StatusCode::BAD_REQUEST }, b.get(&callback).await));

    // Code replay: a code already exchanged, presented with a fresh state.
    let token = link(&w, BOB, "dexcom").await;
    let mut b1 = Browser::new();
    let signin1 = start_dexcom(&w, &mut b1, &token).await;
    let callback1 = at_dexcom(&mut b1, &signin1, "dexcom-002", true).await;
    let mut b2 = Browser::new();
    let signin2 = start_dexcom(&w, &mut b2, &token).await;
    let callback2 = at_dexcom(&mut b2, &signin2, "dexcom-002", true).await;
    // Exchange code 1 with state 2: then code 1 is spent…
    let forged = format!(
        "{}?code={}&state={}",
        callback2.split('?').next().unwrap(),
        query(&callback1)["code"],
        query(&callback2)["state"]
    );
    let first = b2.get(&forged).await;
    assert_eq!(first.status(), StatusCode::OK, "code 1 with state 2 still works once");
    // …and replaying it with state 1 is refused by the partner (invalid_grant).
    results.push((Case { name: "code replay", status: StatusCode::BAD_REQUEST }, b1.get(&callback1).await));

    // PKCE mismatch: CareLink code from attempt A presented with attempt B's state (B's verifier).
    let token_c = link(&w, ALICE, "carelink").await;
    let mut ba = Browser::new();
    let signin_a = start_carelink(&w, &mut ba, &token_c).await;
    let pasted_a = at_carelink(&mut ba, &signin_a, "carelink-001").await;
    let mut bb = Browser::new();
    let signin_b = start_carelink(&w, &mut bb, &token_c).await;
    let pasted_b = at_carelink(&mut bb, &signin_b, "carelink-001").await;
    let mixed =
        format!("com.medtronic.carepartner:/sso?code={}&state={}", query(&pasted_a)["code"], query(&pasted_b)["state"]);
    results.push((Case { name: "PKCE mismatch", status: StatusCode::BAD_REQUEST }, paste(&w, &mut bb, &mixed).await));
    results.push((Case { name: "pasted garbage", status: StatusCode::BAD_REQUEST }, paste(&w, &mut ba, "hello").await));

    // Link tokens: used, expired, unknown, malformed, for another provider.
    // The link that connected BOB (through code 1 with state 2) is consumed.
    let consumed_link = token.clone();
    let mut b = Browser::new();
    results.push((
        Case { name: "used link token", status: StatusCode::GONE },
        b.get(&w.app.url(&format!("/v1/oauth/dexcom/authorize?restricted_token={consumed_link}&region=us"))).await,
    ));
    let short = link(&w, ALICE, "dexcom").await;
    w.app.clock.advance(chrono::Duration::minutes(31));
    results.push((
        Case { name: "expired link token", status: StatusCode::GONE },
        b.get(&w.app.url(&format!("/v1/oauth/dexcom/authorize?restricted_token={short}&region=us"))).await,
    ));
    results.push((
        Case { name: "unknown link token", status: StatusCode::NOT_FOUND },
        b.get(&w.app.url("/v1/oauth/dexcom/authorize?restricted_token=0123456789abcdefghijklmnopqrstuv&region=us"))
            .await,
    ));
    results.push((
        Case { name: "malformed link token", status: StatusCode::BAD_REQUEST },
        b.get(&w.app.url("/v1/oauth/dexcom/authorize?restricted_token=x&region=us")).await,
    ));
    let for_carelink = link(&w, ALICE, "carelink").await;
    results.push((
        Case { name: "link for another provider", status: StatusCode::FORBIDDEN },
        b.get(&w.app.url(&format!("/v1/oauth/dexcom/authorize?restricted_token={for_carelink}&region=us"))).await,
    ));

    // A partner account already linked to someone else: dexcom-002 is BOB's.
    let r = connect_dexcom(&w, ALICE, "dexcom-002").await;
    results.push((Case { name: "account linked to someone else", status: StatusCode::CONFLICT }, r));

    let mut table = String::from("\nrefusal | status | page title\n---|---|---\n");
    for (case, resp) in results {
        let status = resp.status();
        let is_html = resp.headers().get("content-type").is_some_and(|v| v.to_str().unwrap().starts_with("text/html"));
        let csp = resp.headers().get("content-security-policy").is_some();
        let body = resp.text().await.unwrap();
        let title = body.split("<h1>").nth(1).and_then(|t| t.split("</h1>").next()).unwrap_or("").to_owned();
        table.push_str(&format!("{} | {} | {}\n", case.name, status.as_u16(), title));
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert!(is_html && csp && !title.is_empty(), "{}: a clear page", case.name);
        assert!(
            body.contains("Nothing was changed") || body.contains("link") || body.contains("again"),
            "{}: says what to do",
            case.name
        );
    }
    println!("{table}");
    // Nothing changed for ALICE: only BOB (through the one legitimate exchange) is connected.
    assert_eq!(source_state(&w, ALICE, "dexcom").await, None);
    assert_eq!(source_state(&w, ALICE, "carelink").await, None);
    assert_eq!(source_state(&w, BOB, "dexcom").await, Some(DataSourceState::Connected));
    let broken = store::lifecycle::check_invariants(&w.app.store).await.unwrap();
    assert!(broken.is_empty(), "{broken:?}");
}

#[tokio::test]
async fn declining_changes_nothing_and_the_link_still_works() {
    let w = spawn_world(&[]).await;
    let token = link(&w, ALICE, "dexcom").await;
    let mut b = Browser::new();
    let signin = start_dexcom(&w, &mut b, &token).await;
    let callback = at_dexcom(&mut b, &signin, "dexcom-001", false).await;
    assert!(callback.contains("error=access_denied"));
    let r = b.get(&callback).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("data-result=\"declined\""));
    assert_eq!(source_state(&w, ALICE, "dexcom").await, None);
    let mut b = Browser::new();
    let signin = start_dexcom(&w, &mut b, &token).await;
    let callback = at_dexcom(&mut b, &signin, "dexcom-001", true).await;
    assert_eq!(b.get(&callback).await.status(), StatusCode::OK, "the same link works after declining");
}

#[tokio::test]
async fn a_failed_exchange_leaves_a_working_connection_untouched() {
    let w = spawn_world(&[]).await;
    assert_eq!(connect_dexcom(&w, ALICE, "dexcom-001").await.status(), StatusCode::OK);
    let user = UserId::parse(ALICE).unwrap();
    let id = w.app.store.list_data_sources(&user).await.unwrap()[0].id.clone();
    let before = w.app.store.get_provider_session(&id).await.unwrap().unwrap();
    let revision = w.app.store.get_data_source(&id).await.unwrap().unwrap().revision;
    // A new attempt whose code the partner refuses (a code from an attempt already exchanged).
    let token = link(&w, ALICE, "dexcom").await;
    let mut b1 = Browser::new();
    let s1 = start_dexcom(&w, &mut b1, &token).await;
    let c1 = at_dexcom(&mut b1, &s1, "dexcom-001", true).await;
    let mut b2 = Browser::new();
    let s2 = start_dexcom(&w, &mut b2, &token).await;
    let c2 = at_dexcom(&mut b2, &s2, "dexcom-001", true).await;
    let code1 = query(&c1)["code"].clone();
    // Spend code 1 at the partner directly, then present it: invalid_grant at exchange.
    let secret = w.app.settings.partners["dexcom"].client_secret.as_ref().unwrap().expose_secret().to_owned();
    let spent = w
        .app
        .http
        .post(w.sandbox.url("/dexcom/v3/oauth2/token"))
        .form(&[
            ("client_id", tidegate_e2e::DEXCOM_CLIENT),
            ("client_secret", &secret),
            ("grant_type", "authorization_code"),
            ("code", &code1),
            ("redirect_uri", &query(&s1)["redirect_uri"]),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 200);
    let forged = format!("{}?code={code1}&state={}", c2.split('?').next().unwrap(), query(&c2)["state"]);
    let r = b2.get(&forged).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let after = w.app.store.get_provider_session(&id).await.unwrap().unwrap();
    assert_eq!(after.access_token.expose_secret(), before.access_token.expose_secret(), "old tokens kept");
    assert_eq!(w.app.store.get_data_source(&id).await.unwrap().unwrap().revision, revision);
    assert_eq!(source_state(&w, ALICE, "dexcom").await, Some(DataSourceState::Connected));
}

#[tokio::test]
async fn disconnect_revokes_at_carelink() {
    let w = spawn_world(&[]).await;
    let token = link(&w, ALICE, "carelink").await;
    let mut b = Browser::new();
    let signin = start_carelink(&w, &mut b, &token).await;
    let pasted = at_carelink(&mut b, &signin, "carelink-001").await;
    assert_eq!(paste(&w, &mut b, &pasted).await.status(), StatusCode::OK);
    let user = UserId::parse(ALICE).unwrap();
    let id = w.app.store.list_data_sources(&user).await.unwrap()[0].id.clone();
    let refresh = w.app.store.get_provider_session(&id).await.unwrap().unwrap().refresh_token.unwrap();
    let r = w
        .app
        .http
        .delete(w.app.url("/v1/oauth/carelink/authorize"))
        .bearer_auth(w.app.patient_token(ALICE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(source_state(&w, ALICE, "carelink").await, Some(DataSourceState::Disconnected));
    let client_id = query(&signin)["client_id"].clone();
    let r = w
        .app
        .http
        .post(w.sandbox.url("/carelink-login/oauth/token"))
        .form(&[
            ("client_id", client_id.as_str()),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose_secret()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the revoked refresh token no longer works");
    let counts: Value = w.app.http.get(w.sandbox.url("/admin/requests")).send().await.unwrap().json().await.unwrap();
    assert_eq!(counts["counts"]["POST /carelink-login/oauth/revoke"], 1);
}

#[tokio::test]
async fn a_wrong_or_missing_iss_is_refused_when_one_is_expected() {
    let w = spawn_world(&[("TIDEGATE_PARTNERS__DEXCOM__EXPECTED_ISSUER", "https://issuer.dexcom.test")]).await;
    let token = link(&w, ALICE, "dexcom").await;
    for iss in [None, Some("https://evil.test")] {
        let mut b = Browser::new();
        let signin = start_dexcom(&w, &mut b, &token).await;
        let mut callback = at_dexcom(&mut b, &signin, "dexcom-001", true).await;
        if let Some(i) = iss {
            callback.push_str(&format!("&iss={i}"));
        }
        let r = b.get(&callback).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "iss {iss:?}");
    }
    assert_eq!(source_state(&w, ALICE, "dexcom").await, None);
}
