//! The store's intent methods a poll is made of, each one transaction, against a real Postgres:
//! recording a poll (fenced on the schedule's lease) and refreshing tokens under the refresh
//! lease.

use std::time::Duration as StdDuration;

use chrono::Duration;
use model::{ProviderName, UserId};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use store::audit::Actor;
use store::datums::{NewDatum, Written};
use store::lifecycle::Connection;
use store::polls::{PollResult, Recorded};
use store::provider_sessions::{RefreshClaim, Refreshed};
use tidegate_e2e::{TestApp, spawn_app, test_epoch};
use uuid::Uuid;

const ALICE: &str = "0123456789";

async fn connected(app: &TestApp) -> model::DataSourceId {
    let c = Connection {
        user: UserId::parse(ALICE).unwrap(),
        provider: ProviderName::parse("dexcom").unwrap(),
        region: Some("us".into()),
        partner_account_id: "acct-alice".into(),
        access_token: SecretString::from("access-1".to_owned()),
        refresh_token: Some(SecretString::from("refresh-1".to_owned())),
        access_expires_at: Some(test_epoch()),
        scope: None,
        link_token_hash: None,
        first_poll_at: test_epoch(),
    };
    let actor = Actor { sub: ALICE.into(), role: "patient".into() };
    app.store.connect(&actor, &c, test_epoch()).await.unwrap().id
}

fn datum(id: &str, minutes: i64, value: f64) -> NewDatum {
    let id = format!("{id:0>32}");
    let time = test_epoch() + Duration::minutes(minutes);
    NewDatum {
        id: id.clone(),
        time,
        kind: "cbg".into(),
        body: json!({"id": id, "type": "cbg", "units": "mg/dL", "value": value, "time": model::time::format(&time)}),
    }
}

async fn scalar<T>(app: &TestApp, sql: &'static str) -> T
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    sqlx::query_scalar(sql).fetch_one(&app.sql).await.unwrap()
}

