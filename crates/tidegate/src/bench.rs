//! `tidegate bench poll`: what one node sustains, measured with the real thing — `tidegate
//! worker` processes (as deployed) polling the partner simulator over loopback HTTP and writing
//! to a fresh Postgres database. Sources are seeded as `connect` stores them (tokens sealed
//! with the configured key ring); the simulator's partner budget is off. Phases:
//!
//! 1. **claim**: the bare claim-and-reschedule rate (the schedule's SQL, no partner I/O);
//! 2. **saturation**: every source due at once, each poll fetching one hour of Dexcom data
//!    (plus the configured look-back): completed polls/s, poll duration, CPU per 1,000 polls,
//!    rows written/s, peak RSS of the workers;
//! 3. **lag**: a fixed offered load (default half of saturation): schedule lag p50/p99;
//! 4. **idle**: polls with nothing new: partner calls per poll;
//! 5. **scale** (with `--population M`): M more schedule rows (COPY; not due) and the claim
//!    cost and worker RSS again;
//! 6. **delivery** (with `--with-delivery`): workers restarted with the `tidepool` sink on,
//!    delivering everything the phases above wrote to the simulator's data-service stand-in
//!    (datums/s over loopback), then the saturation phase again with delivery on, beside the
//!    same phase with it off;
//! 7. **retention** (with `--prune-rows N`, after 6): N delivered datums seeded over four old
//!    weekly partitions, then pruned while every source is due again: the prune's cost and the
//!    polls' duration while it ran.
//!
//! Output: a table for people and one JSON line. docs/PERFORMANCE.md has the figures.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration as StdDuration, Instant};

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use model::{DataSourceId, ProviderName, UserId};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::json;
use sqlx::{ConnectOptions, Connection};
use store::audit::Actor;
use store::lifecycle::Connection as NewConnection;

use crate::configuration::Settings;

#[derive(Debug, Clone)]
pub struct PollBench {
    /// Connected Dexcom sources polled in the measured phases.
    pub sources: usize,
    /// `tidegate worker` processes.
    pub workers: usize,
    /// Upper bound on each measured phase.
    pub duration: StdDuration,
    /// Polls per second offered in the lag phase (default: half the saturation rate).
    pub offered_load: Option<f64>,
    /// Extra schedule rows (not due) for the scale check.
    pub population: usize,
    /// The poll look-back (production: 360 min). 0 makes each poll's payload exactly one hour.
    pub look_back_minutes: i64,
    /// The database the bench creates afresh (dropped first if it exists).
    pub database: String,
    /// Measure platform delivery too (phase 6).
    pub with_delivery: bool,
    /// With delivery: seed this many delivered datums in old partitions and prune them while
    /// the saturation phase runs (phase 7; 0: skip).
    pub prune_rows: u64,
}

/// Figures of one run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub sources: usize,
    pub workers: usize,
    pub look_back_minutes: i64,
    pub claim_rate_per_s: f64,
    pub saturation_polls_per_s: f64,
    pub saturation_vs_claim: f64,
    pub poll_ms_p50: f64,
    pub poll_ms_p99: f64,
    pub calls_per_poll: f64,
    pub datums_per_poll: f64,
    pub rows_written_per_s: f64,
    pub worker_cpu_s_per_1000_polls: f64,
    pub postgres_cpu_s_per_1000_polls: f64,
    pub simulator_cpu_s_per_1000_polls: f64,
    pub worker_peak_rss_mb: f64,
    pub offered_load_per_s: f64,
    pub lag_polls: usize,
    pub lag_ms_p50: f64,
    pub lag_ms_p99: f64,
    pub idle_calls_per_poll: f64,
    pub sources_per_node_at_60_min: f64,
    pub partner_ceiling_sources: f64,
    pub population: usize,
    pub claim_ms_p50_small: f64,
    pub claim_ms_p99_small: f64,
    pub claim_ms_p50_population: f64,
    pub claim_ms_p99_population: f64,
    pub worker_idle_rss_mb_small: f64,
    pub worker_idle_rss_mb_population: f64,
    /// Phase 6: the backlog delivered to the stand-in.
    pub delivered_datums: u64,
    pub delivered_datums_per_s: f64,
    pub delivery_uploads: u64,
    pub delivery_worker_cpu_s_per_1000_datums: f64,
    /// Phase 6: saturation with delivery on (compare `saturation_polls_per_s`).
    pub saturation_with_delivery_polls_per_s: f64,
    /// Phase 6: from the last poll of that phase until every datum was delivered.
    pub delivery_drain_s: f64,
    /// Phase 7: retention pruning while polls (and deliveries) run.
    pub prune_rows_seeded: u64,
    pub prune_seed_s: f64,
    pub prune_s: f64,
    pub prune_partitions: u64,
    pub prune_rows_dropped: u64,
    pub prune_detach_ms: f64,
    pub prune_keep_ms: f64,
    pub prune_drop_ms: f64,
    pub saturation_with_prune_polls_per_s: f64,
    pub polls_during_prune: usize,
    pub poll_ms_p50_during_prune: f64,
    pub poll_ms_p99_during_prune: f64,
    pub poll_ms_max_during_prune: f64,
}

