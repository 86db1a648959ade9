//! `datums` partitions: weekly time ranges (Monday 00:00 UTC), made ahead of the data by the
//! workers' upkeep, and — with a platform sink — dropped once older than the retention window.
//!
//! Making one moves the rows of its range out of the default partition in the same transaction
//! (few: the default only holds rows no partition covered yet). Dropping one first moves what it
//! still must keep — datums not yet delivered (beyond their source's delivery mark) and datums
//! the platform refused — into the default partition, so an undelivered datum is never pruned;
//! finding them reads only the sources with a backlog and the refusals, never the partition's
//! delivered rows. The detach and that move are one transaction (under the table lock on `datums`,
//! so no reader ever misses a kept row); the partition's files are dropped in the next, outside
//! that lock (a crash between the two leaves it marked detached, and the next prune drops it).
//! Both take their table locks with a short `lock_timeout` and give up (to try at
//! the next upkeep) rather than queue polls behind them for long; both run under an advisory
//! lock, so replicas doing upkeep at once do it once.

use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc};
use sqlx::{AssertSqlSafe, Connection};

use crate::{Result, Store};

/// The width of one partition.
pub const SPAN_DAYS: i64 = 7;

/// The advisory lock key of partition upkeep.
const UPKEEP_LOCK: i64 = 0x7469_6465_6761_7465; // "tidegate"

/// The Monday 00:00 UTC on or before `t`.
pub fn week_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let day = t.date_naive() - Duration::days(i64::from(t.weekday().num_days_from_monday()));
    day.and_time(NaiveTime::MIN).and_utc()
}

/// The partition covering the week starting `lo`.
fn name(lo: DateTime<Utc>) -> String {
    format!("datums_p{}", lo.format("%Y%m%d"))
}

/// One made partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub lo: DateTime<Utc>,
    pub hi: DateTime<Utc>,
}

/// What one prune did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pruned {
    pub partitions: u64,
    /// Delivered rows dropped with them, as the planner estimates them (`pg_class.reltuples`:
    /// 0 for a partition never analysed) — counting them would read what is dropped.
    pub rows: u64,
    /// Undelivered or refused rows kept (moved to the default partition).
    pub kept: u64,
    /// Delivered rows deleted from the default partition.
    pub default_rows: u64,
    /// Partitions left for later (a lock not granted within the timeout).
    pub deferred: u64,
    /// Time spent, over the dropped partitions: detaching them; moving out what they must keep
    /// (with the commit: until then polls wait on the table lock); dropping their files (no lock
    /// on `datums`); and deleting from the default partition.
    pub detach_ms: f64,
    pub keep_ms: f64,
    pub drop_ms: f64,
    pub default_ms: f64,
}

/// One dropped partition.
struct Dropped {
    rows: u64,
    kept: u64,
    detach_ms: f64,
    keep_ms: f64,
    drop_ms: f64,
}

