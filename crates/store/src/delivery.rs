//! Platform delivery state: how far each data source's datums have reached the platform data
//! service (`data_sources.delivered_seq` against `datum_seq`), its data set, the deletions still
//! to carry there (`platform_deletions`) and the datum versions it refused (`datum_rejections`).
//!
//! The deliverer works under the user's `platform_data` outbox lease; every write here is
//! fenced by that lease, so a deliverer that lost it records nothing. Datums are read at
//! delivery time in `seq` order (each source's writes draw their seqs in commit order), so the
//! mark never passes a write it has not seen, and what is sent is always the current version.

use chrono::{DateTime, Utc};
use model::{DataSourceId, ProviderName, UserId};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Result, Store, StoreError};

/// The deliverer's lease: whose it is, for which user.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    pub user: &'a UserId,
    pub owner: Uuid,
}

/// A data source with something to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub source: DataSourceId,
    pub provider: ProviderName,
    pub data_set_id: Option<String>,
    pub data_set_timezone_offset: Option<i32>,
    /// Delivered up to and including this seq.
    pub delivered_seq: i64,
    /// The source's latest write: deliver up to here.
    pub datum_seq: i64,
    pub deletions: i64,
}

/// One datum to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub id: String,
    pub seq: i64,
    pub kind: String,
    pub body: Value,
}

/// A deletion to carry to the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub id: i64,
    pub origin_id: String,
    /// A datum with the same id is stored again (the record came back): it is uploaded, so the
    /// deletion is dropped instead of sent.
    pub superseded: bool,
}

/// A datum version the platform refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub datum_id: String,
    pub seq: i64,
    pub kind: String,
    pub reason: String,
}

/// What a delivered batch moves: the mark, the versions accepted and refused, the data set's
/// time-zone offset when it was just written.
#[derive(Debug, Clone, Copy)]
pub struct Advance<'a> {
    pub through: i64,
    /// The mark passes seqs this delivery did not send, from here to `through` (none was found
    /// stored when it read them): moved only if that still holds, checked in the same statement.
    pub unread_after: Option<i64>,
    pub delivered: &'a [String],
    pub rejected: &'a [Rejection],
    pub timezone_offset: Option<i32>,
    pub now: DateTime<Utc>,
}

/// What [`Store::advance_delivery`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advanced {
    Moved,
    /// The lease is gone: nothing recorded.
    LeaseLost,
    /// A stored row the delivery did not send lies below the new mark: nothing recorded; read
    /// again.
    Unread,
}

/// Per-source delivery figures (dashboard, doctor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDelivery {
    pub source: DataSourceId,
    pub user_id: String,
    pub provider: String,
    pub data_set_id: Option<String>,
    pub delivered_time: Option<DateTime<Utc>>,
    /// Datums not yet delivered.
    pub backlog: i64,
    pub rejected: i64,
    pub deletions: i64,
}

const FENCE: &str = "platform_data";

impl Store {
    /// The user's sources with datums or deletions to deliver.
    pub async fn delivery_backlog(&self, user: &UserId) -> Result<Vec<Backlog>> {
        let rows = sqlx::query!(
            r#"SELECT s.id, s.provider, s.data_set_id, s.data_set_timezone_offset, s.delivered_seq, s.datum_seq,
                      (SELECT count(*) FROM platform_deletions p WHERE p.data_source_id = s.id) AS "deletions!"
               FROM data_sources s WHERE s.user_id = $1 ORDER BY s.id"#,
            user.as_str()
        )
        .fetch_all(&mut *self.acquire().await?)
        .await?;
        let bad = |e: &dyn std::fmt::Display| StoreError::corrupt("data_sources", e);
        rows.into_iter()
            .filter(|r| r.datum_seq > r.delivered_seq || r.deletions > 0)
            .map(|r| {
                Ok(Backlog {
                    source: DataSourceId::parse(&r.id).map_err(|e| bad(&e))?,
                    provider: ProviderName::parse(&r.provider).map_err(|e| bad(&e))?,
                    data_set_id: r.data_set_id,
                    data_set_timezone_offset: r.data_set_timezone_offset,
                    delivered_seq: r.delivered_seq,
                    datum_seq: r.datum_seq,
                    deletions: r.deletions,
                })
            })
            .collect()
    }

