//! The poll worker (DESIGN §5): claims due schedule rows in short transactions (`FOR UPDATE SKIP
//! LOCKED`, the lease is the due time), polls them with no transaction open, a bounded number at
//! a time, and writes every outcome back fenced by its lease. Any number of replicas, no leader.
//!
//! Around each claim: no poll of a partner starts inside its blackout (due rows move past the
//! window with fresh jitter); an open circuit holds a failing partner back without slowing the
//! others; a partner's hourly call budget, shared through Postgres, is reserved before a poll
//! starts, and intervals stretch evenly when the population would exceed it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use model::{DataSourceId, SharedClock};
use partners::schedule::Policy;
use partners::{PartnerError, Registry};
use rand::SeedableRng;
use rand::rngs::StdRng;
use store::audit::Actor;
use store::data_sources::SourceError;
use store::lifecycle::ReconnectNotice;
use store::poll_schedule::{self, Claimed, Unfinished};
use store::{Store, partner_budget, poll_runs};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::breaker::{Admit, Breaker};
use crate::poll::{PollError, Poller};

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// How long a claim lasts (well above the longest poll: partner timeouts × calls).
    pub lease: Duration,
    /// Rows claimed per provider per pass.
    pub batch: i64,
    /// Polls in flight per process.
    pub max_in_flight: usize,
    /// Database connections the polls of this process hold at most at once (the rest of the pool
    /// stays with the claim loop, upkeep and, in `serve`, the API and the outbox). A poll holds
    /// one only for its database phases, never across partner I/O.
    pub poll_connections: usize,
    /// How long a poll's database phase waits for one of those connections before the poll
    /// fails as `pool_busy` (well inside the lease).
    pub connection_wait: StdDuration,
    /// Pause when nothing is due.
    pub idle: StdDuration,
    /// On shutdown, how long in-flight polls may take to finish.
    pub shutdown_grace: StdDuration,
    /// How long poll history is kept.
    pub history: Duration,
    /// Consecutive partner-side failures that open a partner's circuit.
    pub breaker_threshold: u32,
    pub breaker_min_cooldown: Duration,
    pub breaker_max_cooldown: Duration,
    /// `{public_url}` for the reconnect links of confirmed failures.
    pub public_url: String,
    pub reconnect_link_ttl: Duration,
    /// Seed of the scheduling jitter (simulations and tests that need reproducible draws);
    /// `None` draws from the OS.
    pub rng_seed: Option<u64>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            lease: Duration::minutes(10),
            batch: 32,
            max_in_flight: 32,
            poll_connections: 12,
            connection_wait: StdDuration::from_secs(150),
            idle: StdDuration::from_millis(500),
            shutdown_grace: StdDuration::from_secs(20),
            history: Duration::hours(6),
            breaker_threshold: 20,
            breaker_min_cooldown: Duration::seconds(30),
            breaker_max_cooldown: Duration::minutes(10),
            public_url: "http://127.0.0.1:8080".into(),
            reconnect_link_ttl: Duration::days(30),
            rng_seed: None,
        }
    }
}

/// What one poll ended as (the `outcome` of metrics and history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Transient,
    Auth,
    Confirmed,
    Permanent,
    LeaseLost,
    NotPollable,
    /// Every connection the polls may hold stayed busy for the whole wait: our own contention,
    /// not a database outage (that is `transient`, "database unavailable").
    PoolBusy,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Transient => "transient",
            Self::Auth => "auth",
            Self::Confirmed => "confirmed",
            Self::Permanent => "permanent",
            Self::LeaseLost => "lease_lost",
            Self::NotPollable => "not_pollable",
            Self::PoolBusy => "pool_busy",
        }
    }
}

/// Per-partner figures shared by a process's polls.
#[derive(Debug, Default)]
struct Figures {
    /// Interval multiplier (≥ 1) that keeps the population inside the call budget.
    stretch: HashMap<String, f64>,
    /// Moving average of partner calls per poll.
    calls_per_poll: HashMap<String, f64>,
}

