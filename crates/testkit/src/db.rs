//! A fresh database per test, dropped afterwards (kept, and optionally dumped, on request).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The server tests use, as a URL whose path names a maintenance database.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Replace the database name in a postgres URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// A database created for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
    keep: bool,
}

impl TestDb {
    /// Create a fresh, empty database on the test server.
    pub async fn create() -> Self {
        Self::create_on(ensure_server().await).await
    }

    /// Create a fresh, empty database on the server at `admin_url` (e.g. a [`crate::Cluster`]).
    pub async fn create_on(admin_url: String) -> Self {
        let name = format!("tidegate_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin_url).await.expect("connect to the test server");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let url = with_database(&admin_url, &name);
        let keep = std::env::var("TIDEGATE_TEST_KEEP_DB").is_ok_and(|v| v == "1");
        Self { name, url, admin_url, keep }
    }

    /// A small pool of the test's own on this database, for looking at (and arranging) rows with
    /// plain SQL beside the store under test.
    pub fn sql(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&self.url)
            .expect("the test database URL parses")
    }

    /// Keep the database after the test (its name is printed).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// `pg_dump` the database as plain SQL into `path` (for secret scans and post-mortems).
    pub fn dump(&self, path: &Path) -> std::io::Result<()> {
        let out = Command::new("pg_dump")
            .arg("--no-owner")
            .arg("--dbname")
            .arg(&self.url)
            .arg("--file")
            .arg(path)
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()))
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("test database kept: {}", self.url);
            return;
        }
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Drop from a separate thread with its own runtime: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Make sure a Postgres server answers; returns its admin URL.
async fn ensure_server() -> String {
    let url = server_url();
    let probe = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await;
    if let Ok(Ok(conn)) = probe {
        let _ = conn.close().await;
        return url;
    }
    #[cfg(feature = "testcontainers")]
    if let Some(url) = containers::start().await {
        return url;
    }
    panic!(
        "no PostgreSQL answers at {url}.\n\
         Start one (e.g. `sudo service postgresql start`, or `bash .ci/run` which starts it), or point \
         TEST_DATABASE_URL at a server whose user may CREATE DATABASE.\n\
         With a Docker engine, `cargo test --features testcontainers` starts Postgres 16 by itself."
    );
}

#[cfg(feature = "testcontainers")]
mod containers {
    use std::process::Command;

    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::ImageExt;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use tokio::sync::OnceCell;

    static CONTAINER: OnceCell<Option<(String, Box<dyn std::any::Any + Send + Sync>)>> = OnceCell::const_new();

    /// Start Postgres 16 once per test binary when `docker info` shows an engine.
    pub async fn start() -> Option<String> {
        CONTAINER
            .get_or_init(|| async {
                let docker = Command::new("docker").arg("info").output().ok()?;
                if !docker.status.success() {
                    return None;
                }
                let container = Postgres::default().with_tag("16-alpine").start().await.ok()?;
                let port = container.get_host_port_ipv4(5432).await.ok()?;
                let url = format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres");
                Some((url, Box::new(container) as Box<dyn std::any::Any + Send + Sync>))
            })
            .await
            .as_ref()
            .map(|(url, _)| url.clone())
    }
}
