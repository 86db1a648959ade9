//! Worker **processes** (`tidegate worker`, the real binary) on one database, following the
//! simulator's clock: a simulated day with many sources (every due poll exactly once, never in
//! a blackout, uniform intervals), a worker killed mid-poll, and the partner budget.
//!
//! Sizes: `TIDEGATE_SOAK=1` runs the bigger soak sizes (`TIDEGATE_SOAK_SOURCES`, default 10,000).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use model::{DataSourceId, ProviderName, UserId};
use secrecy::SecretString;
use store::audit::Actor;
use store::lifecycle::Connection;
use tidegate_e2e::{World, config_dir};

/// The `tidegate` binary next to this test (built by `cargo test --workspace`).
pub fn tidegate_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join(format!("tidegate{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p tidegate` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A child process, killed when dropped.
pub(crate) struct Proc {
    pub(crate) child: Child,
    log: PathBuf,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (up to `within`) for a clean exit.
    pub(crate) fn terminate(&mut self, within: StdDuration) -> bool {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(StdDuration::from_millis(20));
        }
        false
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `tidegate worker` with the world's settings, following the simulator's clock.
pub(crate) fn spawn_worker(w: &World, name: &str, extra: &[(&str, &str)]) -> Proc {
    let log = std::env::temp_dir().join(format!("tidegate-{name}-{}.log", uuid::Uuid::new_v4().simple()));
    let file = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(tidegate_bin());
    cmd.arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TIDEGATE_ENV", "test")
        .env("TIDEGATE_CONFIG_DIR", config_dir())
        .env("TIDEGATE_CLOCK__SOURCE", "external")
        .env("TIDEGATE_CLOCK__EXTERNAL_URL", w.sandbox.url("/admin/clock"))
        .env("TIDEGATE_CLOCK__SYNC_INTERVAL_MS", "20")
        .env("TIDEGATE_WORKER__IDLE_MS", "20")
        .env("TIDEGATE_LOG__FILTER", "warn,tidegate=info,tidegate_scheduler=info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file);
    for (k, v) in &w.env {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Proc { child: cmd.spawn().expect("tidegate worker starts"), log }
}

pub(crate) fn user_id(i: usize) -> UserId {
    UserId::parse(&format!("{:010x}", 0x10_0000_0000_u64 + i as u64)).expect("user id")
}

/// Connect `n` simulated Dexcom people directly (tokens from the simulator's authorization
/// server, stored encrypted as in production), first polls jittered within a minute of `at`.
pub(crate) async fn seed(w: &World, n: usize, at: DateTime<Utc>) -> Vec<DataSourceId> {
    let (_, auth) = &w.sandbox.sim.dexcom_auth[0];
    let redirect = format!("{}/v1/oauth/dexcom/redirect", w.app.settings.public_url);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let code = auth.issue_code(tidegate_e2e::DEXCOM_CLIENT, &redirect, i, "offline_access", None, at);
        let tokens = auth.exchange_code(tidegate_e2e::DEXCOM_CLIENT, &code, &redirect, None, at).expect("tokens");
        let first_poll_at = at + Duration::milliseconds((i as i64 * 60_000) / n as i64);
        ids.push(store_grant(w, "dexcom", i, format!("sim-dexcom-{i}"), tokens, at, first_poll_at).await);
    }
    ids
}

/// Store the tokens the simulator issued person `i` as `user_id(i)`'s connection (US region),
/// encrypted as in production.
pub(crate) async fn store_grant(
    w: &World,
    provider: &str,
    i: usize,
    partner_account_id: String,
    tokens: sandbox::authserver::Tokens,
    at: DateTime<Utc>,
    first_poll_at: DateTime<Utc>,
) -> DataSourceId {
    let c = Connection {
        user: user_id(i),
        provider: ProviderName::parse(provider).expect("provider"),
        region: Some("us".into()),
        partner_account_id,
        access_token: SecretString::from(tokens.access_token),
        refresh_token: Some(SecretString::from(tokens.refresh_token)),
        access_expires_at: Some(at + Duration::seconds(tokens.expires_in)),
        scope: Some(tokens.scope),
        link_token_hash: None,
        first_poll_at,
    };
    w.app.store.connect(&Actor::system(), &c, at).await.expect("connect").id
}

/// Wait until nothing is due at `at` and no lease is held (every due poll done).
async fn settle(w: &World, at: DateTime<Utc>, within: StdDuration) {
    let deadline = Instant::now() + within;
    loop {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM poll_schedule WHERE NOT paused AND (next_run_at <= $1 OR lease_owner IS NOT NULL)",
        )
        .bind(at)
        .fetch_one(&w.app.sql)
        .await
        .unwrap();
        if busy == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{busy} polls still due or running at {at}");
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Run {
    data_source_id: String,
    owner: uuid::Uuid,
    due_at: DateTime<Utc>,
    started_at: DateTime<Utc>,
    outcome: String,
    next_run_at: Option<DateTime<Utc>>,
    next_kind: Option<String>,
}

async fn all_runs(w: &World) -> Vec<Run> {
    sqlx::query_as(
        "SELECT data_source_id, owner, due_at, started_at, outcome, next_run_at, next_kind FROM poll_runs ORDER BY data_source_id, started_at, id",
    )
    .fetch_all(&w.app.sql)
    .await
    .unwrap()
}

/// Kolmogorov–Smirnov against uniform [lo, hi]: (D, asymptotic p-value).
fn ks_uniform(samples: &mut [f64], lo: f64, hi: f64) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len() as f64;
    let d = samples
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let f = ((x - lo) / (hi - lo)).clamp(0.0, 1.0);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max);
    let lambda = (n.sqrt() + 0.12 + 0.11 / n.sqrt()) * d;
    let p = (1..=100)
        .map(|k| {
            let k = k as f64;
            2.0 * (-1f64).powi(k as i32 - 1) * (-2.0 * k * k * lambda * lambda).exp()
        })
        .sum::<f64>()
        .clamp(0.0, 1.0);
    (d, p)
}

pub(crate) fn soak() -> bool {
    std::env::var("TIDEGATE_SOAK").is_ok_and(|v| v == "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_share_a_simulated_day() {
    let sources: usize = if soak() {
        std::env::var("TIDEGATE_SOAK_SOURCES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000)
    } else {
        2_000
    };
    let start = tidegate_e2e::test_epoch();
    let w = tidegate_e2e::spawn_world_with(
        sandbox::SandboxConfig {
            dexcom_people: sources,
            carelink_people: 0,
            dexcom_budget_per_hour: None,
            history_days: 0,
            ..Default::default()
        },
        &[],
    )
    .await;
    w.sandbox.sim.clock.set(start);
    let ids = seed(&w, sources, start).await;
    let mut workers: Vec<Proc> = (0..3)
        .map(|i| {
            let seed = (20_261_122 + i).to_string();
            spawn_worker(
                &w,
                &format!("day-{i}"),
                &[
                    ("TIDEGATE_WORKER__RNG_SEED", seed.as_str()),
                    ("TIDEGATE_POLL__LOOK_BACK_MINUTES", "60"),
                    // Keep the whole day's history for the checks below.
                    ("TIDEGATE_WORKER__HISTORY_HOURS", "48"),
                ],
            )
        })
        .collect();
    let step = Duration::minutes(5);
    let end = start + Duration::days(1);
    let mut at = start;
    let began = Instant::now();
    while at < end {
        at += step;
        w.sandbox.sim.clock.set(at);
        settle(&w, at, StdDuration::from_secs(120)).await;
        for p in &mut workers {
            assert!(p.child.try_wait().unwrap().is_none(), "a worker exited:\n{}", p.log());
        }
    }
    let wall = began.elapsed();
    for p in &mut workers {
        assert!(p.terminate(StdDuration::from_secs(30)), "clean shutdown:\n{}", p.log());
    }
    let runs = all_runs(&w).await;
    let by_owner: BTreeMap<uuid::Uuid, usize> = runs.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.owner).or_default() += 1;
        m
    });
    assert_eq!(by_owner.len(), 3, "every process polled: {by_owner:?}");
    let failed: Vec<&Run> = runs.iter().filter(|r| r.outcome != "success").collect();
    assert!(failed.is_empty(), "{} polls failed, e.g. {:?}", failed.len(), failed.first());
    // Every due poll exactly once: per source, each run is due when the previous one said.
    let mut per_source: HashMap<&str, Vec<&Run>> = HashMap::new();
    for r in &runs {
        per_source.entry(r.data_source_id.as_str()).or_default().push(r);
    }
    assert_eq!(per_source.len(), ids.len(), "every source was polled");
    let worker = w.app.poll_worker();
    let policy = worker.policy("dexcom").unwrap();
    let mut deferred = 0;
    for (id, rs) in &per_source {
        for pair in rs.windows(2) {
            let planned = pair[0].next_run_at.unwrap();
            if pair[1].due_at != planned {
                // Due just before a blackout, the clock step landed inside it: the poll was
                // moved past the window (never run inside it, never dropped).
                let window = policy.blackout_at(planned + step);
                assert!(
                    window.is_some_and(|(s, e)| planned < s && pair[1].due_at >= e),
                    "{id}: a poll ran twice or was skipped (planned {planned}, ran as due {})",
                    pair[1].due_at
                );
                deferred += 1;
            }
        }
        let last = rs.last().unwrap().next_run_at.unwrap();
        assert!(last > end, "{id}: due at {last} but not polled by the end");
    }
    // No poll started inside Dexcom's blackout (spring forward: 10:00–10:45 UTC on 2026-03-08).
    let inside: Vec<&Run> = runs.iter().filter(|r| policy.blackout_at(r.started_at).is_some()).collect();
    assert!(inside.is_empty(), "{} polls started in a blackout, e.g. {:?}", inside.len(), inside.first());
    let shifted = runs.iter().filter(|r| r.next_kind.as_deref() == Some("blackout")).count();
    assert!(shifted > 0, "some intervals were moved past the window");
    // The regular intervals are uniform on [45, 75] minutes. Samples are chosen by when the poll
    // started, never by what was drawn: polls whose [45, 75]-minute range meets a blackout are
    // left out whole (keeping only their unshifted draws would bias the sample).
    let clear_of_blackouts =
        |r: &&Run| (45..=75).all(|m| policy.blackout_at(r.started_at + Duration::minutes(m)).is_none());
    let mut samples: Vec<f64> = runs
        .iter()
        .filter(clear_of_blackouts)
        .filter(|r| r.next_kind.as_deref() == Some("regular"))
        .filter_map(|r| r.next_run_at.map(|n| (n - r.started_at).num_milliseconds() as f64 / 60_000.0))
        .collect();
    let n = samples.len();
    let kinds: BTreeMap<&str, usize> = runs.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.next_kind.as_deref().unwrap_or("-")).or_default() += 1;
        m
    });
    assert!(n >= 10_000 || soak(), "{n} samples of {} runs: {kinds:?}", runs.len());
    let (d, p) = ks_uniform(&mut samples, 45.0, 75.0);
    let mut lags: Vec<i64> = runs.iter().map(|r| (r.started_at - r.due_at).num_milliseconds()).collect();
    lags.sort();
    eprintln!(
        "simulated day: {sources} sources, {} polls by 3 processes {by_owner:?} in {:.0?}; KS vs U[45,75] min over {n} regular intervals: D = {d:.5}, p = {p:.3}; blackout shifts {shifted} planned + {deferred} deferred; lag p50 {} ms, p99 {} ms (5-minute clock steps)",
        runs.len(),
        wall,
        lags[lags.len() / 2],
        lags[lags.len() * 99 / 100],
    );
    assert!(p > 0.01, "intervals are not uniform: D = {d}, p = {p}");
    let v = store::lifecycle::check_invariants(&w.app.store).await.unwrap();
    assert!(v.is_empty(), "{v:?}");
}

