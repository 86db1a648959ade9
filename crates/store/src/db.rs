//! Pool, migrations and readiness.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::Result;

/// The migrations in `/migrations`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Pool settings.
#[derive(Debug, Clone)]
pub struct DbSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
}

impl Default for DbSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// Build a pool that connects lazily: the process starts (and answers `/healthz`, and `/readyz`
/// with 503) while the database is down, and recovers by itself when it returns.
pub fn connect_lazy(options: PgConnectOptions, settings: &DbSettings) -> PgPool {
    let statement_timeout = settings.statement_timeout.as_millis().to_string();
    let options = options.application_name("tidegate").options([("statement_timeout", statement_timeout.as_str())]);
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .test_before_acquire(true)
        .connect_lazy_with(options)
}

/// Apply pending migrations. Safe with several replicas starting at once: sqlx holds a Postgres
/// advisory lock while it migrates.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// The database did not answer.
    Unreachable,
    /// It answered, but these embedded migrations are not applied (or failed).
    NotMigrated {
        missing: Vec<i64>,
    },
}

/// Is the database reachable, and are all embedded migrations applied?
pub async fn readiness(pool: &PgPool) -> Readiness {
    let applied: std::result::Result<Vec<(i64, bool)>, sqlx::Error> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations").fetch_all(pool).await;
    let applied = match applied {
        Ok(rows) => rows,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
        Err(_) => return Readiness::Unreachable,
    };
    let ok: HashSet<i64> = applied.into_iter().filter(|(_, success)| *success).map(|(v, _)| v).collect();
    let missing: Vec<i64> = MIGRATOR.iter().map(|m| m.version).filter(|v| !ok.contains(v)).collect();
    if missing.is_empty() { Readiness::Ready } else { Readiness::NotMigrated { missing } }
}

impl crate::Store {
    pub async fn migrate(&self) -> Result<()> {
        migrate(&self.pool).await
    }

    pub async fn readiness(&self) -> Readiness {
        readiness(&self.pool).await
    }
}