#[derive(Debug)]
struct Inner {
    /// The claim loop's and upkeep's connections (ungated).
    store: Store,
    /// The polls' connections: through the gate of `poll_connections` slots.
    polls: Store,
    poller: Poller,
    partners: Registry,
    clock: SharedClock,
    settings: WorkerSettings,
    policies: HashMap<String, Policy>,
    providers: Vec<String>,
    breaker: Breaker,
    figures: Mutex<Figures>,
    rng: Mutex<StdRng>,
    /// Sources being polled by this process: a re-claim of one (its lease ran out while the
    /// poll was still going) only renews the lease, it never starts a second poll.
    in_flight: Mutex<std::collections::HashSet<DataSourceId>>,
    owner: Uuid,
}

/// The poll worker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PollWorker {
    inner: Arc<Inner>,
}

/// Budget reserved for one claimed poll.
#[derive(Debug, Clone, Copy)]
struct Reserved {
    window: DateTime<Utc>,
    calls: i64,
}

impl PollWorker {
    /// Each partner's schedule policy comes parsed with the registry.
    pub fn new(store: Store, poller: Poller, partners: Registry, clock: SharedClock, settings: WorkerSettings) -> Self {
        let mut policies = HashMap::new();
        let mut providers = Vec::new();
        for name in partners.names() {
            let Some(p) = partners.get(name) else { continue };
            policies.insert(name.as_str().to_owned(), p.schedule.clone());
            if p.driver.polls() {
                providers.push(name.as_str().to_owned());
            }
        }
        let breaker =
            Breaker::new(settings.breaker_threshold, settings.breaker_min_cooldown, settings.breaker_max_cooldown);
        let settings_seed = settings.rng_seed;
        let polls = store.gated(store::Gate::new(settings.poll_connections, settings.connection_wait));
        let poller = poller.with_store(polls.clone());
        Self {
            inner: Arc::new(Inner {
                store,
                polls,
                poller,
                partners,
                clock,
                settings,
                policies,
                providers,
                breaker,
                figures: Mutex::new(Figures::default()),
                rng: Mutex::new(match settings_seed {
                    Some(seed) => StdRng::seed_from_u64(seed),
                    None => StdRng::from_os_rng(),
                }),
                in_flight: Mutex::new(std::collections::HashSet::new()),
                owner: Uuid::new_v4(),
            }),
        }
    }

    /// The store its polls take connections from: gated to `poll_connections` at once.
    pub fn poll_store(&self) -> &Store {
        &self.inner.polls
    }

    /// The lease owner of this process.
    pub fn owner(&self) -> Uuid {
        self.inner.owner
    }

    /// The schedule policy of a partner.
    pub fn policy(&self, partner: &str) -> Option<&Policy> {
        self.inner.policies.get(partner)
    }