fn ms_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl Store {
    /// The partitions made, oldest first.
    pub async fn datum_partitions(&self) -> Result<Vec<Partition>> {
        let rows: Vec<(String, DateTime<Utc>, DateTime<Utc>)> =
            sqlx::query_as("SELECT name, lo, hi FROM datum_partitions WHERE detached_time IS NULL ORDER BY lo")
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(|(name, lo, hi)| Partition { name, lo, hi }).collect())
    }

    /// Make the weekly partitions covering `from..until` that do not exist yet. Returns how many
    /// were made.
    pub async fn ensure_partitions(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let existing = self.datum_partitions().await?;
        let mut made = 0;
        let mut lo = week_start(from);
        while lo < until {
            let hi = lo + Duration::days(SPAN_DAYS);
            if !existing.iter().any(|p| p.lo < hi && lo < p.hi) && self.make_partition(lo, hi, now).await? {
                made += 1;
            }
            lo = hi;
        }
        Ok(made)
    }

    async fn make_partition(&self, lo: DateTime<Utc>, hi: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool> {
        let table = name(lo);
        let mut conn = self.pool().acquire().await?;
        let mut tx = conn.begin().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(UPKEEP_LOCK).fetch_one(&mut *tx).await?;
        let taken: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM datum_partitions WHERE lo < $2 AND $1 < hi AND detached_time IS NULL)",
        )
        .bind(lo)
        .bind(hi)
        .fetch_one(&mut *tx)
        .await?;
        if !locked || taken {
            return Ok(false);
        }
        sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await?;
        // `table` is `datums_p` and eight digits (our own formatting of a date).
        let steps = [
            format!("CREATE TABLE {table} (LIKE datums INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"),
            format!(
                "ALTER TABLE {table} ADD CONSTRAINT {table}_range CHECK (time >= '{lo}' AND time < '{hi}')",
                lo = lo.to_rfc3339(),
                hi = hi.to_rfc3339()
            ),
        ];
        for sql in &steps {
            sqlx::query(AssertSqlSafe(sql.clone())).execute(&mut *tx).await?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "WITH moved AS (DELETE FROM datums_default WHERE time >= $1 AND time < $2 RETURNING *)
             INSERT INTO {table} SELECT * FROM moved"
        )))
        .bind(lo)
        .bind(hi)
        .execute(&mut *tx)
        .await?;
        let attach = format!(
            "ALTER TABLE datums ATTACH PARTITION {table} FOR VALUES FROM ('{lo}') TO ('{hi}')",
            lo = lo.to_rfc3339(),
            hi = hi.to_rfc3339()
        );
        if let Err(e) = sqlx::query(AssertSqlSafe(attach)).execute(&mut *tx).await {
            if lock_not_available(&e) {
                tracing::info!(partition = table, "datum partition not made now: its locks were busy");
                return Ok(false);
            }
            return Err(e.into());
        }
        // The range check did its job (the attach skipped its scan); the bound now holds it.
        sqlx::query(AssertSqlSafe(format!("ALTER TABLE {table} DROP CONSTRAINT {table}_range")))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO datum_partitions (name, lo, hi, created_time) VALUES ($1, $2, $3, $4)")
            .bind(&table)
            .bind(lo)
            .bind(hi)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(partition = table, %lo, %hi, "datum partition made");
        Ok(true)
    }

    /// Drop the partitions wholly before `cutoff`, keeping their undelivered and refused rows
    /// (moved to the default partition), and delete delivered rows before `cutoff` from the
    /// default partition. Only for a platform sink: without one the local table is the archive.
    pub async fn prune_datums(&self, cutoff: DateTime<Utc>) -> Result<Pruned> {
        let mut out = Pruned::default();
        // Partitions a crash left detached but not dropped.
        let left: Vec<String> =
            sqlx::query_scalar("SELECT name FROM datum_partitions WHERE detached_time IS NOT NULL ORDER BY lo")
                .fetch_all(self.pool())
                .await?;
        for table in &left {
            let t = std::time::Instant::now();
            self.drop_detached(table).await?;
            out.drop_ms += ms_since(t);
        }
        for p in self.datum_partitions().await?.into_iter().filter(|p| p.hi <= cutoff) {
            match self.drop_partition(&p).await? {
                Some(d) => {
                    out.partitions += 1;
                    out.rows += d.rows;
                    out.kept += d.kept;
                    out.detach_ms += d.detach_ms;
                    out.keep_ms += d.keep_ms;
                    out.drop_ms += d.drop_ms;
                }
                None => out.deferred += 1,
            }
        }
        let t = std::time::Instant::now();
        out.default_rows = self.prune_default(cutoff).await?;
        out.default_ms = ms_since(t);
        Ok(out)
    }

    /// What it dropped and kept, or `None` when deferred.
    async fn drop_partition(&self, p: &Partition) -> Result<Option<Dropped>> {
        let table = &p.name;
        if !table.starts_with("datums_p") || !table[8..].bytes().all(|b| b.is_ascii_digit()) {
            return Err(crate::StoreError::corrupt("datum_partitions", format!("unexpected name {table}")));
        }
        let mut conn = self.pool().acquire().await?;
        let mut tx = conn.begin().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(UPKEEP_LOCK).fetch_one(&mut *tx).await?;
        if !locked {
            return Ok(None);
        }
        sqlx::query("SET LOCAL lock_timeout = '1s'").execute(&mut *tx).await?;
        // The planner's estimate of its rows, for the log (counting would read the partition,
        // a cost that grows with it — under the lock below, at that).
        let total: i64 = sqlx::query_scalar("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE relname = $1")
            .bind(table)
            .fetch_one(&mut *tx)
            .await?;
        let t = std::time::Instant::now();
        let detach = format!("ALTER TABLE datums DETACH PARTITION {table}");
        if let Err(e) = sqlx::query(AssertSqlSafe(detach)).execute(&mut *tx).await {
            if lock_not_available(&e) {
                tracing::info!(partition = %table, "datum partition not pruned now: polls held its locks");
                return Ok(None);
            }
            return Err(e.into());
        }
        let detach_ms = ms_since(t);
        let t = std::time::Instant::now();
        // What must stay: rows beyond their source's delivery mark (read through the sources
        // with a backlog) and refused versions (read through the refusals).
        let kept = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO datums
             SELECT d.* FROM data_sources s CROSS JOIN LATERAL
                 (SELECT * FROM {table} x WHERE x.data_source_id = s.id AND x.seq > s.delivered_seq) d
             WHERE s.datum_seq > s.delivered_seq
             UNION
             SELECT d.* FROM datum_rejections r JOIN {table} d
                 ON d.user_id = r.user_id AND d.id = r.datum_id AND d.seq = r.seq"
        )))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE datum_partitions SET detached_time = now() WHERE name = $1")
            .bind(table)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let keep_ms = ms_since(t);
        // Its files go outside the lock on `datums`: polls wait for the detach and the move only.
        let t = std::time::Instant::now();
        self.drop_detached(table).await?;
        let drop_ms = ms_since(t);
        let rows = (total as u64).saturating_sub(kept);
        tracing::info!(partition = %table, rows_estimate = rows, kept, detach_ms, keep_ms, drop_ms, "datum partition pruned");
        Ok(Some(Dropped { rows, kept, detach_ms, keep_ms, drop_ms }))
    }

    /// Drop a detached partition and forget it. `table` comes from `datum_partitions`, whose
    /// names are checked (`datums_p` and eight digits).
    async fn drop_detached(&self, table: &str) -> Result<()> {
        if !table.starts_with("datums_p") || table.len() != 16 || !table[8..].bytes().all(|b| b.is_ascii_digit()) {
            return Err(crate::StoreError::corrupt("datum_partitions", format!("unexpected name {table}")));
        }
        let mut tx = self.pool().begin().await?;
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}"))).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM datum_partitions WHERE name = $1").bind(table).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Delivered, unrefused rows before `cutoff` in the default partition (which stays small).
    async fn prune_default(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM datums_default d USING data_sources s
             WHERE d.time < $1 AND s.id = d.data_source_id AND d.seq <= s.delivered_seq
               AND NOT EXISTS (SELECT 1 FROM datum_rejections r
                               WHERE r.data_source_id = d.data_source_id AND r.datum_id = d.id AND r.seq = d.seq)",
        )
        .bind(cutoff)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Rows in the default partition (doctor: it should stay small).
    pub async fn default_partition_rows(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM datums_default").fetch_one(self.pool()).await?)
    }
}

fn lock_not_available(e: &sqlx::Error) -> bool {
    // 55P03 lock_not_available (lock_timeout).
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03"))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::{name, week_start};

    #[test]
    fn weeks_start_on_monday_utc() {
        let t: DateTime<Utc> = "2026-03-08T23:59:00Z".parse().unwrap(); // a Sunday
        assert_eq!(week_start(t).to_rfc3339(), "2026-03-02T00:00:00+00:00");
        let monday: DateTime<Utc> = "2026-03-09T00:00:00Z".parse().unwrap();
        assert_eq!(week_start(monday), monday);
        assert_eq!(name(monday), "datums_p20260309");
    }
}
