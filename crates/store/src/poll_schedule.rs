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
               auth_failures = 0, last_error = NULL, last_error_time = NULL, modified_time = EXCLUDED.modified_time"#,
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
    /// The next due time; `None` keeps the current one.
    pub next_run_at: Option<chrono::DateTime<chrono::Utc>>,
    pub now: chrono::DateTime<chrono::Utc>,
}

/// Record a successful poll, fenced: with a lease, only while this poller still holds it; without
/// one, only while nobody does. Locks the row for the rest of the caller's transaction. Returns
/// false (and writes nothing) when the fence refuses — the caller must then discard its results.
pub async fn succeed(conn: &mut PgConnection, id: &DataSourceId, s: &Success<'_>) -> Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE poll_schedule
           SET cursor = $3, last_skipped = $4, next_run_at = COALESCE($5, next_run_at), lease_owner = NULL,
               attempts = 0, auth_failures = 0, last_error = NULL, last_error_time = NULL,
               last_success_time = $6, modified_time = $6
           WHERE data_source_id = $1 AND NOT paused AND lease_owner IS NOT DISTINCT FROM $2"#,
        id.as_str(),
        s.lease,
        s.cursor,
        s.skipped,
        s.next_run_at,
        s.now
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
        let mut conn = self.pool().acquire().await?;
        Ok(last_skipped_for_user(&mut conn, user).await?.into_iter().collect())
    }
}
