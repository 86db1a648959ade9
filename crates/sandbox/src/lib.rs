//! The partner simulator and clinic stand-in.
//!
//! One listener serves every simulated host under a path prefix of a configurable public base
//! URL: `/dexcom`, `/dexcom-eu`, `/dexcom-jp` (Dexcom API v3, one authorization server per
//! region), `/carelink-login` (CareLink's Auth0 tenant), `/carelink` (CareLink's web host: SSO
//! configuration and the `/patient/…` API), `/clcloud` (CareLink's cloud: discovery and data),
//! `/clinic` (the clinic service), `/tidepool` (the platform's data service and server login)
//! and, with `admin`, `/admin` (clock, people, faults, ground
//! truth, observability). It always serves over HTTP: tests and tidegate talk to it exactly as
//! they would to the partners.

// Handlers return `axum::response::Response` as their error: it is what they send.
#![allow(clippy::result_large_err)]
// The CareLink payload is one large `json!` literal.
#![recursion_limit = "256"]

pub mod admin;
pub mod authserver;
pub mod carelink;
pub mod clinic;
pub mod clock;
pub mod dexcom;
pub mod faults;
pub mod obs;
pub mod people;
pub mod platform;
pub mod tidepool;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};

use tokio::net::TcpListener;

use crate::authserver::{AuthPolicy, AuthServer};
use crate::clock::SimClock;
use crate::faults::FaultBoard;
use crate::obs::Observability;
use crate::people::{Partner, Person};

/// An OAuth client registered at a simulated authorization server.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub client_id: String,
    /// `None` for public clients (CareLink's app client).
    pub client_secret: Option<String>,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub listen: SocketAddr,
    /// Base URL the simulator is reached at (embedded in discovery documents). Default:
    /// `http://{bound address}`.
    pub public_base_url: Option<String>,
    pub seed: u64,
    pub dexcom_people: usize,
    pub carelink_people: usize,
    /// Serve `/admin`.
    pub admin: bool,
    pub dexcom_clients: Vec<OAuthClient>,
    pub carelink_client_id: String,
    /// Dexcom's per-app hourly call budget (`None`: unlimited, for throughput benchmarks).
    pub dexcom_budget_per_hour: Option<u64>,
    /// The server token the clinic stand-in expects in `x-tidepool-session-token`.
    pub clinic_server_token: String,
    /// The server secret the data-service stand-in's `/auth/serverlogin` expects (empty:
    /// every login refused).
    pub platform_server_secret: String,
    /// Validate data-endpoint bearer tokens through this RFC 7662 introspection endpoint instead
    /// of the simulator's own token store (interoperability tests): (url, client_id, secret).
    pub introspection: Option<(String, String, String)>,
    /// Simulated time at start (default: now).
    pub start_time: Option<DateTime<Utc>>,
    /// Days of synthetic history before the start time.
    pub history_days: i64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_base_url: None,
            seed: 1,
            dexcom_people: 6,
            carelink_people: 4,
            admin: true,
            dexcom_clients: Vec::new(),
            carelink_client_id: "carelink-sim-app".into(),
            dexcom_budget_per_hour: Some(60_000),
            // Empty: every clinic request is refused until a token is configured.
            clinic_server_token: String::new(),
            platform_server_secret: String::new(),
            introspection: None,
            start_time: None,
            history_days: 120,
        }
    }
}

/// The Dexcom regions and their path prefixes.
pub const DEXCOM_REGIONS: [(&str, &str); 3] = [("us", "/dexcom"), ("eu", "/dexcom-eu"), ("jp", "/dexcom-jp")];

/// Everything the simulator knows; shared by every handler.
#[derive(Debug)]
pub struct Sim {
    pub cfg: SandboxConfig,
    pub base_url: String,
    pub clock: SimClock,
    pub people: Vec<Person>,
    /// The synthetic history begins here (`history_days` before the simulated start).
    pub history_start: DateTime<Utc>,
    /// One authorization server per Dexcom region (tokens are regional).
    pub dexcom_auth: Vec<(String, AuthServer)>,
    pub carelink_auth: AuthServer,
    pub dexcom_budget: dexcom::Budget,
    pub faults: FaultBoard,
    pub clinic: clinic::ClinicState,
    pub platform: platform::PlatformState,
    pub obs: Observability,
    pub http: reqwest::Client,
}

pub type Shared = Arc<Sim>;

impl Sim {
    pub fn person_by_login(&self, login: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.login == login)
    }

    pub fn people_of(&self, partner: Partner) -> impl Iterator<Item = &Person> {
        self.people.iter().filter(move |p| p.partner == partner)
    }

    /// Register a Dexcom client in every region (e.g. once the client's callback port is known).
    pub fn register_dexcom_client(&self, client: OAuthClient) {
        for (_, auth) in &self.dexcom_auth {
            auth.register(client.clone());
        }
    }

    pub fn dexcom_region(&self, region: &str) -> Option<&AuthServer> {
        self.dexcom_auth.iter().find(|(r, _)| r == region).map(|(_, a)| a)
    }
}

