//! `oauth_authorizations`: in-flight OAuth attempts (state hashed, PKCE verifier encrypted).

use crate::crypto::aad;
use crate::{Result, Store};

const TABLE: &str = "oauth_authorizations";

impl Store {
    /// Re-encrypt up to `batch` PKCE verifiers not under the primary key; call until 0.
    pub async fn reseal_oauth_authorizations(&self, batch: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query!(
            r#"SELECT id, key_id AS "key_id!", pkce_verifier AS "pkce_verifier!" FROM oauth_authorizations
               WHERE pkce_verifier IS NOT NULL AND key_id <> $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"#,
            self.keys.primary_id(),
            batch
        )
        .fetch_all(&mut *tx)
        .await?;
        let n = rows.len() as u64;
        for r in rows {
            let sealed =
                self.keys.reseal(&r.key_id, &r.pkce_verifier, &aad(TABLE, &r.id.to_string(), "pkce_verifier"))?;
            sqlx::query!(
                "UPDATE oauth_authorizations SET key_id = $2, pkce_verifier = $3 WHERE id = $1",
                r.id,
                sealed.key_id,
                sealed.bytes
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(n)
    }
}
