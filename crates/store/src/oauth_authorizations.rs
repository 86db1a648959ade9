//! `oauth_authorizations`: in-flight OAuth attempts. The state and the browser-binding nonce are
//! stored as SHA-256 hashes; the PKCE verifier (and, while a care partner chooses a patient, the
//! tokens) are encrypted like provider tokens.

use chrono::{DateTime, Utc};
use model::{AccountChoice, ProviderName, UserId};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::crypto::{KeyRing, aad};
use crate::{Result, Store, StoreError};

const TABLE: &str = "oauth_authorizations";

pub fn hash(secret: &SecretString) -> Vec<u8> {
    Sha256::digest(secret.expose_secret().as_bytes()).to_vec()
}

#[derive(Debug, Clone)]
pub struct NewAuthorization {
    pub state: SecretString,
    pub browser_binding: SecretString,
    pub user_id: UserId,
    pub provider: ProviderName,
    pub region: String,
    pub link_token_hash: Vec<u8>,
    pub pkce_verifier: Option<SecretString>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Authorization {
    pub id: Uuid,
    pub browser_binding_hash: Vec<u8>,
    pub user_id: UserId,
    pub provider: ProviderName,
    pub region: Option<String>,
    pub link_token_hash: Option<Vec<u8>>,
    pub pkce_verifier: Option<SecretString>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// Tokens held while the person finishes a choice (e.g. which followed patient).
#[derive(Debug, Clone)]
pub struct Pending {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The accounts the person chooses from.
    pub choices: Vec<AccountChoice>,
    /// The scope the partner granted with the tokens.
    pub scope: Option<String>,
}

/// `pending_account`: what the choice is between (no secrets: those are sealed beside it).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct PendingAccount {
    #[serde(default)]
    choices: Vec<AccountChoice>,
    #[serde(default)]
    scope: Option<String>,
}

impl Store {
    /// Record a new OAuth attempt (state and browser binding hashed, PKCE verifier sealed).
    pub async fn start_authorization(&self, a: &NewAuthorization, now: DateTime<Utc>) -> Result<Uuid> {
        let mut conn = self.acquire().await?;
        insert(&mut conn, &self.keys, a, now).await
    }

    /// The attempt a callback's `state` belongs to, marked used in the same transaction (single
    /// use: a replay finds it used). Returns the row as it was before.
    pub async fn claim_authorization(&self, state: &SecretString, now: DateTime<Utc>) -> Result<Option<Authorization>> {
        let mut tx = self.begin().await?;
        let a = claim_by_state(&mut tx, &self.keys, state, now).await?;
        tx.commit().await?;
        Ok(a)
    }

    /// Hold an attempt's exchanged tokens (sealed) until the person chooses an account.
    pub async fn hold_for_choice(&self, id: Uuid, p: &Pending) -> Result<()> {
        let mut conn = self.acquire().await?;
        hold_pending(&mut conn, &self.keys, id, p).await
    }

    /// The attempt waiting for a choice, with its held tokens (`None`: no such attempt waits).
    pub async fn pending_choice(&self, id: Uuid) -> Result<Option<(Authorization, Pending)>> {
        let mut conn = self.acquire().await?;
        lock_pending(&mut conn, &self.keys, id).await
    }

