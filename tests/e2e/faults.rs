//! The fault matrix, as one combined run: real `tidegate worker` processes over a simulated
//! multi-day run while the simulator injects every partner fault at once (each on its own group
//! of accounts), the clinic service goes down, the database becomes unreachable, and workers are
//! SIGKILLed at random points. After a recovery period the stored data must **equal the
//! simulator's ground truth** (nothing lost, nothing doubled), every source must be in the state
//! its faults call for, and the clinic's last accepted report for every patient must say so.
//!
//! Sizes: the CI profile is 200 sources, 2 simulated days (+6 h recovery), ≥ 50 kills;
//! `TIDEGATE_SOAK=1` runs 2,000 sources (`TIDEGATE_SOAK_SOURCES`) over 7 days with a kill every
//! third 10-minute step. The figures it prints go to docs/RELIABILITY.md.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use model::DataSourceState;
use rand::{Rng, SeedableRng};
use sandbox::clinic::ClinicFaults;
use sandbox::faults::{Faults, Maintenance, MaintenanceMode, RateLimitBurst};
use serde_json::Value;
use tidegate_e2e::World;

use crate::poll::truth_as_of;
use crate::workers::{Proc, scalar, seed, soak, spawn_worker, user_id};

const CLINIC: &str = "c0ffee0000";

/// Which fault an account gets (by its index), and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    /// 503 on 30 % of calls for the whole first day.
    ServerErrors,
    /// Bursts of three 429s with `Retry-After: 900`, re-armed every 6 hours.
    RateLimited,
    /// Answers held past our 2-second partner timeout, hours 6–10.
    Hangs,
    /// 30 % of data responses cut short (malformed JSON) for the first day.
    Malformed,
    /// Unknown enum values and missing optional fields, hours 12–14.
    SchemaDrift,
    /// The grant is revoked at the partner at hour 6: confirmed after four auth failures.
    Revoked,
    /// Everyone else: the partner's nightly maintenance overruns ours by 25 minutes, answering
    /// refreshes with `invalid_grant` (must stay transient).
    Maintenance,
}

fn group(i: usize, n: usize) -> Group {
    // Tenths of the population, so every size keeps the same mix.
    match i * 20 / n {
        0 | 1 => Group::ServerErrors,
        2 | 3 => Group::RateLimited,
        4 => Group::Hangs,
        5 | 6 => Group::Malformed,
        7 | 8 => Group::SchemaDrift,
        9 => Group::Revoked,
        _ => Group::Maintenance,
    }
}

fn login(i: usize) -> String {
    format!("dexcom-{:03}", i + 1)
}

/// The faults account `i` sees at simulated hour `h` (None: the global ones).
fn faults_at(g: Group, h: i64) -> Option<Faults> {
    let f = match g {
        Group::ServerErrors if h < 24 => Faults { error_rate: 0.3, ..Faults::default() },
        Group::RateLimited => {
            Faults { rate_limit: Some(RateLimitBurst { count: 3, retry_after_secs: 900 }), ..Faults::default() }
        }
        Group::Hangs if (6..10).contains(&h) => Faults { hang_ms: 3_000, ..Faults::default() },
        Group::Malformed if h < 24 => Faults { malformed_json_rate: 0.3, ..Faults::default() },
        Group::SchemaDrift if (12..14).contains(&h) => Faults { schema_drift: true, ..Faults::default() },
        _ => return None,
    };
    Some(f)
}

fn maintenance() -> Faults {
    Faults {
        maintenance: Some(Maintenance {
            start: "02:45".into(),
            end: "04:10".into(),
            time_zone: "America/Los_Angeles".into(),
            mode: MaintenanceMode::InvalidGrant,
        }),
        ..Faults::default()
    }
}

/// The lease owner a worker process logged at start.
fn owner_of(p: &Proc, within: StdDuration) -> uuid::Uuid {
    let deadline = Instant::now() + within;
    loop {
        let log = strip_ansi(&p.log());
        if let Some(owner) = log
            .lines()
            .filter(|l| l.contains("poll worker started"))
            .find_map(|l| l.split("owner=").nth(1))
            .and_then(|rest| rest.get(..36))
            .and_then(|u| uuid::Uuid::parse_str(u).ok())
        {
            return owner;
        }
        assert!(Instant::now() < deadline, "no owner logged:\n{log}");
        std::thread::sleep(StdDuration::from_millis(20));
    }
}

