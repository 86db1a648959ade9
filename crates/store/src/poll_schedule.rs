//! `poll_schedule`: one row per polled data source.

use model::DataSourceId;
use sqlx::PgConnection;

use crate::Result;

/// Stop polling a data source. Returns whether it was scheduled.
pub async fn delete(conn: &mut PgConnection, id: &DataSourceId) -> Result<bool> {
    let done = sqlx::query!("DELETE FROM poll_schedule WHERE data_source_id = $1", id.as_str()).execute(conn).await?;
    Ok(done.rows_affected() > 0)
}

/// Schedule (or re-schedule) a data source's next poll, resetting its failure counters: used
/// when a source is connected or reconnected.
pub async fn start(
    conn: &mut PgConnection,
    id: &DataSourceId,
    user: &model::UserId,
    provider: &model::ProviderName,
    first_run_at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    sqlx::query!(
        r#"INSERT INTO poll_schedule (data_source_id, user_id, provider, next_run_at, created_time, modified_time)
           VALUES ($1, $2, $3, $4, $5, $5)
           ON CONFLICT (data_source_id) DO UPDATE
           SET next_run_at = EXCLUDED.next_run_at, lease_owner = NULL, paused = false, attempts = 0,
               auth_failures = 0, first_auth_failure_time = NULL, next_kind = 'first', last_error = NULL,
               last_error_time = NULL, modified_time = EXCLUDED.modified_time"#,
        id.as_str(),
        user.as_str(),
        provider.as_str(),
        first_run_at,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Pause polling (state `error`): the row stays, so the invariant "error ⇒ schedule paused" holds.
pub async fn pause(conn: &mut PgConnection, id: &DataSourceId, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
    sqlx::query!(
        "UPDATE poll_schedule SET paused = true, lease_owner = NULL, modified_time = $2 WHERE data_source_id = $1",
        id.as_str(),
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What a poll reads from its schedule row.
#[derive(Debug, Clone, PartialEq)]
pub struct PollState {
    /// The driver's cursor (where the next window starts); `None` before the first poll.
    pub cursor: Option<serde_json::Value>,
    pub lease_owner: Option<uuid::Uuid>,
    pub paused: bool,
    pub next_run_at: chrono::DateTime<chrono::Utc>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub last_success_time: Option<chrono::DateTime<chrono::Utc>>,
    pub last_skipped: Option<serde_json::Value>,
}

pub async fn get(conn: &mut PgConnection, id: &DataSourceId) -> Result<Option<PollState>> {
    let row = sqlx::query_as!(
        PollState,
        r#"SELECT cursor, lease_owner, paused, next_run_at, attempts, last_error, last_success_time, last_skipped
           FROM poll_schedule WHERE data_source_id = $1"#,
        id.as_str()
    )
    .fetch_optional(conn)
    .await?;
    Ok(row)
}

/// A successful poll's write-back to the schedule.
#[derive(Debug, Clone)]
pub struct Success<'a> {
    /// The lease the poll ran under; `None` for a poll started outside the claim loop (tests,
    /// support tools), which must not steal a lease someone else holds.
    pub lease: Option<uuid::Uuid>,
    pub cursor: &'a serde_json::Value,
    pub skipped: Option<&'a serde_json::Value>,
    /// The next due time and why it was chosen; `None` keeps the current one.
    pub next_run_at: Option<(chrono::DateTime<chrono::Utc>, &'a str)>,
    pub now: chrono::DateTime<chrono::Utc>,
}

/// Record a successful poll, fenced: with a lease, only while this poller still holds it; without
/// one, only while nobody does. Locks the row for the rest of the caller's transaction. Returns
/// false (and writes nothing) when the fence refuses — the caller must then discard its results.
pub async fn succeed(conn: &mut PgConnection, id: &DataSourceId, s: &Success<'_>) -> Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE poll_schedule
           SET cursor = $3, last_skipped = $4, next_run_at = COALESCE($5, next_run_at),
               next_kind = COALESCE($7, next_kind), lease_owner = NULL,
               attempts = 0, auth_failures = 0, first_auth_failure_time = NULL, last_error = NULL,
               last_error_time = NULL, last_success_time = $6, modified_time = $6
           WHERE data_source_id = $1 AND NOT paused AND lease_owner IS NOT DISTINCT FROM $2"#,
        id.as_str(),
        s.lease,
        s.cursor,
        s.skipped,
        s.next_run_at.map(|(t, _)| t),
        s.now,
        s.next_run_at.map(|(_, k)| k)
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Erasure: delete every `poll_schedule` row of a user. Returns how many went.
pub async fn delete_for_user(conn: &mut PgConnection, user: &model::UserId) -> Result<u64> {
    let done = sqlx::query!("DELETE FROM poll_schedule WHERE user_id = $1", user.as_str()).execute(conn).await?;
    Ok(done.rows_affected())
}

/// The skipped-records summary of each of a user's scheduled sources (data-source id → summary).
pub async fn last_skipped_for_user(
    conn: &mut PgConnection,
    user: &model::UserId,
) -> Result<Vec<(String, serde_json::Value)>> {
    let rows = sqlx::query!(
        r#"SELECT data_source_id, last_skipped AS "last_skipped!" FROM poll_schedule
           WHERE user_id = $1 AND last_skipped IS NOT NULL"#,
        user.as_str()
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.data_source_id, r.last_skipped)).collect())
}

impl crate::Store {
    /// What the last successful poll of each of a user's sources skipped, by source id.
    pub async fn last_skipped(
        &self,
        user: &model::UserId,
    ) -> Result<std::collections::HashMap<String, serde_json::Value>> {
        let mut conn = self.acquire().await?;
        Ok(last_skipped_for_user(&mut conn, user).await?.into_iter().collect())
    }
}

/// A schedule row claimed for polling.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub data_source_id: DataSourceId,
    pub provider: String,
    /// The due time it was claimed at (for the schedule-lag metric and the run history).
    pub due_at: chrono::DateTime<chrono::Utc>,
    pub attempts: i32,
    pub auth_failures: i32,
    pub first_auth_failure_time: Option<chrono::DateTime<chrono::Utc>>,
    pub next_kind: String,
}

/// Claim up to `limit` due rows of one provider for `owner`: the lease is the due time, moved to
/// `lease_until`. Rows another process is claiming are skipped, never waited for; a row whose
/// lease expired (its owner died) is due again and can be claimed.
pub async fn claim(
    conn: &mut PgConnection,
    owner: uuid::Uuid,
    provider: &str,
    now: chrono::DateTime<chrono::Utc>,
    lease_until: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> Result<Vec<Claimed>> {
    let rows = sqlx::query!(
        r#"WITH due AS MATERIALIZED (
               SELECT data_source_id, next_run_at FROM poll_schedule
               WHERE NOT paused AND provider = $2 AND next_run_at <= $3
               ORDER BY next_run_at
               LIMIT $5
               FOR UPDATE SKIP LOCKED
           )
           UPDATE poll_schedule p
           SET lease_owner = $1, next_run_at = $4, modified_time = $3
           FROM due
           WHERE p.data_source_id = due.data_source_id
           RETURNING p.data_source_id, p.provider, due.next_run_at AS "due_at!", p.attempts, p.auth_failures,
                     p.first_auth_failure_time, p.next_kind"#,
        owner,
        provider,
        now,
        lease_until,
        limit
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Claimed {
                data_source_id: DataSourceId::parse(&r.data_source_id)
                    .map_err(|e| crate::StoreError::corrupt("poll_schedule", e))?,
                provider: r.provider,
                due_at: r.due_at,
                attempts: r.attempts,
                auth_failures: r.auth_failures,
                first_auth_failure_time: r.first_auth_failure_time,
                next_kind: r.next_kind,
            })
        })
        .collect()
}

