//! `tidegate keys`: token-key operations.

use store::Store;

/// Re-encrypt every stored secret under the first key of the ring. Returns how many values were
/// re-encrypted. Safe to run while the service runs; safe to run again.
pub async fn rotate(store: &Store) -> anyhow::Result<u64> {
    const BATCH: i64 = 500;
    let mut total = 0;
    loop {
        let n = store.reseal_provider_sessions(BATCH).await? + store.reseal_oauth_authorizations(BATCH).await?;
        if n == 0 {
            break;
        }
        total += n;
        tracing::info!(done = total, "re-encrypted under key {}", store.primary_key_id());
    }
    Ok(total)
}
