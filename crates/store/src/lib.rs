//! The only crate that writes SQL. One module per table; multi-table state changes (which must
//! commit together with their clinic report and audit entry) live in [`lifecycle`].

pub mod audit;
mod conn;
pub mod connection_requests;
pub mod crypto;
pub mod data_sources;
pub mod datums;
mod db;
pub mod delivery;
mod error;
pub mod lifecycle;
pub mod link_tokens;
pub mod oauth_authorizations;
pub mod outbox;
pub mod partitions;
pub mod partner_budget;
pub mod poll_runs;
pub mod poll_schedule;
pub mod polls;
pub mod population;
pub mod provider_sessions;

use std::sync::Arc;

pub use conn::{Conn, Gate, Tx};
pub use crypto::{CryptoError, KeyRing, KeyRingError};
pub use db::{DbSettings, MIGRATOR, Readiness, connect_lazy};
pub use error::StoreError;
pub use sqlx::PgPool;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle to the database: a connection pool, the token key ring and, for a poll worker, the
/// gate its polls take connections through ([`Store::gated`]). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    keys: Arc<KeyRing>,
    gate: Option<Gate>,
    /// A platform sink is configured: a poll that changed datums queues their delivery.
    platform_sink: bool,
}

impl Store {
    pub fn new(pool: PgPool, keys: Arc<KeyRing>) -> Self {
        Self { pool, keys, gate: None, platform_sink: false }
    }

    /// With a platform sink (`sinks` includes `tidepool`): polls queue deliveries of what they
    /// wrote.
    pub fn with_platform_sink(mut self, on: bool) -> Self {
        self.platform_sink = on;
        self
    }

    pub fn platform_sink(&self) -> bool {
        self.platform_sink
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The id of the key new ciphertexts are sealed with.
    pub fn primary_key_id(&self) -> &str {
        self.keys.primary_id()
    }
}