/// The text without terminal colour codes (the workers log in the "pretty" format).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … final byte in @–~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Wait until nothing is due at `at` and no live process holds a lease (with `reports`, the
/// clinic reports too). Not `strict`: after 15 s, leases still held are accepted (returned as a
/// count) when nothing else is left. Leases of killed processes expire on the simulated clock and are
/// claimed again at a later step.
async fn settle(
    w: &World,
    at: DateTime<Utc>,
    dead: &[uuid::Uuid],
    reports: bool,
    strict: bool,
    within: StdDuration,
) -> i64 {
    let deadline = Instant::now() + within;
    let patience = Instant::now() + StdDuration::from_secs(15);
    loop {
        let (polls, outbox): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM poll_schedule WHERE NOT paused
                       AND (next_run_at <= $1 OR (lease_owner IS NOT NULL AND lease_owner <> ALL($2)))),
                    (SELECT count(*) FROM outbox WHERE kind = 'clinic_report'
                       AND delivered_time IS NULL AND parked_time IS NULL
                       AND (available_at <= $1 OR (lease_owner IS NOT NULL AND lease_owner <> ALL($2))))",
        )
        .bind(at)
        .bind(dead)
        .fetch_one(w.app.store.pool())
        .await
        .unwrap();
        let outbox = if reports { outbox } else { 0 };
        if polls == 0 && outbox == 0 {
            return 0;
        }
        if !strict && Instant::now() >= patience {
            // Only leases are left: polls whose outcome could not be recorded (the database
            // pool was exhausted or cut) keep their lease until it expires on the simulated
            // clock, and are polled again after it — the next step moves the clock past it.
            let due: i64 =
                sqlx::query_scalar("SELECT count(*) FROM poll_schedule WHERE NOT paused AND next_run_at <= $1")
                    .bind(at)
                    .fetch_one(w.app.store.pool())
                    .await
                    .unwrap();
            if due == 0 && outbox == 0 {
                return polls;
            }
        }
        if Instant::now() >= deadline {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT format('%s due %s lease %s (%s, attempt %s): %s', data_source_id, next_run_at,
                               lease_owner, next_kind, attempts, last_error)
                 FROM poll_schedule
                 WHERE NOT paused AND (next_run_at <= $1 OR (lease_owner IS NOT NULL AND lease_owner <> ALL($2)))",
            )
            .bind(at)
            .bind(dead)
            .fetch_all(w.app.store.pool())
            .await
            .unwrap();
            panic!("{polls} polls and {outbox} reports still due or running at {at}: {rows:#?}");
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
}

