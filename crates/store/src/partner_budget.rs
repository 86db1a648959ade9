//! `partner_budget`: a partner's hourly call budget shared by every replica. Calls are reserved
//! before a poll starts (its most possible calls) and what it did not use is given back, so no
//! replica ever sends a call the budget forbids.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::Result;

/// The fixed clock hour `t` falls in (the partner counts per hour).
pub fn window_of(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(3600) * 3600, 0).unwrap_or(t)
}

/// Reserve up to `want` calls in `window` without passing `limit`. Returns the calls granted
/// (0 when the hour is spent). Serialized per (provider, window) by the row lock.
pub async fn reserve(
    conn: &mut PgConnection,
    provider: &str,
    window: DateTime<Utc>,
    want: i64,
    limit: i64,
) -> Result<i64> {
    sqlx::query!(
        "INSERT INTO partner_budget (provider, window_start, calls) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
        provider,
        window
    )
    .execute(&mut *conn)
    .await?;
    let granted = sqlx::query_scalar!(
        r#"UPDATE partner_budget b SET calls = b.calls + g.granted
           FROM (SELECT LEAST($3::bigint, GREATEST($4::bigint - calls, 0)) AS granted FROM partner_budget
                 WHERE provider = $1 AND window_start = $2 FOR UPDATE) g
           WHERE b.provider = $1 AND b.window_start = $2
           RETURNING g.granted AS "granted!""#,
        provider,
        window,
        want.max(0),
        limit
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(granted)
}

/// Give back `calls` reserved in `window` and not used.
pub async fn refund(conn: &mut PgConnection, provider: &str, window: DateTime<Utc>, calls: i64) -> Result<()> {
    if calls <= 0 {
        return Ok(());
    }
    sqlx::query!(
        "UPDATE partner_budget SET calls = GREATEST(calls - $3, 0) WHERE provider = $1 AND window_start = $2",
        provider,
        window,
        calls
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Calls reserved in `window` for `provider`.
pub async fn used(conn: &mut PgConnection, provider: &str, window: DateTime<Utc>) -> Result<i64> {
    let n = sqlx::query_scalar!(
        "SELECT calls FROM partner_budget WHERE provider = $1 AND window_start = $2",
        provider,
        window
    )
    .fetch_optional(conn)
    .await?;
    Ok(n.unwrap_or(0))
}

/// Forget windows older than `before`.
pub async fn prune(conn: &mut PgConnection, before: DateTime<Utc>) -> Result<u64> {
    let done = sqlx::query!("DELETE FROM partner_budget WHERE window_start < $1", before).execute(conn).await?;
    Ok(done.rows_affected())
}

impl crate::Store {
    /// Reserve up to `want` of `provider`'s calls in the hour of `now`, within `limit`: the
    /// calls granted (0 when the hour is spent).
    pub async fn reserve_partner_calls(
        &self,
        provider: &str,
        now: DateTime<Utc>,
        want: i64,
        limit: i64,
    ) -> Result<i64> {
        let mut conn = self.acquire().await?;
        reserve(&mut conn, provider, window_of(now), want, limit).await
    }
}
