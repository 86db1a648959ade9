//! The poll worker in one process against the simulator, with the clock in the test's hand:
//! claims and intervals, blackouts across DST, transient failures and Retry-After, confirmed
//! auth failures, maintenance-window auth errors, the circuit breaker, shutdown, and the
//! one-refresh-at-a-time rule.

use chrono::{DateTime, Duration, Utc};
use model::{Clock, DataSourceId, DataSourceState, UserId};
use reqwest::StatusCode;
use sandbox::faults::{Faults, Maintenance, MaintenanceMode};
use serde_json::Value;
use tidegate_e2e::World;
use tokio::task::JoinSet;

use crate::connect::{ALICE, BOB, Browser, at_carelink, connect_dexcom, link, paste, source_state, start_carelink};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn set_time(w: &World, at: DateTime<Utc>) {
    w.app.clock.set(at);
    w.sandbox.sim.clock.set(at);
}

/// One claim pass, waiting for the polls it started. Returns how many started.
async fn pass(worker: &scheduler::PollWorker) -> usize {
    let mut set = JoinSet::new();
    let n = worker.claim_and_start(&mut set).await.unwrap();
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    n
}

async fn source(w: &World, user: &str) -> DataSourceId {
    w.app.store.list_data_sources(&UserId::parse(user).unwrap()).await.unwrap()[0].id.clone()
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    next_run_at: DateTime<Utc>,
    next_kind: String,
    attempts: i32,
    auth_failures: i32,
    paused: bool,
    lease_owner: Option<uuid::Uuid>,
    last_error: Option<String>,
}

async fn schedule(w: &World, id: &DataSourceId) -> Row {
    sqlx::query_as(
        "SELECT next_run_at, next_kind, attempts, auth_failures, paused, lease_owner, last_error FROM poll_schedule WHERE data_source_id = $1",
    )
    .bind(id.as_str())
    .fetch_one(&w.app.sql)
    .await
    .unwrap()
}

async fn runs(w: &World, id: &DataSourceId) -> Vec<(String, DateTime<Utc>)> {
    sqlx::query_as("SELECT outcome, started_at FROM poll_runs WHERE data_source_id = $1 ORDER BY id")
        .bind(id.as_str())
        .fetch_all(&w.app.sql)
        .await
        .unwrap()
}

async fn invariants_hold(w: &World) {
    let v = store::lifecycle::check_invariants(&w.app.store).await.unwrap();
    assert!(v.is_empty(), "{v:?}");
}

/// Connect Alice's Dexcom at the epoch and run its first poll.
async fn connected(w: &World, user: &str, login: &str) -> DataSourceId {
    set_time(w, tidegate_e2e::test_epoch());
    assert_eq!(connect_dexcom(w, user, login).await.status(), StatusCode::OK);
    source(w, user).await
}

#[tokio::test]
async fn due_polls_run_once_and_the_next_is_45_to_75_minutes_later() {
    let w = tidegate_e2e::spawn_world(&[]).await;
    let id = connected(&w, ALICE, "dexcom-001").await;
    let worker = w.app.poll_worker();
    let first = schedule(&w, &id).await;
    assert_eq!(first.next_kind, "first");
    assert!(first.next_run_at - tidegate_e2e::test_epoch() <= Duration::seconds(60), "first poll within a minute");
    assert_eq!(pass(&worker).await, 0, "not due yet");
    let at = first.next_run_at;
    set_time(&w, at);
    assert_eq!(pass(&worker).await, 1);
    assert_eq!(pass(&worker).await, 0, "claimed once");
    let s = schedule(&w, &id).await;
    assert_eq!((s.next_kind.as_str(), s.attempts, s.lease_owner), ("regular", 0, None));
    let gap = s.next_run_at - at;
    assert!(gap >= Duration::minutes(45) && gap <= Duration::minutes(75), "{gap}");
    assert_eq!(runs(&w, &id).await, vec![("success".to_owned(), at)]);
    assert!(w.app.store.datums_of_source(&id).await.unwrap().len() > 1000);
    invariants_hold(&w).await;
}

