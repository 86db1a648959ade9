//! `poll_schedule`: one row per polled data source.

use model::DataSourceId;
use sqlx::PgConnection;

use crate::Result;

/// Stop polling a data source. Returns whether it was scheduled.
pub async fn delete(conn: &mut PgConnection, id: &DataSourceId) -> Result<bool> {
    let done = sqlx::query!("DELETE FROM poll_schedule WHERE data_source_id = $1", id.as_str()).execute(conn).await?;
    Ok(done.rows_affected() > 0)
}
