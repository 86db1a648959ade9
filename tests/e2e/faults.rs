//! The fault matrix, as one combined run: real `tidegate worker` processes polling Dexcom and
//! CareLink sources over a simulated multi-day run while the simulator injects every partner
//! fault at once (each on its own group of accounts), the clinic service goes down, the database
//! becomes unreachable and its server (the test's own) restarts, and workers are SIGKILLed at
//! random points. After a recovery period the stored data must **equal the
//! simulator's ground truth** (nothing lost, nothing doubled), every source must be in the state
//! its faults call for, and the clinic's last accepted report for every patient must say so.
//!
//! Sizes: the CI profile is 200 sources, 2 simulated days (+6 h recovery), ≥ 50 kills;
//! `TIDEGATE_SOAK=1` runs 2,000 sources (`TIDEGATE_SOAK_SOURCES`) over 7 days
//! (`TIDEGATE_SOAK_DAYS`) with a kill every third 10-minute step. The figures it prints go to
//! docs/RELIABILITY.md.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use model::{DataSourceId, DataSourceState, UserId};
use partners::fetch::Batch;
use partners::{PartnerDriver, Saved};
use rand::{Rng, SeedableRng};
use sandbox::carelink::{APP_REDIRECT_URI, SCOPE};
use sandbox::clinic::ClinicFaults;
use sandbox::faults::{Faults, Maintenance, MaintenanceMode, RateLimitBurst};
use sandbox::platform::PlatformFaults;
use serde_json::Value;
use tidegate_e2e::{Restart, World};

use crate::poll::truth_as_of;
use crate::workers::{Proc, scalar, seed, soak, spawn_worker, store_grant, user_id};

/// CareLink's driver, as the registry holds it (the ground truth maps what the simulator serves).
fn carelink() -> &'static dyn PartnerDriver {
    partners::registry::data_driver("carelink").expect("CareLink has a data driver")
}

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
    // Twentieths of the population, so every size keeps the same mix.
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

/// The simulated people: Dexcom accounts first, then CareLink patients (the simulator's person
/// index is the position here, and each partner's accounts get every group).
struct Population {
    dexcom: usize,
    carelink: usize,
}

impl Population {
    fn len(&self) -> usize {
        self.dexcom + self.carelink
    }

    fn is_carelink(&self, i: usize) -> bool {
        i >= self.dexcom
    }

    fn login(&self, i: usize) -> String {
        if self.is_carelink(i) {
            format!("carelink-{:03}", i - self.dexcom + 1)
        } else {
            format!("dexcom-{:03}", i + 1)
        }
    }

    fn provider(&self, i: usize) -> &'static str {
        if self.is_carelink(i) { "carelink" } else { "dexcom" }
    }

    fn group(&self, i: usize) -> Group {
        if self.is_carelink(i) { group(i - self.dexcom, self.carelink) } else { group(i, self.dexcom) }
    }
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

/// Connect CareLink patients `from..to` (simulator person indexes) directly: a code from the
/// simulator's Auth0 tenant exchanged with its PKCE verifier, stored encrypted as in production.
async fn seed_carelink(w: &World, from: usize, to: usize, at: DateTime<Utc>) -> Vec<DataSourceId> {
    let auth = &w.sandbox.sim.carelink_auth;
    let client = &w.sandbox.sim.cfg.carelink_client_id;
    let mut ids = Vec::with_capacity(to - from);
    for i in from..to {
        let verifier = format!("verifier-{}", uuid::Uuid::new_v4().simple());
        let code = auth.issue_code(client, APP_REDIRECT_URI, i, SCOPE, Some(sandbox::authserver::s256(&verifier)), at);
        let tokens = auth.exchange_code(client, &code, APP_REDIRECT_URI, Some(&verifier), at).expect("tokens");
        let account = format!("{}/patient", w.sandbox.sim.people[i].login);
        let first_poll_at = at + Duration::milliseconds(((i - from) as i64 * 60_000) / (to - from) as i64);
        ids.push(store_grant(w, "carelink", i, account, tokens, at, first_poll_at).await);
    }
    ids
}