    /// The next datums to send for a source: seq in (`after`, `through`], in seq order.
    pub async fn delivery_batch(
        &self,
        source: &DataSourceId,
        after: i64,
        through: i64,
        limit: i64,
    ) -> Result<Vec<Outgoing>> {
        let rows = sqlx::query!(
            r#"SELECT id, seq, type, body FROM datums
               WHERE data_source_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4"#,
            source.as_str(),
            after,
            through,
            limit
        )
        .fetch_all(&mut *self.acquire().await?)
        .await?;
        Ok(rows.into_iter().map(|r| Outgoing { id: r.id, seq: r.seq, kind: r.r#type, body: r.body }).collect())
    }

    /// The oldest deletions queued for a source.
    pub async fn delivery_deletions(&self, user: &UserId, source: &DataSourceId, limit: i64) -> Result<Vec<Deletion>> {
        let rows = sqlx::query!(
            r#"SELECT p.id, p.origin_id,
                      EXISTS (SELECT 1 FROM datums d WHERE d.user_id = $1 AND d.id = p.datum_id) AS "superseded!"
               FROM platform_deletions p WHERE p.data_source_id = $2 ORDER BY p.id LIMIT $3"#,
            user.as_str(),
            source.as_str(),
            limit
        )
        .fetch_all(&mut *self.acquire().await?)
        .await?;
        Ok(rows.into_iter().map(|r| Deletion { id: r.id, origin_id: r.origin_id, superseded: r.superseded }).collect())
    }

    /// Record the source's data set (created or found at the platform). Fenced: false when the
    /// lease is gone.
    pub async fn set_data_set(
        &self,
        lease: Lease<'_>,
        source: &DataSourceId,
        data_set_id: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query!(
            r#"UPDATE data_sources SET data_set_id = $2,
                      data_set_timezone_offset = CASE WHEN $2::text IS NULL THEN NULL ELSE data_set_timezone_offset END,
                      delivered_seq = CASE WHEN $2::text IS NULL THEN 0 ELSE delivered_seq END
               WHERE id = $1 AND user_id = $3
                 AND EXISTS (SELECT 1 FROM outbox_leases l WHERE l.user_id = $3 AND l.kind = $4 AND l.lease_owner = $5)"#,
            source.as_str(),
            data_set_id,
            lease.user.as_str(),
            FENCE,
            lease.owner
        )
        .execute(&mut *self.acquire().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A batch reached the platform: move the mark to `through`, record the versions it refused
    /// (and forget refusals of versions it now accepted), note the data set's time-zone offset.
    /// One transaction, fenced: nothing is recorded when the lease is gone, or when the mark
    /// would pass a stored row the delivery did not send ([`Advance::unread_after`]).
    pub async fn advance_delivery(&self, lease: Lease<'_>, source: &DataSourceId, a: &Advance<'_>) -> Result<Advanced> {
        let Advance { through, unread_after, delivered, rejected, timezone_offset, now } = *a;
        let mut tx = self.begin().await?;
        let moved = sqlx::query!(
            r#"UPDATE data_sources SET delivered_seq = GREATEST(delivered_seq, $2), delivered_time = $3,
                      data_set_timezone_offset = COALESCE($4, data_set_timezone_offset)
               WHERE id = $1 AND user_id = $5
                 AND EXISTS (SELECT 1 FROM outbox_leases l WHERE l.user_id = $5 AND l.kind = $6 AND l.lease_owner = $7)
                 AND ($8::bigint IS NULL
                      OR NOT EXISTS (SELECT 1 FROM datums d WHERE d.data_source_id = $1 AND d.seq > $8 AND d.seq <= $2))"#,
            source.as_str(),
            through,
            now,
            timezone_offset,
            lease.user.as_str(),
            FENCE,
            lease.owner,
            unread_after
        )
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            drop(tx);
            if unread_after.is_some() && self.holds_lease(lease).await? {
                return Ok(Advanced::Unread);
            }
            return Ok(Advanced::LeaseLost);
        }
        if !delivered.is_empty() {
            sqlx::query!(
                "DELETE FROM datum_rejections WHERE data_source_id = $1 AND datum_id = ANY($2::text[])",
                source.as_str(),
                delivered as &[String]
            )
            .execute(&mut *tx)
            .await?;
        }
        for r in rejected {
            sqlx::query!(
                r#"INSERT INTO datum_rejections (data_source_id, user_id, datum_id, seq, type, reason, rejected_time)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (data_source_id, datum_id) DO UPDATE
                       SET seq = EXCLUDED.seq, type = EXCLUDED.type, reason = EXCLUDED.reason,
                           rejected_time = EXCLUDED.rejected_time"#,
                source.as_str(),
                lease.user.as_str(),
                r.datum_id,
                r.seq,
                r.kind,
                r.reason,
                now
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Advanced::Moved)
    }

    /// Whether the deliverer still holds its lease.
    async fn holds_lease(&self, lease: Lease<'_>) -> Result<bool> {
        let held = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM outbox_leases WHERE user_id = $1 AND kind = $2 AND lease_owner = $3) AS "held!""#,
            lease.user.as_str(),
            FENCE,
            lease.owner
        )
        .fetch_one(&mut *self.acquire().await?)
        .await?;
        Ok(held)
    }

    /// Deletions carried (or dropped as superseded): forget them. Fenced.
    pub async fn finish_deletions(&self, lease: Lease<'_>, source: &DataSourceId, ids: &[i64]) -> Result<bool> {
        let done = sqlx::query!(
            r#"DELETE FROM platform_deletions WHERE data_source_id = $1 AND id = ANY($2)
                 AND EXISTS (SELECT 1 FROM outbox_leases l WHERE l.user_id = $3 AND l.kind = $4 AND l.lease_owner = $5)"#,
            source.as_str(),
            ids,
            lease.user.as_str(),
            FENCE,
            lease.owner
        )
        .execute(&mut *self.acquire().await?)
        .await?;
        Ok(done.rows_affected() > 0 || ids.is_empty())
    }

    /// Send a source's datums again from `seq` on (after a delivery outlived its lease). Fenced.
    pub async fn rewind_delivery(&self, lease: Lease<'_>, source: &DataSourceId, seq: i64) -> Result<bool> {
        let done = sqlx::query!(
            r#"UPDATE data_sources SET delivered_seq = LEAST(delivered_seq, $2::bigint - 1)
               WHERE id = $1 AND user_id = $3
                 AND EXISTS (SELECT 1 FROM outbox_leases l WHERE l.user_id = $3 AND l.kind = $4 AND l.lease_owner = $5)"#,
            source.as_str(),
            seq,
            lease.user.as_str(),
            FENCE,
            lease.owner
        )
        .execute(&mut *self.acquire().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Per-source delivery figures for every source that has data or a data set (dashboard,
    /// doctor), busiest backlog first.
    pub async fn delivery_overview(&self, limit: i64) -> Result<Vec<SourceDelivery>> {
        let rows = sqlx::query!(
            r#"SELECT s.id, s.user_id, s.provider, s.data_set_id, s.delivered_time,
                      (SELECT count(*) FROM datums d WHERE d.data_source_id = s.id AND d.seq > s.delivered_seq) AS "backlog!",
                      (SELECT count(*) FROM datum_rejections r WHERE r.data_source_id = s.id) AS "rejected!",
                      (SELECT count(*) FROM platform_deletions p WHERE p.data_source_id = s.id) AS "deletions!"
               FROM data_sources s WHERE s.datum_seq > 0 OR s.data_set_id IS NOT NULL
               ORDER BY (s.datum_seq > s.delivered_seq) DESC, s.delivered_time NULLS FIRST, s.id LIMIT $1"#,
            limit
        )
        .fetch_all(&mut *self.acquire().await?)
        .await?;
        let bad = |e: &dyn std::fmt::Display| StoreError::corrupt("data_sources", e);
        rows.into_iter()
            .map(|r| {
                Ok(SourceDelivery {
                    source: DataSourceId::parse(&r.id).map_err(|e| bad(&e))?,
                    user_id: r.user_id,
                    provider: r.provider,
                    data_set_id: r.data_set_id,
                    delivered_time: r.delivered_time,
                    backlog: r.backlog,
                    rejected: r.rejected,
                    deletions: r.deletions,
                })
            })
            .collect()
    }

    /// Every refused datum of a source: (datum id, type, reason).
    pub async fn rejections(&self, source: &DataSourceId) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query!(
            "SELECT datum_id, type, reason FROM datum_rejections WHERE data_source_id = $1 ORDER BY datum_id",
            source.as_str()
        )
        .fetch_all(&mut *self.acquire().await?)
        .await?;
        Ok(rows.into_iter().map(|r| (r.datum_id, r.r#type, r.reason)).collect())
    }
}

/// Erasure: forget a user's (or one source's) queued deletions and refusals; the data set
/// itself is deleted at the platform through the outbox.
pub(crate) async fn forget(conn: &mut PgConnection, user: &UserId, source: Option<&DataSourceId>) -> Result<()> {
    sqlx::query!(
        "DELETE FROM platform_deletions WHERE user_id = $1 AND ($2::text IS NULL OR data_source_id = $2)",
        user.as_str(),
        source.map(DataSourceId::as_str)
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM datum_rejections WHERE user_id = $1 AND ($2::text IS NULL OR data_source_id = $2)",
        user.as_str(),
        source.map(DataSourceId::as_str)
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What `tidegate doctor` checks of platform delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryHealth {
    /// Sources holding datums.
    pub sources_with_data: i64,
    /// Of those, sources with a platform data set.
    pub with_data_set: i64,
    /// Sources whose delivery mark moved but that name no data set (must not happen).
    pub delivered_without_data_set: Vec<String>,
    /// Sources with datums not yet delivered, and how many datums.
    pub backlog_sources: i64,
    pub backlog_datums: i64,
    /// When the oldest undelivered datum was written.
    pub oldest_undelivered: Option<DateTime<Utc>>,
    /// Refused datums per type: (type, count, one reason).
    pub rejected: Vec<(String, i64, String)>,
    /// Datums older than the retention cutoff kept because they were never delivered.
    pub retained_undelivered: i64,
    /// Deletions waiting to be carried.
    pub deletions: i64,
}

impl Store {
    /// Platform delivery figures over the whole database (reads the sources with a backlog and
    /// the refusals, not every datum).
    pub async fn delivery_health(&self, cutoff: DateTime<Utc>) -> Result<DeliveryHealth> {
        let mut conn = self.acquire().await?;
        let (sources_with_data, with_data_set): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE datum_seq > 0), count(*) FILTER (WHERE datum_seq > 0 AND data_set_id IS NOT NULL)
             FROM data_sources",
        )
        .fetch_one(&mut *conn)
        .await?;
        let delivered_without_data_set: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM data_sources WHERE delivered_seq > 0 AND data_set_id IS NULL ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await?;
        let (backlog_sources, backlog_datums, oldest_undelivered, retained_backlog): (
            i64,
            Option<i64>,
            Option<DateTime<Utc>>,
            Option<i64>,
        ) = sqlx::query_as(
            "SELECT count(*), sum(b.n)::bigint, min(b.first), sum(b.old)::bigint
             FROM data_sources s CROSS JOIN LATERAL
                 (SELECT count(*) AS n, min(d.created_time) AS first, count(*) FILTER (WHERE d.time < $1) AS old
                  FROM datums d WHERE d.data_source_id = s.id AND d.seq > s.delivered_seq) b
             WHERE s.datum_seq > s.delivered_seq",
        )
        .bind(cutoff)
        .fetch_one(&mut *conn)
        .await?;
        let rejected: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT type, count(*), min(reason) FROM datum_rejections GROUP BY type ORDER BY count(*) DESC, type",
        )
        .fetch_all(&mut *conn)
        .await?;
        let retained_rejected: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM datum_rejections r JOIN datums d ON d.user_id = r.user_id AND d.id = r.datum_id
             WHERE d.time < $1",
        )
        .bind(cutoff)
        .fetch_one(&mut *conn)
        .await?;
        let deletions: i64 =
            sqlx::query_scalar("SELECT count(*) FROM platform_deletions").fetch_one(&mut *conn).await?;
        Ok(DeliveryHealth {
            sources_with_data,
            with_data_set,
            delivered_without_data_set,
            backlog_sources,
            backlog_datums: backlog_datums.unwrap_or(0),
            oldest_undelivered,
            rejected,
            retained_undelivered: retained_backlog.unwrap_or(0) + retained_rejected,
            deletions,
        })
    }

    /// The data set ids and provider of every source that has one (doctor's platform check).
    pub async fn data_sets(&self, limit: i64) -> Result<Vec<(UserId, ProviderName, DataSourceId, String)>> {
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT user_id, provider, id, data_set_id FROM data_sources WHERE data_set_id IS NOT NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&mut *self.acquire().await?)
        .await?;
        let bad = |e: &dyn std::fmt::Display| StoreError::corrupt("data_sources", e);
        rows.into_iter()
            .map(|(u, p, s, d)| {
                Ok((
                    UserId::parse(&u).map_err(|e| bad(&e))?,
                    ProviderName::parse(&p).map_err(|e| bad(&e))?,
                    DataSourceId::parse(&s).map_err(|e| bad(&e))?,
                    d,
                ))
            })
            .collect()
    }
}
