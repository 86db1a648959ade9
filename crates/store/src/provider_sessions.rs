//! `provider_sessions`: a data source's partner tokens, encrypted at rest.

use chrono::{DateTime, Utc};
use model::{DataSourceId, ProviderName, UserId};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgConnection;

use crate::crypto::{KeyRing, aad};
use crate::{Result, Store, StoreError};

const TABLE: &str = "provider_sessions";

/// The partner's tokens for one data source, decrypted. `Debug` never shows the tokens.
#[derive(Debug, Clone)]
pub struct ProviderSession {
    pub data_source_id: DataSourceId,
    pub user_id: UserId,
    pub provider: ProviderName,
    pub region: Option<String>,
    pub partner_account_id: String,
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub scope: Option<String>,
    pub created_time: DateTime<Utc>,
    pub modified_time: DateTime<Utc>,
}

/// Tokens to store for a data source.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub data_source_id: DataSourceId,
    pub user_id: UserId,
    pub provider: ProviderName,
    pub region: Option<String>,
    pub partner_account_id: String,
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub scope: Option<String>,
}

fn seal_pair(
    keys: &KeyRing,
    id: &DataSourceId,
    access: &SecretString,
    refresh: Option<&SecretString>,
) -> (String, Vec<u8>, Option<Vec<u8>>) {
    let access = keys.seal_secret(access, &aad(TABLE, id.as_str(), "access_token"));
    let refresh = refresh.map(|r| keys.seal_secret(r, &aad(TABLE, id.as_str(), "refresh_token")).bytes);
    (access.key_id, access.bytes, refresh)
}