/// What CareLink served person `i` from `from` to `until`, mapped as we map it. The API serves
/// the last 24 hours, so the union of what it served every 6 hours back from `until`. Per-poll
/// snapshots (the pump's status and settings at the poll) are the poll's, not the partner's
/// records: only the last poll's are expected.
fn carelink_truth(
    w: &World,
    i: usize,
    user: &UserId,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> BTreeMap<String, Value> {
    let person = &w.sandbox.sim.people[i];
    let mut out = BTreeMap::new();
    let mut at = until;
    loop {
        let body = serde_json::json!({ "patientData": sandbox::carelink::display::patient_data(person, at) });
        let mut batch = Batch::default();
        carelink()
            .map_saved(user, Saved { document: &body, endpoint: None, window: None }, &mut batch)
            .expect("the simulator's payload maps");
        for d in &batch.datums {
            let v = d.to_json();
            if !is_snapshot(&v) || at == until {
                out.insert(d.base().id.as_str().to_owned(), v);
            }
        }
        if at <= from {
            return out;
        }
        at = (at - Duration::hours(6)).max(from);
    }
}

/// The simulator's authorization servers (Dexcom's regions and CareLink's tenant).
fn auth_servers(w: &World) -> impl Iterator<Item = &sandbox::authserver::AuthServer> {
    w.sandbox.sim.dexcom_auth.iter().map(|(_, a)| a).chain(std::iter::once(&w.sandbox.sim.carelink_auth))
}

/// When the source's first successful poll started.
async fn first_import(w: &World, id: &DataSourceId) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT min(started_at) FROM poll_runs WHERE data_source_id = $1 AND outcome = 'success'")
        .bind(id.as_str())
        .fetch_one(&w.app.sql)
        .await
        .unwrap()
}