const DEXCOM_CALLS_PER_HOUR: f64 = 60_000.0;

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Completed polls per second from the first start to the last finish, and that last finish.
fn polls_per_s(ok: &[&Run], t0: DateTime<Utc>) -> (f64, DateTime<Utc>) {
    let first = ok.iter().map(|x| x.started_at).min().unwrap_or(t0);
    let last = ok.iter().map(|x| x.finished_at).max().unwrap_or(t0);
    (ok.len() as f64 / ((last - first).num_milliseconds().max(1) as f64 / 1000.0), last)
}

fn user_id(i: usize) -> UserId {
    UserId::parse(&format!("{:010x}", 0x40_0000_0000_u64 + i as u64)).expect("a valid user id")
}

/// Clock ticks per second of /proc times (Linux: USER_HZ is 100 on every supported platform).
const TICKS: f64 = 100.0;

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    (t(11) + t(12)) / TICKS
}

/// A /proc/<pid>/status value in kB (VmRSS, VmHWM).
fn status_kb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// CPU seconds of every Postgres server process on this machine.
fn postgres_cpu_secs() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0.0 };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .map(cpu_secs)
        .sum()
}

struct Workers {
    children: Vec<Child>,
}

impl Workers {
    fn cpu(&self) -> f64 {
        self.children.iter().map(|c| cpu_secs(c.id())).sum()
    }
    fn peak_rss_mb(&self) -> f64 {
        self.children.iter().map(|c| status_kb(c.id(), "VmHWM:")).fold(0.0, f64::max) / 1024.0
    }
    fn rss_mb(&self) -> f64 {
        self.children.iter().map(|c| status_kb(c.id(), "VmRSS:")).fold(0.0, f64::max) / 1024.0
    }
    fn stop(mut self) {
        for c in &self.children {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The settings overlay every process of the bench reads (TIDEGATE_CONFIG_FILE).
fn overlay(look_back_minutes: i64) -> String {
    format!(
        "# Written by `tidegate bench poll`.\n\
         [poll]\nlook_back_minutes = {look_back_minutes}\n\n\
         # Throughput runs: the partner budget far above demand (its bookkeeping still runs), no\n\
         # maintenance blackout (the run may fall into one).\n\
         [partners.dexcom.schedule]\ncalls_per_hour = 1000000000\nblackouts = []\n"
    )
}

struct Bench {
    /// Workers with the `tidepool` sink on (phase 6).
    sink_env: Vec<(String, String)>,
    opts: PollBench,
    store: store::Store,
    sandbox: sandbox::Sandbox,
    env: Vec<(String, String)>,
    client_id: String,
    ids: Vec<DataSourceId>,
    /// The bench database (phase 7 seeds through its own connection: no statement timeout).
    db: sqlx::postgres::PgConnectOptions,
}

pub async fn run(mut settings: Settings, opts: PollBench) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.sources > 0 && opts.workers > 0, "--sources and --workers must be positive");
    // A fresh database.
    let mut url = reqwest::Url::parse(settings.database.url.expose_secret()).context("database.url")?;
    url.set_path(&format!("/{}", opts.database));
    let options = settings.connect_options()?.database(&opts.database);
    let mut admin = options.clone().database("postgres").connect().await.context("connecting to Postgres")?;
    let quoted = format!("\"{}\"", opts.database.replace('"', "\"\""));
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")))
        .execute(&mut admin)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}"))).execute(&mut admin).await?;
    admin.close().await?;
    settings.database.url = SecretString::from(url.to_string());
    settings.poll.look_back_minutes = opts.look_back_minutes;
    let store = crate::startup::store(&settings)?;
    store.migrate().await?;

    // The simulator, in this process (its CPU is reported on its own).
    let redirect = format!("{}/v1/oauth/dexcom/redirect", settings.public_url.trim_end_matches('/'));
    let sandbox = sandbox::Sandbox::start(sandbox::SandboxConfig {
        listen: "127.0.0.1:0".parse().expect("static address"),
        dexcom_people: opts.sources.clamp(1, 1_000),
        carelink_people: 0,
        dexcom_budget_per_hour: None,
        history_days: 2,
        platform_server_secret: sandbox::random_secret(),
        ..crate::demo::simulator_config(&settings, &redirect)
    })
    .await
    .context("starting the simulator")?;