/// A failed (or otherwise unfinished) poll's write-back, fenced by the lease.
#[derive(Debug, Clone)]
pub struct Unfinished<'a> {
    pub lease: uuid::Uuid,
    pub next_run_at: chrono::DateTime<chrono::Utc>,
    pub next_kind: &'a str,
    pub attempts: i32,
    pub auth_failures: i32,
    pub first_auth_failure_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The schedule's last poll error (operators' view; never the source's `error`).
    pub error: Option<&'a str>,
    pub now: chrono::DateTime<chrono::Utc>,
}

/// Record an unfinished poll and when to try again. Returns false when the lease was lost.
pub async fn unfinished(conn: &mut PgConnection, id: &DataSourceId, u: &Unfinished<'_>) -> Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE poll_schedule
           SET lease_owner = NULL, next_run_at = $3, next_kind = $4, attempts = $5, auth_failures = $6,
               first_auth_failure_time = $7,
               last_error = COALESCE($8, last_error),
               last_error_time = CASE WHEN $8::text IS NULL THEN last_error_time ELSE $9 END,
               modified_time = $9
           WHERE data_source_id = $1 AND lease_owner = $2"#,
        id.as_str(),
        u.lease,
        u.next_run_at,
        u.next_kind,
        u.attempts,
        u.auth_failures,
        u.first_auth_failure_time,
        u.error,
        u.now
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Shutdown: give back every lease `owner` holds, due now.
pub async fn release_all(
    conn: &mut PgConnection,
    owner: uuid::Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64> {
    let done = sqlx::query!(
        r#"UPDATE poll_schedule SET lease_owner = NULL, next_run_at = $2, next_kind = 'released', modified_time = $2
           WHERE lease_owner = $1"#,
        owner,
        now
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Move a provider's due rows (and expired leases) to `until` plus a uniform jitter of up to
/// `spread_secs`, so the herd spreads out (blackouts, an open circuit, a spent budget).
pub async fn defer_due(
    conn: &mut PgConnection,
    provider: &str,
    now: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
    spread_secs: f64,
    kind: &str,
) -> Result<u64> {
    let done = sqlx::query!(
        r#"UPDATE poll_schedule
           SET next_run_at = $3 + make_interval(secs => random() * $4), next_kind = $5, lease_owner = NULL,
               modified_time = $2
           WHERE provider = $1 AND NOT paused AND next_run_at <= $3"#,
        provider,
        now,
        until,
        spread_secs,
        kind
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Polled (not paused) sources per provider.
pub async fn active_counts(conn: &mut PgConnection) -> Result<Vec<(String, i64)>> {
    let rows =
        sqlx::query!(r#"SELECT provider, count(*) AS "n!" FROM poll_schedule WHERE NOT paused GROUP BY provider"#)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|r| (r.provider, r.n)).collect())
}

/// Due-but-unclaimed rows per provider and the oldest due time (the current schedule lag).
pub async fn backlog(
    conn: &mut PgConnection,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<(String, i64, Option<chrono::DateTime<chrono::Utc>>)>> {
    let rows = sqlx::query!(
        r#"SELECT provider, count(*) AS "n!", min(next_run_at) AS oldest FROM poll_schedule
           WHERE NOT paused AND next_run_at <= $1 GROUP BY provider"#,
        now
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.provider, r.n, r.oldest)).collect())
}

/// A scheduled poll, for the operator dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Upcoming {
    pub data_source_id: String,
    pub user_id: String,
    pub provider: String,
    pub next_run_at: chrono::DateTime<chrono::Utc>,
    pub next_kind: String,
    pub leased: bool,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// The next `limit` polls due (not paused), soonest first.
pub async fn upcoming(conn: &mut PgConnection, limit: i64) -> Result<Vec<Upcoming>> {
    let rows = sqlx::query_as!(
        Upcoming,
        r#"SELECT data_source_id, user_id, provider, next_run_at, next_kind, lease_owner IS NOT NULL AS "leased!",
                  attempts, last_error
           FROM poll_schedule WHERE NOT paused ORDER BY next_run_at LIMIT $1"#,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

impl crate::Store {
    /// Benchmarks only (`tidegate bench poll`): make `ids` due from `start` on, `step_secs` apart in
    /// the given order, with `cursor`, no lease and no failures. Returns how many rows moved.
    pub async fn bench_reschedule(
        &self,
        ids: &[String],
        start: chrono::DateTime<chrono::Utc>,
        step_secs: f64,
        cursor: &serde_json::Value,
    ) -> Result<u64> {
        let done = sqlx::query!(
        r#"UPDATE poll_schedule p
           SET next_run_at = $2::timestamptz + make_interval(secs => (t.ord - 1) * $3::float8), next_kind = 'regular', cursor = $4,
               lease_owner = NULL, attempts = 0, auth_failures = 0, first_auth_failure_time = NULL,
               last_error = NULL, last_error_time = NULL, modified_time = $2
           FROM unnest($1::text[]) WITH ORDINALITY AS t(id, ord)
           WHERE p.data_source_id = t.id"#,
        ids,
        start,
        step_secs,
        cursor
    )
    .execute(&self.pool)
    .await?;
        Ok(done.rows_affected())
    }
}