/// A source's poll history, for a failure message.
async fn history(w: &World, id: &model::DataSourceId) -> String {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT format('  %s – %s %s %s', started_at, finished_at, outcome, coalesce(error, ''))
         FROM poll_runs WHERE data_source_id = $1 ORDER BY started_at, id",
    )
    .bind(id.as_str())
    .fetch_all(w.app.store.pool())
    .await
    .unwrap();
    rows.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_matrix_over_simulated_days_equals_the_ground_truth() {
    let (sources, days, kill_every) = if soak() {
        (std::env::var("TIDEGATE_SOAK_SOURCES").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000), 7, 3)
    } else {
        (200, 2, 6)
    };
    let start = tidegate_e2e::test_epoch();
    let w = tidegate_e2e::spawn_world_with(
        sandbox::SandboxConfig {
            dexcom_people: sources,
            carelink_people: 0,
            dexcom_budget_per_hour: None,
            history_days: 1,
            ..Default::default()
        },
        &[],
    )
    .await;
    w.sandbox.sim.clock.set(start);
    for i in 0..sources {
        w.sandbox.sim.clinic.add_patient(CLINIC, user_id(i).as_str(), None);
    }
    let ids = seed(&w, sources, start).await;
    let groups: Vec<Group> = (0..sources).map(|i| group(i, sources)).collect();

    // Workers reach the database through a proxy the test can cut.
    let proxy = tidegate_e2e::Proxy::start(crate::health::pg_addr(&w.app.db.url)).await;
    let proxied =
        tidegate_e2e::db::with_database(&format!("postgres://postgres@{}/postgres", proxy.addr), &w.app.db.name);
    let env = |i: usize| -> Vec<(String, String)> {
        vec![
            ("TIDEGATE_DATABASE__URL".into(), proxied.clone()),
            ("TIDEGATE_WORKER__RNG_SEED".into(), (20_261_130 + i).to_string()),
            ("TIDEGATE_WORKER__HISTORY_HOURS".into(), (24 * (days + 1)).to_string()),
            ("TIDEGATE_WORKER__LEASE_SECS".into(), "120".into()),
            ("TIDEGATE_PARTNERS__DEXCOM__TIMEOUT_SECS".into(), "2".into()),
            ("TIDEGATE_OUTBOX__IDLE_MS".into(), "20".into()),
            ("TIDEGATE_OUTBOX__LEASE_SECS".into(), "60".into()),
            ("TIDEGATE_CLINIC__TIMEOUT_SECS".into(), "2".into()),
        ]
    };
    let spawn = |i: usize| {
        let vars = env(i);
        let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        spawn_worker(&w, &format!("faults-{i}"), &refs)
    };
    let mut spawned = 0;
    let mut workers: Vec<Proc> = (0..3)
        .map(|_| {
            spawned += 1;
            spawn(spawned)
        })
        .collect();

    let mut rng = rand::rngs::StdRng::seed_from_u64(20_261_130);
    let mut dead: Vec<uuid::Uuid> = Vec::new();
    let mut kills = 0;
    let mut kill_times = Vec::new();
    let mut stalled = 0;
    let mut old_logs: Vec<String> = Vec::new();
    let step = Duration::minutes(10);
    let faulty_end = start + Duration::days(days);
    let end = faulty_end + Duration::hours(6);
    let clinic_down = (Duration::hours(20), Duration::hours(26));
    let db_down = (Duration::hours(36), Duration::hours(37));
    let revoke_at = Duration::hours(6);
    let mut revoked = false;
    let mut hour_applied = -1;
    let began = Instant::now();
    let mut at = start;
    let mut n_step = 0u32;
    while at < end {
        at += step;
        n_step += 1;
        let elapsed = at - start;
        let hour = elapsed.num_hours();
        // Faults for this hour. Bursts of 429s are spent as they are served: re-armed every
        // 6 hours.
        if at <= faulty_end && hour != hour_applied {
            hour_applied = hour;
            w.sandbox.sim.faults.clear();
            w.sandbox.sim.faults.set_global(maintenance());
            for (i, g) in groups.iter().enumerate() {
                let keep = *g != Group::RateLimited || hour % 6 == 0;
                if let Some(f) = faults_at(*g, hour).filter(|_| keep) {
                    w.sandbox.sim.faults.set_account(&login(i), f);
                }
            }
        }
        if at > faulty_end && hour_applied != i64::MIN {
            hour_applied = i64::MIN;
            w.sandbox.sim.faults.clear();
        }
        if !revoked && elapsed >= revoke_at {
            revoked = true;
            for (i, g) in groups.iter().enumerate() {
                if *g == Group::Revoked {
                    let n: usize = w.sandbox.sim.dexcom_auth.iter().map(|(_, a)| a.revoke_person(i)).sum();
                    let lost = w.sandbox.sim.dexcom_auth.iter().any(|(_, a)| a.reuse_revocations().contains(&i));
                    assert!(n > 0 || lost, "{} had a grant to revoke", login(i));
                }
            }
        }
        let clinic_is_down = elapsed > clinic_down.0 && elapsed <= clinic_down.1;
        w.sandbox.sim.clinic.set_faults(ClinicFaults { down: clinic_is_down, ..ClinicFaults::default() });
        let db_is_down = elapsed > db_down.0 && elapsed <= db_down.1;
        if db_is_down {
            proxy.cut();
        } else {
            proxy.restore();
        }
        w.sandbox.sim.clock.set(at);
        if !db_is_down && n_step.is_multiple_of(kill_every) {
            // SIGKILL at a random point of the polls this step started.
            tokio::time::sleep(StdDuration::from_millis(rng.random_range(0..250))).await;
            let victim = rng.random_range(0..workers.len());
            let owner = owner_of(&workers[victim], StdDuration::from_secs(20));
            let _ = workers[victim].child.kill();
            let _ = workers[victim].child.wait();
            old_logs.push(workers[victim].log());
            dead.push(owner);
            kill_times.push(at);
            kills += 1;
            spawned += 1;
            workers[victim] = spawn(spawned);
        }
        if db_is_down {
            // Nothing can settle: let the workers meet the outage, then move on.
            tokio::time::sleep(StdDuration::from_millis(300)).await;
        } else {
            // While the clinic is down its reports wait in the outbox.
            stalled += settle(&w, at, &dead, !clinic_is_down, false, StdDuration::from_secs(120)).await;
        }
        for p in &mut workers {
            assert!(p.child.try_wait().unwrap().is_none(), "a worker exited:\n{}", p.log());
        }
    }
    // Time stands still for the comparison: the last polls and the truth see the same partner.
    w.sandbox.sim.clock.freeze();
    let at = w.sandbox.sim.clock.now();
    // Every source polled once more at the end, from where it stood (no cursor reset: what the
    // run lost would stay lost), then the comparison.
    // (A second early: the workers read the clock at millisecond precision.)
    sqlx::query("UPDATE poll_schedule SET next_run_at = $1 WHERE NOT paused AND next_run_at > $1")
        .bind(at - Duration::seconds(1))
        .execute(w.app.store.pool())
        .await
        .unwrap();
    settle(&w, at, &dead, true, true, StdDuration::from_secs(180)).await;
    let wall = began.elapsed();
    for p in &mut workers {
        assert!(p.terminate(StdDuration::from_secs(30)), "clean shutdown:\n{}", p.log());
    }

    // Ground truth, per source.
    let mut checked = 0usize;
    let mut lost_to_kills = Vec::new();
    let mut datums = 0usize;
    let mut rows: BTreeMap<Group, (usize, usize)> = BTreeMap::new();
    let last_accepted = w.sandbox.sim.clinic.last_accepted();
    for (i, id) in ids.iter().enumerate() {
        let g = groups[i];
        let user = user_id(i);
        let source = w.app.store.get_data_source(id).await.unwrap().unwrap();
        let reused = w.sandbox.sim.dexcom_auth.iter().any(|(_, a)| a.reuse_revocations().contains(&i));
        let e = source.error.as_ref().map(|e| e.code.as_str());
        let confirmed = (source.state, e) == (DataSourceState::Error, Some("authorization_revoked"));
        let (want_state, until) = if g == Group::Revoked {
            // Revoked at the partner: confirmed after four auth failures, the patient asked to
            // reconnect, the clinic told, everything imported before it kept.
            assert!(confirmed, "{} is {:?}: {:?}", login(i), source.state, source.error);
            (DataSourceState::Error, source.last_import_time.expect("imported before the revocation"))
        } else if reused {
            // A worker was SIGKILLed after the partner rotated the refresh token and before we
            // committed it: with single-use refresh tokens the next refresh presents the old one
            // and the partner ends the grant. Confirmed like a revocation — or, when it happened
            // late in the run, still being confirmed (auth failures counted, state unchanged).
            let failures = scalar(
                &w,
                &format!("SELECT auth_failures::bigint FROM poll_schedule WHERE data_source_id = '{}'", id.as_str()),
            )
            .await;
            assert!(confirmed || (source.state == DataSourceState::Connected && failures > 0), "{}", login(i));
            assert!(kills > 0);
            lost_to_kills.push(login(i));
            (source.state, source.last_import_time.expect("imported before the grant ended"))
        } else {
            if source.state != DataSourceState::Connected {
                panic!(
                    "{} ({g:?}) is {:?}: {:?}\nkills (simulated time): {kill_times:?}\n{}",
                    login(i),
                    source.state,
                    source.error,
                    history(&w, id).await
                );
            }
            (DataSourceState::Connected, at)
        };
        let expected = truth_as_of(&w, &login(i), &user, start - Duration::days(2), until, Some(until)).await;
        let got: BTreeMap<String, Value> =
            w.app.store.datums_of_source(id).await.unwrap().into_iter().map(|d| (d.id, d.body)).collect();
        let missing: Vec<&String> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
        // Device settings (cgmSettings) come from another endpoint than the truth's records.
        let extra: Vec<(&String, &Value)> =
            got.iter().filter(|(k, v)| !expected.contains_key(*k) && v["type"] != "cgmSettings").collect();
        if !missing.is_empty() || !extra.is_empty() {
            panic!(
                "{} ({g:?}, {:?}, last import {:?}): {} missing (e.g. {}), {} not in the truth (e.g. {:?})\nkills: {kill_times:?}\n{}",
                login(i),
                source.state,
                source.last_import_time,
                missing.len(),
                missing.first().map(|k| expected[*k].to_string()).unwrap_or_default(),
                extra.len(),
                extra.first(),
                history(&w, id).await
            );
        }
        for (k, v) in &expected {
            if g == Group::SchemaDrift {
                // A record last read while the partner served it drifted (unknown enum values,
                // optional fields missing) keeps what was said then; what it measures must
                // still be the truth.
                for field in ["type", "time", "value", "units", "deviceTime"] {
                    assert_eq!(got[k][field], v[field], "{} ({g:?}): datum {k} {field}", login(i));
                }
            } else {
                assert_eq!(&got[k], v, "{} ({g:?}): datum {k} differs from the ground truth", login(i));
            }
        }
        // The clinic's last accepted report says what we say.
        let report = last_accepted.get(user.as_str()).unwrap_or_else(|| panic!("no report for {}", login(i)));
        let reported = report.as_array().and_then(|a| a.iter().find(|e| e["providerName"] == "dexcom"));
        assert_eq!(
            reported.map(|e| e["state"].clone()),
            Some(serde_json::to_value(want_state).unwrap()),
            "{} ({g:?}): clinic has {report}",
            login(i)
        );
        checked += 1;
        datums += expected.len();
        let e = rows.entry(g).or_default();
        e.0 += 1;
        e.1 += expected.len();
    }
    assert_eq!(checked, sources);
    assert!(kills >= 50 || soak(), "{kills} kills");
    let outcomes: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome, count(*) FROM poll_runs GROUP BY outcome ORDER BY outcome")
            .fetch_all(w.app.store.pool())
            .await
            .unwrap();
    // Failed delivery attempts (the outage, and workers killed or cut off mid-delivery).
    let refused =
        scalar(&w, "SELECT COALESCE(sum(attempts), 0)::bigint FROM outbox WHERE kind = 'clinic_report'").await;
    let reports = scalar(&w, "SELECT count(*) FROM outbox WHERE kind = 'clinic_report'").await;
    let parked =
        scalar(&w, "SELECT count(*) FROM outbox WHERE kind = 'clinic_report' AND parked_time IS NOT NULL").await;
    assert_eq!(parked, 0, "a clinic report was given up");
    let dupes = scalar(&w, "SELECT count(*) - count(DISTINCT (user_id, id)) FROM datums").await;
    assert_eq!(dupes, 0, "a datum stored twice");
    let v = store::lifecycle::check_invariants(&w.app.store).await.unwrap();
    assert!(v.is_empty(), "{v:?}");
    // No token, code or secret the simulator issued is in the database or any process's log.
    crate::connect::assert_no_secret_leaked(&w).await;
    let secrets: Value = w.app.http.get(w.sandbox.url("/admin/secrets")).send().await.unwrap().json().await.unwrap();
    let secrets: Vec<&str> = secrets["secrets"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    old_logs.extend(workers.iter().map(Proc::log));
    for log in &old_logs {
        crate::connect::assert_none_in(&secrets, log, "a worker's log");
    }
    let unique_owners: HashSet<&uuid::Uuid> = dead.iter().collect();
    eprintln!(
        "fault matrix: {sources} sources, {days} simulated days + 6 h recovery, {} steps in {wall:.0?}; {kills} SIGKILLs ({} processes), DB cut {}–{} h, clinic down {}–{} h ({reports} clinic reports, {refused} failed delivery attempts, every report delivered); {datums} datums equal the ground truth; poll outcomes {outcomes:?}; {stalled} leases left to expire (outcome not recordable); grants lost to a kill between rotation and commit: {lost_to_kills:?}; {} simulator secrets absent from pg_dump and {} process logs",
        n_step,
        unique_owners.len() + workers.len(),
        db_down.0.num_hours(),
        db_down.1.num_hours(),
        clinic_down.0.num_hours(),
        clinic_down.1.num_hours(),
        secrets.len(),
        old_logs.len(),
    );
    let groups_seen: BTreeSet<Group> = groups.iter().copied().collect();
    for g in groups_seen {
        let (n, d) = rows[&g];
        eprintln!("  {g:?}: {n} sources, {d} datums, final state as expected, clinic told");
    }
}
