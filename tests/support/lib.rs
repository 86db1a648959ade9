//! Test harness shared by the end-to-end tests: a fresh database per test on a real Postgres, the
//! app served over real HTTP on port 0, tokens, captured logs, and a cuttable TCP proxy.
//!
//! Postgres: `TEST_DATABASE_URL`, else `DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`. With the `testcontainers` feature and no server
//! answering, Postgres 16 is started in a container when a Docker engine is available.

pub mod browser;
pub mod logs;
pub mod mail;

pub use testkit::{Cluster, Proxy, Restart, db, proxy};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use api::Role;
use chrono::{DateTime, Utc};
use model::{ManualClock, SharedClock};
use secrecy::ExposeSecret;
use tidegate::Settings;
use tidegate::token::TokenRequest;

pub use db::TestDb;

/// The repository's `config/` directory.
pub fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// Test settings: `config/default.toml` + `config/test.toml`, with freshly generated secrets and
/// the given database URL, plus any `extra` `TIDEGATE_*` variables.
pub fn test_settings(database_url: &str, extra: &[(&str, &str)]) -> Settings {
    let vars = test_env(database_url, extra);
    Settings::load_from(&config_dir(), "test", vars).expect("test settings load")
}

/// The `TIDEGATE_*` variables of [`test_settings`] (fresh secrets, the database, `extra`): what a
/// separate `tidegate` process needs to join the same test.
pub fn test_env(database_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let jwt_secret: String = {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    let token_keys = store::KeyRing::generate_entry("test1");
    let mut vars = vec![
        ("TIDEGATE_TOKEN_KEYS".to_owned(), token_keys.expose_secret().to_owned()),
        ("TIDEGATE_AUTH__JWT_SECRET".to_owned(), jwt_secret),
        ("TIDEGATE_DATABASE__URL".to_owned(), database_url.to_owned()),
        // Every test browses from 127.0.0.1 on a clock that often stands still: never throttle
        // the connect pages unless a test asks for a limit (tests/e2e/limits.rs).
        ("TIDEGATE_HTTP__CONNECT_BURST".to_owned(), "1000000".to_owned()),
    ];
    for (k, v) in extra {
        vars.retain(|(existing, _)| existing != k);
        vars.push(((*k).to_owned(), (*v).to_owned()));
    }
    vars
}

/// A running app on a fresh database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub settings: Settings,
    pub store: store::Store,
    /// The test's own connections to the app's database (plain SQL beside the store).
    pub sql: sqlx::PgPool,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    pub db: TestDb,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A stored datum's body as its mapper made it: the store sets `origin.time` (when it first stored
/// this version of the datum), which no ground truth can know. Panics when it is missing.
pub fn as_mapped(mut body: serde_json::Value) -> serde_json::Value {
    let origin = body.get_mut("origin").and_then(|o| o.as_object_mut()).expect("a stored datum has an origin");
    let time = origin.remove("time");
    assert!(
        time.as_ref().and_then(|t| t.as_str()).is_some_and(|t| DateTime::parse_from_rfc3339(t).is_ok()),
        "a stored datum's origin.time is set: {time:?}"
    );
    body
}

/// The time every test app starts at (a manual clock; tests advance it).
pub fn test_epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-07T12:00:00Z").expect("static time").to_utc()
}

/// Start the app on a fresh, migrated database.
pub async fn spawn_app() -> TestApp {
    let db = TestDb::create().await;
    spawn_app_on(db, &[]).await
}

/// Start the app on `db` (migrated before it returns) with extra settings.
pub async fn spawn_app_on(db: TestDb, extra: &[(&str, &str)]) -> TestApp {
    logs::init();
    let settings = test_settings(&db.url, extra);
    let store = tidegate::startup::store(&settings).expect("store");
    store.migrate().await.expect("migrations apply to a fresh database");
    spawn_with_store(db, settings, store).await
}

