//! `connection_requests`: a clinician's request that a patient connect a partner.

use chrono::{DateTime, Utc};
use model::{ClinicId, ProviderName, UserId};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRequest {
    pub id: Uuid,
    pub clinic_id: ClinicId,
    pub user_id: UserId,
    pub provider: ProviderName,
    pub requested_by: String,
    pub created_time: DateTime<Utc>,
    pub expiration_time: DateTime<Utc>,
}

pub async fn insert(conn: &mut PgConnection, r: &ConnectionRequest, link_token_hash: &[u8]) -> Result<()> {
    sqlx::query!(
        r#"INSERT INTO connection_requests (id, clinic_id, user_id, provider, requested_by, link_token_hash, created_time, expiration_time)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
        r.id,
        r.clinic_id.as_str(),
        r.user_id.as_str(),
        r.provider.as_str(),
        r.requested_by,
        link_token_hash,
        r.created_time,
        r.expiration_time
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The clinic of the newest request for a user's provider, if any clinic ever asked.
pub async fn latest_clinic(conn: &mut PgConnection, user: &UserId, provider: &ProviderName) -> Result<Option<String>> {
    let row = sqlx::query_scalar!(
        r#"SELECT clinic_id FROM connection_requests WHERE user_id = $1 AND provider = $2
           ORDER BY created_time DESC, id LIMIT 1"#,
        user.as_str(),
        provider.as_str()
    )
    .fetch_optional(conn)
    .await?;
    Ok(row)
}

impl Store {
    /// A patient's connection requests, newest first; `clinic` narrows to one clinic's.
    pub async fn connection_requests(
        &self,
        user: &UserId,
        clinic: Option<&ClinicId>,
    ) -> Result<Vec<ConnectionRequest>> {
        let rows = sqlx::query!(
            r#"SELECT id, clinic_id, user_id, provider, requested_by, created_time, expiration_time
               FROM connection_requests
               WHERE user_id = $1 AND ($2::text IS NULL OR clinic_id = $2)
               ORDER BY created_time DESC, id"#,
            user.as_str(),
            clinic.map(ClinicId::as_str)
        )
        .fetch_all(&mut *self.acquire().await?)
        .await?;
        rows.into_iter()
            .map(|r| {
                let bad = |e: model::InvalidId| StoreError::corrupt("connection_requests", e);
                Ok(ConnectionRequest {
                    id: r.id,
                    clinic_id: ClinicId::parse(&r.clinic_id).map_err(bad)?,
                    user_id: UserId::parse(&r.user_id).map_err(bad)?,
                    provider: ProviderName::parse(&r.provider).map_err(bad)?,
                    requested_by: r.requested_by,
                    created_time: r.created_time,
                    expiration_time: r.expiration_time,
                })
            })
            .collect()
    }
}

/// Erasure: delete every `connection_requests` row of a user. Returns how many went.
pub async fn delete_for_user(conn: &mut PgConnection, user: &model::UserId) -> Result<u64> {
    let done = sqlx::query!("DELETE FROM connection_requests WHERE user_id = $1", user.as_str()).execute(conn).await?;
    Ok(done.rows_affected())
}
