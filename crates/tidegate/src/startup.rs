//! Builds the application from settings: pool, clock, migrations, routers, listeners.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::{AppState, Authenticator, ReadinessProbe};
use model::SharedClock;
use store::Store;
use tokio::net::TcpListener;

use crate::configuration::Settings;
use crate::{TaskGuard, telemetry};

/// A built, bound, not yet serving application.
pub struct Application {
    public: TcpListener,
    ops: TcpListener,
    state: AppState,
    settings: Settings,
    /// Background work run beside the API (`serve --no-worker` drops it).
    outbox: Option<scheduler::OutboxWorker>,
    poller: Option<scheduler::PollWorker>,
    upkeep: Option<scheduler::Upkeep>,
    _tasks: Vec<TaskGuard>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("public", &self.public_addr()).field("ops", &self.ops_addr()).finish()
    }
}

/// Build the store (lazy pool + key ring) from settings.
pub fn store(settings: &Settings) -> anyhow::Result<Store> {
    let keys = settings.key_ring()?;
    let pool = store::connect_lazy(settings.connect_options()?, &settings.db_settings());
    Ok(Store::new(pool, Arc::new(keys)).with_platform_sink(settings.sinks.tidepool()))
}

/// Apply migrations, retrying while the database is unreachable (replicas starting together
/// serialise on sqlx's advisory lock). Gives up only when the database itself refuses a
/// migration (a failing statement, a changed or missing migration).
pub async fn migrate_with_retry(store: &Store) -> anyhow::Result<()> {
    use sqlx::migrate::MigrateError;
    let mut delay = Duration::from_millis(250);
    loop {
        let err = match store.migrate().await {
            Ok(()) => {
                tracing::info!("migrations applied");
                return Ok(());
            }
            Err(store::StoreError::Migrate(MigrateError::Execute(e))) if !matches!(e, sqlx::Error::Database(_)) => e,
            Err(store::StoreError::Unavailable(e)) => e,
            Err(e) => return Err(e).context("applying migrations"),
        };
        tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "database unreachable; migrations will be retried");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

impl Application {
    /// Bind both listeners and assemble the app. Migrations run in the background (with retries)
    /// so the process starts, and `/readyz` answers 503, while the database is still down.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = store(&settings)?;
        let (clock, clock_task) = crate::clock::build(&settings.clock).await?;
        Self::build_with(settings, store, clock, clock_task).await
    }

    /// Like [`Application::build`], with a given store and clock (tests inject a manual clock).
    pub async fn build_with(
        settings: Settings,
        store: Store,
        clock: SharedClock,
        clock_task: Option<TaskGuard>,
    ) -> anyhow::Result<Self> {
        let public =
            TcpListener::bind(settings.listen).await.with_context(|| format!("binding listen {}", settings.listen))?;
        Self::build_on(public, settings, store, clock, clock_task).await
    }

    /// Like [`Application::build_with`], serving the public API on an already bound listener
    /// (tests bind first, so `public_url` can name the port).
    pub async fn build_on(
        public: TcpListener,
        settings: Settings,
        store: Store,
        clock: SharedClock,
        clock_task: Option<TaskGuard>,
    ) -> anyhow::Result<Self> {
        let auth = Authenticator::new(&settings.auth_settings()?).context("auth settings")?;
        let partners = settings.registry()?;
        let connect = api::ConnectSettings {
            public_url: settings.public_url.clone(),
            authorized_url: settings.oauth.authorized_url.clone(),
            declined_url: settings.oauth.declined_url.clone(),
            link_token_max_ttl: chrono::Duration::seconds(settings.oauth.link_token_max_ttl_secs as i64),
            connection_request_ttl: chrono::Duration::days(settings.oauth.connection_request_ttl_days),
            authorization_ttl: chrono::Duration::seconds(settings.oauth.authorization_ttl_secs),
            allow_insecure_http: settings.allow_insecure_http(),
        };
        let clinic = settings.clinic_directory();
        let state = AppState {
            store: store.clone(),
            clock,
            auth: Arc::new(auth),
            readiness: Arc::new(ReadinessProbe::new()),
            partners,
            connect: Arc::new(connect),
            clinic,
        };
        let ops = TcpListener::bind(settings.ops_listen)
            .await
            .with_context(|| format!("binding ops_listen {}", settings.ops_listen))?;

        let mut tasks: Vec<TaskGuard> = clock_task.into_iter().collect();
        let migrating = store.clone();
        tasks.push(TaskGuard(tokio::spawn(async move {
            if let Err(e) = migrate_with_retry(&migrating).await {
                tracing::error!(error = format!("{e:#}"), "migrations failed; /readyz stays 503");
            }
        })));
        // Log readiness changes even when nobody probes /readyz.
        let (probe, watched) = (state.readiness.clone(), store.clone());
        tasks.push(TaskGuard(tokio::spawn(async move {
            loop {
                probe.check(&watched).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })));
        let outbox = settings.outbox_worker(store.clone(), state.clock.clone())?;
        let poller = settings.poll_worker(store.clone(), state.clock.clone())?;
        let upkeep = settings.upkeep(store.clone(), state.clock.clone());
        Ok(Self {
            public,
            ops,
            state,
            settings,
            outbox: Some(outbox),
            poller: Some(poller),
            upkeep: Some(upkeep),
            _tasks: tasks,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public.local_addr().expect("bound listener has an address")
    }

    pub fn ops_addr(&self) -> SocketAddr {
        self.ops.local_addr().expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Do not run background work in this process (`serve --no-worker`).
    pub fn without_worker(mut self) -> Self {
        self.outbox = None;
        self.poller = None;
        self.upkeep = None;
        self
    }

    /// Serve until `shutdown` resolves, then drain in-flight requests.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let handle = telemetry::metrics_handle();
        let dashboard = api::dashboard::Dashboard {
            store: self.state.store.clone(),
            clock: self.state.clock.clone(),
            token: self.settings.dashboard_token.clone(),
            budgets: self
                .settings
                .partners
                .iter()
                .map(|(name, p)| {
                    (name.clone(), p.schedule.calls_per_hour.map(|c| i64::try_from(c).unwrap_or(i64::MAX)))
                })
                .collect(),
        };
        let ops_app = api::ops_router(Arc::new(move || handle.render()), Some(dashboard));
        let public_app = api::public_router(self.state.clone(), &self.settings.http_settings());
        tracing::info!(public = %self.public_addr(), ops = %self.ops_addr(), env = %self.settings.env, "tidegate serving");

        let (tx, rx) = tokio::sync::watch::channel(false);
        let worker = self.outbox.map(|w| tokio::spawn(w.run(rx.clone())));
        let poller = self.poller.map(|w| tokio::spawn(w.run(rx.clone())));
        let upkeep = self.upkeep.map(|u| tokio::spawn(u.run(rx.clone())));
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        // With the peer's address: the connect pages are rate-limited per client address.
        let public = axum::serve(self.public, public_app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(wait(rx.clone()));
        let ops = axum::serve(self.ops, ops_app).with_graceful_shutdown(wait(rx));
        let signal = tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            let _ = tx.send(true);
        });
        let (a, b) = tokio::join!(public, ops);
        signal.abort();
        if let Some(w) = worker {
            // Stopped by the same signal: finishes the delivery in hand, then exits.
            let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
        }
        if let Some(p) = poller {
            // Stops claiming, lets in-flight polls finish (worker.shutdown_grace_secs), releases.
            let _ = tokio::time::timeout(Duration::from_secs(60), p).await;
        }
        if let Some(u) = upkeep {
            let _ = tokio::time::timeout(Duration::from_secs(30), u).await;
        }
        a.context("public listener")?;
        b.context("ops listener")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Run only the background workers (`tidegate worker`) until `shutdown` resolves.
pub async fn run_worker(settings: Settings, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let store = store(&settings)?;
    let (clock, _clock_task) = crate::clock::build(&settings.clock).await?;
    migrate_with_retry(&store).await?;
    let poller = settings.poll_worker(store.clone(), clock.clone())?;
    let upkeep = settings.upkeep(store.clone(), clock.clone());
    let worker = settings.outbox_worker(store, clock)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(worker.run(rx.clone()));
    let tables = tokio::spawn(upkeep.run(rx.clone()));
    let polls = tokio::spawn(poller.run(rx));
    shutdown.await;
    tracing::info!("worker shutting down");
    let _ = tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    let _ = tokio::time::timeout(Duration::from_secs(60), polls).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), tables).await;
    Ok(())
}
