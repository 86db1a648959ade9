//! `audit_log`: append-only record of who did what to whose data.

use chrono::{DateTime, Utc};
use model::{DataSourceId, UserId};
use sqlx::PgConnection;

use crate::{Result, Store};

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The caller's `sub` (a user id, a clinician id, or a service name).
    pub sub: String,
    /// `patient`, `clinician`, `service`, or `system` for the service's own work.
    pub role: String,
}

impl Actor {
    pub fn system() -> Self {
        Self { sub: "tidegate".into(), role: "system".into() }
    }
}

/// One audit entry.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub actor: &'a Actor,
    pub action: &'a str,
    pub user_id: Option<&'a UserId>,
    pub data_source_id: Option<&'a DataSourceId>,
    pub detail: serde_json::Value,
    pub time: DateTime<Utc>,
}

pub async fn record(conn: &mut PgConnection, e: &Entry<'_>) -> Result<()> {
    sqlx::query!(
        r#"INSERT INTO audit_log (time, actor_sub, actor_role, action, user_id, data_source_id, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
        e.time,
        e.actor.sub,
        e.actor.role,
        e.action,
        e.user_id.map(UserId::as_str),
        e.data_source_id.map(DataSourceId::as_str),
        e.detail
    )
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Record an entry outside any other transaction (reads of a user's data).
    pub async fn audit(&self, e: &Entry<'_>) -> Result<()> {
        let mut conn = self.acquire().await?;
        record(&mut conn, e).await
    }
}
