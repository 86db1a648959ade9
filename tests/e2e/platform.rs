//! The `tidepool` sink against the data-service stand-in over real HTTP: one data set per
//! source (a lost creation answer does not make a second), the stand-in holding exactly what the
//! local store holds (same origin ids, same bodies), through 5xx, 429, session expiry, refused
//! datums (named, or bisected when not), erasure, and a sink switched on over existing history.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use model::{Clock, DataSourceId, UserId};
use reqwest::StatusCode;
use sandbox::platform::PlatformFaults;
use serde_json::Value;
use tidegate_e2e::World;

use crate::connect::{ALICE, BOB, Browser, at_carelink, connect_dexcom, link, paste, start_carelink};

const SINK: [(&str, &str); 3] = [
    ("TIDEGATE_SINKS__ENABLED", "local,tidepool"),
    // Short enough that a held answer times out in the test.
    ("TIDEGATE_SINKS__TIDEPOOL__TIMEOUT_SECS", "1"),
    // Several batches per backfill.
    ("TIDEGATE_SINKS__TIDEPOOL__BATCH", "500"),
];

fn set_time(w: &World, t: DateTime<Utc>) {
    w.app.clock.set(t);
    w.sandbox.sim.clock.set(t);
}

async fn source_of(w: &World, user: &str) -> DataSourceId {
    let sources = w.app.store.list_data_sources(&UserId::parse(user).unwrap()).await.unwrap();
    assert_eq!(sources.len(), 1);
    sources[0].id.clone()
}

async fn scalar(w: &World, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&w.app.sql).await.unwrap()
}

/// Deliver until no platform delivery is pending and no source has a backlog, moving both
/// clocks past backoffs (a Retry-After included). Returns the passes it took.
async fn drain(w: &World, worker: &scheduler::OutboxWorker) -> usize {
    for pass in 0..80 {
        worker.deliver_due().await.unwrap();
        let left = scalar(
            w,
            "SELECT (SELECT count(*) FROM outbox WHERE kind = 'platform_data' AND delivered_time IS NULL
                       AND parked_time IS NULL)
                  + (SELECT count(*) FROM data_sources WHERE datum_seq > delivered_seq)
                  + (SELECT count(*) FROM platform_deletions)",
        )
        .await;
        if left == 0 {
            return pass;
        }
        let t = w.app.clock.now() + Duration::minutes(2);
        set_time(w, t);
    }
    panic!("platform deliveries did not drain:\n{}", outbox_rows(w).await);
}

async fn outbox_rows(w: &World) -> String {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT format('#%s %s %s attempts %s available %s delivered %s: %s', id, user_id, kind, attempts,
                       available_at, delivered_time, coalesce(last_error, ''))
         FROM outbox WHERE kind = 'platform_data' ORDER BY id",
    )
    .fetch_all(&w.app.sql)
    .await
    .unwrap();
    rows.join("\n")
}

/// A source's local datums by origin id (full bodies, `origin.time` included).
async fn local(w: &World, id: &DataSourceId) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for d in w.app.store.datums_of_source(id).await.unwrap() {
        let origin = d.body["origin"]["id"].as_str().expect("origin.id").to_owned();
        assert!(out.insert(origin.clone(), d.body).is_none(), "origin id {origin} twice in one source");
    }
    out
}

/// The stand-in's data set for a source, checked against what our API says (`dataSetIds`).
async fn platform_set(w: &World, user: &str, id: &DataSourceId) -> sandbox::platform::HeldDataSet {
    let sets: Vec<(String, sandbox::platform::HeldDataSet)> =
        w.sandbox.sim.platform.data_sets().into_iter().filter(|(_, s)| s.user_id == user).collect();
    let source = w.app.store.get_data_source(id).await.unwrap().unwrap();
    let mine: Vec<&(String, sandbox::platform::HeldDataSet)> = sets
        .iter()
        .filter(|(_, s)| s.set["client"]["name"] == format!("org.tidepool.tidegate.{}", source.provider.as_str()))
        .collect();
    assert_eq!(mine.len(), 1, "one data set per source: {:?}", sets.iter().map(|(k, _)| k).collect::<Vec<_>>());
    let (set_id, held) = mine[0];
    let token = w.app.service_token();
    let view: Value = w
        .app
        .http
        .get(w.app.url(&format!("/v1/data_sources/{}", id.as_str())))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["dataSetIds"], serde_json::json!([set_id]), "{view}");
    assert_eq!(held.set["dataSetType"], "continuous");
    assert_eq!(held.set["deduplicator"]["name"], "org.tidepool.deduplicator.dataset.delete.origin.older");
    held.clone()
}

/// The stand-in holds exactly the local store, less what it refused.
async fn assert_equal(w: &World, user: &str, id: &DataSourceId) -> usize {
    let held = platform_set(w, user, id).await;
    let rejected: Vec<String> = w.app.store.rejections(id).await.unwrap().into_iter().map(|(d, _, _)| d).collect();
    let mine: BTreeMap<String, Value> =
        local(w, id).await.into_iter().filter(|(_, b)| !rejected.iter().any(|r| b["id"] == r.as_str())).collect();
    let missing: Vec<&String> = mine.keys().filter(|k| !held.data.contains_key(*k)).collect();
    let extra: Vec<&String> = held.data.keys().filter(|k| !mine.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{user}: {} missing (e.g. {:?}), {} extra (e.g. {:?})",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first()
    );
    for (k, v) in &mine {
        assert_eq!(&held.data[k], v, "{user}: datum {k} differs at the platform");
    }
    mine.len()
}

