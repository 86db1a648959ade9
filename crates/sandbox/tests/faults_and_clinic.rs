//! Faults switched at run time, introspection-based token checks, and the clinic stand-in.

mod common;

use common::*;
use serde_json::{Value, json};
use tidegate_sandbox::{OAuthClient, Sandbox, SandboxConfig};

const EGVS: &str = "/dexcom/v3/users/self/egvs";
const WINDOW: [(&str, &str); 2] = [("startDate", "2026-03-01T00:00:00"), ("endDate", "2026-03-02T00:00:00")];

#[test]
fn the_shape_comparison_notices_differences() {
    let fixture = json!({"a": 1, "b": {"c": "x"}, "d": [{"e": true}]});
    let mut p = Vec::new();
    same_shape("t", &json!({"a": 2, "b": {"c": "y"}, "d": [{"e": false}]}), &fixture, &[], &mut p);
    assert!(p.is_empty(), "{p:?}");
    same_shape("t", &json!({"a": "1", "b": {}, "d": [{"e": true, "f": 1}]}), &fixture, &[], &mut p);
    assert_eq!(p.len(), 3, "{p:?}");
}

#[tokio::test]
async fn faults_apply_at_run_time_per_account_and_globally() {
    let env = start(|_| {}).await;
    let at = env.dexcom_tokens("dexcom-001").await["access_token"].as_str().unwrap().to_owned();
    let other = env.dexcom_tokens("dexcom-002").await["access_token"].as_str().unwrap().to_owned();
    let put = |path: &'static str, body: Value| env.admin(reqwest::Method::PUT, path, Some(body));

    put("/admin/faults/dexcom-001", json!({"errorRate": 1.0, "errorStatus": 502})).await;
    assert_eq!(env.get(EGVS, &at, &WINDOW).await.status(), 502);
    assert_eq!(env.get(EGVS, &other, &WINDOW).await.status(), 200, "faults are per account");

    put("/admin/faults/dexcom-001", json!({"rateLimit": {"count": 2, "retryAfterSecs": 30}})).await;
    for _ in 0..2 {
        let r = env.get(EGVS, &at, &WINDOW).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "30");
    }
    assert_eq!(env.get(EGVS, &at, &WINDOW).await.status(), 200, "the burst is over");

    put("/admin/faults/dexcom-001", json!({"malformedJsonRate": 1.0})).await;
    let text = env.get(EGVS, &at, &WINDOW).await.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "malformed JSON");

    put("/admin/faults/dexcom-001", json!({"schemaDrift": true})).await;
    let body: Value = env.get(EGVS, &at, &WINDOW).await.json().await.unwrap();
    let r = &body["records"][0];
    assert_eq!(r["transmitterGeneration"], "g8", "unknown enum value");
    assert!(r.get("displayApp").is_none(), "missing optional field");

    put("/admin/faults/dexcom-001", json!({"latencyMs": 300})).await;
    let t0 = std::time::Instant::now();
    assert_eq!(env.get(EGVS, &at, &WINDOW).await.status(), 200);
    assert!(t0.elapsed() >= std::time::Duration::from_millis(300));

    put("/admin/faults/dexcom-001", json!({"hangMs": 1500})).await;
    let quick = reqwest::Client::builder().timeout(std::time::Duration::from_millis(500)).build().unwrap();
    let r = quick.get(env.sb.url(EGVS)).bearer_auth(&at).query(&WINDOW).send().await;
    assert!(r.unwrap_err().is_timeout(), "hangs past the client's timeout");

    // Global faults apply to everyone without an override.
    env.admin(reqwest::Method::DELETE, "/admin/faults", None).await;
    put("/admin/faults", json!({"errorRate": 1.0})).await;
    assert_eq!(env.get(EGVS, &other, &WINDOW).await.status(), 503);
    env.admin(reqwest::Method::DELETE, "/admin/faults", None).await;
    assert_eq!(env.get(EGVS, &other, &WINDOW).await.status(), 200);
    // Bad fault settings are refused.
    let r = env
        .http
        .put(env.sb.url("/admin/faults"))
        .json(&json!({"maintenance": {"start": "25:00", "end": "03:45", "timeZone": "America/Los_Angeles", "mode": "invalidGrant"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn maintenance_window_and_revoked_grants() {
    // 02:50 in Los Angeles (PST) on the start day.
    let env =
        start(|c| c.start_time = Some(chrono::DateTime::parse_from_rfc3339("2026-03-02T10:50:00Z").unwrap().to_utc()))
            .await;
    let t = env.dexcom_tokens("dexcom-001").await;
    env.admin(
        reqwest::Method::PUT,
        "/admin/faults",
        Some(json!({"maintenance": {"start": "02:45", "end": "03:45", "timeZone": "America/Los_Angeles", "mode": "invalidGrant"}})),
    )
    .await;
    let (status, body) =
        env.token(&[("grant_type", "refresh_token"), ("refresh_token", t["refresh_token"].as_str().unwrap())]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "refresh fails inside the window");
    env.admin(reqwest::Method::POST, "/admin/clock", Some(json!({"advanceSecs": 3600}))).await;
    let (status, fresh) =
        env.token(&[("grant_type", "refresh_token"), ("refresh_token", t["refresh_token"].as_str().unwrap())]).await;
    assert_eq!(status, 200, "the same refresh token works after the window: {fresh}");

    // The person revokes our access at Dexcom.
    env.admin(reqwest::Method::POST, "/admin/people/dexcom-001/revoke", None).await;
    assert_eq!(
        env.get("/dexcom/v3/users/self/devices", fresh["access_token"].as_str().unwrap(), &[]).await.status(),
        401
    );
    let (status, body) = env
        .token(&[("grant_type", "refresh_token"), ("refresh_token", fresh["refresh_token"].as_str().unwrap())])
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
}

/// The data endpoints of one simulator can check tokens through another server's RFC 7662
/// introspection endpoint: the OAuth side is swappable.
#[tokio::test]
async fn data_endpoints_can_validate_tokens_by_introspection() {
    let issuer = start(|_| {}).await;
    let introspect = issuer.sb.url("/dexcom/v3/oauth2/introspect");
    let resource = Sandbox::start(SandboxConfig {
        dexcom_clients: vec![OAuthClient {
            client_id: "rs".into(),
            client_secret: Some("rs-secret".into()),
            redirect_uris: vec![],
        }],
        introspection: Some((introspect, CLIENT_ID.into(), issuer.secret.clone())),
        start_time: issuer.sb.sim.cfg.start_time,
        ..Default::default()
    })
    .await
    .unwrap();
    let at = issuer.dexcom_tokens("dexcom-001").await["access_token"].as_str().unwrap().to_owned();
    let r = issuer.http.get(resource.url(EGVS)).bearer_auth(&at).query(&WINDOW).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = issuer.http.get(resource.url(EGVS)).bearer_auth("bogus").query(&WINDOW).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Introspection itself (RFC 7662).
    let answer: Value = issuer
        .http
        .post(issuer.sb.url("/dexcom/v3/oauth2/introspect"))
        .form(&[("client_id", CLIENT_ID), ("client_secret", issuer.secret.as_str()), ("token", at.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["active"], true);
    assert_eq!(answer["sub"], "dexcom-001");
}

#[tokio::test]
async fn clinic_stand_in_validates_and_records() {
    let env = start(|_| {}).await;
    let token = env.sb.sim.cfg.clinic_server_token.clone();
    let user = "0123456789";
    let clinic = "5f1e8a0b9c7d6e5f4a3b2c1d";
    let put = |body: Value, tok: &str| {
        env.http
            .put(env.sb.url(&format!("/clinic/v1/patients/{user}/data_sources")))
            .header("x-tidepool-session-token", tok.to_owned())
            .json(&body)
            .send()
    };
    let good = json!([{"dataSourceId": "0123456789abcdef01234567", "providerName": "dexcom", "state": "connected", "modifiedTime": "2026-03-02T12:00:00.000Z"}]);
    assert_eq!(put(good.clone(), &token).await.unwrap().status(), 404, "not a patient of any clinic yet");
    env.admin(reqwest::Method::POST, "/admin/clinic/patients", Some(json!({"clinicId": clinic, "userId": user}))).await;
    assert_eq!(put(good.clone(), &token).await.unwrap().status(), 200);
    assert_eq!(put(good.clone(), "wrong").await.unwrap().status(), 401);
    let bad = json!([{"dataSourceId": "XYZ", "providerName": "dexcom", "state": "connected"}]);
    let r = put(bad, &token).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("dataSourceId"), "the reason is given");
    let member = env
        .http
        .get(env.sb.url(&format!("/clinic/v1/clinics/{clinic}/patients/{user}")))
        .header("x-tidepool-session-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(member.status(), 200);
    let stranger = env
        .http
        .get(env.sb.url(&format!("/clinic/v1/clinics/{clinic}/patients/abcdef0123")))
        .header("x-tidepool-session-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 404);
    env.admin(reqwest::Method::PUT, "/admin/clinic/faults", Some(json!({"down": true}))).await;
    assert_eq!(put(good, &token).await.unwrap().status(), 503);
    let history = env.admin(reqwest::Method::GET, "/admin/clinic/requests", None).await;
    let statuses: Vec<u64> =
        history["received"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![404, 200, 400], "authenticated requests are recorded with their outcome");
    // Observability: per-endpoint counts and the secrets the simulator issued.
    let requests = env.admin(reqwest::Method::GET, "/admin/requests", None).await;
    assert!(requests["counts"]["PUT /clinic/v1/patients/{userId}/data_sources"].as_u64().unwrap() >= 5);
    let _ = env.dexcom_tokens("dexcom-001").await;
    let secrets = env.admin(reqwest::Method::GET, "/admin/secrets", None).await;
    assert!(secrets["secrets"].as_array().unwrap().len() >= 3, "code, access and refresh tokens");
}
