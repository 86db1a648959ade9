//! `link_tokens`: restricted, path-scoped, expiring tokens that start a connect flow. Only a
//! SHA-256 of the token is stored.

use chrono::{DateTime, Utc};
use model::{LinkTokenId, UserId};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::{Result, StoreError};

pub fn hash(id: &LinkTokenId) -> Vec<u8> {
    Sha256::digest(id.as_str().as_bytes()).to_vec()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Api,
    ConnectionRequest,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::ConnectionRequest => "connection_request",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LinkToken {
    pub token_hash: Vec<u8>,
    pub user_id: UserId,
    pub paths: Vec<String>,
    pub expiration_time: DateTime<Utc>,
    pub created_time: DateTime<Utc>,
    pub modified_time: DateTime<Utc>,
    pub consumed_time: Option<DateTime<Utc>>,
}

impl LinkToken {
    /// Does the token grant `path` (a path equal to, or below, one of its paths)?
    pub fn allows(&self, path: &str) -> bool {
        self.paths.iter().any(|p| path == p || path.starts_with(&format!("{}/", p.trim_end_matches('/'))))
    }
}

pub async fn insert(
    conn: &mut PgConnection,
    id: &LinkTokenId,
    user: &UserId,
    paths: &[String],
    expiration: DateTime<Utc>,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> Result<LinkToken> {
    let h = hash(id);
    sqlx::query!(
        r#"INSERT INTO link_tokens (token_hash, user_id, paths, expiration_time, created_time, modified_time, purpose)
           VALUES ($1, $2, $3, $4, $5, $5, $6)"#,
        h,
        user.as_str(),
        paths,
        expiration,
        now,
        purpose.as_str()
    )
    .execute(conn)
    .await?;
    Ok(LinkToken {
        token_hash: h,
        user_id: user.clone(),
        paths: paths.to_vec(),
        expiration_time: expiration,
        created_time: now,
        modified_time: now,
        consumed_time: None,
    })
}

pub async fn find(conn: &mut PgConnection, token_hash: &[u8]) -> Result<Option<LinkToken>> {
    let row = sqlx::query!(
        r#"SELECT token_hash, user_id, paths, expiration_time, created_time, modified_time, consumed_time
           FROM link_tokens WHERE token_hash = $1"#,
        token_hash
    )
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(LinkToken {
            user_id: UserId::parse(&r.user_id).map_err(|e| StoreError::corrupt("link_tokens", e))?,
            token_hash: r.token_hash,
            paths: r.paths,
            expiration_time: r.expiration_time,
            created_time: r.created_time,
            modified_time: r.modified_time,
            consumed_time: r.consumed_time,
        })
    })
    .transpose()
}

/// Mark consumed (by a successful connection). Returns false when it already was.
pub async fn consume(conn: &mut PgConnection, token_hash: &[u8], now: DateTime<Utc>) -> Result<bool> {
    let done = sqlx::query!(
        "UPDATE link_tokens SET consumed_time = $2, modified_time = $2 WHERE token_hash = $1 AND consumed_time IS NULL",
        token_hash,
        now
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Erasure: delete every `link_tokens` row of a user. Returns how many went.
pub async fn delete_for_user(conn: &mut PgConnection, user: &model::UserId) -> Result<u64> {
    let done = sqlx::query!("DELETE FROM link_tokens WHERE user_id = $1", user.as_str()).execute(conn).await?;
    Ok(done.rows_affected())
}
