//! A poll's write as one intent: fence on the schedule's lease, write the datums and removals,
//! move the cursor and the source's data times, and queue the clinic report when the latest data
//! moved an hour or more, and (with a platform sink) the delivery of what changed — one
//! transaction, so a poll that lost its lease writes nothing.

use chrono::{DateTime, Utc};
use model::{DataSourceId, UserId};
use serde_json::Value;
use uuid::Uuid;

use crate::datums::{NewDatum, Written};
use crate::{Result, Store, datums, outbox, poll_schedule};

/// What a completed poll of one data source brings to write.
#[derive(Debug, Clone, Copy)]
pub struct PollResult<'a> {
    pub source: &'a DataSourceId,
    pub user: &'a UserId,
    /// The lease the poll ran under; `None` outside the claim loop (then it only writes while
    /// nobody holds a lease).
    pub lease: Option<Uuid>,
    /// The driver's cursor to store.
    pub cursor: &'a Value,
    /// What was skipped, for `last_skipped` (`None`: nothing).
    pub skipped: Option<&'a Value>,
    /// The next due time and why (`None` keeps the current one).
    pub next_run_at: Option<(DateTime<Utc>, &'a str)>,
    pub datums: &'a [NewDatum],
    /// Ids of datums the partner deleted.
    pub removed: &'a [String],
    pub now: DateTime<Utc>,
}

/// What recording a poll did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written; `reported` when a clinic report was queued with it.
    Written { written: Written, reported: bool },
    /// Another poller holds the lease (or took it over): nothing was written.
    LeaseLost,
}

impl Store {
    /// Record a successful poll (see the module comment).
    pub async fn record_poll(&self, r: &PollResult<'_>) -> Result<Recorded> {
        let mut tx = self.begin().await?;
        let fence = poll_schedule::Success {
            lease: r.lease,
            cursor: r.cursor,
            skipped: r.skipped,
            next_run_at: r.next_run_at,
            now: r.now,
        };
        if !poll_schedule::succeed(&mut tx, r.source, &fence).await? {
            tx.rollback().await?;
            return Ok(Recorded::LeaseLost);
        }
        let (written, reported) = datums::write_batch(&mut tx, r.user, r.source, r.datums, r.removed, r.now).await?;
        if reported {
            outbox::enqueue_clinic_report(&mut tx, r.user, r.now).await?;
        }
        if self.platform_sink() && written.changed() {
            outbox::enqueue_platform_delivery(&mut tx, r.user, r.now).await?;
        }
        tx.commit().await?;
        Ok(Recorded::Written { written, reported })
    }
}