#[tokio::test]
async fn no_poll_starts_inside_the_blackout_on_the_spring_forward_day() {
    let w = tidegate_e2e::spawn_world(&[]).await;
    let id = connected(&w, ALICE, "dexcom-001").await;
    let worker = w.app.poll_worker();
    // 2026-03-08 is the spring-forward day in Los Angeles: 02:45 does not exist, the window is
    // 03:00–03:45 PDT = 10:00–10:45 UTC.
    sqlx::query("UPDATE poll_schedule SET next_run_at = $2 WHERE data_source_id = $1")
        .bind(id.as_str())
        .bind(t("2026-03-08T09:58:00Z"))
        .execute(&w.app.sql)
        .await
        .unwrap();
    set_time(&w, t("2026-03-08T10:05:00Z"));
    assert_eq!(pass(&worker).await, 0, "inside the window");
    let s = schedule(&w, &id).await;
    assert_eq!(s.next_kind, "blackout");
    assert!(
        s.next_run_at >= t("2026-03-08T10:45:00Z") && s.next_run_at < t("2026-03-08T11:16:00Z"),
        "{}",
        s.next_run_at
    );
    set_time(&w, t("2026-03-08T10:44:59Z"));
    assert_eq!(pass(&worker).await, 0);
    set_time(&w, s.next_run_at);
    assert_eq!(pass(&worker).await, 1, "polled after the window");
    assert!(runs(&w, &id).await.iter().all(|(_, at)| *at >= t("2026-03-08T10:45:00Z")));
}

#[tokio::test]
async fn transient_failures_back_off_retry_after_wins_and_the_state_stays_connected() {
    let w = tidegate_e2e::spawn_world(&[]).await;
    let id = connected(&w, ALICE, "dexcom-001").await;
    let worker = w.app.poll_worker();
    w.sandbox.sim.faults.set_account("dexcom-001", Faults { error_rate: 1.0, ..Faults::default() });
    let mut at = schedule(&w, &id).await.next_run_at;
    let mut delays = Vec::new();
    for attempt in 1..=4 {
        set_time(&w, at);
        assert_eq!(pass(&worker).await, 1);
        let s = schedule(&w, &id).await;
        assert_eq!((s.attempts, s.next_kind.as_str(), s.auth_failures), (attempt, "backoff", 0));
        assert!(s.last_error.as_deref().unwrap_or_default().contains("unavailable"), "{:?}", s.last_error);
        delays.push(s.next_run_at - at);
        at = s.next_run_at;
    }
    // Doubling with jitter: attempt n waits between base·2^(n-1)/2 and base·2^(n-1) (base 60 s).
    for (n, d) in delays.iter().enumerate() {
        let full = 60 * (1 << n);
        assert!(d.num_seconds() >= full / 2 && d.num_seconds() <= full, "attempt {}: {d}", n + 1);
    }
    assert_eq!(source_state(&w, ALICE, "dexcom").await, Some(DataSourceState::Connected));
    let src = w.app.store.get_data_source(&id).await.unwrap().unwrap();
    assert!(src.error.is_none(), "transient trouble is never the source's error");
    // A 429 with Retry-After: the partner's word wins.
    w.sandbox.sim.faults.set_account(
        "dexcom-001",
        Faults {
            rate_limit: Some(sandbox::faults::RateLimitBurst { count: 1, retry_after_secs: 900 }),
            ..Faults::default()
        },
    );
    set_time(&w, at);
    pass(&worker).await;
    let s = schedule(&w, &id).await;
    assert_eq!((s.next_kind.as_str(), s.next_run_at - at), ("retry_after", Duration::seconds(900)));
    // Recovered: attempts reset, a regular interval.
    set_time(&w, s.next_run_at);
    pass(&worker).await;
    let s = schedule(&w, &id).await;
    assert_eq!((s.attempts, s.next_kind.as_str(), s.last_error), (0, "regular", None));
    invariants_hold(&w).await;
}