    /// Poll until `stop` turns true; then stop claiming, let in-flight polls finish up to the
    /// grace period, and give back every lease still held.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let s = &self.inner.settings;
        tracing::info!(
            owner = %self.inner.owner,
            max_in_flight = s.max_in_flight,
            poll_connections = s.poll_connections,
            "poll worker started"
        );
        let mut polls: JoinSet<()> = JoinSet::new();
        let mut last_upkeep: Option<std::time::Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            if last_upkeep.is_none_or(|t| t.elapsed() >= StdDuration::from_secs(15)) {
                self.upkeep().await;
                last_upkeep = Some(std::time::Instant::now());
            }
            let started = match self.claim_and_start(&mut polls).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming polls failed; retrying");
                    0
                }
            };
            if started > 0 {
                continue;
            }
            // Nothing claimed: wait for a slot to free, the idle pause, or the stop signal.
            tokio::select! {
                Some(_) = polls.join_next(), if !polls.is_empty() => {}
                _ = tokio::time::sleep(s.idle) => {}
                _ = stop.changed() => {}
            }
        }
        tracing::info!(in_flight = polls.len(), "poll worker stopping: no new claims");
        let drained =
            tokio::time::timeout(s.shutdown_grace, async { while polls.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(abandoned = polls.len(), "shutdown grace over: abandoning in-flight polls");
            polls.abort_all();
        }
        match self.release().await {
            Ok(n) => tracing::info!(released = n, "poll worker stopped"),
            Err(e) => tracing::warn!(error = %e, "releasing leases failed; they expire on their own"),
        }
    }

    /// Give back every lease this process holds (due now).
    pub async fn release(&self) -> store::Result<u64> {
        let mut conn = self.inner.store.acquire().await?;
        poll_schedule::release_all(&mut conn, self.inner.owner, self.inner.clock.now()).await
    }

    /// One pass: for each partner, claim what may start and spawn the polls. Returns how many
    /// started.
    pub async fn claim_and_start(&self, polls: &mut JoinSet<()>) -> store::Result<usize> {
        while let Some(r) = polls.try_join_next() {
            if let Err(e) = r
                && e.is_panic()
            {
                tracing::error!("a poll task panicked; its lease expires and the poll is retried");
            }
        }
        let inner = &self.inner;
        let mut started = 0;
        for provider in &inner.providers {
            let free = inner.settings.max_in_flight.saturating_sub(polls.len());
            if free == 0 {
                break;
            }
            for (claimed, reserved) in self.claim(provider, free).await? {
                let fresh =
                    inner.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(claimed.data_source_id.clone());
                if !fresh {
                    if let Some(r) = reserved
                        && let Ok(mut conn) = inner.store.acquire().await
                    {
                        let _ = partner_budget::refund(&mut conn, provider, r.window, r.calls).await;
                    }
                    continue;
                }
                let worker = self.clone();
                polls.spawn(async move {
                    let id = claimed.data_source_id.clone();
                    worker.poll_one(claimed, reserved).await;
                    worker.inner.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                });
                started += 1;
            }
        }
        Ok(started)
    }

    async fn claim(&self, provider: &str, free: usize) -> store::Result<Vec<(Claimed, Option<Reserved>)>> {
        let inner = &self.inner;
        let Some(policy) = inner.policies.get(provider) else { return Ok(Vec::new()) };
        let now = inner.clock.now();
        let mut conn = inner.store.acquire().await?;
        if let Some((_, end)) = policy.blackout_at(now) {
            let spread = (policy.interval_max - policy.interval_min).num_seconds().max(60) as f64;
            let moved = poll_schedule::defer_due(&mut conn, provider, now, end, spread, "blackout").await?;
            if moved > 0 {
                tracing::info!(partner = provider, moved, until = %end, "blackout: due polls moved past the window");
            }
            return Ok(Vec::new());
        }
        let mut limit = (free as i64).min(inner.settings.batch);
        match inner.breaker.admit(provider, now) {
            Admit::All => {}
            Admit::Probe => limit = 1,
            Admit::None(until) => {
                poll_schedule::defer_due(&mut conn, provider, now, until, 60.0, "breaker").await?;
                return Ok(Vec::new());
            }
        }
        let mut reserved = None;
        if let Some(cap) = policy.calls_per_hour {
            let window = partner_budget::window_of(now);
            let per = policy.max_calls_per_poll;
            let granted = partner_budget::reserve(&mut conn, provider, window, limit * per, cap).await?;
            let n = granted / per;
            partner_budget::refund(&mut conn, provider, window, granted - n * per).await?;
            if n == 0 {
                let next = window + Duration::hours(1);
                let moved = poll_schedule::defer_due(&mut conn, provider, now, next, 3_600.0, "budget").await?;
                if moved > 0 {
                    tracing::warn!(
                        partner = provider,
                        moved,
                        "call budget spent for this hour: due polls spread over the next"
                    );
                }
                return Ok(Vec::new());
            }
            limit = n;
            reserved = Some(Reserved { window, calls: per });
        }
        let lease_until = now + inner.settings.lease;
        let claimed = poll_schedule::claim(&mut conn, inner.owner, provider, now, lease_until, limit).await?;
        if let Some(r) = reserved {
            let unused = (limit - claimed.len() as i64) * r.calls;
            partner_budget::refund(&mut conn, provider, r.window, unused).await?;
        }
        Ok(claimed.into_iter().map(|c| (c, reserved)).collect())
    }

    /// Draw from the worker's jitter source.
    fn with_rng<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        let mut rng = self.inner.rng.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut rng)
    }

    /// The current interval stretch of a partner (1 when its budget suffices).
    pub fn stretch_factor(&self, provider: &str) -> f64 {
        self.stretch(provider)
    }

    fn stretch(&self, provider: &str) -> f64 {
        let f = self.inner.figures.lock().unwrap_or_else(|e| e.into_inner());
        f.stretch.get(provider).copied().unwrap_or(1.0)
    }

    /// One claimed poll, start to finish. Never panics on partner or store trouble: every
    /// outcome is written back (fenced), recorded and counted.
    #[tracing::instrument(name = "scheduled_poll", skip_all, fields(data_source = %claimed.data_source_id, partner = %claimed.provider))]
    async fn poll_one(&self, claimed: Claimed, reserved: Option<Reserved>) {
        let inner = &self.inner;
        let Some(policy) = inner.policies.get(&claimed.provider) else { return };
        let started = inner.clock.now();
        let p = claimed.provider.clone();
        metrics::histogram!("tidegate_schedule_lag_seconds", "partner" => p.clone())
            .record(((started - claimed.due_at).num_milliseconds() as f64 / 1000.0).max(0.0));
        let wall = std::time::Instant::now();
        let stretch = self.stretch(&p);
        let planned = self.with_rng(|rng| policy.next_after_success(started, stretch, rng));
        let result = inner.poller.poll(&claimed.data_source_id, Some(inner.owner), Some(planned)).await;
        metrics::histogram!("tidegate_poll_duration_seconds", "partner" => p.clone())
            .record(wall.elapsed().as_secs_f64());
        let finished = inner.clock.now();
        let (outcome, next, calls, written, error) = match result {
            Ok(o) => {
                inner.breaker.record(&p, true, finished);
                self.observe_calls(&p, o.calls);
                let written = o.written.inserted + o.written.updated + o.written.deleted;
                (Outcome::Success, Some(planned), i64::from(o.calls), written, None)
            }
            Err(e) => {
                let (outcome, next, error) = self.settle_failure(&claimed, policy, started, e).await;
                (outcome, next, 0, 0, error)
            }
        };
        if let Some(r) = reserved {
            // A failed poll's calls are unknown: its reservation stays spent (never over budget).
            let unused = if outcome == Outcome::Success { (r.calls - calls).max(0) } else { 0 };
            if unused > 0
                && let Ok(mut conn) = inner.polls.acquire().await
            {
                let _ = partner_budget::refund(&mut conn, &p, r.window, unused).await;
            }
        }
        metrics::counter!("tidegate_polls_total", "partner" => p.clone(), "outcome" => outcome.as_str()).increment(1);
        let run = poll_runs::Run {
            data_source_id: &claimed.data_source_id,
            provider: &p,
            owner: inner.owner,
            due_at: claimed.due_at,
            started_at: started,
            finished_at: finished,
            outcome: outcome.as_str(),
            calls: i32::try_from(calls).unwrap_or(i32::MAX),
            datums_written: i32::try_from(written).unwrap_or(i32::MAX),
            next_run_at: next.map(|(t, _)| t),
            next_kind: next.map(|(_, k)| k),
            error: error.as_deref(),
        };
        let recorded = match inner.polls.acquire().await {
            Ok(mut conn) => poll_runs::insert(&mut conn, &run).await,
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "recording the poll in the history failed");
        }
    }

    /// Decide what a failed poll means, write it back, and return (outcome, next, error text).
    async fn settle_failure(
        &self,
        claimed: &Claimed,
        policy: &Policy,
        started: DateTime<Utc>,
        e: PollError,
    ) -> (Outcome, Option<(DateTime<Utc>, &'static str)>, Option<String>) {
        let inner = &self.inner;
        let now = inner.clock.now();
        let p = claimed.provider.as_str();
        let text = e.to_string();
        let transient = |retry_after: Option<Duration>| {
            self.with_rng(|rng| policy.next_after_transient(now, claimed.attempts + 1, retry_after, rng))
        };
        let (outcome, next) = match &e {
            PollError::LeaseLost => return (Outcome::LeaseLost, None, Some(text)),
            PollError::NotPollable(why) => {
                tracing::warn!(reason = why, "claimed source cannot be polled; retrying at the normal interval");
                (Outcome::NotPollable, (now + policy.interval_max, "backoff"))
            }
            PollError::Store(e) if e.is_pool_busy() => {
                // Our own contention: not the source's failure (attempts unchanged), retried
                // after the first backoff step.
                let next = self.with_rng(|rng| policy.next_after_transient(now, 1, None, rng));
                let u = Unfinished {
                    lease: inner.owner,
                    next_run_at: next.0,
                    next_kind: "pool_busy",
                    attempts: claimed.attempts,
                    auth_failures: claimed.auth_failures,
                    first_auth_failure_time: claimed.first_auth_failure_time,
                    error: Some(&text),
                    now,
                };
                self.write_unfinished(&claimed.data_source_id, &u).await;
                tracing::warn!(next = %next.0, "poll waited too long for a database connection (pool busy); will retry");
                return (Outcome::PoolBusy, Some((next.0, "pool_busy")), Some(text));
            }
            PollError::Store(_) | PollError::RefreshInFlight => (Outcome::Transient, transient(None)),
            PollError::Partner(pe) => match pe {
                PartnerError::Transient(_) | PartnerError::RateLimited { .. } => {
                    inner.breaker.record(p, false, now);
                    let retry_after = match pe {
                        PartnerError::RateLimited { retry_after } => {
                            retry_after.and_then(|d| Duration::from_std(d).ok())
                        }
                        _ => None,
                    };
                    (Outcome::Transient, transient(retry_after))
                }
                PartnerError::Protocol(_)
                | PartnerError::InvalidClient(_)
                | PartnerError::Config(_)
                | PartnerError::Invalid(_)
                | PartnerError::NotFound(_) => {
                    // Our configuration or a partner answering nonsense: not this person's doing.
                    tracing::error!(error = %pe, "poll failed on a partner or configuration problem");
                    (Outcome::Transient, transient(None))
                }
                PartnerError::InvalidGrant | PartnerError::Unauthorized | PartnerError::Refused(_) => {
                    inner.breaker.record(p, true, now);
                    if policy.near_blackout(started) || policy.near_blackout(now) {
                        // Maintenance answers auth errors for live grants: transient.
                        (Outcome::Transient, transient(None))
                    } else {
                        let failures = claimed.auth_failures + 1;
                        if failures >= policy.auth_failures_to_confirm {
                            let error = SourceError {
                                code: "authorization_revoked".into(),
                                message: "The partner no longer accepts this connection. Reconnect the account to keep data flowing.".into(),
                                time: now,
                            };
                            return self.confirm(claimed, &error, text).await;
                        }
                        let next = self.with_rng(|rng| policy.next_after_auth_failure(now, failures, rng));
                        let u = Unfinished {
                            lease: inner.owner,
                            next_run_at: next,
                            next_kind: "auth_backoff",
                            attempts: claimed.attempts + 1,
                            auth_failures: failures,
                            first_auth_failure_time: claimed.first_auth_failure_time.or(Some(now)),
                            error: Some(&text),
                            now,
                        };
                        self.write_unfinished(&claimed.data_source_id, &u).await;
                        return (Outcome::Auth, Some((next, "auth_backoff")), Some(text));
                    }
                }
                PartnerError::Permanent { code, message } => {
                    inner.breaker.record(p, true, now);
                    let error = SourceError { code: code.clone(), message: message.clone(), time: now };
                    return self.confirm(claimed, &error, text).await;
                }
            },
        };
        let u = Unfinished {
            lease: inner.owner,
            next_run_at: next.0,
            next_kind: next.1,
            attempts: claimed.attempts + 1,
            auth_failures: claimed.auth_failures,
            first_auth_failure_time: claimed.first_auth_failure_time,
            error: Some(&text),
            now,
        };
        self.write_unfinished(&claimed.data_source_id, &u).await;
        tracing::warn!(error = %text, next = %next.0, kind = next.1, "poll failed; will retry");
        (outcome, Some(next), Some(text))
    }

    async fn write_unfinished(&self, id: &DataSourceId, u: &Unfinished<'_>) {
        let written = match self.inner.polls.acquire().await {
            Ok(mut conn) => poll_schedule::unfinished(&mut conn, id, u).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(true) => {}
            Ok(false) => tracing::info!("lease lost before the failure was recorded; the new owner decides"),
            Err(e) => {
                tracing::warn!(error = %e, "recording the failure failed; the lease expires and the poll is retried")
            }
        }
    }

    /// A confirmed failure: state `error`, polling paused, the clinic told, the patient sent a
    /// fresh link to reconnect.
    async fn confirm(
        &self,
        claimed: &Claimed,
        error: &SourceError,
        text: String,
    ) -> (Outcome, Option<(DateTime<Utc>, &'static str)>, Option<String>) {
        let inner = &self.inner;
        let notice = ReconnectNotice {
            link_base: model::paths::link_base(&inner.settings.public_url, &claimed.provider),
            ttl: inner.settings.reconnect_link_ttl,
        };
        let outcome = if error.code == "authorization_revoked" { Outcome::Confirmed } else { Outcome::Permanent };
        match inner.polls.fail(&Actor::system(), &claimed.data_source_id, error, Some(&notice), inner.clock.now()).await
        {
            Ok(_) => {
                metrics::counter!("tidegate_auth_failures_confirmed_total", "partner" => claimed.provider.clone(), "code" => error.code.clone())
                    .increment(1);
                tracing::warn!(code = %error.code, "data source failed: polling paused, patient asked to reconnect");
            }
            Err(e) => {
                tracing::error!(error = %e, "recording a confirmed failure failed; the lease expires and the poll is retried")
            }
        }
        (outcome, None, Some(text))
    }

    fn observe_calls(&self, provider: &str, calls: u32) {
        let mut f = self.inner.figures.lock().unwrap_or_else(|e| e.into_inner());
        let avg = f.calls_per_poll.entry(provider.to_owned()).or_insert(f64::from(calls));
        *avg = 0.95 * *avg + 0.05 * f64::from(calls);
    }

    /// Periodic work: budget stretch factors, gauges, history pruning.
    pub async fn upkeep(&self) {
        if let Err(e) = self.try_upkeep().await {
            tracing::warn!(error = %e, "poll worker upkeep failed");
        }
    }

    async fn try_upkeep(&self) -> store::Result<()> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut conn = inner.store.acquire().await?;
        let active: HashMap<String, i64> = poll_schedule::active_counts(&mut conn).await?.into_iter().collect();
        for provider in &inner.providers {
            let Some(policy) = inner.policies.get(provider) else { continue };
            let n = active.get(provider).copied().unwrap_or(0);
            metrics::gauge!("tidegate_sources_polled", "partner" => provider.clone()).set(n as f64);
            metrics::gauge!("tidegate_breaker_open", "partner" => provider.clone())
                .set(if inner.breaker.is_open(provider) { 1.0 } else { 0.0 });
            let Some(cap) = policy.calls_per_hour else { continue };
            let per_poll = {
                let f = inner.figures.lock().unwrap_or_else(|e| e.into_inner());
                f.calls_per_poll.get(provider).copied().unwrap_or(policy.max_calls_per_poll as f64 / 2.0)
            };
            let stretch = budget_stretch(n, per_poll, policy, cap);
            inner.figures.lock().unwrap_or_else(|e| e.into_inner()).stretch.insert(provider.clone(), stretch);
            let used = partner_budget::used(&mut conn, provider, partner_budget::window_of(now)).await?;
            metrics::gauge!("tidegate_budget_stretch_factor", "partner" => provider.clone()).set(stretch);
            metrics::gauge!("tidegate_budget_calls_reserved", "partner" => provider.clone()).set(used as f64);
            metrics::gauge!("tidegate_budget_calls_per_hour", "partner" => provider.clone()).set(cap as f64);
        }
        for (provider, n, oldest) in poll_schedule::backlog(&mut conn, now).await? {
            metrics::gauge!("tidegate_poll_backlog", "partner" => provider.clone()).set(n as f64);
            let age = oldest.map(|t| (now - t).num_milliseconds() as f64 / 1000.0).unwrap_or(0.0);
            metrics::gauge!("tidegate_poll_backlog_oldest_seconds", "partner" => provider).set(age.max(0.0));
        }
        for (provider, state, n) in store::data_sources::count_by_state(&mut conn).await? {
            metrics::gauge!("tidegate_data_sources", "partner" => provider, "state" => state).set(n as f64);
        }
        poll_runs::prune(&mut conn, now - inner.settings.history, 10_000).await?;
        partner_budget::prune(&mut conn, partner_budget::window_of(now) - Duration::hours(2)).await?;
        Ok(())
    }

    /// The registry this worker polls for.
    pub fn partners(&self) -> &Registry {
        &self.inner.partners
    }
}

/// How much to stretch every interval so `sources` polled at the policy's mean interval, each
/// poll costing `calls_per_poll`, stay inside 90 % of `cap` calls per hour. Never below 1.
pub fn budget_stretch(sources: i64, calls_per_poll: f64, policy: &Policy, cap: i64) -> f64 {
    let mean_interval_h = (policy.interval_min + policy.interval_max).num_seconds() as f64 / 2.0 / 3600.0;
    if mean_interval_h <= 0.0 || cap <= 0 {
        return 1.0;
    }
    let demand = sources as f64 * calls_per_poll.max(0.0) / mean_interval_h;
    (demand / (cap as f64 * 0.9)).max(1.0)
}
