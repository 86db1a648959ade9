//! Data-source reads and disconnect over HTTP.

use model::{DataSourceState, ProviderName, UserId};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::Value;
use store::audit::Actor;
use store::lifecycle::Connection;
use tidegate_e2e::{TestApp, spawn_app, test_epoch};

const ALICE: &str = "0123456789";
const BOB: &str = "abcdef0123";

async fn seed_connected(app: &TestApp, user: &str, provider: &str) -> model::DataSourceId {
    let c = Connection {
        user: UserId::parse(user).unwrap(),
        provider: ProviderName::parse(provider).unwrap(),
        region: None,
        partner_account_id: format!("acct-{user}"),
        access_token: SecretString::from("a".to_owned()),
        refresh_token: None,
        access_expires_at: None,
        scope: None,
        link_token_hash: None,
        first_poll_at: test_epoch(),
    };
    let actor = Actor { sub: user.to_owned(), role: "patient".into() };
    let source = app.store.connect(&actor, &c, test_epoch()).await.unwrap();
    // The connection's own clinic report is not what these tests look at.
    sqlx::query("DELETE FROM outbox").execute(&app.sql).await.unwrap();
    source.id
}

#[tokio::test]
async fn list_and_get_show_tidepool_fields_and_no_tokens() {
    let app = spawn_app().await;
    let id = seed_connected(&app, ALICE, "dexcom").await;
    let alice = app.patient_token(ALICE);
    let list: Vec<Value> = app
        .http
        .get(app.url(&format!("/v1/users/{ALICE}/data_sources")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["userId"], ALICE);
    assert_eq!(s["providerType"], "oauth");
    assert_eq!(s["providerName"], "dexcom");
    assert_eq!(s["state"], "connected");
    assert_eq!(s["createdTime"], "2026-03-07T12:00:00.000Z");
    assert_eq!(s["revision"], 1);
    assert!(s.get("accessToken").is_none() && !s.to_string().contains("acct-"));

    let one = app.http.get(app.url(&format!("/v1/data_sources/{id}"))).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(one.status(), StatusCode::OK);
    // Bob cannot see Alice's source by id: 404, not 403 (ids are not probeable).
    let bob = app.patient_token(BOB);
    let r = app.http.get(app.url(&format!("/v1/data_sources/{id}"))).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r =
        app.http.get(app.url("/v1/data_sources/0123456789abcdef01234567")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'read_data_sources' AND user_id = $1")
            .bind(ALICE)
            .fetch_one(&app.sql)
            .await
            .unwrap();
    assert_eq!(audited, 2, "each successful read is audited");
}

#[tokio::test]
async fn disconnect_deletes_tokens_and_schedule_reports_and_is_idempotent() {
    let app = spawn_app().await;
    let id = seed_connected(&app, ALICE, "dexcom").await;
    let alice = app.patient_token(ALICE);
    for _ in 0..2 {
        let r = app.http.delete(app.url("/v1/oauth/dexcom/authorize")).bearer_auth(&alice).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let source = app.store.get_data_source(&id).await.unwrap().unwrap();
    assert_eq!(source.state, DataSourceState::Disconnected);
    assert_eq!(source.revision, 2, "the second disconnect changed nothing");
    assert!(app.store.get_provider_session(&id).await.unwrap().is_none());
    let scheduled: i64 = sqlx::query_scalar("SELECT count(*) FROM poll_schedule").fetch_one(&app.sql).await.unwrap();
    assert_eq!(scheduled, 0);
    let reports: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE kind = 'clinic_report' AND user_id = $1")
        .bind(ALICE)
        .fetch_one(&app.sql)
        .await
        .unwrap();
    assert_eq!(reports, 1, "one clinic report queued in the same transaction");
    let audit: Vec<(String, String)> =
        sqlx::query_as("SELECT actor_role, action FROM audit_log WHERE action = 'disconnect'")
            .fetch_all(&app.sql)
            .await
            .unwrap();
    assert_eq!(audit, vec![("patient".to_owned(), "disconnect".to_owned())]);
    // The audit log is append-only.
    let tamper = sqlx::query("DELETE FROM audit_log").execute(&app.sql).await;
    assert!(tamper.is_err());
}
