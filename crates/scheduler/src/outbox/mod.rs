//! The outbox deliverer, from any number of replicas: every queue ([`Kind`]) goes to one
//! [`Destination`] — clinic reports to the clinic service ([`clinic_report`]), patient messages by
//! e-mail ([`patient_message`]), datums to the platform data service ([`platform_data`]). A new
//! sink is one more module implementing the trait. Each destination has its own delivery loop,
//! so a slow or dead one never holds up the others.
//!
//! One delivery per (user, kind) at a time, across replicas, through a lease row; outcomes are
//! fenced by the lease. A destination decides per row what happened (delivered, retry at, parked);
//! retries back off exponentially with jitter. A row whose payload cannot be read is parked.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::future::join_all;
use model::{SharedClock, UserId};
use partners::clinic::ClinicDirectory;
use rand::Rng;
use store::Store;
use store::outbox::{self, Kind, Message, Outcome, Row};
use uuid::Uuid;

use crate::mail::Mailer;

pub mod clinic_report;
pub mod patient_message;
pub mod platform_data;

pub use clinic_report::report_body;

/// A destination's future (boxed so destinations can sit behind `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which rows had which outcome.
pub type Deliveries = Vec<(Vec<i64>, Outcome)>;

/// Where one queue's messages go.
pub trait Destination: Send + Sync + std::fmt::Debug {
    /// The queue it serves.
    fn kind(&self) -> Kind;

    /// Deliver a user's pending, readable rows (the caller holds the user's lease for this kind):
    /// which rows had which outcome.
    fn deliver<'a>(&'a self, user: &'a UserId, rows: &'a [Row]) -> BoxFuture<'a, store::Result<Deliveries>>;

    /// For a destination whose every delivery sends the user's current state (a snapshot): the
    /// message to queue when a delivery outlived its lease. Another deliverer took the lease and
    /// may have sent a newer snapshot that this one's late request then overwrote, so the current
    /// state is sent once more. `None` (the default) for messages that must not repeat.
    fn resend_after_lost_lease(&self) -> Option<Message> {
        None
    }

    /// Periodic upkeep beside deliveries (e.g. queueing a backlog, pruning delivered rows).
    fn maintain(&self) -> BoxFuture<'_, store::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// How many users' deliveries may run at once in one process.
    fn concurrency(&self) -> usize {
        1
    }
}

/// How often each destination's [`Destination::maintain`] runs.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);

/// Jittered exponential backoff between attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    clock: SharedClock,
    base: chrono::Duration,
    max: chrono::Duration,
}

impl Backoff {
    /// A retry after `attempts` failed attempts: the outcome to record.
    pub fn retry(&self, attempts: i32, error: impl Into<String>) -> Outcome {
        let exp = self.base * 2i32.saturating_pow(attempts.clamp(0, 20) as u32);
        let capped = exp.min(self.max);
        let jitter = rand::rng().random_range(0.8..1.2);
        let wait = chrono::Duration::milliseconds((capped.num_milliseconds() as f64 * jitter) as i64);
        Outcome::Retry { next: self.clock.now() + wait, error: error.into() }
    }
}

#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// Users handled per pass.
    pub batch: i64,
    /// How long a delivery lease lasts (well above the clinic and SMTP timeouts).
    pub lease: chrono::Duration,
    pub base_backoff: chrono::Duration,
    pub max_backoff: chrono::Duration,
    /// Pause between passes when nothing was due.
    pub idle: Duration,
    /// What people call each partner in messages ("Dexcom"), by provider name.
    pub partner_names: std::collections::BTreeMap<String, String>,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            batch: 50,
            lease: chrono::Duration::seconds(120),
            base_backoff: chrono::Duration::seconds(5),
            max_backoff: chrono::Duration::minutes(15),
            idle: Duration::from_millis(500),
            partner_names: Default::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct OutboxWorker {
    store: Store,
    clock: SharedClock,
    /// One per queue that has somewhere to go.
    destinations: std::sync::Arc<Vec<Box<dyn Destination>>>,
    settings: OutboxSettings,
    /// Random per process start: the lease owner.
    owner: Uuid,
}

impl OutboxWorker {
    pub fn new(
        store: Store,
        clock: SharedClock,
        clinic: Option<ClinicDirectory>,
        mailer: Option<Mailer>,
        platform: Option<platform_data::PlatformSink>,
        settings: OutboxSettings,
    ) -> Self {
        let backoff = Backoff { clock: clock.clone(), base: settings.base_backoff, max: settings.max_backoff };
        let owner = Uuid::new_v4();
        let mut destinations: Vec<Box<dyn Destination>> = Vec::new();
        if let Some(sink) = platform {
            destinations.push(Box::new(platform_data::PlatformDeliveries::new(
                store.clone(),
                sink,
                clock.clone(),
                backoff.clone(),
                owner,
                settings.lease,
            )));
        }
        if let Some(clinic) = &clinic {
            destinations.push(Box::new(clinic_report::ClinicReports::new(
                store.clone(),
                clinic.clone(),
                backoff.clone(),
            )));
        }
        destinations.push(Box::new(patient_message::PatientMessages::new(
            store.clone(),
            clock.clone(),
            clinic,
            mailer,
            settings.partner_names.clone(),
            backoff,
        )));
        Self { store, clock, destinations: std::sync::Arc::new(destinations), settings, owner }
    }

    pub fn owner(&self) -> Uuid {
        self.owner
    }

