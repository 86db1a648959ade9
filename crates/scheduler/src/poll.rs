//! One poll of one data source: tokens (refreshed under a row lock when due, or once after a
//! 401), the partner's driver, and one transaction that writes the datums, moves the cursor and
//! queues the clinic report — fenced by the schedule's lease so a poll that lost its lease
//! writes nothing.
//!
//! The partner I/O runs with no transaction open, except the token refresh, which holds the
//! session's row lock on purpose: one refresh per data source in flight across all replicas, and
//! the rotated refresh token committed before the new access token is used.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use model::{DataSourceId, DataSourceState, SharedClock};
use partners::fetch::{Batch, FetchSettings};
use partners::registry::{Partner, ResolvedRegion};
use partners::{Cursor, PartnerError, PollRequest, Registry};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use store::datums::{NewDatum, Written};
use store::polls::{PollResult, Recorded};
use store::provider_sessions::{ProviderSession, RefreshClaim, Refreshed};
use store::{Store, StoreError};
use uuid::Uuid;

/// How a poll reads and when it refreshes.
#[derive(Debug, Clone)]
pub struct PollSettings {
    pub fetch: FetchSettings,
    /// Refresh the access token when it expires within this margin.
    pub refresh_skew: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        Self { fetch: FetchSettings::default(), refresh_skew: Duration::minutes(5) }
    }
}