/// The app and the partner simulator (which also plays the clinic service), wired together the
/// way `config/dev.toml` wires them: real HTTP between them, fresh secrets.
pub struct World {
    pub app: TestApp,
    pub sandbox: sandbox::Sandbox,
    /// The app's `TIDEGATE_*` variables (secrets, database, partners at the simulator).
    pub env: Vec<(String, String)>,
}

pub const DEXCOM_CLIENT: &str = "tidegate-test";

/// Start the simulator, then the app pointed at it (partners and clinic), on a fresh database.
pub async fn spawn_world(extra: &[(&str, &str)]) -> World {
    spawn_world_with(sandbox::SandboxConfig::default(), extra).await
}

/// [`spawn_world`] with a simulator configuration of the test's own (its clinic token and start
/// time are set here).
pub async fn spawn_world_with(config: sandbox::SandboxConfig, extra: &[(&str, &str)]) -> World {
    spawn_world_on(TestDb::create().await, config, extra).await
}

/// [`spawn_world_with`] on a database of the test's choosing (e.g. on a [`Cluster`] it restarts).
pub async fn spawn_world_on(db: TestDb, config: sandbox::SandboxConfig, extra: &[(&str, &str)]) -> World {
    logs::init();
    let clinic_token = format!("clinic-{}", uuid::Uuid::new_v4().simple());
    let dexcom_secret = format!("dexcom-{}", uuid::Uuid::new_v4().simple());
    let platform_secret = format!("platform-{}", uuid::Uuid::new_v4().simple());
    let sb = sandbox::Sandbox::start(sandbox::SandboxConfig {
        clinic_server_token: clinic_token.clone(),
        platform_server_secret: platform_secret.clone(),
        start_time: Some(test_epoch()),
        ..config
    })
    .await
    .expect("sandbox starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let public_url = format!("http://{}", listener.local_addr().expect("addr"));
    sb.sim.register_dexcom_client(sandbox::OAuthClient {
        client_id: DEXCOM_CLIENT.into(),
        client_secret: Some(dexcom_secret.clone()),
        redirect_uris: vec![format!("{public_url}/v1/oauth/dexcom/redirect")],
    });
    let base = sb.base_url.clone();
    let mut vars: Vec<(String, String)> = vec![
        ("TIDEGATE_PUBLIC_URL".into(), public_url),
        ("TIDEGATE_CLINIC__URL".into(), format!("{base}/clinic")),
        ("TIDEGATE_CLINIC__SERVER_TOKEN".into(), clinic_token),
        // The data-service stand-in; the `tidepool` sink is on only where a test enables it
        // (`TIDEGATE_SINKS__ENABLED=local,tidepool`).
        ("TIDEGATE_SINKS__TIDEPOOL__URL".into(), format!("{base}/tidepool")),
        ("TIDEGATE_SINKS__TIDEPOOL__SERVER_SECRET".into(), platform_secret),
        ("TIDEGATE_PARTNERS__DEXCOM__CLIENT_ID".into(), DEXCOM_CLIENT.into()),
        ("TIDEGATE_PARTNERS__DEXCOM__CLIENT_SECRET".into(), dexcom_secret),
    ];
    for (region, prefix) in sandbox::DEXCOM_REGIONS {
        let r = region.to_uppercase();
        vars.push((
            format!("TIDEGATE_PARTNERS__DEXCOM__REGIONS__{r}__AUTHORIZE_URL"),
            format!("{base}{prefix}/v3/oauth2/login"),
        ));
        vars.push((
            format!("TIDEGATE_PARTNERS__DEXCOM__REGIONS__{r}__TOKEN_URL"),
            format!("{base}{prefix}/v3/oauth2/token"),
        ));
        vars.push((format!("TIDEGATE_PARTNERS__DEXCOM__REGIONS__{r}__API_BASE_URL"), format!("{base}{prefix}")));
    }
    for r in ["US", "EU"] {
        vars.push((
            format!("TIDEGATE_PARTNERS__CARELINK__REGIONS__{r}__DISCOVERY_URL"),
            format!("{base}/clcloud/connect/carepartner/v13/discover/android/3.6"),
        ));
    }
    for (k, v) in extra {
        vars.push(((*k).to_owned(), (*v).to_owned()));
    }
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let env = test_env(&db.url, &refs);
    let settings = Settings::load_from(&config_dir(), "test", env.clone()).expect("test settings load");
    let store = tidegate::startup::store(&settings).expect("store");
    store.migrate().await.expect("migrations");
    let app = spawn_on(listener, db, settings, store).await;
    World { app, sandbox: sb, env }
}

/// Start the app with a given settings and store (the database is not migrated here).
pub async fn spawn_with_store(db: TestDb, settings: Settings, store: store::Store) -> TestApp {
    let listener = tokio::net::TcpListener::bind(settings.listen).await.expect("bind");
    spawn_on(listener, db, settings, store).await
}

async fn spawn_on(listener: tokio::net::TcpListener, db: TestDb, settings: Settings, store: store::Store) -> TestApp {
    logs::init();
    let clock = Arc::new(ManualClock::new(test_epoch()));
    let shared: SharedClock = clock.clone();
    // Background work is driven by the tests themselves (see `TestApp::outbox_worker`).
    let app = tidegate::Application::build_on(listener, settings.clone(), store.clone(), shared, None)
        .await
        .expect("app builds")
        .without_worker();
    let (addr, ops_addr) = (app.public_addr(), app.ops_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        ops_addr,
        settings,
        store,
        sql: db.sql(),
        clock,
        http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client"),
        db,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{}", self.ops_addr, path)
    }

    /// A token signed with this app's key.
    pub fn token(&self, role: Role, sub: &str, clinics: &[&str]) -> String {
        let req = TokenRequest {
            sub: sub.to_owned(),
            role,
            clinics: clinics.iter().map(|c| (*c).to_owned()).collect(),
            ttl_secs: None,
            private_key: None,
            kid: None,
        };
        tidegate::token::mint(&self.settings, &req).expect("token mints")
    }

    /// An outbox deliverer on this app's store, clock and clinic (a fresh lease owner each call).
    pub fn outbox_worker(&self) -> scheduler::OutboxWorker {
        let clock: SharedClock = self.clock.clone();
        self.settings.outbox_worker(self.store.clone(), clock).expect("outbox settings")
    }

    /// A poller on this app's store, clock and partners.
    pub fn poller(&self) -> scheduler::Poller {
        let clock: SharedClock = self.clock.clone();
        scheduler::Poller::new(
            self.store.clone(),
            self.settings.registry().expect("partners"),
            clock,
            self.settings.poll_settings(),
        )
    }

    /// A poll worker on this app's store, clock, partners and worker settings.
    pub fn poll_worker(&self) -> scheduler::PollWorker {
        let clock: SharedClock = self.clock.clone();
        self.settings.poll_worker(self.store.clone(), clock).expect("worker settings")
    }

    pub fn patient_token(&self, user: &str) -> String {
        self.token(Role::Patient, user, &[])
    }

    /// A clinician of `clinic` asks `user` to connect `provider`; the API's status.
    pub async fn ask_to_connect(
        &self,
        clinician: &str,
        clinic: &str,
        user: &str,
        provider: &str,
    ) -> reqwest::StatusCode {
        self.http
            .post(self.url(&format!("/v1/clinics/{clinic}/patients/{user}/connect/{provider}")))
            .bearer_auth(self.token(Role::Clinician, clinician, &[clinic]))
            .send()
            .await
            .expect("the API answers")
            .status()
    }

    pub fn service_token(&self) -> String {
        self.token(Role::Service, "platform-test", &[])
    }

    /// Stop the server gracefully and wait for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server stopped cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
