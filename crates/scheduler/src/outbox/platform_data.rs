//! Platform delivery (the `tidepool` sink): a user's new datums, deletions and erasures carried
//! to the platform data service, one `continuous` data set per data source.
//!
//! A delivery works under the user's `platform_data` lease and reads the current state: first
//! the data sets an erasure asked to delete, then per source the queued deletions (dropped when
//! the datum came back), then the datums written since the source's delivery mark, in seq order,
//! in batches of at most 2,000. Each accepted batch moves the mark in one fenced write, so a
//! crash or a lost lease repeats at most one batch (the platform's `origin` deduplication makes a
//! repeat a no-op). A 400 names the datums it refused (`source.pointer`); those are recorded as
//! rejected with the reason and the rest of the batch is sent again; a 400 that names nothing is
//! bisected until it does. A batch that may have landed after the lease was lost (a newer
//! version sent by the lease's new holder could have been overwritten) queues a re-send of the
//! source from that batch on.

use std::collections::BTreeMap;

use model::{DataSourceId, SharedClock, UserId};
use partners::PartnerError;
use partners::driver::Devices;
use partners::platform::{DataService, NewDataSet};
use store::Store;
use store::delivery::{Advance, Advanced, Backlog, Lease, Outgoing, Rejection};
use store::outbox::{self, Kind, Message, Outcome, PlatformData, Row};
use tracing::Instrument;
use uuid::Uuid;

use super::{Backoff, BoxFuture, Deliveries, Destination};

/// What the platform sink needs besides the store.
#[derive(Debug, Clone)]
pub struct PlatformSink {
    pub service: DataService,
    /// Each configured partner's devices, by provider name (the data set names them).
    pub devices: BTreeMap<String, Devices>,
    /// Datums per upload (at most the platform's 2,000).
    pub batch: usize,
    /// Users delivered at once per process.
    pub concurrency: usize,
}

#[derive(Debug)]
pub struct PlatformDeliveries {
    store: Store,
    sink: PlatformSink,
    clock: SharedClock,
    backoff: Backoff,
    owner: Uuid,
    lease: chrono::Duration,
}

/// Why a delivery stopped before the end.
enum Stop {
    /// Try again later (`retry_after`: what the service asked for).
    Retry {
        error: String,
        retry_after: Option<chrono::Duration>,
    },
    /// The lease is gone: another deliverer carries on.
    LeaseLost,
    Store(store::StoreError),
}

impl From<store::StoreError> for Stop {
    fn from(e: store::StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<PartnerError> for Stop {
    fn from(e: PartnerError) -> Self {
        let retry_after = match &e {
            PartnerError::RateLimited { retry_after } => retry_after.and_then(|d| chrono::Duration::from_std(d).ok()),
            _ => None,
        };
        match &e {
            PartnerError::InvalidClient(_) | PartnerError::Unauthorized => {
                tracing::error!(error = %e, "the platform refused our server credentials; deliveries wait");
            }
            PartnerError::Protocol(_) => tracing::error!(error = %e, "unexpected answer from the platform"),
            _ => {}
        }
        // In the platform's words, not a partner's.
        let error = match &e {
            PartnerError::Transient(why) => format!("the platform is unavailable: {why}"),
            PartnerError::RateLimited { .. } => "the platform is rate limiting us".to_owned(),
            PartnerError::Unauthorized | PartnerError::InvalidClient(_) => {
                "the platform refused our server login".to_owned()
            }
            other => format!("platform: {other}"),
        };
        Self::Retry { error, retry_after }
    }
}

impl PlatformDeliveries {
    pub fn new(
        store: Store,
        sink: PlatformSink,
        clock: SharedClock,
        backoff: Backoff,
        owner: Uuid,
        lease: chrono::Duration,
    ) -> Self {
        Self { store, sink, clock, backoff, owner, lease }
    }

    async fn run(&self, user: &UserId, rows: &[Row]) -> store::Result<Deliveries> {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(0);
        let outcome = match self.deliver_all(user, rows).await {
            Ok(()) => Outcome::Delivered,
            Err(Stop::Store(e)) => return Err(e),
            Err(Stop::LeaseLost) => {
                tracing::warn!(user = %user, "platform delivery lost its lease; the new holder carries on");
                return Ok(Vec::new());
            }
            Err(Stop::Retry { error, retry_after }) => {
                tracing::warn!(user = %user, attempts = attempts + 1, error, "platform delivery incomplete; will retry");
                match self.backoff.retry(attempts, error) {
                    Outcome::Retry { next, error } => {
                        let asked = retry_after.map(|w| self.clock.now() + w);
                        Outcome::Retry { next: asked.map_or(next, |a| a.max(next)), error }
                    }
                    other => other,
                }
            }
        };
        Ok(vec![(ids, outcome)])
    }

    fn lease<'a>(&self, user: &'a UserId) -> Lease<'a> {
        Lease { user, owner: self.owner }
    }