/// Why a poll did not complete. The caller (the claim loop) decides between backoff and
/// confirming a data-source error; nothing here changes the source's state.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The partner failed (transient, auth or permanent — see [`PartnerError`]).
    #[error(transparent)]
    Partner(#[from] PartnerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The source is not (or no longer) pollable: disconnected, in error, no session, a partner
    /// without a data driver.
    #[error("not pollable: {0}")]
    NotPollable(&'static str),
    /// Another poller holds the lease (or it expired and was taken): results discarded.
    #[error("the poll lease was lost; results discarded")]
    LeaseLost,
    /// Another poller's token refresh of this source outlived its lease: try again later.
    #[error("another token refresh of this data source is still running")]
    RefreshInFlight,
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollOutcome {
    pub written: Written,
    /// Records skipped by reason (`bad_time`, `no_value`, …).
    pub skipped: BTreeMap<&'static str, u64>,
    /// Partner data calls (token calls not counted).
    pub calls: u32,
    pub refreshed: bool,
    /// Whether a clinic report was queued (latest data moved by an hour or more).
    pub reported: bool,
}

/// Polls data sources. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Poller {
    store: Store,
    partners: Registry,
    clock: SharedClock,
    settings: PollSettings,
}

impl Poller {
    pub fn new(store: Store, partners: Registry, clock: SharedClock, settings: PollSettings) -> Self {
        Self { store, partners, clock, settings }
    }

    /// This poller taking its connections from `store` (the poll worker's gated store).
    pub fn with_store(self, store: Store) -> Self {
        Self { store, ..self }
    }

    /// Poll one data source now. `lease` is the claim it runs under (`None` outside the claim
    /// loop: then it only writes while no one holds a lease); `next` is the due time (and why)
    /// to set when the poll succeeds (`None` keeps the current one).
    #[tracing::instrument(name = "poll", skip_all, fields(data_source = %id, partner = tracing::field::Empty))]
    pub async fn poll(
        &self,
        id: &DataSourceId,
        lease: Option<Uuid>,
        next: Option<(DateTime<Utc>, &'static str)>,
    ) -> Result<PollOutcome, PollError> {
        let start = self.store.poll_start(id).await?.ok_or(PollError::NotPollable("no such data source"))?;
        if start.state != DataSourceState::Connected {
            return Err(PollError::NotPollable("the data source is not connected"));
        }
        let mut session = start.session.ok_or(PollError::NotPollable("no provider session"))?;
        let cursor = Cursor::stored(start.cursor.ok_or(PollError::NotPollable("not scheduled"))?);
        tracing::Span::current().record("partner", session.provider.as_str());
        let partner = self.partners.get(&session.provider).ok_or(PollError::NotPollable("partner not configured"))?;
        if !partner.driver.polls() {
            return Err(PollError::NotPollable("partner has no data driver"));
        }
        let region = session.region.clone().or_else(|| partner.implied_region()).unwrap_or_default();
        let resolved = partner.resolve(&region).await?;
        let now = self.clock.now();
        let mut outcome = PollOutcome::default();
        if session.access_expires_at.is_some_and(|t| t - self.settings.refresh_skew <= now) {
            session = self.refresh(partner, &resolved, &session).await?;
            outcome.refreshed = true;
        }
        let fetched = match self.fetch(partner, &resolved, &session, &cursor, now).await {
            Err(PartnerError::Unauthorized) if !outcome.refreshed => {
                // Once on 401: refresh (or pick up another replica's refresh) and try again.
                session = self.refresh(partner, &resolved, &session).await?;
                outcome.refreshed = true;
                self.fetch(partner, &resolved, &session, &cursor, now).await
            }
            other => other,
        };
        let (batch, cursor) = fetched?;
        outcome.calls = batch.calls;
        outcome.skipped = batch.skipped.iter().map(|(k, s)| (*k, s.count)).collect();
        self.write(&session, lease, next, batch, &cursor, &mut outcome).await?;
        let p = session.provider.as_str().to_owned();
        for (reason, n) in &outcome.skipped {
            metrics::counter!("tidegate_records_skipped_total", "partner" => p.clone(), "reason" => *reason)
                .increment(*n);
        }
        for (kind, n) in [
            ("inserted", outcome.written.inserted),
            ("updated", outcome.written.updated),
            ("deleted", outcome.written.deleted),
        ] {
            metrics::counter!("tidegate_datums_written_total", "partner" => p.clone(), "outcome" => kind).increment(n);
        }
        metrics::counter!("tidegate_partner_calls_total", "partner" => p).increment(u64::from(outcome.calls));
        tracing::info!(
            inserted = outcome.written.inserted,
            updated = outcome.written.updated,
            deleted = outcome.written.deleted,
            unchanged = outcome.written.unchanged,
            skipped = outcome.skipped.values().sum::<u64>(),
            calls = outcome.calls,
            refreshed = outcome.refreshed,
            "poll done"
        );
        Ok(outcome)
    }

    /// Run the partner's driver. Returns the batch and the next cursor.
    async fn fetch(
        &self,
        partner: &Partner,
        resolved: &ResolvedRegion,
        session: &ProviderSession,
        cursor: &Cursor,
        now: DateTime<Utc>,
    ) -> Result<(Batch, Cursor), PartnerError> {
        let call = partner.call(resolved, session.access_token.expose_secret());
        let req = PollRequest {
            user: &session.user_id,
            account_id: &session.partner_account_id,
            cursor,
            now,
            settings: &self.settings.fetch,
        };
        partner.driver.poll(call, req).await
    }

    /// Refresh under the session's refresh lease (one refresh per data source in flight across
    /// every replica; no connection held during the partner call). If another poller refreshed
    /// since `seen` was read, its tokens are used and no request is made; if its refresh is still
    /// running, this one waits for it. The new tokens are committed before return.
    async fn refresh(
        &self,
        partner: &Partner,
        resolved: &ResolvedRegion,
        seen: &ProviderSession,
    ) -> Result<ProviderSession, PollError> {
        let p = partner.name.as_str().to_owned();
        // The token call is one request under the partner's timeout; the lease outlives it.
        let lease = std::time::Duration::from_secs(partner.settings.timeout_secs.saturating_add(10));
        let owner = Uuid::new_v4();
        let give_up = tokio::time::Instant::now() + lease + std::time::Duration::from_secs(5);
        let current = loop {
            match self.store.claim_refresh(seen, owner, lease).await? {
                RefreshClaim::Claimed(current) => break current,
                RefreshClaim::Changed(current) => {
                    metrics::counter!("tidegate_token_refreshes_total", "partner" => p, "outcome" => "shared")
                        .increment(1);
                    return Ok(current);
                }
                RefreshClaim::Gone => return Err(PollError::NotPollable("no provider session")),
                RefreshClaim::InFlight if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                RefreshClaim::InFlight => return Err(PollError::RefreshInFlight),
            }
        };
        let id = &seen.data_source_id;
        let Some(refresh_token) = &current.refresh_token else {
            self.abandon_refresh(id, owner).await;
            return Err(PartnerError::InvalidGrant.into());
        };
        let tokens = match resolved.oauth.refresh(&partner.http, refresh_token).await {
            Ok(t) => t,
            Err(e) => {
                metrics::counter!("tidegate_token_refreshes_total", "partner" => p, "outcome" => "failed").increment(1);
                self.abandon_refresh(id, owner).await;
                return Err(e.into());
            }
        };
        let now = self.clock.now();
        let refreshed = Refreshed {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            access_expires_at: tokens.expires_in.and_then(|d| Duration::from_std(d).ok()).map(|d| now + d),
            scope: tokens.scope,
        };
        let session = self
            .store
            .finish_refresh(id, owner, &refreshed, now)
            .await?
            .ok_or(PollError::NotPollable("no provider session"))?;
        metrics::counter!("tidegate_token_refreshes_total", "partner" => p, "outcome" => "refreshed").increment(1);
        tracing::info!("access token refreshed");
        Ok(session)
    }

    /// Give a refresh lease back; if that fails it runs out by itself.
    async fn abandon_refresh(&self, id: &DataSourceId, owner: Uuid) {
        if let Err(e) = self.store.abandon_refresh(id, owner).await {
            tracing::warn!(error = %e, "giving the refresh lease back failed; it runs out by itself");
        }
    }

    /// Write what the poll fetched: one store transaction ([`Store::record_poll`]), fenced on the
    /// lease.
    async fn write(
        &self,
        session: &ProviderSession,
        lease: Option<Uuid>,
        next: Option<(DateTime<Utc>, &'static str)>,
        batch: Batch,
        cursor: &Cursor,
        outcome: &mut PollOutcome,
    ) -> Result<(), PollError> {
        let now = self.clock.now();
        let skipped = (!batch.skipped.is_empty()).then(|| {
            let reasons: serde_json::Map<String, Value> = batch
                .skipped
                .iter()
                .map(|(k, s)| ((*k).to_owned(), json!({"count": s.count, "example": s.example})))
                .collect();
            json!({"time": model::time::format(&now), "total": batch.skipped_total(), "reasons": reasons})
        });
        if let Some(summary) = batch.skipped_summary() {
            tracing::warn!(skipped = %summary, "records skipped");
        }
        let datums: Vec<NewDatum> = batch
            .datums
            .iter()
            .map(|d| {
                let b = d.base();
                NewDatum { id: b.id.as_str().to_owned(), time: b.time, kind: b.kind.to_owned(), body: d.to_json() }
            })
            .collect();
        let removed: Vec<String> = batch.removed.iter().map(|id| id.as_str().to_owned()).collect();
        let result = PollResult {
            source: &session.data_source_id,
            user: &session.user_id,
            lease,
            cursor: &cursor.to_stored(),
            skipped: skipped.as_ref(),
            next_run_at: next,
            datums: &datums,
            removed: &removed,
            now,
        };
        let Recorded::Written { written, reported: advanced } = self.store.record_poll(&result).await? else {
            return Err(PollError::LeaseLost);
        };
        outcome.written = written;
        outcome.reported = advanced;
        Ok(())
    }
}