async fn wait_for<F, Fut>(what: &str, within: StdDuration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
}

pub(crate) async fn scalar(w: &World, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&w.app.sql).await.unwrap()
}

fn refreshes(w: &World) -> u64 {
    w.sandbox.sim.dexcom_auth.iter().map(|(_, a)| a.refresh_count()).sum()
}

async fn expire_access_tokens(w: &World) {
    sqlx::query("UPDATE provider_sessions SET access_expires_at = $1")
        .bind(tidegate_e2e::test_epoch() - Duration::hours(1))
        .execute(&w.app.sql)
        .await
        .unwrap();
}

fn small_world_config(people: usize) -> sandbox::SandboxConfig {
    sandbox::SandboxConfig { dexcom_people: people, carelink_people: 0, history_days: 1, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_poll_loses_nothing() {
    const SOURCES: usize = 12;
    let start = tidegate_e2e::test_epoch();
    let w = tidegate_e2e::spawn_world_with(small_world_config(SOURCES), &[]).await;
    w.sandbox.sim.clock.set(start);
    let ids = seed(&w, SOURCES, start).await;
    // Every poll refreshes first (rotating the refresh token), then each partner answer takes
    // 1.5 s: the kill lands after the rotated tokens were committed, in the middle of the data calls.
    expire_access_tokens(&w).await;
    w.sandbox.sim.clock.set(start + Duration::minutes(2));
    w.sandbox.sim.faults.set_global(sandbox::faults::Faults { latency_ms: 1_500, ..Default::default() });
    let lease = [("TIDEGATE_WORKER__LEASE_SECS", "60")];
    let mut doomed = spawn_worker(&w, "doomed", &lease);
    wait_for("the claims", StdDuration::from_secs(20), || async {
        scalar(&w, "SELECT count(*) FROM poll_schedule WHERE lease_owner IS NOT NULL").await == SOURCES as i64
    })
    .await;
    let refreshed_before_kill = {
        let deadline = Instant::now() + StdDuration::from_secs(10);
        while refreshes(&w) < SOURCES as u64 && Instant::now() < deadline {
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        tokio::time::sleep(StdDuration::from_millis(700)).await;
        refreshes(&w)
    };
    assert_eq!(refreshed_before_kill, SOURCES as u64, "every poll refreshed before the kill");
    let _ = doomed.child.kill();
    let _ = doomed.child.wait();
    assert_eq!(scalar(&w, "SELECT count(*) FROM poll_runs").await, 0, "killed mid-poll: nothing finished");
    assert_eq!(scalar(&w, "SELECT count(*) FROM datums").await, 0, "nothing written half-way");
    // The leases are still held by the dead process; after they expire another worker polls
    // every source — with the rotated refresh tokens it finds stored (the next refresh proves
    // they were not lost: reusing an old one would revoke the grant).
    w.sandbox.sim.faults.clear();
    let mut heir = spawn_worker(&w, "heir", &lease);
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    assert_eq!(scalar(&w, "SELECT count(*) FROM poll_runs").await, 0, "not before the leases expire");
    expire_access_tokens(&w).await;
    let after = start + Duration::minutes(2) + Duration::seconds(61);
    w.sandbox.sim.clock.set(after);
    settle(&w, after, StdDuration::from_secs(60)).await;
    assert!(heir.terminate(StdDuration::from_secs(30)), "{}", heir.log());
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM poll_runs").fetch_all(&w.app.sql).await.unwrap();
    assert_eq!(outcomes.len(), SOURCES, "each source polled once after the lease expired: {outcomes:?}");
    assert!(outcomes.iter().all(|o| o == "success"), "{outcomes:?}\n{}", heir.log());
    assert_eq!(refreshes(&w), 2 * SOURCES as u64);
    // Nothing stored twice: every datum id once, and each source's datums what the partner has.
    assert_eq!(
        scalar(&w, "SELECT count(*) FROM datums").await,
        scalar(&w, "SELECT count(DISTINCT (user_id, id)) FROM datums").await
    );
    for id in &ids {
        let state = w.app.store.get_data_source(id).await.unwrap().unwrap().state;
        assert_eq!(state, model::DataSourceState::Connected);
    }
    let v = store::lifecycle::check_invariants(&w.app.store).await.unwrap();
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_racing_to_refresh_one_token_send_one_refresh() {
    let start = tidegate_e2e::test_epoch();
    let w = tidegate_e2e::spawn_world_with(small_world_config(1), &[]).await;
    w.sandbox.sim.clock.set(start);
    let ids = seed(&w, 1, start).await;
    expire_access_tokens(&w).await;
    w.sandbox.sim.clock.set(start + Duration::minutes(2));
    // The refresh (and every call) takes 3 s: long enough for the first worker's lease to
    // expire under it and a second worker to claim the source and need a refresh too.
    w.sandbox.sim.faults.set_global(sandbox::faults::Faults { latency_ms: 3_000, ..Default::default() });
    let lease = [("TIDEGATE_WORKER__LEASE_SECS", "30")];
    // The first worker is busy with its one poll (no free slot), so it cannot renew the lease.
    let mut first = spawn_worker(&w, "race-a", &[lease[0], ("TIDEGATE_WORKER__MAX_IN_FLIGHT", "1")]);
    wait_for("the first claim", StdDuration::from_secs(20), || async {
        scalar(&w, "SELECT count(*) FROM poll_schedule WHERE lease_owner IS NOT NULL").await == 1
    })
    .await;
    let first_owner: uuid::Uuid =
        sqlx::query_scalar("SELECT lease_owner FROM poll_schedule").fetch_one(&w.app.sql).await.unwrap();
    let mut second = spawn_worker(&w, "race-b", &lease);
    // The lease expires while the first refresh is in flight: the second worker claims it.
    w.sandbox.sim.clock.set(start + Duration::minutes(2) + Duration::seconds(90));
    wait_for("the second claim", StdDuration::from_secs(20), || async {
        let owner: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT lease_owner FROM poll_schedule").fetch_one(&w.app.sql).await.unwrap();
        owner.is_some_and(|o| o != first_owner)
    })
    .await;
    wait_for("both polls to end", StdDuration::from_secs(60), || async {
        scalar(&w, "SELECT count(*) FROM poll_runs").await >= 2
    })
    .await;
    assert!(first.terminate(StdDuration::from_secs(30)), "{}", first.log());
    assert!(second.terminate(StdDuration::from_secs(30)), "{}", second.log());
    assert_eq!(refreshes(&w), 1, "exactly one refresh reached the partner");
    let mut outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM poll_runs").fetch_all(&w.app.sql).await.unwrap();
    outcomes.sort();
    assert_eq!(
        outcomes,
        vec!["lease_lost", "success"],
        "the lease's new owner wrote; the old one's results were discarded"
    );
    let s = w.app.store.get_provider_session(&ids[0]).await.unwrap().unwrap();
    assert!(s.access_expires_at.unwrap() > start + Duration::minutes(2));
    let v = store::lifecycle::check_invariants(&w.app.store).await.unwrap();
    assert!(v.is_empty(), "{v:?}");
}

/// A burst — every one of 200 sources due at once (as after an outage, a blackout's end or a
/// deploy) — on one worker process whose pool is a quarter of its in-flight limit (8 connections,
/// 32 polls), with Postgres slowed: polls wait their turn for a connection instead of failing at
/// the pool's 1 s acquire timeout; none ends as "database unavailable" or `pool_busy`, every
/// source is imported, and start-up warned that polls would queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_due_polls_on_a_quarter_sized_pool_waits_for_connections_and_imports_everything() {
    const SOURCES: usize = 200;
    let start = tidegate_e2e::test_epoch();
    let w = tidegate_e2e::spawn_world_with(small_world_config(SOURCES), &[]).await;
    w.sandbox.sim.clock.set(start);
    let ids = seed(&w, SOURCES, start).await;
    // Slow Postgres: every statement that writes datums, moves the schedule or records a poll
    // sleeps 0.2 s, so each poll holds its connections ≈ 0.6 s and 32 of them queue for 8.
    sqlx::raw_sql(
        "CREATE FUNCTION test_slow() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN PERFORM pg_sleep(0.2); RETURN NULL; END $$;
         CREATE TRIGGER test_slow AFTER INSERT OR UPDATE ON datums
           FOR EACH STATEMENT EXECUTE FUNCTION test_slow();
         CREATE TRIGGER test_slow AFTER UPDATE ON poll_schedule
           FOR EACH STATEMENT EXECUTE FUNCTION test_slow();
         CREATE TRIGGER test_slow AFTER INSERT ON poll_runs
           FOR EACH STATEMENT EXECUTE FUNCTION test_slow();",
    )
    .execute(&w.app.sql)
    .await
    .unwrap();
    let at = start + Duration::minutes(2);
    w.sandbox.sim.clock.set(at);
    assert_eq!(
        scalar(&w, &format!("SELECT count(*) FROM poll_schedule WHERE next_run_at <= '{}'", at.to_rfc3339())).await,
        SOURCES as i64,
        "all due at once"
    );
    let mut worker = spawn_worker(
        &w,
        "burst",
        &[
            ("TIDEGATE_DATABASE__MAX_CONNECTIONS", "8"),
            ("TIDEGATE_DATABASE__ACQUIRE_TIMEOUT_SECS", "1"),
            ("TIDEGATE_WORKER__MAX_IN_FLIGHT", "32"),
            ("TIDEGATE_WORKER__BATCH", "32"),
        ],
    );
    settle(&w, at, StdDuration::from_secs(300)).await;
    assert!(worker.terminate(StdDuration::from_secs(30)), "{}", worker.log());
    let log = worker.log();
    assert!(log.contains("polls will queue for connections"), "start-up warns about the ratio:\n{log}");
    let outcomes: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome, count(*) FROM poll_runs GROUP BY outcome ORDER BY outcome")
            .fetch_all(&w.app.sql)
            .await
            .unwrap();
    assert_eq!(outcomes, vec![("success".to_owned(), SOURCES as i64)], "{log}");
    assert_eq!(scalar(&w, "SELECT count(*) FROM poll_runs WHERE error IS NOT NULL").await, 0);
    assert!(!log.contains("database unavailable") && !log.contains("pool busy"), "{log}");
    for id in &ids {
        let s = w.app.store.get_data_source(id).await.unwrap().unwrap();
        assert!(s.last_import_time.is_some(), "{} imported", id.as_str());
        let n = scalar(&w, &format!("SELECT count(*) FROM datums WHERE data_source_id = '{}'", id.as_str())).await;
        assert!(n > 0, "{} has data", id.as_str());
    }
    eprintln!("burst: {SOURCES} polls on 6 poll connections (pool 8, 32 in flight): all success");
    let v = store::lifecycle::check_invariants(&w.app.store).await.unwrap();
    assert!(v.is_empty(), "{v:?}");
}
