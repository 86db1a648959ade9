//! `datums`: Tidepool device data imported from partners, keyed (user_id, id, time).
//!
//! Writes are batched (one statement per chunk through `UNNEST`) and idempotent: a datum whose
//! body did not change is not touched, so re-polling a window writes nothing. A datum whose time
//! moved (an edited partner record) keeps its id: the old row goes in the same statement batch.
//!
//! Every insert and every change of a body draws a new `seq` (the version; per source it grows
//! in commit order, see the platform-delivery migration), and a body's `origin.time`, when the
//! partner did not say when it changed the record, is when we first stored **this version**:
//! kept while the body stays the same, moved to the write time when it changes, so an edit is
//! always newer than what it replaces.

use chrono::{DateTime, Utc};
use model::{DataSourceId, UserId};
use serde_json::Value;
use sqlx::PgConnection;

use crate::{Result, Store};

/// Rows per statement: large enough to amortise the round trip, small enough to keep a 30-day
/// backfill (8,640 EGVs) from building one huge parameter array.
const CHUNK: usize = 2_000;

/// One datum to write: its id, `time`, `type` and the full Tidepool JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDatum {
    pub id: String,
    pub time: DateTime<Utc>,
    pub kind: String,
    pub body: Value,
}

/// What a batch changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
}

impl Written {
    pub fn changed(&self) -> bool {
        self.inserted + self.updated + self.deleted > 0
    }
}

/// Upsert `datums` and delete `removed` (datum ids) for one data source, in the caller's
/// transaction. Also moves the source's earliest/latest data times and `lastImportTime`;
/// returns what changed and whether latest data time moved by an hour or more (worth telling the
/// clinic).
pub async fn write_batch(
    conn: &mut PgConnection,
    user: &UserId,
    source: &DataSourceId,
    datums: &[NewDatum],
    removed: &[String],
    now: DateTime<Utc>,
) -> Result<(Written, bool)> {
    let mut w = Written::default();
    let mut last_seq: Option<i64> = None;
    for chunk in datums.chunks(CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|d| d.id.as_str()).collect();
        let times: Vec<DateTime<Utc>> = chunk.iter().map(|d| d.time).collect();
        let kinds: Vec<&str> = chunk.iter().map(|d| d.kind.as_str()).collect();
        let bodies: Vec<&Value> = chunk.iter().map(|d| &d.body).collect();
        // One statement: delete the rows of edited records whose time changed (same id, other
        // time; found per id through the primary key — the LATERAL … OFFSET 0 keeps every plan,
        // generic ones too, from reading the user's whole history), then upsert. The moved row's
        // old key differs from its new one, so the two parts never touch the same row.
        let r = sqlx::query!(
            r#"WITH u AS (
                   SELECT u.id, u.time, u.type,
                          CASE WHEN u.body->'origin' ? 'time' THEN u.body
                               ELSE jsonb_set(u.body, '{origin,time}', to_jsonb($8::text)) END AS body
                   FROM UNNEST($3::text[], $4::timestamptz[], $5::text[], $6::jsonb[]) AS u(id, time, type, body)
               ), moved AS (
                   DELETE FROM datums d
                   USING (SELECT x.id, x.time FROM u
                          CROSS JOIN LATERAL (SELECT o.id, o.time FROM datums o
                                              WHERE o.user_id = $1 AND o.id = u.id AND o.time <> u.time OFFSET 0) x) s
                   WHERE d.user_id = $1 AND d.id = s.id AND d.time = s.time
                   RETURNING d.id
               ), written AS (
                   INSERT INTO datums AS d (user_id, id, time, data_source_id, type, body, created_time, modified_time)
                   SELECT $1, u.id, u.time, $2, u.type, u.body, $7, $7 FROM u
                   ON CONFLICT (user_id, id, time) DO UPDATE
                       SET body = EXCLUDED.body, type = EXCLUDED.type, modified_time = EXCLUDED.modified_time,
                           seq = nextval('datums_seq')
                       WHERE (d.body #- '{origin,time}') IS DISTINCT FROM (EXCLUDED.body #- '{origin,time}')
                   RETURNING (d.created_time = $7 AND d.modified_time = $7) AS inserted, d.seq
               )
               SELECT (SELECT count(*) FROM moved) AS "moved!",
                      count(*) FILTER (WHERE inserted) AS "inserted!",
                      count(*) AS "written!",
                      max(seq) AS last_seq
               FROM written"#,
            user.as_str(),
            source.as_str(),
            &ids as &[&str],
            &times,
            &kinds as &[&str],
            &bodies as &[&Value],
            now,
            model::time::format(&now)
        )
        .fetch_one(&mut *conn)
        .await?;
        // (A partitioned table cannot return `xmax`: a row created at this write's time counts as
        // inserted — exact unless a row is created and changed at one instant of the clock.)
        let (moved, inserted, written) = (r.moved as u64, r.inserted as u64, r.written as u64);
        // A moved datum is re-inserted under the same id (and origin id): count it as an
        // update, not as new data; the platform copy is replaced by the upload, not deleted.
        let moved_back = moved.min(inserted);
        w.inserted += inserted - moved_back;
        w.updated += written - inserted + moved_back;
        w.unchanged += chunk.len() as u64 - written;
        last_seq = last_seq.max(r.last_seq);
    }
    if !removed.is_empty() {
        // Removed here, removed from the platform data set too (when the source has one).
        w.deleted = sqlx::query_scalar!(
            r#"WITH gone AS (
                   DELETE FROM datums WHERE user_id = $1 AND id = ANY($3::text[])
                   RETURNING id, body->'origin'->>'id' AS origin_id
               ), queued AS (
                   INSERT INTO platform_deletions (data_source_id, user_id, datum_id, origin_id, created_time)
                   SELECT $2, $1, g.id, g.origin_id, $4 FROM gone g
                   WHERE g.origin_id IS NOT NULL
                     AND EXISTS (SELECT 1 FROM data_sources s WHERE s.id = $2 AND s.data_set_id IS NOT NULL)
                   RETURNING 1
               )
               SELECT count(*) AS "deleted!" FROM gone"#,
            user.as_str(),
            source.as_str(),
            removed as &[String],
            now
        )
        .fetch_one(&mut *conn)
        .await? as u64;
    }
    let earliest = datums.iter().map(|d| d.time).min();
    let latest = datums.iter().map(|d| d.time).max();
    // Only stored data moves the earliest/latest times; a batch that changed nothing still
    // records the import (the partner was read successfully at `now`). The locked sub-select
    // hands back the latest data time from before this write.
    let stored = w.inserted + w.updated > 0;
    let before = sqlx::query!(
        r#"UPDATE data_sources d
           SET earliest_data_time = CASE WHEN $2::timestamptz IS NULL THEN d.earliest_data_time
                                         ELSE LEAST(d.earliest_data_time, $2) END,
               latest_data_time = CASE WHEN $3::timestamptz IS NULL THEN d.latest_data_time
                                       ELSE GREATEST(d.latest_data_time, $3) END,
               last_import_time = $4,
               datum_seq = GREATEST(d.datum_seq, COALESCE($5::bigint, 0))
           FROM (SELECT latest_data_time FROM data_sources WHERE id = $1 FOR UPDATE) old
           WHERE d.id = $1
           RETURNING old.latest_data_time"#,
        source.as_str(),
        earliest.filter(|_| stored),
        latest.filter(|_| stored),
        now,
        last_seq
    )
    .fetch_optional(&mut *conn)
    .await?
    .and_then(|r| r.latest_data_time);
    let advanced = match (before, latest.filter(|_| stored)) {
        (None, Some(_)) => true,
        (Some(b), Some(l)) => l - b >= chrono::Duration::hours(1),
        _ => false,
    };
    Ok((w, advanced))
}