fn datum_time(v: &Value) -> DateTime<Utc> {
    v["time"].as_str().and_then(|t| t.parse().ok()).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A datum that describes the pump at the moment of a poll rather than a record of the partner's.
fn is_snapshot(v: &Value) -> bool {
    ["cgmSettings", "pumpSettings", "pumpStatus"].iter().any(|t| v["type"] == *t)
}

/// The lease owners a worker process logged at start: its poll worker's and its outbox
/// deliverer's.
fn owners_of(p: &Proc, within: StdDuration) -> Vec<uuid::Uuid> {
    let deadline = Instant::now() + within;
    loop {
        let log = strip_ansi(&p.log());
        let owner = |what: &str| {
            log.lines()
                .filter(|l| l.contains(what))
                .find_map(|l| l.split("owner=").nth(1))
                .and_then(|rest| rest.get(..36))
                .and_then(|u| uuid::Uuid::parse_str(u).ok())
        };
        if let (Some(poller), Some(deliverer)) = (owner("poll worker started"), owner("outbox deliverer started")) {
            return vec![poller, deliverer];
        }
        assert!(Instant::now() < deadline, "no owners logged:\n{log}");
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
    (reports, platform): (bool, bool),
    strict: bool,
    within: StdDuration,
) -> i64 {
    let deadline = Instant::now() + within;
    let patience = Instant::now() + StdDuration::from_secs(15);
    loop {
        // Due polls and reports (a killed process's lease expires on the simulated clock: not
        // waited for). Reports count up to the simulated time now, which runs during the step:
        // one written after `at` and still being delivered when the clock jumps would be
        // delivered twice, the lease expired under its first deliverer.
        let now = w.sandbox.sim.clock.now().max(at);
        if strict {
            // The clock stands still now, but a worker's copy of it may have run a few hundred
            // ms ahead before its next sync: deliveries its last polls queued would be due only
            // at an instant the frozen clock never reaches. (The polls are rescheduled likewise.)
            sqlx::query(
                "UPDATE outbox SET available_at = $1 WHERE kind = 'platform_data' AND delivered_time IS NULL
                   AND parked_time IS NULL AND available_at > $1",
            )
            .bind(at - Duration::seconds(1))
            .execute(&w.app.sql)
            .await
            .unwrap();
        }
        let (polls, report_rows, delivery_rows, backlog): (i64, i64, i64, i64) = sqlx::query_as(
            "WITH due AS (SELECT o.kind FROM outbox o
                          WHERE o.delivered_time IS NULL AND o.parked_time IS NULL AND o.available_at <= $3
                            AND NOT EXISTS (SELECT 1 FROM outbox_leases l WHERE l.user_id = o.user_id
                                              AND l.kind = o.kind AND l.lease_owner = ANY($2) AND l.lease_until > $3))
             SELECT (SELECT count(*) FROM poll_schedule WHERE NOT paused
                       AND (next_run_at <= $1 OR (lease_owner IS NOT NULL AND lease_owner <> ALL($2)))),
                    (SELECT count(*) FROM due WHERE kind = 'clinic_report'),
                    (SELECT count(*) FROM due WHERE kind = 'platform_data'),
                    (SELECT count(*) FROM data_sources WHERE datum_seq > delivered_seq)
                      + (SELECT count(*) FROM platform_deletions)",
        )
        .bind(at)
        .bind(dead)
        .bind(now)
        .fetch_one(&w.app.sql)
        .await
        .unwrap();
        // At the end (strict) every datum must have reached the platform, not only every
        // queued delivery have run.
        let outbox = if reports { report_rows } else { 0 }
            + if platform { delivery_rows + if strict { backlog } else { 0 } } else { 0 };
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
                    .fetch_one(&w.app.sql)
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
            .fetch_all(&w.app.sql)
            .await
            .unwrap();
            let reports: Vec<String> = sqlx::query_scalar(
                "SELECT format('%s %s %s due %s (attempt %s, %s), lease %s until %s', o.user_id, o.kind, o.id,
                               o.available_at, o.attempts, o.last_error, l.lease_owner, l.lease_until)
                 FROM outbox o LEFT JOIN outbox_leases l ON l.user_id = o.user_id AND l.kind = o.kind
                 WHERE o.delivered_time IS NULL AND o.parked_time IS NULL
                   AND o.available_at <= $1",
            )
            .bind(at)
            .fetch_all(&w.app.sql)
            .await
            .unwrap();
            // Sources whose datums have not all reached the platform, with their deliveries.
            let backlog: Vec<String> = sqlx::query_scalar(
                "SELECT format('%s %s %s: seq %s delivered %s, %s datums after the mark, %s deletions, set %s; rows: %s',
                               s.user_id, s.provider, s.id, s.datum_seq, s.delivered_seq,
                               (SELECT count(*) FROM datums d WHERE d.data_source_id = s.id AND d.seq > s.delivered_seq),
                               (SELECT count(*) FROM platform_deletions p WHERE p.data_source_id = s.id), s.data_set_id,
                               (SELECT string_agg(format('#%s due %s attempts %s delivered %s: %s', o.id, o.available_at,
                                                         o.attempts, o.delivered_time, o.last_error), '; ' ORDER BY o.id)
                                FROM outbox o WHERE o.user_id = s.user_id AND o.kind = 'platform_data'
                                  AND (o.delivered_time IS NULL OR o.delivered_time > $1 - interval '1 hour')))
                 FROM data_sources s
                 WHERE s.datum_seq > s.delivered_seq
                    OR EXISTS (SELECT 1 FROM platform_deletions p WHERE p.data_source_id = s.id)
                 LIMIT 20",
            )
            .bind(at)
            .fetch_all(&w.app.sql)
            .await
            .unwrap();
            let sessions: Vec<String> = sqlx::query_scalar(
                "SELECT format('pid %s %s wait %s/%s xact %s blocked by %s: %s', pid, state, wait_event_type,
                               wait_event, now() - xact_start, pg_blocking_pids(pid), left(query, 160))
                 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_all(&w.app.sql)
            .await
            .unwrap();
            panic!(
                "{polls} polls and {outbox} deliveries still due or running at {at}: {rows:#?}\n{reports:#?}\nplatform backlog: {backlog:#?}\nsessions: {sessions:#?}"
            );
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
}

/// Local datums, the latest data time over every source, and datums the platform holds.
async fn delivery_figures(w: &World) -> (i64, Option<DateTime<Utc>>, usize) {
    let (datums, latest): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT (SELECT count(*) FROM datums), (SELECT max(latest_data_time) FROM data_sources)")
            .fetch_one(&w.app.sql)
            .await
            .unwrap();
    (datums, latest, w.sandbox.sim.platform.data_sets().values().map(|s| s.data.len()).sum())
}

