//! The outbox deliverer: clinic reports (`PUT {clinic}/v1/patients/{userId}/data_sources`) and
//! patient messages, from any number of replicas.
//!
//! One delivery per (user, kind) at a time, across replicas, through a lease row. A report's body
//! is built under the lease from the user's current sources, so a burst of changes sends one PUT
//! with the final state and an older snapshot can never overtake a newer one. Outcomes are fenced
//! by the lease. Transport errors, timeouts and 5xx retry with jittered exponential backoff; 404
//! (no clinic has this patient) is done; any other 4xx is parked with a log line and a metric.

use std::time::Duration;

use chrono::DateTime;
use model::{ClinicId, SharedClock, UserId};
use partners::clinic::ClinicDirectory;
use rand::Rng;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use store::Store;
use store::outbox::{self, Kind, Outcome};
use uuid::Uuid;

use crate::mail::Mailer;

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
    clinic: Option<ClinicDirectory>,
    mailer: Option<Mailer>,
    settings: OutboxSettings,
    /// Random per process start: the lease owner.
    owner: Uuid,
}

/// The clinic report body: every provider's entry for the user (pending ones included).
pub fn report_body(sources: &[store::data_sources::DataSource]) -> Value {
    Value::Array(
        sources
            .iter()
            .map(|s| {
                let mut entry = json!({
                    "dataSourceId": s.id,
                    "providerName": s.provider.as_str(),
                    "state": s.state,
                    "modifiedTime": model::time::format(&s.modified_time),
                });
                if let (true, Some(t)) = (s.state.is_pending(), s.expiration_time) {
                    entry["expirationTime"] = json!(model::time::format(&t));
                }
                if let Some(t) = s.latest_data_time {
                    entry["latestDataTime"] = json!(model::time::format(&t));
                }
                entry
            })
            .collect(),
    )
}

impl OutboxWorker {
    pub fn new(
        store: Store,
        clock: SharedClock,
        clinic: Option<ClinicDirectory>,
        mailer: Option<Mailer>,
        settings: OutboxSettings,
    ) -> Self {
        Self { store, clock, clinic, mailer, settings, owner: Uuid::new_v4() }
    }

    pub fn owner(&self) -> Uuid {
        self.owner
    }