/// A running simulator.
#[derive(Debug)]
pub struct Sandbox {
    pub addr: SocketAddr,
    pub base_url: String,
    pub sim: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Sandbox {
    /// Bind and serve in the background.
    pub async fn start(cfg: SandboxConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let base_url =
            cfg.public_base_url.clone().unwrap_or_else(|| format!("http://{addr}")).trim_end_matches('/').to_owned();
        let sim = Arc::new(build(cfg, base_url.clone()));
        let app = router(sim.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "sandbox server stopped");
            }
        });
        Ok(Self { addr, base_url, sim, task })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Serve until the future resolves (for `tidegate sandbox`).
    pub async fn wait(self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        self.task.abort();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn build(cfg: SandboxConfig, base_url: String) -> Sim {
    let people = people::population(cfg.seed, cfg.dexcom_people, cfg.carelink_people);
    let dexcom_auth = DEXCOM_REGIONS
        .iter()
        .map(|(region, _)| (region.to_string(), AuthServer::new(AuthPolicy::dexcom(), cfg.dexcom_clients.clone())))
        .collect();
    let carelink_client = OAuthClient {
        client_id: cfg.carelink_client_id.clone(),
        client_secret: None,
        redirect_uris: vec![carelink::APP_REDIRECT_URI.to_owned()],
    };
    let clock = SimClock::starting_at(cfg.start_time);
    Sim {
        history_start: clock.now() - chrono::Duration::days(cfg.history_days),
        clock,
        dexcom_budget: dexcom::Budget::new(cfg.dexcom_budget_per_hour),
        carelink_auth: AuthServer::new(AuthPolicy::carelink(), vec![carelink_client]),
        dexcom_auth,
        people,
        faults: FaultBoard::default(),
        clinic: clinic::ClinicState::default(),
        platform: platform::PlatformState::default(),
        obs: Observability::default(),
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("static client settings"),
        base_url,
        cfg,
    }
}

fn router(sim: Shared) -> Router {
    let mut app = Router::new();
    for (region, prefix) in DEXCOM_REGIONS {
        app = app.nest(prefix, dexcom::router(region));
    }
    app = app
        .nest("/carelink-login", carelink::login_router())
        .nest("/clcloud", carelink::cloud_router())
        .nest("/carelink", carelink::web_router())
        .nest("/clinic", clinic::router())
        .nest("/tidepool", platform::router());
    if sim.cfg.admin {
        app = app.nest("/admin", admin::router());
    }
    app.layer(axum::middleware::from_fn_with_state(sim.clone(), obs::observe)).with_state(sim)
}

/// An OAuth 2.0 error response (RFC 6749 §5.2).
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": error, "error_description": description }))).into_response()
}

/// A random opaque secret (hex, 128 bits).
pub fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// RFC 3339, UTC, seconds, `Z`.
pub fn fmt_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn ser_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&fmt_time(t))
}

/// A small HTML page (the simulated partners' sign-in pages).
pub fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}}button{{font-size:1rem;padding:.5rem 1rem;margin:.25rem}}label{{display:block;margin:.5rem 0}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The owner of a bearer token according to the configured RFC 7662 introspection endpoint
/// (interoperability mode): `Ok(None)` when the token is not active.
pub async fn introspect_remote<'a>(sim: &'a Sim, token: &str) -> Result<Option<(&'a Person, String)>, Response> {
    let Some((url, client_id, secret)) = &sim.cfg.introspection else { return Ok(None) };
    let form = [("token", token), ("client_id", client_id.as_str()), ("client_secret", secret.as_str())];
    let answer: serde_json::Value = match sim.http.post(url).form(&form).send().await {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or(serde_json::Value::Null),
        _ => return Err(faults::unavailable(503)),
    };
    if answer["active"] != true {
        return Ok(None);
    }
    let person = answer["sub"].as_str().and_then(|sub| sim.person_by_login(sub));
    Ok(person.map(|p| (p, answer["client_id"].as_str().unwrap_or_default().to_owned())))
}

/// A token refresh: the owner's faults (maintenance windows, outages) apply first.
pub async fn refresh_with_faults(
    sim: &Sim,
    auth: &AuthServer,
    client_id: &str,
    refresh_token: &str,
) -> Result<authserver::Tokens, Result<authserver::TokenError, Response>> {
    let now = sim.clock.now();
    let owner = auth.introspect(refresh_token, |i| sim.people[i].login.clone(), now).sub;
    let decision = sim.faults.decide(owner.as_deref(), now, true);
    if let Some(resp) = faults::apply(&decision).await {
        return Err(Err(resp));
    }
    auth.refresh(client_id, refresh_token, now).map_err(Ok)
}