#[tokio::test]
async fn platform_delivery_holds_the_local_store_through_faults_rejections_and_erasure() {
    let w = tidegate_e2e::spawn_world(&SINK).await;
    let start = tidegate_e2e::test_epoch();
    set_time(&w, start);
    assert_eq!(connect_dexcom(&w, ALICE, "dexcom-001").await.status(), StatusCode::OK);
    let token = link(&w, BOB, "carelink").await;
    let mut b = Browser::new();
    let signin = start_carelink(&w, &mut b, &token).await;
    let pasted = at_carelink(&mut b, &signin, "carelink-001").await;
    assert_eq!(paste(&w, &mut b, &pasted).await.status(), StatusCode::OK);
    let (alice, bob) = (source_of(&w, ALICE).await, source_of(&w, BOB).await);
    let poller = w.app.poller();
    let worker = w.app.outbox_worker();
    let platform = &w.sandbox.sim.platform;
    let mut now = start + Duration::minutes(3);
    set_time(&w, now);
    let poll_both = || async {
        poller.poll(&alice, None, None).await.unwrap();
        poller.poll(&bob, None, None).await.unwrap();
    };
    poll_both().await;

    // The first delivery's answers are held past our timeout: the data sets are created but we
    // never hear so. The next attempt finds them by client name instead of making new ones.
    platform.set_faults(PlatformFaults { ack_delay_ms: 1_500, ..PlatformFaults::default() });
    worker.deliver_due().await.unwrap();
    assert!(platform.counts().data_sets_created >= 1, "{:?}", platform.counts());
    platform.set_faults(PlatformFaults::default());
    drain(&w, &worker).await;
    assert_eq!(platform.counts().data_sets_created, 2, "{:?}", platform.counts());
    let backfill = assert_equal(&w, ALICE, &alice).await;
    assert!(backfill > 1_000, "the Dexcom backfill went in batches: {backfill}");
    assert!(assert_equal(&w, BOB, &bob).await > 200);

    // Two hours of polls through 5xx and 429 + Retry-After.
    platform.set_faults(PlatformFaults {
        error_rate: 0.3,
        rate_limit_rate: 0.2,
        retry_after_secs: 60,
        ..PlatformFaults::default()
    });
    for _ in 0..2 {
        now += Duration::hours(1);
        set_time(&w, now);
        poll_both().await;
        drain(&w, &worker).await;
        now = w.app.clock.now();
    }
    assert!(platform.counts().faults_injected > 0);
    platform.set_faults(PlatformFaults::default());
    assert_equal(&w, ALICE, &alice).await;
    assert_equal(&w, BOB, &bob).await;

    // The session expires: one new login, nothing lost.
    let logins = platform.counts().logins;
    platform.expire_sessions();
    now += Duration::hours(1);
    set_time(&w, now);
    poll_both().await;
    drain(&w, &worker).await;
    assert_eq!(platform.counts().logins, logins + 1);
    assert_equal(&w, ALICE, &alice).await;

    // The platform refuses readings (naming them, then without naming them: bisected): those
    // are recorded as rejected with the reason, the rest is delivered, nothing retries forever.
    for without_pointer in [false, true] {
        platform.set_faults(PlatformFaults {
            reject_type: Some("cbg".into()),
            reject_without_pointer: without_pointer,
            ..PlatformFaults::default()
        });
        let refused_before = platform.counts().refused_requests;
        now = w.app.clock.now() + Duration::hours(1);
        set_time(&w, now);
        poll_both().await;
        let passes = drain(&w, &worker).await;
        assert!(passes <= 2, "refusals are not retried: {passes} passes");
        assert!(platform.counts().refused_requests > refused_before);
    }
    platform.set_faults(PlatformFaults::default());
    for id in [&alice, &bob] {
        let rejected = w.app.store.rejections(id).await.unwrap();
        assert!(rejected.len() >= 4, "readings of two hours refused: {rejected:?}");
        assert!(rejected.iter().all(|(_, kind, reason)| kind == "cbg" && !reason.is_empty()), "{rejected:?}");
        assert!(
            rejected.iter().any(|(_, _, reason)| reason.contains("refused")),
            "the platform's reason is kept: {rejected:?}"
        );
    }
    // Everything else of those hours arrived (CareLink: boluses, basal doses, pump status).
    assert_equal(&w, ALICE, &alice).await;
    assert_equal(&w, BOB, &bob).await;
    assert_eq!(
        scalar(&w, "SELECT count(*) FROM outbox WHERE kind = 'platform_data' AND parked_time IS NOT NULL").await,
        0
    );

    // Erasure here is erasure there: Bob's data set is deleted, and his next poll starts a new one.
    let r = w
        .app
        .http
        .delete(w.app.url(&format!("/v1/users/{BOB}/data")))
        .bearer_auth(w.app.service_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drain(&w, &worker).await;
    assert_eq!(platform.counts().data_sets_deleted, 1);
    assert!(w.sandbox.sim.platform.data_sets().values().all(|s| s.user_id != BOB));
    now = w.app.clock.now() + Duration::hours(1);
    set_time(&w, now);
    poll_both().await;
    drain(&w, &worker).await;
    assert!(assert_equal(&w, BOB, &bob).await > 0);
    assert_equal(&w, ALICE, &alice).await;
}