    /// Deliver until `stop` turns true.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        tracing::info!(owner = %self.owner, "outbox deliverer started");
        loop {
            if *stop.borrow() {
                break;
            }
            let worked = match self.deliver_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox pass failed; retrying");
                    0
                }
            };
            self.export_stats().await;
            if worked == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.idle) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        tracing::info!("outbox deliverer stopped");
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

    /// One pass over due users of both kinds. Returns the deliveries attempted.
    pub async fn deliver_due(&self) -> store::Result<usize> {
        let mut n = 0;
        for kind in [Kind::ClinicReport, Kind::PatientMessage] {
            if kind == Kind::ClinicReport && self.clinic.is_none() {
                continue;
            }
            let users = {
                let mut conn = self.store.acquire().await?;
                outbox::due_users(&mut conn, kind, self.clock.now(), self.settings.batch).await?
            };
            for user in users {
                if self.deliver_user(&user, kind).await? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    fn backoff(&self, attempts: i32) -> chrono::Duration {
        let exp = self.settings.base_backoff * 2i32.saturating_pow(attempts.clamp(0, 20) as u32);
        let capped = exp.min(self.settings.max_backoff);
        let jitter = rand::rng().random_range(0.8..1.2);
        chrono::Duration::milliseconds((capped.num_milliseconds() as f64 * jitter) as i64)
    }

    /// Deliver one user's rows of a kind under the lease. Returns false when another replica holds it.
    async fn deliver_user(&self, user: &UserId, kind: Kind) -> store::Result<bool> {
        let now = self.clock.now();
        let mut conn = self.store.acquire().await?;
        if !outbox::acquire_lease(&mut conn, user, kind, self.owner, now + self.settings.lease, now).await? {
            tracing::debug!(user = %user, kind = kind.as_str(), "another deliverer holds the lease");
            return Ok(false);
        }
        let rows = outbox::pending(&mut conn, user, kind).await?;
        drop(conn);
        tracing::debug!(user = %user, kind = kind.as_str(), rows = rows.len(), "delivering");
        let result = match kind {
            Kind::ClinicReport => self.report(user, &rows).await,
            Kind::PatientMessage => self.messages(user, &rows).await,
        };
        let mut conn = self.store.acquire().await?;
        let outcome_result = result.map(|outcomes| outcomes.into_iter().collect::<Vec<_>>());
        match outcome_result {
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
                    tracing::debug!(user = %user, kind = kind.as_str(), outcome = label, recorded, "delivery settled");
                }
            }
            Err(e) => tracing::warn!(error = %e, user = %user, "delivery could not be prepared"),
        }
        outbox::release_lease(&mut conn, user, kind, self.owner).await?;
        Ok(true)
    }

    async fn report(&self, user: &UserId, rows: &[outbox::Row]) -> store::Result<Vec<(Vec<i64>, Outcome)>> {
        let Some(clinic) = &self.clinic else { return Ok(Vec::new()) };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(0);
        let body = report_body(&self.store.list_data_sources(user).await?);
        let outcome = match clinic.put_data_sources(user, &body).await {
            Ok(s) if s.is_success() => Outcome::Delivered,
            Ok(s) if s.as_u16() == 404 => {
                tracing::debug!(user = %user, "not a patient of any clinic: nothing to report");
                Outcome::Delivered
            }
            Ok(s) if s.is_client_error() && s.as_u16() != 408 && s.as_u16() != 429 => {
                tracing::error!(user = %user, status = %s, "the clinic service rejected a data-source report; parked (tidegate report re-sends it)");
                Outcome::Parked { error: format!("clinic answered {s}") }
            }
            Ok(s) => Outcome::Retry {
                next: self.clock.now() + self.backoff(attempts),
                error: format!("clinic answered {s}"),
            },
            Err(e) => Outcome::Retry { next: self.clock.now() + self.backoff(attempts), error: e.to_string() },
        };
        if let Outcome::Retry { error, .. } = &outcome {
            tracing::warn!(user = %user, attempts = attempts + 1, error, "clinic report not delivered; will retry");
        }
        Ok(vec![(ids, outcome)])
    }

    async fn messages(&self, user: &UserId, rows: &[outbox::Row]) -> store::Result<Vec<(Vec<i64>, Outcome)>> {
        let mut out = Vec::new();
        for row in rows {
            out.push((vec![row.id], self.message(user, row).await));
        }
        Ok(out)
    }

    async fn message(&self, user: &UserId, row: &outbox::Row) -> Outcome {
        let now = self.clock.now();
        let Some(mailer) = &self.mailer else {
            tracing::info!(user = %user, kind = %row.payload["kind"], "patient message stored (no SMTP transport configured)");
            return Outcome::Delivered;
        };
        let expires = row.payload["expirationTime"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc());
        if expires.is_some_and(|t| t <= now) {
            return Outcome::Parked { error: "the request expired before it could be sent".into() };
        }
        let clinic_id = row.payload["clinicId"].as_str().and_then(|c| ClinicId::parse(c).ok());
        let (Some(clinic), Some(clinic_id)) = (&self.clinic, clinic_id) else {
            return Outcome::Parked { error: "no clinic service to find the patient's address".into() };
        };
        let email = match clinic.patient_email(&clinic_id, user).await {
            Ok(Some(e)) => e,
            Ok(None) => return Outcome::Parked { error: "the clinic has no e-mail address for this patient".into() },
            Err(e) => return Outcome::Retry { next: now + self.backoff(row.attempts), error: e.to_string() },
        };
        let link = match self.store.open_message_link(user, &row.payload) {
            Ok(l) => l,
            Err(e) => return Outcome::Parked { error: format!("the message link cannot be opened: {e}") },
        };
        let provider = match row.payload["provider"].as_str() {
            Some(p) => self.settings.partner_names.get(p).map(String::as_str).unwrap_or(p),
            None => "device",
        };
        let (subject, intro) = match row.payload["kind"].as_str() {
            Some("reconnect_needed") => (
                format!("Your {provider} account needs to be reconnected"),
                format!(
                    "We can no longer read your {provider} data: the connection was ended or expired. Reconnect so your data keeps arriving."
                ),
            ),
            Some("reconnect_request") => (
                format!("Please reconnect your {provider} account"),
                format!("Your clinic asks you to reconnect your {provider} account so your data keeps arriving."),
            ),
            _ => (
                format!("Your clinic asks you to connect your {provider} account"),
                format!("Your clinic asks you to connect your {provider} account so they can see your data."),
            ),
        };
        let until = expires.map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default();
        let body = format!(
            "{intro}\n\nOpen this link to connect (it works until {until}):\n\n{}\n\nIf you did not expect this message, you can ignore it.\n",
            link.expose_secret()
        );
        match mailer.send(&email, &subject, body).await {
            Ok(()) => Outcome::Delivered,
            Err(e) => Outcome::Retry { next: now + self.backoff(row.attempts), error: e.to_string() },
        }
    }
}