    /// The attempt is finished: forget any held tokens.
    pub async fn complete_authorization(&self, id: Uuid, now: DateTime<Utc>) -> Result<()> {
        let mut conn = self.acquire().await?;
        complete(&mut conn, id, now).await
    }
}

pub(crate) async fn insert(
    conn: &mut PgConnection,
    keys: &KeyRing,
    a: &NewAuthorization,
    now: DateTime<Utc>,
) -> Result<Uuid> {
    let id = Uuid::new_v4();
    let sealed = a.pkce_verifier.as_ref().map(|v| keys.seal_secret(v, &aad(TABLE, &id.to_string(), "pkce_verifier")));
    sqlx::query!(
        r#"INSERT INTO oauth_authorizations (id, state_hash, browser_binding_hash, user_id, provider, region,
                                             link_token_hash, key_id, pkce_verifier, created_time, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"#,
        id,
        hash(&a.state),
        hash(&a.browser_binding),
        a.user_id.as_str(),
        a.provider.as_str(),
        a.region,
        a.link_token_hash,
        sealed.as_ref().map(|s| s.key_id.clone()),
        sealed.map(|s| s.bytes),
        now,
        a.expires_at
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// The columns an [`Authorization`] is built from.
struct Raw {
    id: Uuid,
    browser_binding_hash: Vec<u8>,
    user_id: String,
    provider: String,
    region: Option<String>,
    link_token_hash: Option<Vec<u8>>,
    key_id: Option<String>,
    pkce_verifier: Option<Vec<u8>>,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
}

impl Raw {
    fn open(self, keys: &KeyRing) -> Result<Authorization> {
        let verifier = match (self.key_id, self.pkce_verifier) {
            (Some(k), Some(b)) => Some(keys.open_secret(&k, &b, &aad(TABLE, &self.id.to_string(), "pkce_verifier"))?),
            _ => None,
        };
        Ok(Authorization {
            id: self.id,
            browser_binding_hash: self.browser_binding_hash,
            user_id: UserId::parse(&self.user_id).map_err(|e| StoreError::corrupt(TABLE, e))?,
            provider: ProviderName::parse(&self.provider).map_err(|e| StoreError::corrupt(TABLE, e))?,
            region: self.region,
            link_token_hash: self.link_token_hash,
            pkce_verifier: verifier,
            expires_at: self.expires_at,
            used_at: self.used_at,
            completed_at: self.completed_at,
        })
    }
}

/// The attempt a `state` belongs to, locked; marks it used (single use: a replay finds it used).
/// Returns the row as it was before marking.
pub(crate) async fn claim_by_state(
    conn: &mut PgConnection,
    keys: &KeyRing,
    state: &SecretString,
    now: DateTime<Utc>,
) -> Result<Option<Authorization>> {
    let Some(raw) = sqlx::query_as!(
        Raw,
        r#"SELECT id, browser_binding_hash, user_id, provider, region, link_token_hash, key_id, pkce_verifier,
                  expires_at, used_at, completed_at
           FROM oauth_authorizations WHERE state_hash = $1 FOR UPDATE"#,
        hash(state)
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let a = raw.open(keys)?;
    if a.used_at.is_none() {
        sqlx::query!("UPDATE oauth_authorizations SET used_at = $2 WHERE id = $1", a.id, now).execute(conn).await?;
    }
    Ok(Some(a))
}

/// Hold the exchanged tokens until the person's choice.
pub(crate) async fn hold_pending(conn: &mut PgConnection, keys: &KeyRing, id: Uuid, p: &Pending) -> Result<()> {
    let sid = id.to_string();
    let access = keys.seal_secret(&p.access_token, &aad(TABLE, &sid, "pending_access_token"));
    let refresh =
        p.refresh_token.as_ref().map(|r| keys.seal_secret(r, &aad(TABLE, &sid, "pending_refresh_token")).bytes);
    let account = serde_json::to_value(PendingAccount { choices: p.choices.clone(), scope: p.scope.clone() })
        .map_err(|e| StoreError::corrupt(TABLE, e))?;
    sqlx::query!(
        r#"UPDATE oauth_authorizations SET key_id = $2, pending_access_token = $3, pending_refresh_token = $4,
               pending_expires_at = $5, pending_account = $6,
               pkce_verifier = NULL
           WHERE id = $1"#,
        id,
        access.key_id,
        access.bytes,
        refresh,
        p.expires_at,
        account
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The attempt waiting for a choice, locked, with its held tokens.
pub(crate) async fn lock_pending(
    conn: &mut PgConnection,
    keys: &KeyRing,
    id: Uuid,
) -> Result<Option<(Authorization, Pending)>> {
    let Some(r) = sqlx::query!(
        r#"SELECT id, browser_binding_hash, user_id, provider, region, link_token_hash, key_id, expires_at, used_at,
                  completed_at, pending_access_token, pending_refresh_token, pending_expires_at, pending_account
           FROM oauth_authorizations WHERE id = $1 AND pending_access_token IS NOT NULL FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let sid = r.id.to_string();
    let key_id = r.key_id.clone().unwrap_or_default();
    // Unreadable (an older format): nothing to choose from; the person starts over.
    let account: PendingAccount =
        r.pending_account.clone().and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
    let pending = Pending {
        access_token: keys.open_secret(
            &key_id,
            r.pending_access_token.as_deref().unwrap_or_default(),
            &aad(TABLE, &sid, "pending_access_token"),
        )?,
        refresh_token: r
            .pending_refresh_token
            .as_deref()
            .map(|b| keys.open_secret(&key_id, b, &aad(TABLE, &sid, "pending_refresh_token")))
            .transpose()?,
        expires_at: r.pending_expires_at,
        choices: account.choices,
        scope: account.scope,
    };
    let a = Raw {
        id: r.id,
        browser_binding_hash: r.browser_binding_hash,
        user_id: r.user_id,
        provider: r.provider,
        region: r.region,
        link_token_hash: r.link_token_hash,
        key_id: None,
        pkce_verifier: None,
        expires_at: r.expires_at,
        used_at: r.used_at,
        completed_at: r.completed_at,
    }
    .open(keys)?;
    Ok(Some((a, pending)))
}

/// The attempt is finished: forget any held tokens.
pub(crate) async fn complete(conn: &mut PgConnection, id: Uuid, now: DateTime<Utc>) -> Result<()> {
    sqlx::query!(
        r#"UPDATE oauth_authorizations SET completed_at = $2, pkce_verifier = NULL, pending_access_token = NULL,
               pending_refresh_token = NULL, pending_account = NULL
           WHERE id = $1"#,
        id,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Re-encrypt up to `batch` secrets of in-flight attempts not under the primary key; call until 0.
    pub async fn reseal_oauth_authorizations(&self, batch: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query!(
            r#"SELECT id, key_id AS "key_id!", pkce_verifier, pending_access_token, pending_refresh_token
               FROM oauth_authorizations
               WHERE key_id IS NOT NULL AND key_id <> $1
                 AND (pkce_verifier IS NOT NULL OR pending_access_token IS NOT NULL)
               ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"#,
            self.keys.primary_id(),
            batch
        )
        .fetch_all(&mut *tx)
        .await?;
        let n = rows.len() as u64;
        for r in rows {
            let sid = r.id.to_string();
            let reseal = |col: &str, b: Option<Vec<u8>>| -> Result<Option<Vec<u8>>> {
                b.map(|b| self.keys.reseal(&r.key_id, &b, &aad(TABLE, &sid, col)).map(|s| s.bytes))
                    .transpose()
                    .map_err(Into::into)
            };
            let verifier = reseal("pkce_verifier", r.pkce_verifier)?;
            let access = reseal("pending_access_token", r.pending_access_token)?;
            let refresh = reseal("pending_refresh_token", r.pending_refresh_token)?;
            sqlx::query!(
                r#"UPDATE oauth_authorizations SET key_id = $2, pkce_verifier = $3, pending_access_token = $4,
                       pending_refresh_token = $5 WHERE id = $1"#,
                r.id,
                self.keys.primary_id(),
                verifier,
                access,
                refresh
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(n)
    }
}

/// Erasure: delete every `oauth_authorizations` row of a user. Returns how many went.
pub async fn delete_for_user(conn: &mut PgConnection, user: &model::UserId) -> Result<u64> {
    let done = sqlx::query!("DELETE FROM oauth_authorizations WHERE user_id = $1", user.as_str()).execute(conn).await?;
    Ok(done.rows_affected())
}