/// The platform holds exactly the source's local datums (same origin ids, same bodies) in one
/// data set, the one the source names. `Err`: the origin ids the platform misses, and why.
fn check_platform_copy(
    source: &store::data_sources::DataSource,
    stored: &[store::datums::StoredDatum],
    sets: &BTreeMap<String, sandbox::platform::HeldDataSet>,
    login: &str,
) -> Result<(), (Vec<String>, String)> {
    let client = partners::platform::client_name(source.provider.as_str());
    let mine: Vec<(&String, &sandbox::platform::HeldDataSet)> = sets
        .iter()
        .filter(|(_, s)| s.user_id == source.user_id.as_str() && s.set["client"]["name"] == client.as_str())
        .collect();
    if stored.is_empty() && mine.is_empty() {
        return Ok(());
    }
    assert_eq!(mine.len(), 1, "{login}: one data set per source, found {}", mine.len());
    let (set_id, held) = mine[0];
    assert_eq!(source.data_set_id.as_deref(), Some(set_id.as_str()), "{login}: dataSetIds names the set");
    let local: BTreeMap<&str, &Value> =
        stored.iter().map(|d| (d.body["origin"]["id"].as_str().expect("origin.id"), &d.body)).collect();
    assert_eq!(local.len(), stored.len(), "{login}: origin ids unique in the source");
    let missing: Vec<String> = local.keys().filter(|k| !held.data.contains_key(**k)).map(|k| k.to_string()).collect();
    let extra: Vec<&String> = held.data.keys().filter(|k| !local.contains_key(k.as_str())).collect();
    if !missing.is_empty() || !extra.is_empty() {
        let why = format!(
            "{login}: the platform misses {} (e.g. {:?}) and has {} we do not (e.g. {:?})\ndata set {set_id}:\n  {}",
            missing.len(),
            missing.first(),
            extra.len(),
            extra.first(),
            held.log.join("\n  ")
        );
        return Err((missing, why));
    }
    for (k, v) in &local {
        assert_eq!(&&held.data[*k], v, "{login}: datum {k} differs at the platform");
    }
    Ok(())
}

/// What the local store knows of datums the platform misses, and the source's delivery state.
async fn missing_at_platform(w: &World, id: &model::DataSourceId, origins: &[String]) -> String {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT format('  %s %s seq %s time %s created %s modified %s origin.time %s', d.type, d.id, d.seq, d.time,
                       d.created_time, d.modified_time, d.body->'origin'->>'time')
         FROM datums d WHERE d.data_source_id = $1 AND d.body->'origin'->>'id' = ANY($2) ORDER BY d.seq LIMIT 400",
    )
    .bind(id.as_str())
    .bind(origins)
    .fetch_all(&w.app.sql)
    .await
    .unwrap();
    let state: Vec<String> = sqlx::query_scalar(
        "SELECT format('source %s: datum_seq %s delivered_seq %s delivered %s set %s; %s rejections, %s deletions queued',
                       s.id, s.datum_seq, s.delivered_seq, s.delivered_time, s.data_set_id,
                       (SELECT count(*) FROM datum_rejections r WHERE r.data_source_id = s.id),
                       (SELECT count(*) FROM platform_deletions p WHERE p.data_source_id = s.id))
         FROM data_sources s WHERE s.id = $1",
    )
    .bind(id.as_str())
    .fetch_all(&w.app.sql)
    .await
    .unwrap();
    format!("{}\n{}", state.join("\n"), rows.join("\n"))
}

/// A source's poll history, for a failure message.
async fn history(w: &World, id: &model::DataSourceId) -> String {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT format('  %s – %s %s %s', started_at, finished_at, outcome, coalesce(error, ''))
         FROM poll_runs WHERE data_source_id = $1 ORDER BY started_at, id",
    )
    .bind(id.as_str())
    .fetch_all(&w.app.sql)
    .await
    .unwrap();
    rows.join("\n")
}