/// One stored datum as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDatum {
    pub id: String,
    pub time: DateTime<Utc>,
    pub body: Value,
}

/// A page of a user's datums ordered by (time, id), after the cursor position.
#[derive(Debug, Clone)]
pub struct PageQuery<'a> {
    pub user: &'a UserId,
    /// Empty: every type.
    pub types: &'a [String],
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub after: Option<(DateTime<Utc>, String)>,
    pub limit: i64,
}

impl Store {
    /// A page of a user's datums (keyset pagination on (time, id)).
    pub async fn datum_page(&self, q: &PageQuery<'_>) -> Result<Vec<StoredDatum>> {
        let (after_time, after_id) = match &q.after {
            Some((t, id)) => (Some(*t), Some(id.as_str())),
            None => (None, None),
        };
        let rows = sqlx::query!(
            r#"SELECT id, time, body FROM datums
               WHERE user_id = $1
                 AND (cardinality($2::text[]) = 0 OR type = ANY($2))
                 AND ($3::timestamptz IS NULL OR time >= $3)
                 AND ($4::timestamptz IS NULL OR time < $4)
                 AND ($5::timestamptz IS NULL OR (time, id) > ($5, $6::text))
               ORDER BY time, id
               LIMIT $7"#,
            q.user.as_str(),
            q.types,
            q.start,
            q.end,
            after_time,
            after_id,
            q.limit
        )
        .fetch_all(&mut *self.acquire().await?)
        .await?;
        Ok(rows.into_iter().map(|r| StoredDatum { id: r.id, time: r.time, body: r.body }).collect())
    }

    /// Every datum of one data source in (time, id) order (tests, ground-truth checks, support).
    pub async fn datums_of_source(&self, source: &DataSourceId) -> Result<Vec<StoredDatum>> {
        let rows = sqlx::query!(
            r#"SELECT id, time, body FROM datums WHERE data_source_id = $1 ORDER BY time, id"#,
            source.as_str()
        )
        .fetch_all(&mut *self.acquire().await?)
        .await?;
        Ok(rows.into_iter().map(|r| StoredDatum { id: r.id, time: r.time, body: r.body }).collect())
    }
}

/// What erasing a user's imported data removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    pub datums: u64,
    /// The platform data sets that held the erased sources' data (to delete there too).
    pub data_sets: Vec<String>,
}

/// Erase a user's imported data (all sources, or one): the datums, the sources' data times,
/// and their platform delivery state (data set, marks, queued deletions, rejections). The
/// caller carries the erasure to the platform ([`Erasure::data_sets`]).
pub async fn erase(conn: &mut PgConnection, user: &UserId, source: Option<&DataSourceId>) -> Result<Erasure> {
    let n = sqlx::query!(
        "DELETE FROM datums WHERE user_id = $1 AND ($2::text IS NULL OR data_source_id = $2)",
        user.as_str(),
        source.map(DataSourceId::as_str)
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let data_sets = sqlx::query_scalar!(
        r#"UPDATE data_sources d
           SET earliest_data_time = NULL, latest_data_time = NULL, last_import_time = NULL,
               datum_seq = 0, delivered_seq = 0, data_set_id = NULL, data_set_timezone_offset = NULL,
               delivered_time = NULL
           FROM (SELECT id, data_set_id FROM data_sources
                 WHERE user_id = $1 AND ($2::text IS NULL OR id = $2) FOR UPDATE) old
           WHERE d.id = old.id
           RETURNING old.data_set_id"#,
        user.as_str(),
        source.map(DataSourceId::as_str)
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .flatten()
    .collect();
    crate::delivery::forget(&mut *conn, user, source).await?;
    Ok(Erasure { datums: n, data_sets })
}
