//! Dexcom v3 over HTTP: shapes against the real fixtures, OAuth rules, windows, budget, and
//! ground truth against the data endpoints.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use serde_json::{Value, json};

const ALICE: &str = "dexcom-001"; // G7 on iOS (mobile app, offsets in displayTime)

#[tokio::test]
async fn responses_have_the_fixtures_shapes() {
    let env = start(|_| {}).await;
    let tokens = env.dexcom_tokens(ALICE).await;
    let mut problems = Vec::new();
    same_shape("token", &tokens, &fixture("dexcom/token_response_example.json"), &[], &mut problems);
    assert_eq!(tokens["expires_in"], 7200);
    assert_eq!(tokens["token_type"], "Bearer");
    let at = tokens["access_token"].as_str().unwrap();

    let egvs: Value = env
        .get(
            "/dexcom/v3/users/self/egvs",
            at,
            &[("startDate", "2026-03-01T00:00:00"), ("endDate", "2026-03-02T00:00:00")],
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(egvs["records"].as_array().unwrap().len() > 200);
    // Every record (not just the first) must have the fixture's shape.
    let fixture_egvs = fixture("dexcom/v3_egvs_g7_ios_record.json");
    for (i, r) in egvs["records"].as_array().unwrap().iter().enumerate() {
        let mut one = egvs.clone();
        one["records"] = json!([r]);
        same_shape(&format!("egvs[{i}]"), &one, &fixture_egvs, &[], &mut problems);
    }
    let devices: Value = env.get("/dexcom/v3/users/self/devices", at, &[]).await.json().await.unwrap();
    assert_eq!(devices["recordType"], "device");
    assert_eq!(devices["recordVersion"], "3.0");
    same_shape(
        "devices.records[0]",
        &devices["records"][0],
        &fixture("dexcom/v3_device_record_tidepool_platform_fixture.json"),
        &[],
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn out_of_range_values_times_and_enums_look_like_dexcom() {
    let env = start(|_| {}).await;
    let mut saw = (false, false, false);
    for login in ["dexcom-001", "dexcom-003", "dexcom-006"] {
        let at = env.dexcom_tokens(login).await["access_token"].as_str().unwrap().to_owned();
        let body: Value = env
            .get(
                "/dexcom/v3/users/self/egvs",
                &at,
                &[("startDate", "2026-02-01T00:00:00"), ("endDate", "2026-03-01T00:00:00")],
            )
            .await
            .json()
            .await
            .unwrap();
        for r in body["records"].as_array().unwrap() {
            let system = r["systemTime"].as_str().unwrap();
            assert!(system.ends_with('Z') && DateTime::parse_from_rfc3339(system).is_ok(), "{system}");
            match (r["value"].as_i64(), r["status"].as_str()) {
                (Some(39), Some("low")) => saw.0 = true,
                (Some(401), Some("high")) => saw.1 = true,
                (Some(v), None) => assert!((40..=400).contains(&v), "{r}"),
                (None, None) => saw.2 = true,
                other => panic!("unexpected value/status {other:?}"),
            }
        }
        let first = body["records"][0]["displayTime"].as_str().unwrap();
        match login {
            "dexcom-001" => assert!(DateTime::parse_from_rfc3339(first).is_ok(), "offset style {first}"),
            "dexcom-003" => assert_eq!(first.len(), 19, "receiver style has no offset: {first}"),
            _ => assert!(first.ends_with(":58") || first.ends_with(":02"), "drifted offset {first}"),
        }
    }
    assert!(saw.0 && saw.1 && saw.2, "39/low, 401/high and null values all occur: {saw:?}");
}

#[tokio::test]
async fn code_replay_and_refresh_reuse_are_invalid_grant() {
    let env = start(|_| {}).await;
    let code = env.dexcom_code(ALICE).await;
    let exchange = [("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", REDIRECT)];
    let (status, first) = env.token(&exchange).await;
    assert_eq!(status, 200);
    let (status, replay) = env.token(&exchange).await;
    assert_eq!((status, replay["error"].as_str()), (400, Some("invalid_grant")));
    // The replay revoked what the code granted.
    let r = env.get("/dexcom/v3/users/self/devices", first["access_token"].as_str().unwrap(), &[]).await;
    assert_eq!(r.status(), 401);

    let t1 = env.dexcom_tokens(ALICE).await;
    let rt1 = t1["refresh_token"].as_str().unwrap();
    let (status, t2) = env.token(&[("grant_type", "refresh_token"), ("refresh_token", rt1)]).await;
    assert_eq!(status, 200);
    assert_ne!(t2["refresh_token"], t1["refresh_token"], "refresh tokens rotate");
    let (status, reuse) = env.token(&[("grant_type", "refresh_token"), ("refresh_token", rt1)]).await;
    assert_eq!((status, reuse["error"].as_str()), (400, Some("invalid_grant")));
    // …and the rotated one is dead too.
    let (status, dead) =
        env.token(&[("grant_type", "refresh_token"), ("refresh_token", t2["refresh_token"].as_str().unwrap())]).await;
    assert_eq!((status, dead["error"].as_str()), (400, Some("invalid_grant")));
    let r = env.get("/dexcom/v3/users/self/devices", t2["access_token"].as_str().unwrap(), &[]).await;
    assert_eq!(r.status(), 401);

    // Client authentication is in the body; a wrong secret is invalid_client.
    let r = env
        .http
        .post(env.sb.url("/dexcom/v3/oauth2/token"))
        .form(&[
            ("client_id", CLIENT_ID),
            ("client_secret", "wrong"),
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Exact redirect URI: another one gets an error page, never a redirect.
    let r = env
        .http
        .get(env.sb.url("/dexcom/v3/oauth2/login"))
        .query(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", "https://evil.test/cb"),
            ("response_type", "code"),
            ("scope", "offline_access"),
            ("state", "s"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Codes are short-lived.
    let code = env.dexcom_code(ALICE).await;
    env.admin(reqwest::Method::POST, "/admin/clock", Some(json!({"advanceSecs": 120}))).await;
    let (status, late) =
        env.token(&[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT)]).await;
    assert_eq!((status, late["error"].as_str()), (400, Some("invalid_grant")));
}

#[tokio::test]
async fn windows_and_date_formats_are_enforced() {
    let env = start(|_| {}).await;
    let at = env.dexcom_tokens(ALICE).await["access_token"].as_str().unwrap().to_owned();
    for (start, end, want) in [
        ("2026-01-01T00:00:00", "2026-01-31T00:00:00", 200),
        ("2026-01-01T00:00:00", "2026-02-01T00:00:00", 400), // 31 days
        ("2026-01-01T00:00", "2026-01-02T00:00:00", 400),    // missing seconds
        ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00", 400), // zone suffix
        ("2026-01-02T00:00:00", "2026-01-01T00:00:00", 400), // reversed
    ] {
        let r = env.get("/dexcom/v3/users/self/egvs", &at, &[("startDate", start), ("endDate", end)]).await;
        assert_eq!(r.status(), want, "{start} – {end}");
    }
    let r = env.get("/dexcom/v3/users/self/egvs", &at, &[("startDate", "2026-01-01T00:00:00")]).await;
    assert_eq!(r.status(), 400);
    let r = env
        .get(
            "/dexcom/v3/users/self/egvs",
            "not-a-token",
            &[("startDate", "2026-01-01T00:00:00"), ("endDate", "2026-01-02T00:00:00")],
        )
        .await;
    assert_eq!(r.status(), 401);
    // Access tokens expire after 7200 s of simulated time.
    env.admin(reqwest::Method::POST, "/admin/clock", Some(json!({"advanceSecs": 7201}))).await;
    assert_eq!(env.get("/dexcom/v3/users/self/devices", &at, &[]).await.status(), 401);
}

#[tokio::test]
async fn the_hourly_budget_answers_429_with_retry_after() {
    let env = start(|c| c.dexcom_budget_per_hour = Some(5)).await;
    let at = env.dexcom_tokens(ALICE).await["access_token"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        assert_eq!(env.get("/dexcom/v3/users/self/devices", &at, &[]).await.status(), 200);
    }
    let r = env.get("/dexcom/v3/users/self/devices", &at, &[]).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
    env.admin(reqwest::Method::POST, "/admin/clock", Some(json!({"advanceSecs": retry}))).await;
    assert_eq!(env.get("/dexcom/v3/users/self/devices", &at, &[]).await.status(), 200, "a new hour, a new budget");
}

#[tokio::test]
async fn ground_truth_equals_what_the_data_endpoints_serve_over_a_week() {
    let env = start(|c| c.dexcom_people = 6).await;
    let start_time = DateTime::parse_from_rfc3339("2026-03-02T12:00:00Z").unwrap().to_utc();
    let logins: Vec<String> = (1..=6).map(|i| format!("dexcom-{i:03}")).collect();
    let mut tokens = Vec::new();
    for l in &logins {
        tokens.push(env.dexcom_tokens(l).await);
    }
    // Poll every 6 simulated hours for a week; then compare with the truth at the end.
    let mut seen: Vec<std::collections::BTreeMap<String, Value>> = vec![Default::default(); logins.len()];
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    for step in 1..=28 {
        env.admin(reqwest::Method::POST, "/admin/clock", Some(json!({"advanceSecs": 6 * 3600}))).await;
        let now = start_time + Duration::hours(6 * step);
        for (i, t) in tokens.iter_mut().enumerate() {
            // Tokens last 2 h: refresh (rotating) before each poll.
            let (status, fresh) = env
                .token(&[("grant_type", "refresh_token"), ("refresh_token", t["refresh_token"].as_str().unwrap())])
                .await;
            assert_eq!(status, 200, "{fresh}");
            *t = fresh;
            let at = t["access_token"].as_str().unwrap();
            for endpoint in ["egvs", "events", "calibrations", "alerts"] {
                // Look back a day so late records and event edits are caught.
                let q = [("startDate", fmt(now - Duration::days(1))), ("endDate", fmt(now + Duration::hours(1)))];
                let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let body: Value =
                    env.get(&format!("/dexcom/v3/users/self/{endpoint}"), at, &q).await.json().await.unwrap();
                for r in body["records"].as_array().unwrap() {
                    seen[i].insert(format!("{endpoint}/{}", r["recordId"].as_str().unwrap()), r.clone());
                }
            }
        }
    }
    let end = start_time + Duration::days(7);
    for (i, login) in logins.iter().enumerate() {
        let truth: Value = env
            .admin(
                reqwest::Method::GET,
                &format!(
                    "/admin/truth/{login}?start={}&end={}",
                    "2026-03-01T18:00:00Z",
                    (end + Duration::hours(1)).to_rfc3339().replace('+', "%2B")
                ),
                None,
            )
            .await;
        let mut expected = std::collections::BTreeMap::new();
        for endpoint in ["egvs", "events", "calibrations", "alerts"] {
            for r in truth[endpoint].as_array().unwrap() {
                expected.insert(format!("{endpoint}/{}", r["recordId"].as_str().unwrap()), r.clone());
            }
        }
        // Records from the first day before polling started are outside what polling saw.
        seen[i].retain(|_, r| r["systemTime"].as_str().unwrap() >= "2026-03-01T18:00:00Z");
        assert!(expected.len() > 7 * 250, "{login}: a week of data ({})", expected.len());
        assert_eq!(seen[i].len(), expected.len(), "{login}: record count");
        assert_eq!(seen[i], expected, "{login}: polled records equal the ground truth");
    }
}
