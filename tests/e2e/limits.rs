//! Limits on the public listener: request body size, the per-client rate limit of the connect
//! pages (X-Forwarded-For only from trusted proxies), and the security headers on every answer.

use chrono::Duration;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tidegate_e2e::{TestApp, TestDb, spawn_app, spawn_app_on};

const ALICE: &str = "0123456789";

async fn mint_link(app: &TestApp) -> reqwest::Response {
    let exp = test_now(app) + Duration::minutes(30);
    app.http
        .post(app.url(&format!("/v1/users/{ALICE}/restricted_tokens")))
        .bearer_auth(app.service_token())
        .json(&json!({"paths": ["/v1/oauth/dexcom"], "expirationTime": exp.to_rfc3339()}))
        .send()
        .await
        .unwrap()
}

fn test_now(app: &TestApp) -> chrono::DateTime<chrono::Utc> {
    use model::Clock;
    app.clock.now()
}

async fn assert_problem(r: reqwest::Response, status: StatusCode, slug: &str) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], format!("urn:tidegate:problem:{slug}"));
    assert_eq!(body["status"], status.as_u16());
    body
}

/// A body over `http.body_limit_bytes` (64 KiB by default) answers 413 problem+json, on a JSON
/// endpoint and on a form page alike, and nothing is created.
#[tokio::test]
async fn an_oversized_body_answers_413_problem_json() {
    let app = spawn_app().await;
    let big =
        json!({"paths": ["/v1/oauth/dexcom"], "expirationTime": "2026-03-07T12:30:00Z", "pad": "x".repeat(100_000)});
    let r = app
        .http
        .post(app.url(&format!("/v1/users/{ALICE}/restricted_tokens")))
        .bearer_auth(app.service_token())
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_problem(r, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
    let r = app
        .http
        .post(app.url("/v1/oauth/carelink/redirect"))
        .form(&[("url", "y".repeat(100_000))])
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
    let links: i64 = sqlx::query_scalar("SELECT count(*) FROM link_tokens").fetch_one(&app.sql).await.unwrap();
    assert_eq!(links, 0);
    // A body of ordinary size still works.
    assert_eq!(mint_link(&app).await.status(), StatusCode::CREATED);
    app.stop().await;
}

fn rate_limited_count(metrics: &str, route: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("tidegate_rate_limited_total{") && l.contains(&format!("route=\"{route}\"")))
        .and_then(|l| l.rsplit_once(' '))
        .map_or(0.0, |(_, v)| v.parse().unwrap())
}