    /// Deliver until `stop` turns true: one loop per destination, so a slow or dead destination
    /// never holds up another.
    pub async fn run(self, stop: tokio::sync::watch::Receiver<bool>) {
        tracing::info!(owner = %self.owner, "outbox deliverer started");
        let mut loops = tokio::task::JoinSet::new();
        for i in 0..self.destinations.len() {
            loops.spawn(self.clone().run_destination(i, stop.clone()));
        }
        loops.join_all().await;
        tracing::info!("outbox deliverer stopped");
    }

    async fn run_destination(self, index: usize, mut stop: tokio::sync::watch::Receiver<bool>) {
        let destination = &self.destinations[index];
        let mut maintained: Option<std::time::Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            if maintained.is_none_or(|t| t.elapsed() >= MAINTENANCE_EVERY) {
                if let Err(e) = destination.maintain().await {
                    tracing::warn!(error = %e, kind = destination.kind().as_str(), "outbox upkeep failed; retrying later");
                }
                maintained = Some(std::time::Instant::now());
            }
            let worked = match self.deliver_due_to(destination.as_ref()).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, kind = destination.kind().as_str(), "outbox pass failed; retrying");
                    0
                }
            };
            if index == 0 {
                self.export_stats().await;
            }
            if worked == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.idle) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    async fn export_stats(&self) {
        let Ok(mut conn) = self.store.acquire().await else { return };
        let Ok(stats) = outbox::stats(&mut conn).await else { return };
        let now = self.clock.now();
        for (kind, depth, oldest, parked) in stats {
            metrics::gauge!("tidegate_outbox_depth", "kind" => kind.clone()).set(depth as f64);
            metrics::gauge!("tidegate_outbox_parked", "kind" => kind.clone()).set(parked as f64);
            let age = oldest.map(|t| (now - t).num_milliseconds() as f64 / 1000.0).unwrap_or(0.0);
            metrics::gauge!("tidegate_outbox_oldest_age_seconds", "kind" => kind).set(age.max(0.0));
        }
    }

    /// One pass over due users of every kind (and each destination's upkeep). Returns the
    /// deliveries attempted.
    pub async fn deliver_due(&self) -> store::Result<usize> {
        let mut n = 0;
        for destination in self.destinations.iter() {
            destination.maintain().await?;
            n += self.deliver_due_to(destination.as_ref()).await?;
        }
        Ok(n)
    }

    /// One pass over a destination's due users, up to its concurrency at a time.
    async fn deliver_due_to(&self, destination: &dyn Destination) -> store::Result<usize> {
        let kind = destination.kind();
        let users = {
            let mut conn = self.store.acquire().await?;
            outbox::due_users(&mut conn, kind, self.clock.now(), self.settings.batch).await?
        };
        let mut n = 0;
        for chunk in users.chunks(destination.concurrency().max(1)) {
            let done = join_all(chunk.iter().map(|user| self.deliver_user(user, destination))).await;
            for d in done {
                if d? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Deliver one user's rows of a kind under the lease. Returns false when another replica holds it.
    async fn deliver_user(&self, user: &UserId, destination: &dyn Destination) -> store::Result<bool> {
        let kind = destination.kind();
        let now = self.clock.now();
        let mut conn = self.store.acquire().await?;
        if !outbox::acquire_lease(&mut conn, user, kind, self.owner, now + self.settings.lease, now).await? {
            tracing::debug!(user = %user, kind = kind.as_str(), "another deliverer holds the lease");
            return Ok(false);
        }
        let rows = outbox::pending(&mut conn, user, kind).await?;
        drop(conn);
        tracing::debug!(user = %user, kind = kind.as_str(), rows = rows.len(), "delivering");
        let (readable, unreadable): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| r.message.is_ok());
        let mut parked: Deliveries = Vec::new();
        for r in unreadable {
            let error = r.message.err().unwrap_or_default();
            tracing::error!(user = %user, kind = kind.as_str(), row = r.id, error, "an outbox row cannot be read; parked");
            parked.push((vec![r.id], Outcome::Parked { error }));
        }
        let result = if readable.is_empty() { Ok(Vec::new()) } else { destination.deliver(user, &readable).await };
        let mut conn = self.store.acquire().await?;
        let mut lost_lease = false;
        match result.map(|outcomes| parked.into_iter().chain(outcomes).collect::<Vec<_>>()) {
            Ok(outcomes) => {
                for (ids, outcome) in outcomes {
                    let label = match &outcome {
                        Outcome::Delivered => "delivered",
                        Outcome::Retry { .. } => "retry",
                        Outcome::Parked { .. } => "parked",
                    };
                    metrics::counter!("tidegate_outbox_deliveries_total", "kind" => kind.as_str(), "outcome" => label)
                        .increment(1);
                    let recorded =
                        outbox::settle(&mut conn, user, kind, self.owner, &ids, &outcome, self.clock.now()).await?;
                    lost_lease |= recorded == 0 && !ids.is_empty();
                    tracing::debug!(user = %user, kind = kind.as_str(), outcome = label, recorded, "delivery settled");
                }
            }
            Err(e) => tracing::warn!(error = %e, user = %user, "delivery could not be prepared"),
        }
        if lost_lease && let Some(message) = destination.resend_after_lost_lease() {
            // (The rows stay as the lease's new holder left them.)
            tracing::warn!(user = %user, kind = kind.as_str(), "a delivery outlived its lease; the current state is queued again");
            metrics::counter!("tidegate_outbox_lost_leases_total", "kind" => kind.as_str()).increment(1);
            outbox::enqueue(&mut conn, user, &message, self.clock.now()).await?;
        }
        outbox::release_lease(&mut conn, user, kind, self.owner).await?;
        Ok(true)
    }
}
