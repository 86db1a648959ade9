//! Who may do what (table-driven; the reliability suite reuses it), and clinician-initiated
//! connection requests end to end.

use api::Role;
use model::{Clock, DataSourceState, UserId};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tidegate_e2e::{World, spawn_world};

use crate::connect::{ALICE, BOB, Browser, at_dexcom, location, source_state};

const C1: &str = "5f1e8a0b9c7d6e5f4a3b2c1d";
const C2: &str = "6a2f9b1c0d8e7f6a5b4c3d2e";
const CLINICIAN: &str = "1111111111";

async fn seed_clinic(w: &World) {
    for (clinic, user) in [(C1, ALICE)] {
        let r = w
            .app
            .http
            .post(w.sandbox.url("/admin/clinic/patients"))
            .json(&json!({"clinicId": clinic, "userId": user}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

/// The tenant matrix: (who, method, path, body, expected status).
#[tokio::test]
async fn tenant_matrix() {
    let w = spawn_world(&[]).await;
    seed_clinic(&w).await;
    assert_eq!(crate::connect::connect_dexcom(&w, ALICE, "dexcom-001").await.status(), StatusCode::OK);
    let alice_source = w.app.store.list_data_sources(&UserId::parse(ALICE).unwrap()).await.unwrap()[0].id.to_string();
    let tokens = [
        ("alice", w.app.patient_token(ALICE)),
        ("bob", w.app.patient_token(BOB)),
        ("clinician C1", w.app.token(Role::Clinician, CLINICIAN, &[C1])),
        ("clinician C2", w.app.token(Role::Clinician, CLINICIAN, &[C2])),
        ("service", w.app.service_token()),
    ];
    let token = |who: &str| tokens.iter().find(|(n, _)| *n == who).unwrap().1.clone();
    let exp = (w.app.clock.now() + chrono::Duration::minutes(5)).to_rfc3339();
    let mint = json!({"paths": ["/v1/oauth/dexcom"], "expirationTime": exp});
    let cases: Vec<(&str, Method, String, Option<Value>, StatusCode)> = vec![
        ("alice", Method::GET, format!("/v1/users/{ALICE}/data_sources"), None, StatusCode::OK),
        ("bob", Method::GET, format!("/v1/users/{ALICE}/data_sources"), None, StatusCode::FORBIDDEN),
        ("bob", Method::GET, format!("/v1/data_sources/{alice_source}"), None, StatusCode::NOT_FOUND),
        (
            "bob",
            Method::POST,
            format!("/v1/users/{ALICE}/restricted_tokens"),
            Some(mint.clone()),
            StatusCode::FORBIDDEN,
        ),
        ("bob", Method::DELETE, format!("/v1/users/{ALICE}/oauth/dexcom/authorize"), None, StatusCode::FORBIDDEN),
        ("bob", Method::GET, format!("/v1/users/{ALICE}/connection_requests"), None, StatusCode::FORBIDDEN),
        ("bob", Method::POST, format!("/v1/clinics/{C1}/patients/{ALICE}/connect/dexcom"), None, StatusCode::FORBIDDEN),
        ("clinician C1", Method::GET, format!("/v1/users/{ALICE}/data_sources"), None, StatusCode::OK),
        ("clinician C1", Method::GET, format!("/v1/data_sources/{alice_source}"), None, StatusCode::OK),
        ("clinician C1", Method::GET, format!("/v1/users/{BOB}/data_sources"), None, StatusCode::FORBIDDEN),
        (
            "clinician C1",
            Method::POST,
            format!("/v1/users/{ALICE}/restricted_tokens"),
            Some(mint.clone()),
            StatusCode::FORBIDDEN,
        ),
        (
            "clinician C1",
            Method::DELETE,
            format!("/v1/users/{ALICE}/oauth/dexcom/authorize"),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "clinician C1",
            Method::POST,
            format!("/v1/clinics/{C1}/patients/{BOB}/connect/dexcom"),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "clinician C1",
            Method::POST,
            format!("/v1/clinics/{C2}/patients/{ALICE}/connect/dexcom"),
            None,
            StatusCode::FORBIDDEN,
        ),
        ("clinician C2", Method::GET, format!("/v1/users/{ALICE}/data_sources"), None, StatusCode::FORBIDDEN),
        ("clinician C2", Method::GET, format!("/v1/data_sources/{alice_source}"), None, StatusCode::NOT_FOUND),
        (
            "clinician C2",
            Method::GET,
            format!("/v1/clinics/{C1}/patients/{ALICE}/connection_requests"),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "clinician C2",
            Method::POST,
            format!("/v1/clinics/{C2}/patients/{ALICE}/connect/dexcom"),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "alice",
            Method::POST,
            format!("/v1/clinics/{C1}/patients/{ALICE}/connect/carelink"),
            None,
            StatusCode::FORBIDDEN,
        ),
        ("alice", Method::DELETE, format!("/v1/users/{ALICE}/oauth/dexcom/authorize"), None, StatusCode::FORBIDDEN),
        ("service", Method::GET, format!("/v1/users/{ALICE}/data_sources"), None, StatusCode::OK),
        ("alice", Method::GET, format!("/v1/users/{ALICE}/data?type=cbg"), None, StatusCode::OK),
        ("bob", Method::GET, format!("/v1/users/{ALICE}/data"), None, StatusCode::FORBIDDEN),
        ("clinician C1", Method::GET, format!("/v1/users/{ALICE}/data"), None, StatusCode::OK),
        ("clinician C2", Method::GET, format!("/v1/users/{ALICE}/data"), None, StatusCode::FORBIDDEN),
        ("service", Method::GET, format!("/v1/users/{ALICE}/data"), None, StatusCode::OK),
        ("alice", Method::DELETE, format!("/v1/users/{ALICE}/data"), None, StatusCode::FORBIDDEN),
        ("clinician C1", Method::DELETE, format!("/v1/users/{ALICE}/data"), None, StatusCode::FORBIDDEN),
        (
            "service",
            Method::POST,
            format!("/v1/users/{BOB}/restricted_tokens"),
            Some(mint.clone()),
            StatusCode::CREATED,
        ),
        ("service", Method::GET, format!("/v1/users/{ALICE}/connection_requests"), None, StatusCode::OK),
        ("alice", Method::GET, format!("/v1/users/{ALICE}/connection_requests"), None, StatusCode::OK),
        ("alice", Method::POST, format!("/v1/users/{ALICE}/restricted_tokens"), Some(mint), StatusCode::CREATED),
    ];
    let mut table = String::from("\nwho | request | status\n---|---|---\n");
    for (who, method, path, body, want) in cases {
        let mut req = w.app.http.request(method.clone(), w.app.url(&path)).bearer_auth(token(who));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        table.push_str(&format!("{who} | {method} {path} | {}\n", r.status().as_u16()));
        assert_eq!(r.status(), want, "{who} {method} {path}");
        if !want.is_success() {
            assert_eq!(r.headers()["content-type"], "application/problem+json", "{who} {method} {path}");
        }
    }
    println!("{table}");
    // Nothing above changed Alice's connection.
    assert_eq!(source_state(&w, ALICE, "dexcom").await, Some(DataSourceState::Connected));
}

#[tokio::test]
async fn a_clinician_request_reaches_the_patient_and_completes() {
    let w = spawn_world(&[]).await;
    seed_clinic(&w).await;
    let clinician = w.app.token(Role::Clinician, CLINICIAN, &[C1]);
    let ask = |provider: &'static str| {
        w.app
            .http
            .post(w.app.url(&format!("/v1/clinics/{C1}/patients/{ALICE}/connect/{provider}")))
            .bearer_auth(clinician.clone())
            .send()
    };
    assert_eq!(ask("dexcom").await.unwrap().status(), StatusCode::NO_CONTENT);
    let sources: Vec<Value> = w
        .app
        .http
        .get(w.app.url(&format!("/v1/users/{ALICE}/data_sources")))
        .bearer_auth(&clinician)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sources[0]["state"], "pending");
    let expires = chrono::DateTime::parse_from_rfc3339(sources[0]["expirationTime"].as_str().unwrap()).unwrap();
    assert_eq!((expires.to_utc() - w.app.clock.now()).num_days(), 30);
    // The clinic sees the request; so does the patient.
    let listed: Value = w
        .app
        .http
        .get(w.app.url(&format!("/v1/clinics/{C1}/patients/{ALICE}/connection_requests")))
        .bearer_auth(&clinician)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["dexcom"].as_array().unwrap().len(), 1);
    assert_eq!(listed["carelink"].as_array().unwrap().len(), 0);
    let mine: Value = w
        .app
        .http
        .get(w.app.url(&format!("/v1/users/{ALICE}/connection_requests")))
        .bearer_auth(w.app.patient_token(ALICE))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["dexcom"][0]["clinicId"], C1);

    // The message is queued with its link sealed (no usable link in the database).
    let (payload,): (Value,) = sqlx::query_as("SELECT payload FROM outbox WHERE kind = 'patient_message'")
        .fetch_one(&w.app.sql)
        .await
        .unwrap();
    assert_eq!(payload["kind"], "connection_request");
    assert!(!payload.to_string().contains("restricted_token"), "{payload}");
    let message: store::outbox::PatientMessage = serde_json::from_value(payload).unwrap();
    let link = w.app.store.open_message_link(&UserId::parse(ALICE).unwrap(), &message).unwrap();
    let link = secrecy::ExposeSecret::expose_secret(&link).to_owned();
    assert!(link.starts_with(&w.app.url("/v1/oauth/dexcom/authorize?restricted_token=")));

    // The patient follows it (it has no region: they choose one), then signs in at Dexcom.
    let mut b = Browser::new();
    let choose = b.get(&link).await;
    assert_eq!(choose.status(), StatusCode::OK);
    assert!(choose.text().await.unwrap().contains("region=us"));
    let r = b.get(&format!("{link}&region=us")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let callback = at_dexcom(&mut b, &location(&r), "dexcom-003", true).await;
    assert_eq!(b.get(&callback).await.status(), StatusCode::OK);
    assert_eq!(source_state(&w, ALICE, "dexcom").await, Some(DataSourceState::Connected));
    // Connected: nothing to ask. After a disconnect, asking again gives pendingReconnect.
    assert_eq!(ask("dexcom").await.unwrap().status(), StatusCode::CONFLICT);
    let r = w
        .app
        .http
        .delete(w.app.url("/v1/oauth/dexcom/authorize"))
        .bearer_auth(w.app.patient_token(ALICE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(ask("dexcom").await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(source_state(&w, ALICE, "dexcom").await, Some(DataSourceState::PendingReconnect));
    // An expired request link shows a clear page; asking again works.
    assert_eq!(ask("carelink").await.unwrap().status(), StatusCode::NO_CONTENT);
    w.app.clock.advance(chrono::Duration::days(31));
    let (payload,): (Value,) = sqlx::query_as(
        "SELECT payload FROM outbox WHERE kind = 'patient_message' AND payload->>'provider' = 'carelink'",
    )
    .fetch_one(&w.app.sql)
    .await
    .unwrap();
    let message: store::outbox::PatientMessage = serde_json::from_value(payload).unwrap();
    let old = w.app.store.open_message_link(&UserId::parse(ALICE).unwrap(), &message).unwrap();
    let r = Browser::new().get(secrecy::ExposeSecret::expose_secret(&old)).await;
    assert_eq!(r.status(), StatusCode::GONE);
    assert!(r.text().await.unwrap().contains("expired"));
    assert_eq!(ask("carelink").await.unwrap().status(), StatusCode::NO_CONTENT);
    let broken = store::lifecycle::check_invariants(&w.app.store).await.unwrap();
    assert!(broken.is_empty(), "{broken:?}");
}