/// Three requests at once are allowed (burst 3), the fourth from the same address answers 429
/// with Retry-After and a problem (a page for a browser); a spoofed X-Forwarded-For from an
/// untrusted peer changes nothing; other routes, and DELETE on the same path, are not limited;
/// after Retry-After seconds one more request is allowed.
#[tokio::test]
async fn connect_pages_are_rate_limited_per_client_address() {
    let db = TestDb::create().await;
    let app =
        spawn_app_on(db, &[("TIDEGATE_HTTP__CONNECT_RATE_PER_MINUTE", "60"), ("TIDEGATE_HTTP__CONNECT_BURST", "3")])
            .await;
    let authorize = app.url("/v1/oauth/dexcom/authorize");
    // The limit is shared by the connect pages: authorize, redirect, choose.
    let r = app.http.get(&authorize).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "an incomplete link is refused (not limited)");
    let r = app.http.get(app.url("/v1/oauth/dexcom/redirect")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app.http.post(app.url("/v1/oauth/carelink/choose")).form(&[("authorization", "x")]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // The fourth: 429, even claiming to come from somewhere else.
    let r = app.http.get(&authorize).header("x-forwarded-for", "203.0.113.9").send().await.unwrap();
    assert_eq!(r.headers()["retry-after"], "1", "one request a second");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let body = assert_problem(r, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    assert_eq!(body["title"], "Too many requests");
    // A browser gets a page saying what to do.
    let r = app
        .http
        .post(app.url("/v1/oauth/carelink/redirect"))
        .header("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
        .form(&[("url", "com.medtronic.carepartner:/sso?code=a&state=b")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    let html = r.text().await.unwrap();
    assert!(html.contains("Please wait a moment") && html.contains("Wait a second"), "{html}");
    // Other routes are not limited, nor is DELETE on the authorize path (bearer-authenticated).
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(mint_link(&app).await.status(), StatusCode::CREATED);
    let r = app.http.delete(&authorize).bearer_auth(app.patient_token(ALICE)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .http
        .get(app.url(&format!("/v1/users/{ALICE}/data_sources")))
        .bearer_auth(app.service_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // After Retry-After: one more request, then limited again.
    app.clock.advance(Duration::seconds(1));
    assert_eq!(app.http.get(&authorize).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.http.get(&authorize).send().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    // Idle for the whole window: the full burst is back.
    app.clock.advance(Duration::seconds(3));
    for _ in 0..3 {
        assert_eq!(app.http.get(&authorize).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    }
    let metrics = app.http.get(app.ops_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(rate_limited_count(&metrics, "/v1/oauth/{provider}/authorize") >= 2.0, "{metrics}");
    assert!(rate_limited_count(&metrics, "/v1/oauth/{provider}/redirect") >= 1.0);
    app.stop().await;
}

/// Behind a trusted proxy each forwarded client has its own bucket; entries a client wrote
/// itself (left of the proxy's) are ignored; without the header the proxy is the client.
#[tokio::test]
async fn a_trusted_proxy_forwards_the_client_address() {
    let db = TestDb::create().await;
    let app = spawn_app_on(
        db,
        &[("TIDEGATE_HTTP__CONNECT_BURST", "1"), ("TIDEGATE_HTTP__TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")],
    )
    .await;
    let authorize = app.url("/v1/oauth/dexcom/authorize");
    let get = |xff: Option<&'static str>| {
        let mut req = app.http.get(&authorize);
        if let Some(v) = xff {
            req = req.header("x-forwarded-for", v);
        }
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(get(Some("203.0.113.1")).await, StatusCode::BAD_REQUEST);
    assert_eq!(get(Some("203.0.113.1")).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get(Some("203.0.113.2")).await, StatusCode::BAD_REQUEST, "another client, another bucket");
    assert_eq!(get(Some("198.51.100.1, 203.0.113.2")).await, StatusCode::TOO_MANY_REQUESTS, "spoofed entry ignored");
    assert_eq!(get(Some("203.0.113.3, 10.1.2.3")).await, StatusCode::BAD_REQUEST, "through two proxies");
    assert_eq!(get(None).await, StatusCode::BAD_REQUEST, "the proxy itself");
    assert_eq!(get(None).await, StatusCode::TOO_MANY_REQUESTS);
    app.stop().await;
}

fn assert_common_headers(r: &reqwest::Response, what: &str) {
    let h = r.headers();
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert_eq!(h["cache-control"], "no-store", "{what}");
    assert!(h["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"), "{what}");
}

/// Every answer forbids sniffing, referrers and framing; pages carry a strict CSP (no script at
/// all); answers with tokens or personal data are never cached.
#[tokio::test]
async fn pages_and_json_answers_carry_security_headers() {
    let app = spawn_app().await;
    // A page: the region choice (Dexcom has several regions).
    let r = mint_link(&app).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_common_headers(&r, "restricted_tokens");
    let token = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let r =
        app.http.get(app.url(&format!("/v1/oauth/dexcom/authorize?restricted_token={token}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_common_headers(&r, "the region page");
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    for directive in ["default-src 'none'", "form-action 'self'", "base-uri 'none'"] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("script-src") && !csp.contains("unsafe-eval"), "no script is allowed: {csp}");
    assert!(r.text().await.unwrap().contains("Where is your Dexcom account registered?"));
    // JSON answers with personal data, and errors.
    let service = app.service_token();
    for path in [format!("/v1/users/{ALICE}/data_sources"), format!("/v1/users/{ALICE}/data")] {
        let r = app.http.get(app.url(&path)).bearer_auth(&service).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
        assert_common_headers(&r, &path);
    }
    let r = app.http.get(app.url("/v1/nothing-here")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_common_headers(&r, "a 404");
    app.stop().await;
}