    // What every worker process gets: this configuration, the overlay, the bench database and
    // the simulator's addresses.
    let dir = std::env::temp_dir().join(format!("tidegate-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let overlay_file = dir.join("bench.toml");
    std::fs::write(&overlay_file, overlay(opts.look_back_minutes))?;
    let mut env = worker_env(&settings, &overlay_file, &url, &sandbox.base_url);
    // Phase 6's workers deliver to the stand-in.
    let mut sink_env = env.clone();
    sink_env.push(("TIDEGATE_SINKS__ENABLED".into(), "local,tidepool".into()));
    // Phase 7 prunes by itself, at a moment it picks: the workers' upkeep must not.
    sink_env.push(("TIDEGATE_SINKS__RETENTION_DAYS".into(), "3650".into()));
    sink_env.push(("TIDEGATE_SINKS__TIDEPOOL__URL".into(), format!("{}/tidepool", sandbox.base_url)));
    sink_env.push(("TIDEGATE_SINKS__TIDEPOOL__SERVER_SECRET".into(), sandbox.sim.cfg.platform_server_secret.clone()));
    env.push(("TIDEGATE_SINKS__ENABLED".into(), "local".into()));
    let client_id = settings
        .partners
        .get("dexcom")
        .and_then(|p| p.client_id.clone())
        .context("partners.dexcom.client_id is not configured")?;
    let mut b = Bench { opts: opts.clone(), store, sandbox, env, sink_env, client_id, ids: Vec::new(), db: options };
    let result = b.measure(&redirect).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn worker_env(settings: &Settings, overlay: &Path, url: &reqwest::Url, sim: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("TIDEGATE_ENV".to_owned(), settings.env.clone()),
        ("TIDEGATE_CONFIG_FILE".to_owned(), overlay.display().to_string()),
        ("TIDEGATE_DATABASE__URL".to_owned(), url.to_string()),
        ("TIDEGATE_LOG__FILTER".to_owned(), "error".to_owned()),
        ("TIDEGATE_CLINIC__URL".to_owned(), format!("{sim}/clinic")),
    ];
    let dir = crate::configuration::config_dir();
    let dir = dir.canonicalize().unwrap_or(dir);
    env.push(("TIDEGATE_CONFIG_DIR".to_owned(), dir.display().to_string()));
    for (region, prefix) in sandbox::DEXCOM_REGIONS {
        let r = region.to_uppercase();
        let p = format!("TIDEGATE_PARTNERS__DEXCOM__REGIONS__{r}__");
        env.push((format!("{p}AUTHORIZE_URL"), format!("{sim}{prefix}/v3/oauth2/login")));
        env.push((format!("{p}TOKEN_URL"), format!("{sim}{prefix}/v3/oauth2/token")));
        env.push((format!("{p}API_BASE_URL"), format!("{sim}{prefix}")));
    }
    env
}

impl Bench {
    fn spawn_workers(&self) -> anyhow::Result<Workers> {
        self.spawn_workers_with(&self.env)
    }

    fn spawn_workers_with(&self, env: &[(String, String)]) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe().context("locating the tidegate binary")?;
        let mut children = Vec::new();
        for _ in 0..self.opts.workers {
            let mut cmd = Command::new(&exe);
            cmd.arg("worker").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
            for (k, v) in env {
                cmd.env(k, v);
            }
            children.push(cmd.spawn().context("starting a tidegate worker")?);
        }
        Ok(Workers { children })
    }

    async fn measure(&mut self, redirect: &str) -> anyhow::Result<Report> {
        let o = self.opts.clone();
        let mut r = Report {
            sources: o.sources,
            workers: o.workers,
            look_back_minutes: o.look_back_minutes,
            population: o.population,
            ..Default::default()
        };
        let t = Instant::now();
        self.seed(redirect).await?;
        eprintln!("seeded {} connected Dexcom sources in {:.1} s", o.sources, t.elapsed().as_secs_f64());

        // 1. The bare claim-and-reschedule rate.
        self.schedule_all_due(Utc::now()).await?;
        r.claim_rate_per_s = self.claim_only().await?;
        eprintln!("claim and reschedule: {:.0} rows/s", r.claim_rate_per_s);
        let (p50, p99) = self.claim_latency().await?;
        (r.claim_ms_p50_small, r.claim_ms_p99_small) = (p50, p99);

        // 2. Saturation: everything due now.
        let workers = self.spawn_workers()?;
        tokio::time::sleep(StdDuration::from_secs(2)).await;
        r.worker_idle_rss_mb_small = workers.rss_mb();
        let (cpu_w, cpu_pg, cpu_sim) = (workers.cpu(), postgres_cpu_secs(), cpu_secs(std::process::id()));
        let t0 = Utc::now();
        self.schedule_all_due(t0).await?;
        let done = self.wait_for_polls(t0, o.sources, o.duration).await?;
        let (cpu_w, cpu_pg, cpu_sim) =
            (workers.cpu() - cpu_w, postgres_cpu_secs() - cpu_pg, cpu_secs(std::process::id()) - cpu_sim);
        let runs = self.runs_since(t0).await?;
        let ok: Vec<&Run> = runs.iter().filter(|x| x.outcome == "success").collect();
        anyhow::ensure!(!ok.is_empty(), "no poll succeeded in the saturation phase ({done} finished)");
        let first = ok.iter().map(|x| x.started_at).min().unwrap_or(t0);
        let last = ok.iter().map(|x| x.finished_at).max().unwrap_or(t0);
        let span = (last - first).num_milliseconds().max(1) as f64 / 1000.0;
        let n = ok.len() as f64;
        r.saturation_polls_per_s = n / span;
        r.saturation_vs_claim = r.saturation_polls_per_s / r.claim_rate_per_s.max(1e-9);
        let mut dur: Vec<f64> =
            ok.iter().map(|x| (x.finished_at - x.started_at).num_microseconds().unwrap_or(0) as f64 / 1000.0).collect();
        dur.sort_by(f64::total_cmp);
        (r.poll_ms_p50, r.poll_ms_p99) = (pct(&dur, 0.5), pct(&dur, 0.99));
        r.calls_per_poll = ok.iter().map(|x| f64::from(x.calls)).sum::<f64>() / n;
        r.datums_per_poll = ok.iter().map(|x| f64::from(x.datums_written)).sum::<f64>() / n;
        r.rows_written_per_s = ok.iter().map(|x| f64::from(x.datums_written)).sum::<f64>() / span;
        r.worker_cpu_s_per_1000_polls = cpu_w / n * 1000.0;
        r.postgres_cpu_s_per_1000_polls = cpu_pg / n * 1000.0;
        r.simulator_cpu_s_per_1000_polls = cpu_sim / n * 1000.0;
        r.sources_per_node_at_60_min = r.saturation_polls_per_s * 3_600.0;
        r.partner_ceiling_sources = DEXCOM_CALLS_PER_HOUR / r.calls_per_poll.max(1.0);
        eprintln!("saturation: {n} polls in {span:.1} s");

        // 3. Lag at a fixed offered load.
        let rate = o.offered_load.unwrap_or(r.saturation_polls_per_s / 2.0).max(1.0);
        r.offered_load_per_s = rate;
        let count = ((rate * o.duration.as_secs_f64()) as usize).clamp(1, o.sources);
        let t1 = Utc::now() + Duration::seconds(1);
        self.schedule_spread(t1, rate, count).await?;
        self.wait_for_polls(t1, count, o.duration + StdDuration::from_secs(30)).await?;
        let runs = self.runs_since(t1).await?;
        let mut lag: Vec<f64> = runs
            .iter()
            .filter(|x| x.outcome == "success")
            .map(|x| (x.started_at - x.due_at).num_microseconds().unwrap_or(0) as f64 / 1000.0)
            .collect();
        lag.sort_by(f64::total_cmp);
        r.lag_polls = lag.len();
        (r.lag_ms_p50, r.lag_ms_p99) = (pct(&lag, 0.5), pct(&lag, 0.99));
        eprintln!(
            "lag at {rate:.0} polls/s over {} polls: p50 {:.0} ms, p99 {:.0} ms",
            lag.len(),
            r.lag_ms_p50,
            r.lag_ms_p99
        );

        // 4. Idle polls: nothing new since the last sync.
        let idle = o.sources.min(200);
        let t2 = Utc::now();
        self.schedule_idle(t2, idle).await?;
        self.wait_for_polls(t2, idle, o.duration).await?;
        let runs = self.runs_since(t2).await?;
        let ok: Vec<&Run> = runs.iter().filter(|x| x.outcome == "success").collect();
        r.idle_calls_per_poll = ok.iter().map(|x| f64::from(x.calls)).sum::<f64>() / (ok.len().max(1) as f64);
        r.worker_peak_rss_mb = workers.peak_rss_mb();
        workers.stop();

        // 5. Scale: the same claims with a large population of not-due rows.
        if o.population > 0 {
            let t = Instant::now();
            self.seed_population(o.population).await?;
            eprintln!("copied {} more schedule rows in {:.1} s", o.population, t.elapsed().as_secs_f64());
            let (p50, p99) = self.claim_latency().await?;
            (r.claim_ms_p50_population, r.claim_ms_p99_population) = (p50, p99);
            let workers = self.spawn_workers()?;
            tokio::time::sleep(StdDuration::from_secs(5)).await;
            r.worker_idle_rss_mb_population = workers.rss_mb();
            workers.stop();
        }

        // 6. Delivery: the backlog the phases above wrote, then saturation with delivery on.
        if o.with_delivery {
            self.measure_delivery(&mut r).await?;
        }
        Ok(r)
    }

    /// Datums not yet delivered, over every source.
    async fn backlog(&self) -> anyhow::Result<i64> {
        let h = self.store.delivery_health(Utc::now()).await?;
        Ok(h.backlog_datums)
    }

    async fn wait_for_delivery(&self, within: StdDuration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while self.backlog().await? > 0 {
            anyhow::ensure!(Instant::now() < deadline, "the backlog was not delivered within {within:?}");
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        Ok(())
    }

    async fn measure_delivery(&mut self, r: &mut Report) -> anyhow::Result<()> {
        let o = self.opts.clone();
        let platform = &self.sandbox.sim.platform;
        let (received, uploads) = (platform.counts().datums_received, platform.counts().uploads);
        let backlog = self.backlog().await?;
        let t = Instant::now();
        let workers = self.spawn_workers_with(&self.sink_env)?;
        let cpu_w = workers.cpu();
        self.wait_for_delivery(o.duration * 10).await?;
        let span = t.elapsed().as_secs_f64();
        let c = platform.counts();
        r.delivered_datums = c.datums_received - received;
        r.delivery_uploads = c.uploads - uploads;
        r.delivered_datums_per_s = r.delivered_datums as f64 / span;
        r.delivery_worker_cpu_s_per_1000_datums = (workers.cpu() - cpu_w) / (r.delivered_datums.max(1) as f64) * 1000.0;
        eprintln!(
            "delivery: {} datums ({backlog} in the backlog) in {} uploads, {span:.1} s (worker start included)",
            r.delivered_datums, r.delivery_uploads
        );
        let t0 = Utc::now();
        self.schedule_all_due(t0).await?;
        let done = self.wait_for_polls(t0, o.sources, o.duration).await?;
        let runs = self.runs_since(t0).await?;
        let ok: Vec<&Run> = runs.iter().filter(|x| x.outcome == "success").collect();
        anyhow::ensure!(!ok.is_empty(), "no poll succeeded with delivery on ({done} finished)");
        let (rate, last) = polls_per_s(&ok, t0);
        r.saturation_with_delivery_polls_per_s = rate;
        self.wait_for_delivery(o.duration * 10).await?;
        r.delivery_drain_s = ((Utc::now() - last).num_milliseconds().max(0) as f64) / 1000.0;
        eprintln!(
            "saturation with delivery on: {} polls, {:.0} polls/s",
            ok.len(),
            r.saturation_with_delivery_polls_per_s
        );
        if o.prune_rows > 0 {
            self.measure_prune(r).await?;
        }
        workers.stop();
        Ok(())
    }

    /// Phase 7: `prune_rows` delivered datums of synthetic sources over four old weekly
    /// partitions, pruned while every bench source is due (the workers deliver as they poll).
    async fn measure_prune(&mut self, r: &mut Report) -> anyhow::Result<()> {
        let o = self.opts.clone();
        let now = Utc::now();
        let this_week = store::partitions::week_start(now);
        let (from, until) = (this_week - Duration::weeks(6), this_week - Duration::weeks(2));
        self.store.ensure_partitions(from, until, now).await?;
        let t = Instant::now();
        let mut conn = self.db.clone().disable_statement_logging().connect().await?;
        let sources = (o.prune_rows / 500).clamp(1, 20_000);
        crate::bench_prune::seed_datums(&mut conn, o.prune_rows, sources, 1, from, until).await?;
        sqlx::query("ANALYZE datums").execute(&mut conn).await?;
        conn.close().await?;
        r.prune_rows_seeded = o.prune_rows;
        r.prune_seed_s = t.elapsed().as_secs_f64();
        eprintln!("seeded {} delivered datums in old partitions in {:.0} s", o.prune_rows, r.prune_seed_s);
        let t0 = Utc::now();
        self.schedule_all_due(t0).await?;
        // Into the phase: the polls are running.
        while self.store.poll_runs_due_since(t0).await? < (o.sources / 10).max(1) as i64 {
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        let (p0, t) = (Utc::now(), Instant::now());
        let p = self.store.prune_datums(until).await?;
        r.prune_s = t.elapsed().as_secs_f64();
        let p1 = Utc::now();
        (r.prune_partitions, r.prune_rows_dropped) = (p.partitions, p.rows);
        (r.prune_detach_ms, r.prune_keep_ms, r.prune_drop_ms) = (p.detach_ms, p.keep_ms, p.drop_ms);
        let done = self.wait_for_polls(t0, o.sources, o.duration).await?;
        let runs = self.runs_since(t0).await?;
        let ok: Vec<&Run> = runs.iter().filter(|x| x.outcome == "success").collect();
        anyhow::ensure!(!ok.is_empty(), "no poll succeeded while pruning ({done} finished)");
        r.saturation_with_prune_polls_per_s = polls_per_s(&ok, t0).0;
        let mut during: Vec<f64> = ok
            .iter()
            .filter(|x| x.started_at < p1 && x.finished_at > p0)
            .map(|x| (x.finished_at - x.started_at).num_microseconds().unwrap_or(0) as f64 / 1000.0)
            .collect();
        during.sort_by(f64::total_cmp);
        r.polls_during_prune = during.len();
        (r.poll_ms_p50_during_prune, r.poll_ms_p99_during_prune, r.poll_ms_max_during_prune) =
            (pct(&during, 0.5), pct(&during, 0.99), during.last().copied().unwrap_or(0.0));
        eprintln!(
            "prune with polls running: {:.2} s, {} partitions; {} polls overlapped it",
            r.prune_s, r.prune_partitions, r.polls_during_prune
        );
        self.wait_for_delivery(o.duration * 10).await?;
        Ok(())
    }

    /// Connect the sources as `connect` does (tokens from the simulator's authorization
    /// server, sealed), then leave them not due.
    async fn seed(&mut self, redirect: &str) -> anyhow::Result<()> {
        let now = Utc::now();
        let client = self.client_id.clone();
        let auth = &self.sandbox.sim.dexcom_auth[0].1;
        let people = self.opts.sources.clamp(1, 1_000);
        let dexcom = ProviderName::parse("dexcom")?;
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in (0..self.opts.sources).collect::<Vec<_>>().chunks(self.opts.sources.div_ceil(8)) {
            let mut conns = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let code = auth.issue_code(&client, redirect, i % people, "offline_access", None, now);
                let t = auth
                    .exchange_code(&client, &code, redirect, None, now)
                    .map_err(|e| anyhow::anyhow!("simulator token exchange: {e:?}"))?;
                conns.push(NewConnection {
                    user: user_id(i),
                    provider: dexcom.clone(),
                    region: Some("us".into()),
                    partner_account_id: format!("bench-{i}"),
                    access_token: SecretString::from(t.access_token),
                    refresh_token: Some(SecretString::from(t.refresh_token)),
                    access_expires_at: Some(now + Duration::seconds(t.expires_in)),
                    scope: Some(t.scope),
                    link_token_hash: None,
                    first_poll_at: now + Duration::days(1),
                });
            }
            let store = self.store.clone();
            tasks.spawn(async move {
                let mut ids = Vec::with_capacity(conns.len());
                for c in &conns {
                    ids.push(store.connect(&Actor::system(), c, now).await?.id);
                }
                anyhow::Ok(ids)
            });
        }
        while let Some(ids) = tasks.join_next().await {
            self.ids.extend(ids??);
        }
        Ok(())
    }

    fn id_strings(&self, from: usize, to: usize) -> Vec<String> {
        self.ids[from.min(self.ids.len())..to.min(self.ids.len())].iter().map(|i| i.as_str().to_owned()).collect()
    }

    /// The cursor of a source last synced at `at`: the next poll fetches from there.
    fn cursor(at: DateTime<Utc>) -> serde_json::Value {
        let dexcom = partners::registry::data_driver("dexcom").expect("the bench polls Dexcom");
        dexcom.cursor_as_of(at).to_stored()
    }

    async fn schedule_all_due(&self, at: DateTime<Utc>) -> anyhow::Result<()> {
        let ids = self.id_strings(0, self.ids.len());
        self.store.bench_reschedule(&ids, at, 0.0, &Self::cursor(at - Duration::hours(1))).await?;
        Ok(())
    }

    /// The first `count` sources due from `start` on at `rate` per second, the rest not due.
    async fn schedule_spread(&self, start: DateTime<Utc>, rate: f64, count: usize) -> anyhow::Result<()> {
        let ids = self.id_strings(0, count);
        let rest = self.id_strings(count, self.ids.len());
        let far = start + Duration::days(1);
        self.store.bench_reschedule(&rest, far, 0.0, &Self::cursor(far)).await?;
        self.store.bench_reschedule(&ids, start, 1.0 / rate, &Self::cursor(start - Duration::hours(1))).await?;
        Ok(())
    }

    /// `count` sources due now whose last sync was a moment ago (nothing new to fetch).
    async fn schedule_idle(&self, at: DateTime<Utc>, count: usize) -> anyhow::Result<()> {
        let ids = self.id_strings(0, count);
        self.store.bench_reschedule(&ids, at, 0.0, &Self::cursor(at)).await?;
        Ok(())
    }

    /// Claim and reschedule (no partner I/O) until nothing is due: rows per second.
    async fn claim_only(&self) -> anyhow::Result<f64> {
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..self.opts.workers.max(2) {
            let store = self.store.clone();
            tasks.spawn(async move {
                let owner = uuid::Uuid::new_v4();
                let mut n = 0usize;
                loop {
                    let now = Utc::now();
                    let mut conn = store.acquire().await?;
                    let claimed =
                        store::poll_schedule::claim(&mut conn, owner, "dexcom", now, now + Duration::minutes(10), 32)
                            .await?;
                    if claimed.is_empty() {
                        return anyhow::Ok(n);
                    }
                    let cursor = json!({});
                    for c in &claimed {
                        let s = store::poll_schedule::Success {
                            lease: Some(owner),
                            cursor: &cursor,
                            skipped: None,
                            next_run_at: Some((now + Duration::days(1), "regular")),
                            now,
                        };
                        store::poll_schedule::succeed(&mut conn, &c.data_source_id, &s).await?;
                    }
                    n += claimed.len();
                }
            });
        }
        let mut total = 0;
        while let Some(n) = tasks.join_next().await {
            total += n??;
        }
        Ok(total as f64 / t.elapsed().as_secs_f64())
    }

    /// The claim statement's latency when nothing is due (what every idle pass costs), p50/p99 ms.
    async fn claim_latency(&self) -> anyhow::Result<(f64, f64)> {
        let mut conn = self.store.acquire().await?;
        let owner = uuid::Uuid::new_v4();
        let mut ms = Vec::with_capacity(500);
        for _ in 0..500 {
            let now = Utc::now() - Duration::hours(12);
            let t = Instant::now();
            let claimed =
                store::poll_schedule::claim(&mut conn, owner, "dexcom", now, now + Duration::minutes(10), 32).await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(claimed.is_empty(), "nothing should be due 12 hours ago");
        }
        ms.sort_by(f64::total_cmp);
        Ok((pct(&ms, 0.5), pct(&ms, 0.99)))
    }

    async fn wait_for_polls(&self, since: DateTime<Utc>, count: usize, within: StdDuration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            let n = self.store.poll_runs_due_since(since).await? as usize;
            if n >= count || Instant::now() >= deadline {
                return Ok(n);
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
    }

    async fn runs_since(&self, since: DateTime<Utc>) -> anyhow::Result<Vec<Run>> {
        Ok(self
            .store
            .poll_runs_started_since(since)
            .await?
            .into_iter()
            .map(|r| Run {
                outcome: r.outcome,
                due_at: r.due_at,
                started_at: r.started_at,
                finished_at: r.finished_at,
                calls: r.calls,
                datums_written: r.datums_written,
            })
            .collect())
    }

    async fn seed_population(&self, n: usize) -> anyhow::Result<()> {
        let now = Utc::now();
        let chunk = 50_000;
        let mut i = 0;
        while i < n {
            let end = (i + chunk).min(n);
            let rows: Vec<store::population::SeedSource> = (i..end)
                .map(|j| {
                    let k = self.opts.sources + j;
                    store::population::SeedSource {
                        id: DataSourceId::generate(),
                        user: user_id(k),
                        provider: "dexcom".into(),
                        region: Some("us".into()),
                        partner_account_id: format!("bench-{k}"),
                        access_token: format!("population-access-{k}"),
                        refresh_token: format!("population-refresh-{k}"),
                        access_expires_at: now + Duration::hours(2),
                        // Spread over the next 45–75 minutes, as a live population is: none due
                        // during the measurement.
                        next_run_at: now
                            + Duration::minutes(45)
                            + Duration::milliseconds((j as i64 * 1_800_000) / n as i64),
                    }
                })
                .collect();
            self.store.seed_population(&rows, now).await?;
            i = end;
        }
        Ok(())
    }
}

struct Run {
    outcome: String,
    due_at: DateTime<Utc>,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    calls: i32,
    datums_written: i32,
}

/// The table for people.
pub fn table(r: &Report) -> String {
    let mut rows: Vec<(String, String)> = vec![
        ("sources × workers".into(), format!("{} × {}", r.sources, r.workers)),
        ("look-back per poll".into(), format!("{} min (+ 1 h new)", r.look_back_minutes)),
        ("claim + reschedule (no partner I/O)".into(), format!("{:.0} rows/s", r.claim_rate_per_s)),
        (
            "completed polls at saturation".into(),
            format!("{:.0} polls/s ({:.2} × the claim rate)", r.saturation_polls_per_s, r.saturation_vs_claim),
        ),
        ("poll duration p50 / p99".into(), format!("{:.1} / {:.1} ms", r.poll_ms_p50, r.poll_ms_p99)),
        ("partner calls per poll".into(), format!("{:.2}", r.calls_per_poll)),
        ("datums written per poll".into(), format!("{:.1}", r.datums_per_poll)),
        ("rows written".into(), format!("{:.0} datums/s", r.rows_written_per_s)),
        ("CPU per 1,000 polls: workers".into(), format!("{:.2} s", r.worker_cpu_s_per_1000_polls)),
        ("CPU per 1,000 polls: Postgres".into(), format!("{:.2} s", r.postgres_cpu_s_per_1000_polls)),
        ("CPU per 1,000 polls: simulator".into(), format!("{:.2} s", r.simulator_cpu_s_per_1000_polls)),
        ("peak RSS per worker".into(), format!("{:.1} MB", r.worker_peak_rss_mb)),
        (
            "schedule lag p50 / p99".into(),
            format!(
                "{:.0} / {:.0} ms at {:.0} polls/s offered ({} polls)",
                r.lag_ms_p50, r.lag_ms_p99, r.offered_load_per_s, r.lag_polls
            ),
        ),
        ("partner calls per idle poll".into(), format!("{:.2}", r.idle_calls_per_poll)),
        ("sources per node (60-min mean)".into(), format!("{:.0}", r.sources_per_node_at_60_min)),
        ("Dexcom ceiling (60,000 calls/h/app)".into(), format!("{:.0} sources", r.partner_ceiling_sources)),
        (
            format!("idle claim p50 / p99 ({} rows)", r.sources),
            format!("{:.2} / {:.2} ms", r.claim_ms_p50_small, r.claim_ms_p99_small),
        ),
        (format!("idle worker RSS ({} rows)", r.sources), format!("{:.1} MB", r.worker_idle_rss_mb_small)),
    ];
    if r.delivered_datums > 0 {
        rows.push((
            "delivered to the data-service stand-in".into(),
            format!(
                "{:.0} datums/s ({} datums, {} uploads; worker CPU {:.2} s per 1,000 datums)",
                r.delivered_datums_per_s,
                r.delivered_datums,
                r.delivery_uploads,
                r.delivery_worker_cpu_s_per_1000_datums
            ),
        ));
        rows.push((
            "completed polls at saturation, delivery on".into(),
            format!(
                "{:.0} polls/s (off: {:.0}); backlog drained {:.1} s after the last poll",
                r.saturation_with_delivery_polls_per_s, r.saturation_polls_per_s, r.delivery_drain_s
            ),
        ));
    }
    if r.prune_rows_seeded > 0 {
        rows.push((
            "retention prune with polls running".into(),
            format!(
                "{:.2} s for {} partitions (≈ {} of {} seeded rows; detach {:.0} / keep {:.0} / drop {:.0} ms)",
                r.prune_s,
                r.prune_partitions,
                r.prune_rows_dropped,
                r.prune_rows_seeded,
                r.prune_detach_ms,
                r.prune_keep_ms,
                r.prune_drop_ms
            ),
        ));
        rows.push((
            "polls during the prune p50 / p99 / max".into(),
            format!(
                "{:.1} / {:.1} / {:.1} ms ({} polls; that phase {:.0} polls/s)",
                r.poll_ms_p50_during_prune,
                r.poll_ms_p99_during_prune,
                r.poll_ms_max_during_prune,
                r.polls_during_prune,
                r.saturation_with_prune_polls_per_s
            ),
        ));
    }
    if r.population > 0 {
        let total = r.sources + r.population;
        rows.push((
            format!("idle claim p50 / p99 ({total} rows)"),
            format!("{:.2} / {:.2} ms", r.claim_ms_p50_population, r.claim_ms_p99_population),
        ));
        rows.push((format!("idle worker RSS ({total} rows)"), format!("{:.1} MB", r.worker_idle_rss_mb_population)));
    }
    let w = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<w$}  {v}\n"));
    }
    out
}