    async fn renew(&self, user: &UserId) -> Result<(), Stop> {
        let mut conn = self.store.acquire().await?;
        let until = self.clock.now() + self.lease;
        if outbox::renew_lease(&mut conn, user, Kind::PlatformData, self.owner, until).await? {
            Ok(())
        } else {
            Err(Stop::LeaseLost)
        }
    }

    async fn deliver_all(&self, user: &UserId, rows: &[Row]) -> Result<(), Stop> {
        let lease = self.lease(user);
        for row in rows {
            let Ok(Message::PlatformData(m)) = &row.message else { continue };
            for set in &m.erase_data_sets {
                self.sink.service.delete_data_set(set).await?;
                tracing::info!(user = %user, "an erased source's platform data set was deleted");
                metrics::counter!("tidegate_platform_data_sets_deleted_total").increment(1);
            }
            for (source, seq) in &m.resend_from {
                if let Ok(source) = DataSourceId::parse(source)
                    && !self.store.rewind_delivery(lease, &source, *seq).await?
                {
                    return Err(Stop::LeaseLost);
                }
            }
        }
        for backlog in self.store.delivery_backlog(user).await? {
            let span = tracing::info_span!("deliver", data_source = %backlog.source, provider = %backlog.provider);
            self.deliver_source(user, &backlog).instrument(span).await?;
        }
        Ok(())
    }

