//! State changes of a data source together with everything that must commit with them: the
//! session and schedule rows, the clinic report in the outbox, and the audit entry.

use chrono::{DateTime, Utc};
use model::{Event, ProviderName, Transition, UserId, transition};

use crate::audit::{self, Actor, Entry};
use crate::data_sources::{self, DataSource, StateChange};
use crate::{Result, Store, outbox, poll_schedule, provider_sessions};

impl Store {
    /// Disconnect a user's source for a provider: delete its tokens and schedule, set
    /// `disconnected`, queue a clinic report, audit. Idempotent: disconnecting what is already
    /// disconnected (or never existed) changes nothing and returns the current source, if any.
    ///
    /// Revocation at the partner (where it has an endpoint) is the caller's, before this.
    pub async fn disconnect(
        &self,
        actor: &Actor,
        user: &UserId,
        provider: &ProviderName,
        now: DateTime<Utc>,
    ) -> Result<Option<DataSource>> {
        let mut tx = self.pool.begin().await?;
        // Dropping `tx` without commit rolls back (nothing was written).
        let Some(source) = data_sources::lock(&mut tx, user, provider).await? else {
            return Ok(None);
        };
        let Transition::To(state) = transition(Some(source.state), source.ever_connected, Event::Disconnected) else {
            return Ok(Some(source));
        };
        provider_sessions::delete(&mut tx, &source.id).await?;
        poll_schedule::delete(&mut tx, &source.id).await?;
        let change = StateChange { state, error: None, expiration_time: None, region: None, now };
        let updated = data_sources::update_state(&mut tx, &source.id, &change).await?;
        outbox::enqueue_clinic_report(&mut tx, user, now).await?;
        audit::record(
            &mut tx,
            &Entry {
                actor,
                action: "disconnect",
                user_id: Some(user),
                data_source_id: Some(&source.id),
                detail: serde_json::json!({ "provider": provider.as_str(), "from": source.state }),
                time: now,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Some(updated))
    }
}
