//! `outbox`: deliveries written in the same transaction as the change that needs them.

use chrono::{DateTime, Utc};
use model::UserId;
use sqlx::PgConnection;

use crate::Result;

/// Queue a clinic report for a user. The report's body is built at delivery time from the
/// user's current sources, so queuing needs no payload and bursts coalesce.
pub async fn enqueue_clinic_report(conn: &mut PgConnection, user: &UserId, now: DateTime<Utc>) -> Result<()> {
    sqlx::query!(
        r#"INSERT INTO outbox (kind, user_id, created_time, available_at)
           VALUES ('clinic_report', $1, $2, $2)"#,
        user.as_str(),
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Queue a message to a patient (connection or reconnect request). Secrets inside `payload`
/// (the link) must already be sealed by the caller.
pub async fn enqueue_patient_message(
    conn: &mut PgConnection,
    user: &UserId,
    payload: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        r#"INSERT INTO outbox (kind, user_id, payload, created_time, available_at)
           VALUES ('patient_message', $1, $2, $3, $3)"#,
        user.as_str(),
        payload,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}
