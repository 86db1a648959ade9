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