#[tokio::test]
async fn a_poll_is_recorded_once_under_its_lease_and_not_at_all_after_losing_it() {
    let app = spawn_app().await;
    let id = connected(&app).await;
    let user = UserId::parse(ALICE).unwrap();
    sqlx::query("DELETE FROM outbox").execute(&app.sql).await.unwrap();
    let now = test_epoch() + Duration::hours(1);
    let owner = Uuid::new_v4();
    let mut conn = app.store.acquire().await.unwrap();
    let claimed =
        store::poll_schedule::claim(&mut conn, owner, "dexcom", now, now + Duration::minutes(10), 8).await.unwrap();
    drop(conn);
    assert_eq!(claimed.len(), 1, "the new source is due");

    let datums = [datum("a", 0, 120.0), datum("b", 5, 121.0)];
    let cursor = json!({"fetchedUntil": "2026-03-07T13:00:00Z"});
    let skipped = json!({"total": 1});
    let next = now + Duration::minutes(50);
    let result = PollResult {
        source: &id,
        user: &user,
        lease: Some(owner),
        cursor: &cursor,
        skipped: Some(&skipped),
        next_run_at: Some((next, "regular")),
        datums: &datums,
        removed: &[],
        now,
    };
    let first = app.store.record_poll(&result).await.unwrap();
    assert_eq!(first, Recorded::Written { written: Written { inserted: 2, ..Written::default() }, reported: true });
    let (stored_cursor, lease, next_run_at): (Value, Option<Uuid>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT cursor, lease_owner, next_run_at FROM poll_schedule").fetch_one(&app.sql).await.unwrap();
    assert_eq!((stored_cursor, lease, next_run_at), (cursor.clone(), None, next), "cursor moved, lease released");
    assert_eq!(scalar::<i64>(&app, "SELECT count(*) FROM datums").await, 2);
    assert_eq!(scalar::<i64>(&app, "SELECT count(*) FROM outbox WHERE kind = 'clinic_report'").await, 1);

    // The same records again (a retry without a lease, nobody holding one): nothing new, no report.
    let again = PollResult { lease: None, next_run_at: None, ..result };
    assert_eq!(
        app.store.record_poll(&again).await.unwrap(),
        Recorded::Written { written: Written { unchanged: 2, ..Written::default() }, reported: false }
    );

    // Someone else holds the lease: a poll under another lease writes nothing at all.
    let mut conn = app.store.acquire().await.unwrap();
    sqlx::query("UPDATE poll_schedule SET next_run_at = $1").bind(now).execute(&mut *conn).await.unwrap();
    let other = Uuid::new_v4();
    store::poll_schedule::claim(&mut conn, other, "dexcom", now, now + Duration::minutes(10), 8).await.unwrap();
    drop(conn);
    let late = [datum("c", 10, 122.0)];
    let lost = PollResult { lease: Some(owner), datums: &late, cursor: &json!({"stale": true}), ..result };
    assert_eq!(app.store.record_poll(&lost).await.unwrap(), Recorded::LeaseLost);
    let (stored_cursor, lease): (Value, Option<Uuid>) =
        sqlx::query_as("SELECT cursor, lease_owner FROM poll_schedule").fetch_one(&app.sql).await.unwrap();
    assert_eq!((stored_cursor, lease), (cursor.clone(), Some(other)), "the holder's lease and cursor untouched");
    assert_eq!(scalar::<i64>(&app, "SELECT count(*) FROM datums").await, 2, "the lost poll's datum not written");
    // And without a lease while someone holds one: also nothing.
    assert_eq!(app.store.record_poll(&PollResult { lease: None, ..lost }).await.unwrap(), Recorded::LeaseLost);
}

#[tokio::test]
async fn one_token_refresh_at_a_time_and_everyone_else_uses_its_tokens() {
    let app = spawn_app().await;
    let id = connected(&app).await;
    let seen = app.store.get_provider_session(&id).await.unwrap().unwrap();
    let lease = StdDuration::from_secs(30);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());

    let RefreshClaim::Claimed(current) = app.store.claim_refresh(&seen, a, lease).await.unwrap() else {
        panic!("the first claimer takes the lease");
    };
    assert_eq!(current.refresh_token.as_ref().unwrap().expose_secret(), "refresh-1");
    assert!(matches!(app.store.claim_refresh(&seen, b, lease).await.unwrap(), RefreshClaim::InFlight));
    assert!(matches!(app.store.claim_refresh(&seen, a, lease).await.unwrap(), RefreshClaim::Claimed(_)), "re-entrant");

    let refreshed = Refreshed {
        access_token: SecretString::from("access-2".to_owned()),
        refresh_token: Some(SecretString::from("refresh-2".to_owned())),
        access_expires_at: Some(test_epoch() + Duration::hours(2)),
        scope: None,
    };
    let now = test_epoch() + Duration::minutes(1);
    let stored = app.store.finish_refresh(&id, a, &refreshed, now).await.unwrap().unwrap();
    assert_eq!(stored.access_token.expose_secret(), "access-2");
    assert_eq!(stored.refresh_token.as_ref().unwrap().expose_secret(), "refresh-2");
    // b read the old tokens: it is handed the new ones, and makes no partner call.
    let RefreshClaim::Changed(used) = app.store.claim_refresh(&seen, b, lease).await.unwrap() else {
        panic!("the old tokens changed");
    };
    assert_eq!(used.access_token.expose_secret(), "access-2");
    let owner: Option<Uuid> =
        sqlx::query_scalar("SELECT refresh_owner FROM provider_sessions").fetch_one(&app.sql).await.unwrap();
    assert_eq!(owner, None, "finishing gave the lease back");

    // A refused refresh gives the lease back for the next one.
    assert!(matches!(app.store.claim_refresh(&stored, b, lease).await.unwrap(), RefreshClaim::Claimed(_)));
    app.store.abandon_refresh(&id, b).await.unwrap();
    assert!(matches!(
        app.store.claim_refresh(&stored, a, StdDuration::from_secs(1)).await.unwrap(),
        RefreshClaim::Claimed(_)
    ));
    // A holder that dies lets the next caller in when its lease runs out (the database's clock).
    assert!(matches!(app.store.claim_refresh(&stored, b, lease).await.unwrap(), RefreshClaim::InFlight));
    tokio::time::sleep(StdDuration::from_millis(1200)).await;
    assert!(matches!(app.store.claim_refresh(&stored, b, lease).await.unwrap(), RefreshClaim::Claimed(_)));
    // Disconnected meanwhile: gone.
    sqlx::query("DELETE FROM provider_sessions").execute(&app.sql).await.unwrap();
    assert!(matches!(app.store.claim_refresh(&stored, a, lease).await.unwrap(), RefreshClaim::Gone));
    assert!(app.store.finish_refresh(&id, b, &refreshed, now).await.unwrap().is_none());
}