    async fn deliver_source(&self, user: &UserId, b: &Backlog) -> Result<(), Stop> {
        let lease = self.lease(user);
        let mut data_set = b.data_set_id.clone();
        // Deletions first: a record removed and stored again is uploaded below instead.
        loop {
            let dels = self.store.delivery_deletions(user, &b.source, self.sink.batch as i64).await?;
            if dels.is_empty() {
                break;
            }
            let send: Vec<&str> = dels.iter().filter(|d| !d.superseded).map(|d| d.origin_id.as_str()).collect();
            if let (Some(set), false) = (&data_set, send.is_empty()) {
                self.renew(user).await?;
                match self.sink.service.delete_data(set, &send).await {
                    Ok(()) => metrics::counter!("tidegate_platform_datums_deleted_total").increment(send.len() as u64),
                    Err(PartnerError::NotFound(_)) => {
                        // The data set is gone at the platform: nothing to delete there; the
                        // datums still here go to a new one.
                        self.forget_data_set(user, b).await?;
                        data_set = None;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let ids: Vec<i64> = dels.iter().map(|d| d.id).collect();
            if !self.store.finish_deletions(lease, &b.source, &ids).await? {
                return Err(Stop::LeaseLost);
            }
        }
        let mut after = if data_set.is_none() { 0 } else { b.delivered_seq };
        if after >= b.datum_seq {
            return Ok(());
        }
        let set = match data_set {
            Some(s) => s,
            None => self.data_set(user, b).await?,
        };
        // The data set's time-zone offset follows the latest datum's (by time) among those sent;
        // it is written before the batch that moved it is recorded, so a failed update is
        // repeated with that batch.
        let mut latest_offset: Option<(String, i32)> = None;
        let mut set_offset = b.data_set_timezone_offset;
        for _ in 0..3 {
            loop {
                let batch = self.store.delivery_batch(&b.source, after, b.datum_seq, self.sink.batch as i64).await?;
                let (Some(first), Some(last)) = (batch.first(), batch.last()) else { break };
                let (first_seq, last_seq) = (first.seq, last.seq);
                self.renew(user).await?;
                let rejected = match self.upload(&set, &batch).await {
                    Ok(r) => r,
                    Err(PartnerError::NotFound(_)) => {
                        self.forget_data_set(user, b).await?;
                        return Err(Stop::Retry {
                            error: "the platform data set is gone; a new one is created".into(),
                            retry_after: None,
                        });
                    }
                    Err(e) => return Err(e.into()),
                };
                for d in &batch {
                    if let (Some(t), Some(tz)) = (d.body["time"].as_str(), d.body["timezoneOffset"].as_i64())
                        && latest_offset.as_ref().is_none_or(|(lt, _)| t > lt.as_str())
                    {
                        latest_offset = Some((t.to_owned(), tz as i32));
                    }
                }
                let refused: std::collections::BTreeSet<&str> = rejected.iter().map(|r| r.datum_id.as_str()).collect();
                let delivered: Vec<String> =
                    batch.iter().filter(|d| !refused.contains(d.id.as_str())).map(|d| d.id.clone()).collect();
                metrics::counter!("tidegate_platform_datums_delivered_total").increment(delivered.len() as u64);
                if !rejected.is_empty() {
                    metrics::counter!("tidegate_platform_datums_rejected_total").increment(rejected.len() as u64);
                    tracing::error!(user = %user, data_source = %b.source, rejected = rejected.len(), reason = %rejected[0].reason,
                        "the platform refused datums; recorded as rejected, the rest delivered");
                }
                let tz = latest_offset.as_ref().map(|(_, tz)| *tz).filter(|tz| Some(*tz) != set_offset);
                if let Some(tz) = tz {
                    self.sink.service.set_timezone_offset(&set, tz).await?;
                    set_offset = Some(tz);
                }
                let now = self.clock.now();
                let advance = Advance {
                    through: last_seq,
                    unread_after: None,
                    delivered: &delivered,
                    rejected: &rejected,
                    timezone_offset: tz,
                    now,
                };
                if self.store.advance_delivery(lease, &b.source, &advance).await? != Advanced::Moved {
                    // This batch may have landed after the new holder sent newer versions.
                    let mut conn = self.store.acquire().await?;
                    let resend = PlatformData {
                        resend_from: vec![(b.source.as_str().to_owned(), first_seq)],
                        ..Default::default()
                    };
                    outbox::enqueue(&mut conn, user, &Message::PlatformData(resend), now).await?;
                    metrics::counter!("tidegate_outbox_lost_leases_total", "kind" => Kind::PlatformData.as_str())
                        .increment(1);
                    return Err(Stop::LeaseLost);
                }
                tracing::debug!(user = %user, data_source = %b.source, first_seq, last_seq, datums = batch.len(), "platform batch delivered");
                after = last_seq;
            }
            // Every row up to the source's latest write was read: the mark goes there (rows removed
            // since — deleted or moved at the partner — leave gaps no batch would step over), as
            // long as no row turned up meanwhile below it that this delivery has not sent.
            if after >= b.datum_seq {
                return Ok(());
            }
            let advance = Advance {
                through: b.datum_seq,
                unread_after: (after < b.datum_seq).then_some(after),
                delivered: &[],
                rejected: &[],
                timezone_offset: None,
                now: self.clock.now(),
            };
            match self.store.advance_delivery(lease, &b.source, &advance).await? {
                Advanced::Moved => return Ok(()),
                Advanced::LeaseLost => return Err(Stop::LeaseLost),
                Advanced::Unread => {
                    tracing::warn!(user = %user, data_source = %b.source, read_through = after, mark = b.datum_seq,
                        "a stored datum below the source's latest write was not seen when read; reading again");
                    metrics::counter!("tidegate_platform_rereads_total").increment(1);
                }
            }
        }
        Err(Stop::Retry {
            error: "datums kept appearing below the delivery mark; retrying later".into(),
            retry_after: None,
        })
    }

    async fn forget_data_set(&self, user: &UserId, b: &Backlog) -> Result<(), Stop> {
        tracing::warn!(user = %user, data_source = %b.source, "the platform data set is gone; everything will be sent to a new one");
        if self.store.set_data_set(self.lease(user), &b.source, None).await? { Ok(()) } else { Err(Stop::LeaseLost) }
    }

    /// The source's data set: the one a lost answer created (found by client name), or a new one.
    async fn data_set(&self, user: &UserId, b: &Backlog) -> Result<String, Stop> {
        let client = partners::platform::client_name(b.provider.as_str());
        let id = match self.sink.service.find_data_set(user, &client).await? {
            Some(id) => id,
            None => {
                let devices = self.sink.devices.get(b.provider.as_str()).copied().unwrap_or_default();
                let set = NewDataSet::for_partner(b.provider.as_str(), devices, self.clock.now());
                let id = self.sink.service.create_data_set(user, &set).await?;
                metrics::counter!("tidegate_platform_data_sets_created_total").increment(1);
                tracing::info!(user = %user, data_source = %b.source, "platform data set created");
                id
            }
        };
        if self.store.set_data_set(self.lease(user), &b.source, Some(&id)).await? {
            Ok(id)
        } else {
            Err(Stop::LeaseLost)
        }
    }

    /// Upload a batch; a 400 rejects exactly the datums it names (bisecting when it names
    /// none) and the rest is sent again. Returns the rejections.
    async fn upload(&self, set: &str, batch: &[Outgoing]) -> Result<Vec<Rejection>, PartnerError> {
        let mut rejected = Vec::new();
        let mut pending: Vec<Vec<usize>> = vec![(0..batch.len()).collect()];
        while let Some(group) = pending.pop() {
            if group.is_empty() {
                continue;
            }
            let bodies: Vec<&serde_json::Value> = group.iter().map(|&i| &batch[i].body).collect();
            let problems = match self.sink.service.upload(set, &bodies).await {
                Ok(()) => continue,
                Err(PartnerError::Invalid(p)) => p,
                Err(e) => return Err(e),
            };
            let mut named: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for p in &problems {
                if let Some(i) = p.index.filter(|i| *i < group.len()) {
                    named.entry(i).or_default().push(match &p.pointer {
                        Some(ptr) => format!("{}: {}", ptr.splitn(3, '/').nth(2).unwrap_or(""), p.detail),
                        None => p.detail.clone(),
                    });
                }
            }
            if named.is_empty() {
                if group.len() == 1 {
                    let reason = problems.iter().map(|p| p.detail.as_str()).collect::<Vec<_>>().join("; ");
                    rejected.push(rejection(&batch[group[0]], reason));
                } else {
                    let (a, b) = group.split_at(group.len() / 2);
                    pending.push(b.to_vec());
                    pending.push(a.to_vec());
                }
                continue;
            }
            for (i, reasons) in &named {
                rejected.push(rejection(&batch[group[*i]], reasons.join("; ")));
            }
            pending.push(group.iter().enumerate().filter(|(i, _)| !named.contains_key(i)).map(|(_, g)| *g).collect());
        }
        Ok(rejected)
    }

    /// Queue deliveries for sources left with a backlog (the sink was switched on, a delivery
    /// was lost) and prune delivered rows.
    async fn sweep(&self) -> store::Result<()> {
        let now = self.clock.now();
        let mut conn = self.store.acquire().await?;
        let queued = outbox::requeue_platform_backlog(&mut conn, now).await?;
        if queued > 0 {
            tracing::info!(users = queued, "platform deliveries queued for sources with undelivered data");
        }
        outbox::prune_delivered(&mut conn, Kind::PlatformData, now - chrono::Duration::hours(1), 10_000).await?;
        Ok(())
    }
}

fn rejection(d: &Outgoing, reason: String) -> Rejection {
    Rejection { datum_id: d.id.clone(), seq: d.seq, kind: d.kind.clone(), reason: reason.chars().take(1000).collect() }
}

impl Destination for PlatformDeliveries {
    fn kind(&self) -> Kind {
        Kind::PlatformData
    }

    fn deliver<'a>(&'a self, user: &'a UserId, rows: &'a [Row]) -> BoxFuture<'a, store::Result<Deliveries>> {
        Box::pin(self.run(user, rows))
    }

    fn maintain(&self) -> BoxFuture<'_, store::Result<()>> {
        Box::pin(self.sweep())
    }

    fn concurrency(&self) -> usize {
        self.sink.concurrency
    }
}
