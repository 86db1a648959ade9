//! The `tidepool` sink against the data-service stand-in over real HTTP: one data set per
//! source (a lost creation answer does not make a second), the stand-in holding exactly what the
//! local store holds (same origin ids, same bodies), through 5xx, 429, session expiry, refused
//! datums (named, or bisected when not), erasure, and a sink switched on over existing history.

use std::collections::BTreeMap;

use chrono::Duration;
use model::{Clock, DataSourceId, UserId};
use reqwest::StatusCode;
use sandbox::platform::PlatformFaults;
use serde_json::Value;
use tidegate_e2e::World;

use crate::connect::{ALICE, BOB, Browser, at_carelink, connect_dexcom, link, paste, start_carelink};
use crate::poll::{set_time, source_of};
use crate::workers::scalar;

const SINK: [(&str, &str); 3] = [
    ("TIDEGATE_SINKS__ENABLED", "local,tidepool"),
    // Short enough that a held answer times out in the test.
    ("TIDEGATE_SINKS__TIDEPOOL__TIMEOUT_SECS", "1"),
    // Several batches per backfill.
    ("TIDEGATE_SINKS__TIDEPOOL__BATCH", "500"),
];

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
    // (Hours until the faults were met: the odds are per request.)
    for round in 0.. {
        now += Duration::hours(1);
        set_time(&w, now);
        poll_both().await;
        drain(&w, &worker).await;
        now = w.app.clock.now();
        if round >= 1 && platform.counts().faults_injected > 0 || round == 8 {
            break;
        }
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

    // A record deleted at the partner before its delivery (the source's latest write): gone
    // here, never sent, and the delivery mark steps over it. Then one deleted after delivery:
    // deleted there too.
    now = w.app.clock.now() + Duration::hours(1);
    set_time(&w, now);
    poll_both().await;
    for when in ["before delivery", "after delivery"] {
        let (id, origin): (String, String) = sqlx::query_as(
            "SELECT id, body->'origin'->>'id' FROM datums WHERE data_source_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(alice.as_str())
        .fetch_one(&w.app.sql)
        .await
        .unwrap();
        let mut tx = w.app.store.begin().await.unwrap();
        let user = UserId::parse(ALICE).unwrap();
        let written = store::datums::write_batch(&mut tx, &user, &alice, &[], &[id], now).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(written.0.deleted, 1);
        store::outbox::enqueue_platform_delivery(&mut w.app.store.acquire().await.unwrap(), &user, now).await.unwrap();
        drain(&w, &worker).await;
        assert_equal(&w, ALICE, &alice).await;
        let held = platform_set(&w, ALICE, &alice).await;
        assert!(!held.data.contains_key(&origin), "{when}: the deleted datum is not at the platform");
    }
    assert!(platform.counts().datums_deleted >= 1);

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
    let mut reasons = Vec::new();
    for id in [&alice, &bob] {
        let rejected = w.app.store.rejections(id).await.unwrap();
        assert!(!rejected.is_empty(), "readings of two hours refused");
        assert!(rejected.iter().all(|(_, kind, reason)| kind == "cbg" && !reason.is_empty()), "{rejected:?}");
        reasons.extend(rejected.into_iter().map(|(_, _, reason)| reason));
    }
    // The platform's own words are kept: the datum's problem when it named it, its answer when
    // it did not (bisected down to the datum).
    assert!(reasons.iter().any(|r| r.contains("refused (injected)")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "data is not valid"), "{reasons:?}");
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

/// Every local datum of a source: (id, seq, in the default partition).
async fn rows_of(w: &World, id: &DataSourceId) -> Vec<(String, i64, bool)> {
    sqlx::query_as(
        "SELECT id, seq, tableoid = 'datums_default'::regclass FROM datums WHERE data_source_id = $1 ORDER BY seq",
    )
    .bind(id.as_str())
    .fetch_all(&w.app.sql)
    .await
    .unwrap()
}

#[tokio::test]
async fn retention_drops_delivered_datums_and_never_an_undelivered_one() {
    let w = tidegate_e2e::spawn_world(&SINK).await;
    let start = tidegate_e2e::test_epoch();
    set_time(&w, start);
    assert_eq!(connect_dexcom(&w, ALICE, "dexcom-001").await.status(), StatusCode::OK);
    let alice = source_of(&w, ALICE).await;
    let (poller, worker, platform) = (w.app.poller(), w.app.outbox_worker(), &w.sandbox.sim.platform);
    let mut now = start + Duration::minutes(3);
    set_time(&w, now);
    poller.poll(&alice, None, None).await.unwrap();
    // Weekly partitions over the backfill: the rows written before them move out of the default.
    let made = w.app.store.ensure_partitions(now - Duration::days(40), now + Duration::days(7), now).await.unwrap();
    assert!(made >= 6, "{made}");
    assert_eq!(w.app.store.default_partition_rows().await.unwrap(), 0);
    drain(&w, &worker).await;
    // An hour the platform refuses readings of, and an hour it is down for.
    platform.set_faults(PlatformFaults { reject_type: Some("cbg".into()), ..PlatformFaults::default() });
    now = w.app.clock.now() + Duration::hours(1);
    set_time(&w, now);
    poller.poll(&alice, None, None).await.unwrap();
    drain(&w, &worker).await;
    platform.set_faults(PlatformFaults { down: true, ..PlatformFaults::default() });
    now += Duration::hours(1);
    set_time(&w, now);
    poller.poll(&alice, None, None).await.unwrap();
    worker.deliver_due().await.unwrap();
    let rejected: Vec<String> = w.app.store.rejections(&alice).await.unwrap().into_iter().map(|(d, _, _)| d).collect();
    let source = scalar(&w, &format!("SELECT delivered_seq FROM data_sources WHERE id = '{}'", alice.as_str())).await;
    let before = rows_of(&w, &alice).await;
    let keep: Vec<String> = before
        .iter()
        .filter(|(id, seq, _)| *seq > source || rejected.contains(id))
        .map(|(id, ..)| id.clone())
        .collect();
    assert!(!rejected.is_empty() && keep.len() > rejected.len(), "refused and undelivered rows exist");

    // A retention window everything is older than: every partition goes, what was never
    // delivered stays (in the default partition).
    let pruned = w.app.store.prune_datums(now + Duration::days(14)).await.unwrap();
    assert!(pruned.partitions >= 6 && pruned.deferred == 0, "{pruned:?}");
    assert_eq!(pruned.kept as usize, keep.len(), "{pruned:?}");

    let after = rows_of(&w, &alice).await;
    let mut left: Vec<String> = after.iter().map(|(id, ..)| id.clone()).collect();
    let mut want = keep.clone();
    left.sort();
    want.sort();
    assert_eq!(left, want, "exactly the undelivered and refused rows are kept");
    assert!(after.iter().all(|(_, _, default)| *default));
    assert!(w.app.store.datum_partitions().await.unwrap().iter().all(|p| p.hi > now + Duration::days(14)));
    // What doctor reads: the refusals and the rows kept past retention.
    let h = w.app.store.delivery_health(now + Duration::days(14)).await.unwrap();
    assert_eq!(h.rejected.iter().map(|(_, n, _)| *n).sum::<i64>() as usize, rejected.len(), "{h:?}");
    assert_eq!(h.retained_undelivered as usize, keep.len(), "{h:?}");
    assert!(h.backlog_datums > 0 && h.oldest_undelivered.is_some(), "{h:?}");

    // Delivered at last, the backlog goes at the next prune; refused rows stay.
    platform.set_faults(PlatformFaults::default());
    drain(&w, &worker).await;
    let pruned = w.app.store.prune_datums(now + Duration::days(14)).await.unwrap();
    assert_eq!(pruned.default_rows as usize, keep.len() - rejected.len(), "{pruned:?}");
    let mut left: Vec<String> = rows_of(&w, &alice).await.into_iter().map(|(id, ..)| id).collect();
    left.sort();
    let mut refused = rejected.clone();
    refused.sort();
    assert_eq!(left, refused);

    // A prune that crashed between detaching a partition and dropping its files left it marked
    // detached: the next prune drops it (and its range can be made again).
    let cutoff = now + Duration::days(14);
    let ahead = cutoff + Duration::days(7);
    assert_eq!(w.app.store.ensure_partitions(ahead, ahead + Duration::hours(1), now).await.unwrap(), 1);
    let p = w.app.store.datum_partitions().await.unwrap().pop().expect("a partition ahead");
    assert!(p.lo > cutoff);
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE datums DETACH PARTITION {}", p.name)))
        .execute(&w.app.sql)
        .await
        .unwrap();
    sqlx::query("UPDATE datum_partitions SET detached_time = now() WHERE name = $1")
        .bind(&p.name)
        .execute(&w.app.sql)
        .await
        .unwrap();
    assert!(!w.app.store.datum_partitions().await.unwrap().contains(&p), "a detached partition is not listed");
    w.app.store.prune_datums(cutoff).await.unwrap();
    let exists = format!("SELECT count(*) FROM pg_class WHERE relname = '{}'", p.name);
    assert_eq!(scalar(&w, &exists).await, 0, "the detached partition was dropped");
    let registered = format!("SELECT count(*) FROM datum_partitions WHERE name = '{}'", p.name);
    assert_eq!(scalar(&w, &registered).await, 0);
    assert_eq!(w.app.store.ensure_partitions(p.lo, p.hi, now).await.unwrap(), 1, "its week can be made again");
}

#[tokio::test]
async fn the_delivery_mark_never_passes_a_stored_datum_it_did_not_send() {
    let w = tidegate_e2e::spawn_world(&SINK).await;
    let start = tidegate_e2e::test_epoch();
    set_time(&w, start);
    assert_eq!(connect_dexcom(&w, ALICE, "dexcom-001").await.status(), StatusCode::OK);
    let alice = source_of(&w, ALICE).await;
    set_time(&w, start + Duration::minutes(3));
    w.app.poller().poll(&alice, None, None).await.unwrap();
    let user = UserId::parse(ALICE).unwrap();
    let owner = uuid::Uuid::new_v4();
    let now = w.app.clock.now();
    let kind = store::outbox::Kind::PlatformData;
    let mut conn = w.app.sql.acquire().await.unwrap();
    assert!(
        store::outbox::acquire_lease(&mut conn, &user, kind, owner, now + Duration::minutes(1), now).await.unwrap()
    );
    let lease = store::delivery::Lease { user: &user, owner };
    let (first, last) = (
        scalar(&w, &format!("SELECT min(seq) FROM datums WHERE data_source_id = '{}'", alice.as_str())).await,
        scalar(&w, &format!("SELECT datum_seq FROM data_sources WHERE id = '{}'", alice.as_str())).await,
    );
    assert!(first < last);
    let skip = |unread_after| store::delivery::Advance {
        through: last,
        unread_after: Some(unread_after),
        delivered: &[],
        rejected: &[],
        timezone_offset: None,
        now,
    };
    use store::delivery::Advanced;
    // Stored rows lie between the read position and the mark: refused, nothing recorded.
    assert_eq!(w.app.store.advance_delivery(lease, &alice, &skip(first - 1)).await.unwrap(), Advanced::Unread);
    let mark_sql = format!("SELECT delivered_seq FROM data_sources WHERE id = '{}'", alice.as_str());
    assert_eq!(scalar(&w, &mark_sql).await, 0);
    // Past the last stored row there is nothing to pass over: moved.
    assert_eq!(w.app.store.advance_delivery(lease, &alice, &skip(last)).await.unwrap(), Advanced::Moved);
    assert_eq!(scalar(&w, &mark_sql).await, last);
    // Another deliverer's lease: nothing recorded, whatever the rows.
    let other = store::delivery::Lease { user: &user, owner: uuid::Uuid::new_v4() };
    assert_eq!(w.app.store.advance_delivery(other, &alice, &skip(first - 1)).await.unwrap(), Advanced::LeaseLost);
}

/// The local datum latest in time and its `timezoneOffset`.
async fn latest_offset(w: &World, id: &DataSourceId) -> i64 {
    scalar(
        w,
        &format!(
            "SELECT (body->>'timezoneOffset')::bigint FROM datums WHERE data_source_id = '{}' AND body ? 'timezoneOffset'
             ORDER BY time DESC LIMIT 1",
            id.as_str()
        ),
    )
    .await
}

#[tokio::test]
async fn the_data_sets_time_zone_offset_follows_the_latest_datum_even_after_a_failed_update() {
    let w = tidegate_e2e::spawn_world(&SINK).await;
    // dexcom-001 lives in New York: daylight saving time starts 19 hours after this.
    let start = tidegate_e2e::test_epoch();
    set_time(&w, start);
    assert_eq!(connect_dexcom(&w, ALICE, "dexcom-001").await.status(), StatusCode::OK);
    let alice = source_of(&w, ALICE).await;
    let (poller, worker, platform) = (w.app.poller(), w.app.outbox_worker(), &w.sandbox.sim.platform);
    set_time(&w, start + Duration::minutes(3));
    poller.poll(&alice, None, None).await.unwrap();
    drain(&w, &worker).await;
    assert_eq!(platform_set(&w, ALICE, &alice).await.set["timezoneOffset"], -300);
    assert_eq!(latest_offset(&w, &alice).await, -300);

    // Past the change, the update of the data set fails once: the readings it came with are
    // delivered again with it, so the set does not keep the old offset.
    set_time(&w, start + Duration::hours(21));
    poller.poll(&alice, None, None).await.unwrap();
    assert_eq!(latest_offset(&w, &alice).await, -240);
    platform.set_faults(PlatformFaults { fail_updates: true, ..PlatformFaults::default() });
    worker.deliver_due().await.unwrap();
    assert!(platform.counts().faults_injected > 0, "{:?}", platform.counts());
    assert_eq!(platform_set(&w, ALICE, &alice).await.set["timezoneOffset"], -300);
    platform.set_faults(PlatformFaults::default());
    drain(&w, &worker).await;
    assert_eq!(platform_set(&w, ALICE, &alice).await.set["timezoneOffset"], -240);
    assert_equal(&w, ALICE, &alice).await;
}
