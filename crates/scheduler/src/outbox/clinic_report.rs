//! Clinic reports: `PUT {clinic}/v1/patients/{userId}/data_sources` with every provider's entry
//! for the user. The body is built under the lease from the user's current sources, so a burst of
//! changes sends one PUT with the final state and an older snapshot never overtakes a newer one.
//! Transport errors, timeouts, 408, 429 and 5xx retry; 404 (no clinic has this patient) is done;
//! any other 4xx is parked with a log line and a metric (`tidegate report` re-sends it). A
//! delivery that outlived its lease (its PUT may have landed after a newer one) queues one more.

use model::UserId;
use partners::clinic::{ClinicDirectory, DataSourceReport};
use store::Store;
use store::data_sources::DataSource;
use store::outbox::{Kind, Outcome, Row};

use super::{Backoff, BoxFuture, Deliveries, Destination};

/// The clinic report body: every provider's entry for the user (pending ones included).
pub fn report_body(sources: &[DataSource]) -> Vec<DataSourceReport> {
    sources
        .iter()
        .map(|s| DataSourceReport {
            data_source_id: s.id.clone(),
            provider_name: s.provider.clone(),
            state: s.state,
            modified_time: s.modified_time,
            expiration_time: s.expiration_time.filter(|_| s.state.is_pending()),
            latest_data_time: s.latest_data_time,
        })
        .collect()
}

#[derive(Debug)]
pub struct ClinicReports {
    store: Store,
    clinic: ClinicDirectory,
    backoff: Backoff,
}

impl ClinicReports {
    pub fn new(store: Store, clinic: ClinicDirectory, backoff: Backoff) -> Self {
        Self { store, clinic, backoff }
    }

    async fn report(&self, user: &UserId, rows: &[Row]) -> store::Result<Deliveries> {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(0);
        let body = report_body(&self.store.list_data_sources(user).await?);
        let outcome = match self.clinic.put_data_sources(user, &body).await {
            Ok(s) if s.is_success() => Outcome::Delivered,
            Ok(s) if s.as_u16() == 404 => {
                tracing::debug!(user = %user, "not a patient of any clinic: nothing to report");
                Outcome::Delivered
            }
            Ok(s) if s.is_client_error() && s.as_u16() != 408 && s.as_u16() != 429 => {
                tracing::error!(user = %user, status = %s, "the clinic service rejected a data-source report; parked (tidegate report re-sends it)");
                Outcome::Parked { error: format!("clinic answered {s}") }
            }
            Ok(s) => self.backoff.retry(attempts, format!("clinic answered {s}")),
            Err(e) => self.backoff.retry(attempts, e.to_string()),
        };
        if let Outcome::Retry { error, .. } = &outcome {
            tracing::warn!(user = %user, attempts = attempts + 1, error, "clinic report not delivered; will retry");
        }
        Ok(vec![(ids, outcome)])
    }
}

impl Destination for ClinicReports {
    fn kind(&self) -> Kind {
        Kind::ClinicReport
    }

    fn deliver<'a>(&'a self, user: &'a UserId, rows: &'a [Row]) -> BoxFuture<'a, store::Result<Deliveries>> {
        Box::pin(self.report(user, rows))
    }

    /// Every report is the user's whole current state: one that landed late is corrected by the
    /// next.
    fn resend_after_lost_lease(&self) -> Option<store::outbox::Message> {
        Some(store::outbox::Message::ClinicReport)
    }
}