/// A user's clinic reports in the outbox and who holds their lease (for a failure's message).
async fn outbox_history(w: &World, user: &str) -> String {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT format('  #%s %s created %s available %s attempts %s delivered %s parked %s: %s %s', o.id,
                       o.kind, o.created_time, o.available_at, o.attempts, o.delivered_time, o.parked_time,
                       coalesce(o.last_error, ''), o.payload::text)
         FROM outbox o WHERE o.user_id = $1 ORDER BY o.id",
    )
    .bind(user)
    .fetch_all(&w.app.sql)
    .await
    .unwrap();
    let leases: Vec<String> = sqlx::query_scalar(
        "SELECT format('  lease %s by %s until %s', kind, lease_owner, lease_until) FROM outbox_leases WHERE user_id = $1",
    )
    .bind(user)
    .fetch_all(&w.app.sql)
    .await
    .unwrap();
    format!("{}\n{}\n  simulated now {}", rows.join("\n"), leases.join("\n"), w.sandbox.sim.clock.now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_matrix_over_simulated_days_equals_the_ground_truth() {
    let (sources, days, kill_every) = if soak() {
        let var = |k: &str, d: i64| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
        (var("TIDEGATE_SOAK_SOURCES", 2_000) as usize, var("TIDEGATE_SOAK_DAYS", 7), 3)
    } else {
        (200, 2, 6)
    };
    // Nine in ten Dexcom, one in ten CareLink (a CareLink poll reads and compares the whole
    // last day: ≈ 575 records against ≈ 20 for Dexcom).
    let pop = Population { dexcom: sources - sources / 10, carelink: sources / 10 };
    let start = tidegate_e2e::test_epoch();
    // A Postgres server of this test's own: it is restarted mid-run (dropped after the world).
    let cluster = std::sync::Arc::new(tidegate_e2e::Cluster::start());
    let w = tidegate_e2e::spawn_world_on(
        tidegate_e2e::TestDb::create_on(cluster.url()).await,
        sandbox::SandboxConfig {
            dexcom_people: pop.dexcom,
            // The simulator makes its last two CareLink accounts care partners: not seeded.
            carelink_people: pop.carelink + 2,
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
    let mut ids = seed(&w, pop.dexcom, start).await;
    ids.extend(seed_carelink(&w, pop.dexcom, pop.len(), start).await);
    let groups: Vec<Group> = (0..sources).map(|i| pop.group(i)).collect();

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
            ("TIDEGATE_PARTNERS__CARELINK__TIMEOUT_SECS".into(), "2".into()),
            ("TIDEGATE_OUTBOX__IDLE_MS".into(), "20".into()),
            ("TIDEGATE_OUTBOX__LEASE_SECS".into(), "60".into()),
            ("TIDEGATE_CLINIC__TIMEOUT_SECS".into(), "2".into()),
            // Every datum goes to the data-service stand-in too (and stays locally: the
            // comparison below needs the whole history, so no retention pruning runs here).
            ("TIDEGATE_SINKS__ENABLED".into(), "local,tidepool".into()),
            ("TIDEGATE_SINKS__RETENTION_DAYS".into(), "3650".into()),
            ("TIDEGATE_SINKS__TIDEPOOL__TIMEOUT_SECS".into(), "2".into()),
            (
                "TIDEGATE_LOG__FILTER".into(),
                "warn,tidegate=info,tidegate_scheduler=info,tidegate_scheduler::outbox=debug".into(),
            ),
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
    // The platform data service: down for six hours, 5xx and 429 through the first day, answers
    // held past our timeout after the write for an hour, its sessions expired twice.
    let platform_down = (Duration::hours(8), Duration::hours(14));
    let mut outage: Option<(i64, Option<DateTime<Utc>>, usize)> = None;
    let mut outage_checked = false;
    let db_down = (Duration::hours(36), Duration::hours(37));
    // The database server itself restarted while polls run: cleanly, then as after a crash.
    let restarts = [(Duration::hours(30), Restart::Fast), (Duration::hours(42), Restart::Immediate)];
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
        if elapsed.num_minutes() % (6 * 60) == 0 {
            eprintln!("fault matrix: {hour} h simulated after {:.0?}", began.elapsed());
        }
        // Faults for this hour. Bursts of 429s are spent as they are served: re-armed every
        // 6 hours.
        if at <= faulty_end && hour != hour_applied {
            hour_applied = hour;
            w.sandbox.sim.faults.clear();
            w.sandbox.sim.faults.set_global(maintenance());
            for (i, g) in groups.iter().enumerate() {
                let keep = *g != Group::RateLimited || hour % 6 == 0;
                match faults_at(*g, hour).filter(|_| keep) {
                    Some(f) => w.sandbox.sim.faults.set_account(&pop.login(i), f),
                    // CareLink has no nightly maintenance (ours or the simulator's).
                    None if pop.is_carelink(i) => w.sandbox.sim.faults.set_account(&pop.login(i), Faults::default()),
                    None => {}
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
                    let n: usize = auth_servers(&w).map(|a| a.revoke_person(i)).sum();
                    let lost = auth_servers(&w).any(|a| a.reuse_revocations().contains(&i));
                    assert!(n > 0 || lost, "{} had a grant to revoke", pop.login(i));
                }
            }
        }
        let platform_is_down = elapsed > platform_down.0 && elapsed <= platform_down.1;
        w.sandbox.sim.platform.set_faults(PlatformFaults {
            down: platform_is_down,
            error_rate: if hour < 24 { 0.1 } else { 0.0 },
            rate_limit_rate: if hour < 24 { 0.05 } else { 0.0 },
            retry_after_secs: 120,
            // A fifth of the answers held past our timeout, after the write, for an hour.
            ack_delay_ms: if hour == 16 { 3_000 } else { 0 },
            ack_delay_rate: 0.2,
            ..PlatformFaults::default()
        });
        if elapsed == Duration::hours(20) || elapsed == Duration::hours(40) {
            w.sandbox.sim.platform.expire_sessions();
        }
        // An hour into the outage (requests admitted just before it began have landed by then),
        // the platform's holdings are noted: they must not grow until it is back.
        if platform_is_down && outage.is_none() && elapsed >= platform_down.0 + Duration::hours(1) {
            outage = Some(delivery_figures(&w).await);
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
        if let Some((_, how)) = restarts.iter().find(|(h, _)| *h == elapsed) {
            tokio::time::sleep(StdDuration::from_millis(rng.random_range(0..250))).await;
            let (c, how) = (cluster.clone(), *how);
            tokio::task::spawn_blocking(move || c.restart(how)).await.unwrap();
        }
        // No kills in the last hour: the leases a killed process held (120 s for polls, 60 s
        // for clinic reports, on the simulated clock) must expire before the clock stands still.
        if !db_is_down && n_step.is_multiple_of(kill_every) && at <= end - Duration::hours(1) {
            // SIGKILL at a random point of the polls this step started.
            tokio::time::sleep(StdDuration::from_millis(rng.random_range(0..250))).await;
            let victim = rng.random_range(0..workers.len());
            let owners = owners_of(&workers[victim], StdDuration::from_secs(20));
            let _ = workers[victim].child.kill();
            let _ = workers[victim].child.wait();
            old_logs.push(workers[victim].log());
            dead.extend(owners);
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
            stalled +=
                settle(&w, at, &dead, (!clinic_is_down, !platform_is_down), false, StdDuration::from_secs(120)).await;
        }
        // The outage's last step, settled and still down: polling went on, nothing reached the
        // platform meanwhile.
        if elapsed == platform_down.1
            && let Some((datums, latest, held)) = outage
        {
            outage_checked = true;
            let (now_datums, now_latest, now_held) = delivery_figures(&w).await;
            assert!(now_datums > datums && now_latest > latest, "polling stopped during the platform outage");
            assert_eq!(now_held, held, "the platform took data while down");
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
        .execute(&w.app.sql)
        .await
        .unwrap();
    settle(&w, at, &dead, (true, true), true, StdDuration::from_secs(180)).await;
    // A source whose last poll failed transiently (a fault's tail, our own pool contention) was
    // rescheduled with backoff and is not due now: poll it again, from where it stood, so the
    // comparison measures what the run lost, not when its retry happened to be due. A source
    // still failing after three rounds is reported below with its history.
    let mut repolled = Vec::new();
    for _ in 0..3 {
        let retry: Vec<String> = sqlx::query_scalar(
            "UPDATE poll_schedule s SET next_run_at = $1
             FROM (SELECT DISTINCT ON (data_source_id) data_source_id, outcome FROM poll_runs
                   ORDER BY data_source_id, finished_at DESC, id DESC) r
             WHERE r.data_source_id = s.data_source_id AND r.outcome IN ('transient', 'pool_busy')
               AND NOT s.paused AND s.next_run_at > $1
             RETURNING s.data_source_id",
        )
        .bind(at - Duration::seconds(1))
        .fetch_all(&w.app.sql)
        .await
        .unwrap();
        if retry.is_empty() {
            break;
        }
        repolled.push(retry.len());
        settle(&w, at, &dead, (true, true), true, StdDuration::from_secs(180)).await;
    }
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
    let platform_sets = w.sandbox.sim.platform.data_sets();
    let mut delivered = 0usize;
    for (i, id) in ids.iter().enumerate() {
        let g = groups[i];
        let user = user_id(i);
        let source = w.app.store.get_data_source(id).await.unwrap().unwrap();
        let reused = auth_servers(&w).any(|a| a.reuse_revocations().contains(&i));
        let e = source.error.as_ref().map(|e| e.code.as_str());
        let confirmed = (source.state, e) == (DataSourceState::Error, Some("authorization_revoked"));
        let (want_state, until) = if g == Group::Revoked {
            // Revoked at the partner: confirmed after four auth failures, the patient asked to
            // reconnect, the clinic told, everything imported before it kept.
            assert!(confirmed, "{} is {:?}: {:?}", pop.login(i), source.state, source.error);
            (DataSourceState::Error, Some(source.last_import_time.expect("imported before the revocation")))
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
            assert!(confirmed || (source.state == DataSourceState::Connected && failures > 0), "{}", pop.login(i));
            assert!(kills > 0);
            lost_to_kills.push(pop.login(i));
            // (A grant lost before the first import leaves nothing to compare.)
            (source.state, source.last_import_time)
        } else {
            if source.state != DataSourceState::Connected {
                panic!(
                    "{} ({g:?}) is {:?}: {:?}\nkills (simulated time): {kill_times:?}\n{}",
                    pop.login(i),
                    source.state,
                    source.error,
                    history(&w, id).await
                );
            }
            (DataSourceState::Connected, Some(at))
        };
        let (expected, from) = if let Some(until) = until
            && pop.is_carelink(i)
        {
            // The first import saw the 24 hours before it; stored records older than what the
            // union of served windows covers are not compared (a minute of slack: the poll
            // read the clock a moment after it started).
            let first = first_import(&w, id).await + Duration::minutes(1);
            let truth = carelink_truth(&w, i, &user, first, until);
            (truth, first - Duration::hours(24) + Duration::minutes(10))
        } else if let Some(until) = until {
            let from = start - Duration::days(2);
            (truth_as_of(&w, &pop.login(i), &user, from, until, Some(until)).await, from)
        } else {
            (BTreeMap::new(), start - Duration::days(2))
        };
        let stored = w.app.store.datums_of_source(id).await.unwrap();
        if let Err((missing, why)) = check_platform_copy(&source, &stored, &platform_sets, &pop.login(i)) {
            let user = source.user_id.as_str();
            let mut logs = old_logs.clone();
            logs.extend(workers.iter().map(Proc::log));
            let lines: Vec<&str> =
                logs.iter().flat_map(|l| l.lines()).filter(|l| l.contains(user) || l.contains(id.as_str())).collect();
            panic!(
                "{why}\n{}\n{}\nworker log lines naming the user or source ({}; last 300):\n{}\npolls:\n{}",
                missing_at_platform(&w, id, &missing).await,
                outbox_history(&w, user).await,
                lines.len(),
                lines[lines.len().saturating_sub(300)..].join("\n"),
                history(&w, id).await
            );
        }
        delivered += stored.len();
        let got: BTreeMap<String, Value> =
            stored.into_iter().map(|d| (d.id, tidegate_e2e::as_mapped(d.body))).collect();
        let missing: Vec<&String> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
        // Device settings and pump status come from another endpoint or describe the moment of
        // a poll: not the truth's records.
        let extra: Vec<(&String, &Value)> = got
            .iter()
            .filter(|(k, v)| !expected.contains_key(*k) && !is_snapshot(v) && datum_time(v) >= from)
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            panic!(
                "{} ({g:?}, {:?}, last import {:?}): {} missing (e.g. {}), {} not in the truth (e.g. {:?})\nkills: {kill_times:?}\n{}",
                pop.login(i),
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
                    assert_eq!(got[k][field], v[field], "{} ({g:?}): datum {k} {field}", pop.login(i));
                }
            } else {
                assert_eq!(&got[k], v, "{} ({g:?}): datum {k} differs from the ground truth", pop.login(i));
            }
        }
        // The clinic's last accepted report says what we say.
        let report = last_accepted.get(user.as_str()).unwrap_or_else(|| panic!("no report for {}", pop.login(i)));
        let reported = report.as_array().and_then(|a| a.iter().find(|e| e["providerName"] == pop.provider(i)));
        let want = Some(serde_json::to_value(want_state).unwrap());
        if reported.map(|e| e["state"].clone()) != want {
            panic!(
                "{} ({g:?}): we say {want:?}, the clinic has {report}\noutbox:\n{}\npolls:\n{}",
                pop.login(i),
                outbox_history(&w, user.as_str()).await,
                history(&w, id).await
            );
        }
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
            .fetch_all(&w.app.sql)
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
    eprintln!(
        "fault matrix: {sources} sources, {days} simulated days + 6 h recovery, {} steps in {wall:.0?}; {kills} SIGKILLs ({} processes), DB cut {}–{} h, clinic down {}–{} h ({reports} clinic reports, {refused} failed delivery attempts, every report delivered); {datums} datums equal the ground truth; poll outcomes {outcomes:?}; {stalled} leases left to expire (outcome not recordable); grants lost to a kill between rotation and commit: {lost_to_kills:?}; {} simulator secrets absent from pg_dump and {} process logs; sources re-polled after a transient last poll, per round: {repolled:?}",
        n_step,
        kills + workers.len(),
        db_down.0.num_hours(),
        db_down.1.num_hours(),
        clinic_down.0.num_hours(),
        clinic_down.1.num_hours(),
        secrets.len(),
        old_logs.len(),
    );
    let pc = w.sandbox.sim.platform.counts();
    assert!(outage_checked, "the platform outage was observed");
    eprintln!(
        "  platform: down {}–{} h, {} data sets for {} sources, {delivered} datums equal to the local store; {} uploads, {} logins, {} faults injected, {} deletions carried, {} datums replaced by a newer version",
        platform_down.0.num_hours(),
        platform_down.1.num_hours(),
        platform_sets.len(),
        ids.len(),
        pc.uploads,
        pc.logins,
        pc.faults_injected,
        pc.datums_deleted,
        pc.replaced,
    );
    let groups_seen: BTreeSet<Group> = groups.iter().copied().collect();
    for g in groups_seen {
        let (n, d) = rows[&g];
        eprintln!("  {g:?}: {n} sources, {d} datums, final state as expected, clinic told");
    }
}

/// The CareLink truth above assumes the simulator's payloads agree with each other: a pump record
/// maps to the same datum from every payload that holds it, whatever the window's start or the
/// last upload (a daylight-saving change and low-glucose suspensions inside the window included).
#[tokio::test]
async fn carelink_payloads_agree_with_each_other() {
    let start = tidegate_e2e::test_epoch();
    let w = tidegate_e2e::spawn_world_with(
        sandbox::SandboxConfig { dexcom_people: 0, carelink_people: 22, history_days: 1, ..Default::default() },
        &[],
    )
    .await;
    let mut checked = 0;
    for i in 0..20 {
        let user = user_id(i);
        let person = &w.sandbox.sim.people[i];
        // (type, subType, pump time) → datum id, from the first payload that showed it.
        let mut seen: BTreeMap<(String, String, String), (String, DateTime<Utc>)> = BTreeMap::new();
        let mut t = start;
        while t <= start + Duration::hours(54) {
            let body = serde_json::json!({ "patientData": sandbox::carelink::display::patient_data(person, t) });
            let mut batch = Batch::default();
            carelink()
                .map_saved(&user, Saved { document: &body, endpoint: None, window: None }, &mut batch)
                .expect("maps");
            for d in &batch.datums {
                let v = d.to_json();
                if is_snapshot(&v) {
                    continue;
                }
                let key = (v["type"].to_string(), v["subType"].to_string(), v["deviceTime"].to_string());
                let id = d.base().id.as_str().to_owned();
                let (first_id, first_at) = seen.entry(key.clone()).or_insert((id.clone(), t));
                assert_eq!(
                    &id, first_id,
                    "{} {key:?}: first seen at {first_at} as {first_id}, at {t} as {v}",
                    person.login
                );
                checked += 1;
            }
            // Steps that land on and just after the hour (changes and uploads) and between.
            t += Duration::minutes(40) + Duration::seconds(7);
        }
    }
    assert!(checked > 50_000, "{checked}");
}