/// Insert or replace the session of a data source (a reconnect replaces the old tokens).
/// Fails with [`StoreError::Conflict`] `provider_sessions_partner_account_key` when the partner
/// account is already linked to another data source.
pub async fn upsert(conn: &mut PgConnection, keys: &KeyRing, s: &NewSession, now: DateTime<Utc>) -> Result<()> {
    let (key_id, access, refresh) = seal_pair(keys, &s.data_source_id, &s.access_token, s.refresh_token.as_ref());
    sqlx::query!(
        r#"INSERT INTO provider_sessions (data_source_id, user_id, provider, region, partner_account_id,
                                          key_id, access_token, refresh_token, access_expires_at, scope,
                                          created_time, modified_time)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
           ON CONFLICT (data_source_id) DO UPDATE
           SET region = EXCLUDED.region, partner_account_id = EXCLUDED.partner_account_id,
               key_id = EXCLUDED.key_id, access_token = EXCLUDED.access_token,
               refresh_token = EXCLUDED.refresh_token, access_expires_at = EXCLUDED.access_expires_at,
               scope = EXCLUDED.scope, modified_time = EXCLUDED.modified_time"#,
        s.data_source_id.as_str(),
        s.user_id.as_str(),
        s.provider.as_str(),
        s.region,
        s.partner_account_id,
        key_id,
        access,
        refresh,
        s.access_expires_at,
        s.scope,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Delete a data source's session ("revoked here"). Returns whether one existed.
pub async fn delete(conn: &mut PgConnection, id: &DataSourceId) -> Result<bool> {
    let done =
        sqlx::query!("DELETE FROM provider_sessions WHERE data_source_id = $1", id.as_str()).execute(conn).await?;
    Ok(done.rows_affected() > 0)
}

struct SessionRow {
    data_source_id: String,
    user_id: String,
    provider: String,
    region: Option<String>,
    partner_account_id: String,
    key_id: String,
    access_token: Vec<u8>,
    refresh_token: Option<Vec<u8>>,
    access_expires_at: Option<DateTime<Utc>>,
    scope: Option<String>,
    created_time: DateTime<Utc>,
    modified_time: DateTime<Utc>,
}

impl Store {
    /// The decrypted session of a data source.
    pub async fn get_provider_session(&self, id: &DataSourceId) -> Result<Option<ProviderSession>> {
        let mut conn = self.acquire().await?;
        get(&mut conn, &self.keys, id).await
    }

    /// Re-encrypt up to `batch` sessions not under the primary key. Returns how many it did;
    /// call until 0. Rows being changed by someone else are skipped and picked up next time.
    pub async fn reseal_provider_sessions(&self, batch: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query!(
            r#"SELECT data_source_id, key_id, access_token, refresh_token FROM provider_sessions
               WHERE key_id <> $1 ORDER BY data_source_id LIMIT $2 FOR UPDATE SKIP LOCKED"#,
            self.keys.primary_id(),
            batch
        )
        .fetch_all(&mut *tx)
        .await?;
        let n = rows.len() as u64;
        for r in rows {
            let access =
                self.keys.reseal(&r.key_id, &r.access_token, &aad(TABLE, &r.data_source_id, "access_token"))?;
            let refresh = r
                .refresh_token
                .map(|b| self.keys.reseal(&r.key_id, &b, &aad(TABLE, &r.data_source_id, "refresh_token")))
                .transpose()?
                .map(|s| s.bytes);
            sqlx::query!(
                "UPDATE provider_sessions SET key_id = $2, access_token = $3, refresh_token = $4 WHERE data_source_id = $1",
                r.data_source_id,
                access.key_id,
                access.bytes,
                refresh
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(n)
    }
}

pub async fn get(conn: &mut PgConnection, keys: &KeyRing, id: &DataSourceId) -> Result<Option<ProviderSession>> {
    fetch(conn, keys, id, false).await
}

/// The session, locked until the caller's transaction ends (the short check-and-claim of
/// [`Store::claim_refresh`]; the refresh itself runs under the refresh lease, not this lock).
pub async fn lock(conn: &mut PgConnection, keys: &KeyRing, id: &DataSourceId) -> Result<Option<ProviderSession>> {
    fetch(conn, keys, id, true).await
}

/// Refreshed tokens to store.
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub access_token: SecretString,
    /// `None` keeps the stored refresh token (the partner did not rotate it).
    pub refresh_token: Option<SecretString>,
    pub access_expires_at: Option<DateTime<Utc>>,
    /// `None` keeps the stored scope.
    pub scope: Option<String>,
}

/// Store refreshed tokens (call under [`lock`], and commit before using the new access token).
pub async fn store_refreshed(
    conn: &mut PgConnection,
    keys: &KeyRing,
    id: &DataSourceId,
    r: &Refreshed,
    now: DateTime<Utc>,
) -> Result<()> {
    let (key_id, access, refresh) = seal_pair(keys, id, &r.access_token, r.refresh_token.as_ref());
    // A kept refresh token is re-sealed too: one key id covers both columns of the row.
    let refresh = match refresh {
        Some(r) => Some(r),
        None => get(&mut *conn, keys, id)
            .await?
            .and_then(|s| s.refresh_token)
            .map(|k| keys.seal_secret(&k, &aad(TABLE, id.as_str(), "refresh_token")).bytes),
    };
    sqlx::query!(
        r#"UPDATE provider_sessions
           SET key_id = $2, access_token = $3, refresh_token = $4,
               access_expires_at = $5, scope = COALESCE($6, scope), modified_time = $7
           WHERE data_source_id = $1"#,
        id.as_str(),
        key_id,
        access,
        refresh,
        r.access_expires_at,
        r.scope,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

async fn fetch(
    conn: &mut PgConnection,
    keys: &KeyRing,
    id: &DataSourceId,
    for_update: bool,
) -> Result<Option<ProviderSession>> {
    let row = if for_update {
        sqlx::query_as!(
            SessionRow,
            r#"SELECT data_source_id, user_id, provider, region, partner_account_id, key_id, access_token,
                      refresh_token, access_expires_at, scope, created_time, modified_time
               FROM provider_sessions WHERE data_source_id = $1 FOR UPDATE"#,
            id.as_str()
        )
        .fetch_optional(conn)
        .await?
    } else {
        sqlx::query_as!(
            SessionRow,
            r#"SELECT data_source_id, user_id, provider, region, partner_account_id, key_id, access_token,
                      refresh_token, access_expires_at, scope, created_time, modified_time
               FROM provider_sessions WHERE data_source_id = $1"#,
            id.as_str()
        )
        .fetch_optional(conn)
        .await?
    };
    row.map(|r| open(keys, r)).transpose()
}

/// Decrypt a stored session.
fn open(keys: &KeyRing, r: SessionRow) -> Result<ProviderSession> {
    let bad = |e: model::InvalidId| StoreError::corrupt(TABLE, e);
    Ok(ProviderSession {
        access_token: keys.open_secret(&r.key_id, &r.access_token, &aad(TABLE, &r.data_source_id, "access_token"))?,
        refresh_token: r
            .refresh_token
            .map(|b| keys.open_secret(&r.key_id, &b, &aad(TABLE, &r.data_source_id, "refresh_token")))
            .transpose()?,
        data_source_id: DataSourceId::parse(&r.data_source_id).map_err(bad)?,
        user_id: UserId::parse(&r.user_id).map_err(bad)?,
        provider: ProviderName::parse(&r.provider).map_err(bad)?,
        region: r.region,
        partner_account_id: r.partner_account_id,
        access_expires_at: r.access_expires_at,
        scope: r.scope,
        created_time: r.created_time,
        modified_time: r.modified_time,
    })
}

/// What [`Store::claim_refresh`] found.
#[derive(Debug, Clone)]
pub enum RefreshClaim {
    /// The tokens changed since the caller read them (another poll refreshed): use these.
    Changed(ProviderSession),
    /// The caller holds the refresh lease: refresh with this session's refresh token, then
    /// [`Store::finish_refresh`] (or [`Store::abandon_refresh`] when the partner refused).
    Claimed(ProviderSession),
    /// Another refresh of this source is in flight and its lease is live: ask again shortly.
    InFlight,
    /// The source has no session any more (disconnected meanwhile).
    Gone,
}

impl Store {
    /// Take the refresh lease of a data source, in one short transaction: at most one refresh
    /// per source is in flight across every replica, and the partner call that follows holds no
    /// connection. `seen` is the session the caller read; when the stored tokens differ from it
    /// someone refreshed meanwhile and those are returned instead. The lease runs on the
    /// database's clock for `lease` (a holder that dies lets the next caller take it then).
    pub async fn claim_refresh(
        &self,
        seen: &ProviderSession,
        owner: uuid::Uuid,
        lease: std::time::Duration,
    ) -> Result<RefreshClaim> {
        let mut tx = self.begin().await?;
        let Some(current) = lock(&mut tx, &self.keys, &seen.data_source_id).await? else {
            tx.commit().await?;
            return Ok(RefreshClaim::Gone);
        };
        if current.modified_time != seen.modified_time
            || current.access_token.expose_secret() != seen.access_token.expose_secret()
        {
            tx.commit().await?;
            return Ok(RefreshClaim::Changed(current));
        }
        let took = sqlx::query!(
            r#"UPDATE provider_sessions
               SET refresh_owner = $2, refresh_until = clock_timestamp() + make_interval(secs => $3)
               WHERE data_source_id = $1
                 AND (refresh_until IS NULL OR refresh_until <= clock_timestamp() OR refresh_owner = $2)"#,
            seen.data_source_id.as_str(),
            owner,
            lease.as_secs_f64()
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(if took == 1 { RefreshClaim::Claimed(current) } else { RefreshClaim::InFlight })
    }

    /// Store the tokens a claimed refresh got and give the lease back, in one transaction that
    /// does not queue behind other polls for a connection (the partner has already rotated:
    /// until this commits, a crash loses the grant). Stored even if the lease ran out meanwhile.
    /// Returns the session as now stored (`None`: disconnected meanwhile).
    pub async fn finish_refresh(
        &self,
        id: &DataSourceId,
        owner: uuid::Uuid,
        refreshed: &Refreshed,
        now: DateTime<Utc>,
    ) -> Result<Option<ProviderSession>> {
        let mut tx = self.begin_urgent().await?;
        store_refreshed(&mut tx, &self.keys, id, refreshed, now).await?;
        release_refresh(&mut tx, id, owner).await?;
        let session = get(&mut tx, &self.keys, id).await?;
        tx.commit().await?;
        Ok(session)
    }

    /// Give a refresh lease back without new tokens (the partner refused or failed).
    pub async fn abandon_refresh(&self, id: &DataSourceId, owner: uuid::Uuid) -> Result<()> {
        let mut conn = self.acquire().await?;
        release_refresh(&mut conn, id, owner).await
    }
}

async fn release_refresh(conn: &mut PgConnection, id: &DataSourceId, owner: uuid::Uuid) -> Result<()> {
    sqlx::query!(
        r#"UPDATE provider_sessions SET refresh_owner = NULL, refresh_until = NULL
           WHERE data_source_id = $1 AND refresh_owner = $2"#,
        id.as_str(),
        owner
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What a poll starts from, read in one statement: the source's state, its decrypted session
/// and its schedule cursor.
#[derive(Debug, Clone)]
pub struct PollStart {
    pub state: model::DataSourceState,
    /// `None`: the source has no tokens (never connected, or revoked here).
    pub session: Option<ProviderSession>,
    /// `None`: the source has no schedule row; `Some(None)`: scheduled, never polled.
    pub cursor: Option<Option<serde_json::Value>>,
}

impl Store {
    /// The three rows a poll reads before it calls the partner (data source, session, schedule),
    /// joined: one round trip instead of three on the hot path. `None`: no such data source.
    pub async fn poll_start(&self, id: &DataSourceId) -> Result<Option<PollStart>> {
        let row = sqlx::query!(
            r#"SELECT d.state, p.data_source_id IS NOT NULL AS "scheduled!", p.cursor AS "cursor?",
                      s.data_source_id AS "s_id?", s.user_id AS "s_user?", s.provider AS "s_provider?",
                      s.region, s.partner_account_id AS "partner_account_id?", s.key_id AS "key_id?",
                      s.access_token AS "access_token?", s.refresh_token, s.access_expires_at, s.scope,
                      s.created_time AS "created_time?", s.modified_time AS "modified_time?"
               FROM data_sources d
               LEFT JOIN provider_sessions s ON s.data_source_id = d.id
               LEFT JOIN poll_schedule p ON p.data_source_id = d.id
               WHERE d.id = $1"#,
            id.as_str()
        )
        .fetch_optional(&mut *self.acquire().await?)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let state = r.state.parse().map_err(|e| StoreError::corrupt("data_sources", e))?;
        let session = match (
            r.s_id,
            r.s_user,
            r.s_provider,
            r.partner_account_id,
            r.key_id,
            r.access_token,
            r.created_time,
            r.modified_time,
        ) {
            (
                Some(data_source_id),
                Some(user_id),
                Some(provider),
                Some(partner_account_id),
                Some(key_id),
                Some(access_token),
                Some(created_time),
                Some(modified_time),
            ) => Some(open(
                &self.keys,
                SessionRow {
                    data_source_id,
                    user_id,
                    provider,
                    region: r.region,
                    partner_account_id,
                    key_id,
                    access_token,
                    refresh_token: r.refresh_token,
                    access_expires_at: r.access_expires_at,
                    scope: r.scope,
                    created_time,
                    modified_time,
                },
            )?),
            _ => None,
        };
        Ok(Some(PollStart { state, session, cursor: r.scheduled.then_some(r.cursor) }))
    }
}

/// Erasure: delete every `provider_sessions` row of a user. Returns how many went.
pub async fn delete_for_user(conn: &mut PgConnection, user: &model::UserId) -> Result<u64> {
    let done = sqlx::query!("DELETE FROM provider_sessions WHERE user_id = $1", user.as_str()).execute(conn).await?;
    Ok(done.rows_affected())
}
