//! `poll_runs`: recent polls (operators' view, and the proof that every due poll ran once).

use chrono::{DateTime, Utc};
use model::DataSourceId;
use sqlx::PgConnection;

use crate::{Result, Store};

#[derive(Debug, Clone)]
pub struct Run<'a> {
    pub data_source_id: &'a DataSourceId,
    pub provider: &'a str,
    pub owner: uuid::Uuid,
    pub due_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// success, transient, auth, confirmed, permanent, lease_lost, not_pollable or pool_busy
    /// (`scheduler::Outcome`).
    pub outcome: &'a str,
    pub calls: i32,
    pub datums_written: i32,
    pub next_run_at: Option<DateTime<Utc>>,
    pub next_kind: Option<&'a str>,
    pub error: Option<&'a str>,
}

pub async fn insert(conn: &mut PgConnection, r: &Run<'_>) -> Result<()> {
    sqlx::query!(
        r#"INSERT INTO poll_runs (data_source_id, provider, owner, due_at, started_at, finished_at, outcome, calls,
                                  datums_written, next_run_at, next_kind, error)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"#,
        r.data_source_id.as_str(),
        r.provider,
        r.owner,
        r.due_at,
        r.started_at,
        r.finished_at,
        r.outcome,
        r.calls,
        r.datums_written,
        r.next_run_at,
        r.next_kind,
        r.error
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Delete up to `limit` runs that started before `before`. Returns how many went.
pub async fn prune(conn: &mut PgConnection, before: DateTime<Utc>, limit: i64) -> Result<u64> {
    let done = sqlx::query!(
        r#"DELETE FROM poll_runs WHERE id IN (SELECT id FROM poll_runs WHERE started_at < $1 ORDER BY id LIMIT $2)"#,
        before,
        limit
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Outcome counts per provider since `since`: (provider, outcome, count).
impl Store {
    pub async fn poll_outcomes_since(&self, since: DateTime<Utc>) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query!(
            r#"SELECT provider, outcome, count(*) AS "n!" FROM poll_runs WHERE started_at >= $1
               GROUP BY provider, outcome ORDER BY provider, outcome"#,
            since
        )
        .fetch_all(&mut *self.acquire().await?)
        .await?;
        Ok(rows.into_iter().map(|r| (r.provider, r.outcome, r.n)).collect())
    }
}

/// A finished poll that went wrong, for the operator dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub data_source_id: String,
    pub provider: String,
    pub started_at: DateTime<Utc>,
    pub outcome: String,
    pub error: Option<String>,
}

/// The latest `limit` polls that did not succeed.
pub async fn recent_failures(conn: &mut PgConnection, limit: i64) -> Result<Vec<Failure>> {
    let rows = sqlx::query_as!(
        Failure,
        r#"SELECT data_source_id, provider, started_at, outcome, error FROM poll_runs
           WHERE outcome <> 'success' ORDER BY started_at DESC, id DESC LIMIT $1"#,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

/// Lag (start − due) percentiles in seconds of the polls started since `since`, per provider:
/// (provider, polls, p50, p99).
pub async fn lag_since(conn: &mut PgConnection, since: DateTime<Utc>) -> Result<Vec<(String, i64, f64, f64)>> {
    let rows = sqlx::query!(
        r#"SELECT provider, count(*) AS "n!",
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - due_at)) AS "p50!",
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - due_at)) AS "p99!"
           FROM poll_runs WHERE started_at >= $1 GROUP BY provider ORDER BY provider"#,
        since
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.provider, r.n, r.p50, r.p99)).collect())
}

/// One finished run, as benchmarks and support read it back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Finished {
    pub data_source_id: String,
    pub outcome: String,
    pub due_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub calls: i32,
    pub datums_written: i32,
}

impl crate::Store {
    /// Runs that started at or after `since`, oldest first.
    pub async fn poll_runs_started_since(&self, since: DateTime<Utc>) -> Result<Vec<Finished>> {
        Ok(sqlx::query_as!(
            Finished,
            r#"SELECT data_source_id, outcome, due_at, started_at, finished_at, calls, datums_written
           FROM poll_runs WHERE started_at >= $1 ORDER BY started_at, id"#,
            since
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many runs due at or after `since` have finished.
    pub async fn poll_runs_due_since(&self, since: DateTime<Utc>) -> Result<i64> {
        Ok(sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM poll_runs WHERE due_at >= $1"#, since)
            .fetch_one(&self.pool)
            .await?)
    }
}