#[tokio::test]
async fn a_revoked_grant_is_confirmed_after_four_failures_and_the_patient_is_asked_to_reconnect() {
    let w = tidegate_e2e::spawn_world(&[]).await;
    let r = w
        .app
        .http
        .post(w.sandbox.url("/admin/clinic/patients"))
        .json(&serde_json::json!({"clinicId": "5f1e8a0b9c7d6e5f4a3b2c1d", "userId": ALICE, "email": "alice@patients.test"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let id = connected(&w, ALICE, "dexcom-001").await;
    let worker = w.app.poll_worker();
    let outbox = w.app.outbox_worker();
    set_time(&w, schedule(&w, &id).await.next_run_at);
    assert_eq!(pass(&worker).await, 1, "a first, successful poll");
    outbox.deliver_due().await.unwrap();
    let r = w.app.http.post(w.sandbox.url("/admin/people/dexcom-001/revoke")).send().await.unwrap();
    assert!(r.status().is_success());
    // The next poll is 45–75 minutes on, after 04:45 in Los Angeles: clear of Dexcom's
    // maintenance window (auth errors within 30 minutes of it count as transient).
    let mut at = schedule(&w, &id).await.next_run_at;
    assert!(at >= tidegate_e2e::test_epoch() + Duration::minutes(45));
    let mut gaps = Vec::new();
    for failure in 1..=3 {
        set_time(&w, at);
        assert_eq!(pass(&worker).await, 1);
        let s = schedule(&w, &id).await;
        assert_eq!((s.auth_failures, s.next_kind.as_str(), s.paused), (failure, "auth_backoff", false));
        assert_eq!(source_state(&w, ALICE, "dexcom").await, Some(DataSourceState::Connected), "not confirmed yet");
        gaps.push((s.next_run_at - at).num_minutes());
        at = s.next_run_at;
    }
    // Tidepool's 2, 4, 8 h (plus up to 5 % jitter).
    assert!(
        (120..=126).contains(&gaps[0]) && (240..=252).contains(&gaps[1]) && (480..=504).contains(&gaps[2]),
        "{gaps:?}"
    );
    set_time(&w, at);
    assert_eq!(pass(&worker).await, 1);
    assert_eq!(source_state(&w, ALICE, "dexcom").await, Some(DataSourceState::Error));
    let src = w.app.store.get_data_source(&id).await.unwrap().unwrap();
    assert_eq!(src.error.unwrap().code, "authorization_revoked");
    assert!(schedule(&w, &id).await.paused);
    let kinds: Vec<Value> =
        sqlx::query_scalar("SELECT payload->'kind' FROM outbox WHERE user_id = $1 AND kind = 'patient_message'")
            .bind(ALICE)
            .fetch_all(&w.app.sql)
            .await
            .unwrap();
    assert_eq!(kinds, vec![Value::from("reconnect_needed")]);
    assert_eq!(runs(&w, &id).await.last().unwrap().0, "confirmed");
    // The clinic saw the source connected, then in error (never anything in between).
    outbox.deliver_due().await.unwrap();
    let received: Value =
        w.app.http.get(w.sandbox.url("/admin/clinic/requests")).send().await.unwrap().json().await.unwrap();
    let states: Vec<String> = received["received"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["userId"] == ALICE && r["status"] == 200)
        .map(|r| r["body"][0]["state"].as_str().unwrap().to_owned())
        .collect();
    let mut settled = states.clone();
    settled.dedup();
    assert_eq!(settled, vec!["connected", "error"], "{states:?}");
    // Paused: nothing more is claimed.
    set_time(&w, at + Duration::days(1));
    assert_eq!(pass(&worker).await, 0);
    invariants_hold(&w).await;
}

#[tokio::test]
async fn auth_errors_just_after_the_maintenance_window_are_transient() {
    let w = tidegate_e2e::spawn_world(&[]).await;
    let id = connected(&w, ALICE, "dexcom-001").await;
    let worker = w.app.poll_worker();
    // The partner's maintenance overruns ours: refreshes fail with invalid_grant until 04:30 LA.
    w.sandbox.sim.faults.set_account(
        "dexcom-001",
        Faults {
            maintenance: Some(Maintenance {
                start: "02:45".into(),
                end: "04:30".into(),
                time_zone: "America/Los_Angeles".into(),
                mode: MaintenanceMode::InvalidGrant,
            }),
            ..Faults::default()
        },
    );
    // The access token has expired: the poll must refresh (at 04:01 PST, 16 min after our window).
    sqlx::query("UPDATE provider_sessions SET access_expires_at = $2 WHERE data_source_id = $1")
        .bind(id.as_str())
        .bind(tidegate_e2e::test_epoch() - Duration::hours(1))
        .execute(&w.app.sql)
        .await
        .unwrap();
    set_time(&w, schedule(&w, &id).await.next_run_at);
    assert_eq!(pass(&worker).await, 1);
    let s = schedule(&w, &id).await;
    assert_eq!((s.attempts, s.auth_failures, s.next_kind.as_str()), (1, 0, "backoff"), "{:?}", s.last_error);
    assert_eq!(source_state(&w, ALICE, "dexcom").await, Some(DataSourceState::Connected));
}

#[tokio::test]
async fn a_failing_partner_trips_its_breaker_without_slowing_another() {
    let w = tidegate_e2e::spawn_world(&[("TIDEGATE_WORKER__BREAKER_THRESHOLD", "2")]).await;
    let alice = connected(&w, ALICE, "dexcom-001").await;
    let bob = connected(&w, BOB, "dexcom-002").await;
    let carol = "fedcba9876";
    assert_eq!(connect_dexcom(&w, carol, "dexcom-003").await.status(), StatusCode::OK);
    let dave = "0a1b2c3d4e";
    let token = link(&w, dave, "carelink").await;
    let mut b = Browser::new();
    let signin = start_carelink(&w, &mut b, &token).await;
    let pasted = at_carelink(&mut b, &signin, "carelink-001").await;
    assert_eq!(paste(&w, &mut b, &pasted).await.status(), StatusCode::OK);
    let worker = w.app.poll_worker();
    for login in ["dexcom-001", "dexcom-002", "dexcom-003"] {
        w.sandbox.sim.faults.set_account(login, Faults { error_rate: 1.0, ..Faults::default() });
    }
    let at = tidegate_e2e::test_epoch() + Duration::minutes(2);
    set_time(&w, at);
    pass(&worker).await;
    // After two failures the circuit opens: the third Dexcom source waits; CareLink is polled.
    let outcomes: Vec<(String, String)> =
        sqlx::query_as("SELECT provider, outcome FROM poll_runs ORDER BY id").fetch_all(&w.app.sql).await.unwrap();
    assert!(outcomes.contains(&("carelink".into(), "success".into())), "{outcomes:?}");
    let dexcom_polls = outcomes.iter().filter(|(p, _)| p == "dexcom").count();
    assert!(dexcom_polls >= 2, "{outcomes:?}");
    set_time(&w, at + Duration::seconds(10));
    pass(&worker).await;
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT next_kind FROM poll_schedule WHERE provider = 'dexcom' ORDER BY data_source_id")
            .fetch_all(&w.app.sql)
            .await
            .unwrap();
    assert!(kinds.iter().any(|k| k == "breaker" || k == "backoff"), "{kinds:?}");
    let polled_while_open: i64 = sqlx::query_scalar("SELECT count(*) FROM poll_runs WHERE provider = 'dexcom'")
        .fetch_one(&w.app.sql)
        .await
        .unwrap();
    assert_eq!(polled_while_open as usize, dexcom_polls, "nothing spent on an open circuit");
    // The partner recovers: after the cool-down one probe, then everyone.
    w.sandbox.sim.faults.clear();
    for step in 1..=20 {
        set_time(&w, at + Duration::minutes(2 * step));
        pass(&worker).await;
    }
    for id in [&alice, &bob] {
        assert_eq!(schedule(&w, id).await.attempts, 0, "recovered");
    }
    invariants_hold(&w).await;
}

#[tokio::test]
async fn shutdown_stops_claiming_and_gives_leases_back() {
    let w = tidegate_e2e::spawn_world(&[("TIDEGATE_WORKER__SHUTDOWN_GRACE_SECS", "1")]).await;
    let id = connected(&w, ALICE, "dexcom-001").await;
    // Every partner answer hangs far past the grace period.
    w.sandbox.sim.faults.set_account("dexcom-001", Faults { hang_ms: 60_000, ..Faults::default() });
    let at = schedule(&w, &id).await.next_run_at;
    set_time(&w, at);
    let worker = w.app.poll_worker();
    let owner = worker.owner();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(worker.run(rx));
    for _ in 0..100 {
        if schedule(&w, &id).await.lease_owner == Some(owner) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(schedule(&w, &id).await.lease_owner, Some(owner), "claimed");
    tx.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), task).await.expect("stops within the grace").unwrap();
    let s = schedule(&w, &id).await;
    assert_eq!((s.lease_owner, s.next_run_at, s.next_kind.as_str()), (None, w.app.clock.now(), "released"));
}

#[tokio::test]
async fn concurrent_polls_of_one_source_refresh_its_token_once() {
    let w = tidegate_e2e::spawn_world(&[]).await;
    let id = connected(&w, ALICE, "dexcom-001").await;
    sqlx::query("UPDATE provider_sessions SET access_expires_at = $2 WHERE data_source_id = $1")
        .bind(id.as_str())
        .bind(tidegate_e2e::test_epoch() - Duration::minutes(1))
        .execute(&w.app.sql)
        .await
        .unwrap();
    let before: u64 = w.sandbox.sim.dexcom_auth.iter().map(|(_, a)| a.refresh_count()).sum();
    let (a, b) = (w.app.poller(), w.app.poller());
    let (ra, rb) = tokio::join!(a.poll(&id, None, None), b.poll(&id, None, None));
    let after: u64 = w.sandbox.sim.dexcom_auth.iter().map(|(_, a)| a.refresh_count()).sum();
    assert_eq!(after - before, 1, "one refresh reached the partner");
    // Both polls succeed with the fresh tokens: each either waited for the one refresh (and
    // took its result) or, when it read the session after that refresh committed, found the
    // token fresh already. How they interleave is up to the scheduler.
    let (ra, rb) = (ra.expect("poll a succeeds"), rb.expect("poll b succeeds"));
    assert!(ra.refreshed || rb.refreshed, "a refresh happened");
    let s = w.app.store.get_provider_session(&id).await.unwrap().unwrap();
    assert!(s.access_expires_at.unwrap() > tidegate_e2e::test_epoch());
}

#[tokio::test]
async fn a_budget_below_demand_stretches_intervals_evenly_and_is_never_exceeded() {
    const SOURCES: usize = 40;
    const BUDGET: u64 = 100;
    let w = tidegate_e2e::spawn_world_with(
        sandbox::SandboxConfig {
            dexcom_people: SOURCES,
            carelink_people: 0,
            dexcom_budget_per_hour: Some(BUDGET),
            history_days: 0,
            ..Default::default()
        },
        &[("TIDEGATE_PARTNERS__DEXCOM__SCHEDULE__CALLS_PER_HOUR", "100"), ("TIDEGATE_POLL__LOOK_BACK_MINUTES", "60")],
    )
    .await;
    let start = tidegate_e2e::test_epoch();
    set_time(&w, start);
    for i in 0..SOURCES {
        let user = format!("{:010x}", 0x20_0000_0000_u64 + i as u64);
        assert_eq!(connect_dexcom(&w, &user, &format!("dexcom-{:03}", i + 1)).await.status(), StatusCode::OK);
    }
    let worker = w.app.poll_worker();
    let mut at = start;
    let end = start + Duration::hours(8);
    while at < end {
        at += Duration::minutes(1);
        set_time(&w, at);
        worker.upkeep().await;
        pass(&worker).await;
    }
    let budget: Value =
        w.app.http.get(w.sandbox.url("/admin/dexcom/budget")).send().await.unwrap().json().await.unwrap();
    let calls: i64 = sqlx::query_scalar("SELECT COALESCE(sum(calls), 0)::bigint FROM poll_runs")
        .fetch_one(&w.app.sql)
        .await
        .unwrap();
    let refused = budget["refused"].as_u64().unwrap();
    assert!(calls > 400, "{calls} calls");
    assert!((refused as f64) < calls as f64 * 0.01, "{refused} of {calls} calls answered 429");
    // Never more reserved than the hour allows.
    let peak: i64 =
        sqlx::query_scalar("SELECT COALESCE(max(calls), 0) FROM partner_budget").fetch_one(&w.app.sql).await.unwrap();
    assert!(peak <= BUDGET as i64, "{peak}");
    let stretch = worker.stretch_factor("dexcom");
    assert!(stretch > 1.2, "the population exceeds the budget: stretch {stretch}");
    // Evenly: after the first hours, every source is polled about as often as every other.
    let counts: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM poll_runs WHERE started_at >= $1 AND outcome = 'success' GROUP BY data_source_id",
    )
    .bind(start + Duration::hours(3))
    .fetch_all(&w.app.sql)
    .await
    .unwrap();
    assert_eq!(counts.len(), SOURCES, "every source kept being polled");
    let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(hi - lo <= 2, "uneven: {lo}..{hi}");
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT next_kind FROM poll_runs WHERE started_at >= $1 AND outcome = 'success'")
            .bind(start + Duration::hours(3))
            .fetch_all(&w.app.sql)
            .await
            .unwrap();
    assert!(kinds.iter().all(|k| k == "stretched" || k == "blackout" || k == "budget"), "{kinds:?}");
    invariants_hold(&w).await;
}

/// Every connection the polls may hold stays busy past the wait: the poll ends `pool_busy` —
/// not "database unavailable" — in the history, the metrics and the dashboard, keeps its attempts,
/// and is polled normally once connections free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_that_waits_too_long_for_a_connection_is_pool_busy_not_unavailable() {
    let w = tidegate_e2e::spawn_world(&[
        ("TIDEGATE_WORKER__POLL_CONNECTIONS", "1"),
        ("TIDEGATE_WORKER__CONNECTION_WAIT_SECS", "1"),
    ])
    .await;
    let id = connected(&w, ALICE, "dexcom-001").await;
    let worker = w.app.poll_worker();
    let due = schedule(&w, &id).await.next_run_at;
    set_time(&w, due);
    // Hold the polls' only connection for 1.5 s: the poll's first database phase waits 1 s and
    // gives up; recording the outcome then gets the connection.
    let held = worker.poll_store().acquire().await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        drop(held);
    });
    assert_eq!(pass(&worker).await, 1);
    release.await.unwrap();
    let error: Option<String> =
        sqlx::query_scalar("SELECT error FROM poll_runs WHERE data_source_id = $1 AND outcome = 'pool_busy'")
            .bind(id.as_str())
            .fetch_optional(&w.app.sql)
            .await
            .unwrap()
            .flatten();
    assert_eq!(error.as_deref(), Some("database pool busy"), "{:?}", runs(&w, &id).await);
    let s = schedule(&w, &id).await;
    assert_eq!((s.next_kind.as_str(), s.attempts), ("pool_busy", 0), "our contention is not the source's failure");
    assert!(s.next_run_at > due && s.next_run_at <= due + Duration::seconds(60), "retried soon: {}", s.next_run_at);
    assert_eq!(source_state(&w, ALICE, "dexcom").await, Some(DataSourceState::Connected));

    let metrics = w.app.http.get(w.app.ops_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("tidegate_polls_total")
            && l.contains("outcome=\"pool_busy\"")
            && !l.contains("outcome=\"transient\"")),
        "{metrics}"
    );
    assert!(metrics.contains("tidegate_db_pool_busy_total"), "{metrics}");
    let page = w.app.http.get(w.app.ops_url("/admin")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("pool_busy"), "the dashboard's outcomes name it");
    assert!(page.contains("waited too long for a database connection"), "and say what it means");
    assert!(!page.contains("database unavailable"), "never called an outage");

    // Connections free: the retry imports as usual.
    set_time(&w, s.next_run_at);
    assert_eq!(pass(&worker).await, 1);
    assert_eq!(runs(&w, &id).await.last().map(|(o, _)| o.clone()).as_deref(), Some("success"));
    invariants_hold(&w).await;
}
