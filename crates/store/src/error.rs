use crate::crypto::CryptoError;

/// Everything the store can fail with. Messages never contain SQL, tokens or row contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (connection refused or lost, no connection could be
    /// opened in time, I/O).
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database is up but every connection we may hold was in use for as long as the caller
    /// could wait: our own contention, not an outage.
    #[error("database pool busy")]
    PoolBusy,
    /// A uniqueness or foreign-key rule refused the write; names the constraint.
    #[error("constraint {constraint} refused the write")]
    Conflict { constraint: String },
    /// A row holds a value our types reject (should never happen; reported, not unwrapped).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    pub fn is_pool_busy(&self) -> bool {
        matches!(self, Self::PoolBusy)
    }

    pub(crate) fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Corrupt { table, detail: detail.to_string() }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Self::Unavailable(e)
            }
            sqlx::Error::Database(db) if db.is_unique_violation() || db.is_foreign_key_violation() => {
                Self::Conflict { constraint: db.constraint().unwrap_or("unknown").to_owned() }
            }
            _ => Self::Database(e),
        }
    }
}
