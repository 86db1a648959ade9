//! Layered configuration (DESIGN §4 "Config"): `config/default.toml` → `config/$TIDEGATE_ENV.toml`
//! → the optional file `$TIDEGATE_CONFIG_FILE` (one deployment's or tool's overrides) →
//! `TIDEGATE_*` environment variables (`__` for nesting) and `DATABASE_URL`.
//!
//! A missing or invalid setting is one clear error naming it. Secrets are [`SecretString`]s and
//! never appear in `Debug` output. `TIDEGATE_ENV=production` refuses dev secrets, HS256, and any
//! secret that comes from a file rather than the environment. What is built from the loaded
//! settings (registry, poll worker, mailer, each crate's settings) is in `crate::assemble`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The compiled-in defaults, used when no `config/default.toml` is found on disk.
const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Paths of the settings outside `partners` that are secrets (dotted, as in the files). Every
/// partner's `client_secret` is one too ([`is_secret`]).
pub const SECRET_KEYS: [&str; 6] = [
    "token_keys",
    "messages.smtp_url",
    "auth.jwt_secret",
    "clinic.server_token",
    "database.url",
    "sinks.tidepool.server_secret",
];

/// The secret of each partner.
const PARTNER_SECRET: &str = "client_secret";

/// Whether a dotted setting path is a secret.
pub fn is_secret(key: &str) -> bool {
    SECRET_KEYS.contains(&key)
        || key.strip_prefix("partners.").and_then(|k| k.split_once('.')).is_some_and(|(_, k)| k == PARTNER_SECRET)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("configuration: partners.{partner}.{key}: {reason}")]
    InvalidPartner { partner: String, key: &'static str, reason: String },
}

fn partner_invalid(partner: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidPartner { partner: partner.to_owned(), key: PARTNER_SECRET, reason: reason.to_owned() }
}

pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `dev` (default), `test`, `production`, or any name with a `config/{name}.toml`.
    #[serde(default = "default_env")]
    pub env: String,
    /// Where the config files were looked for (`TIDEGATE_CONFIG_DIR`).
    #[serde(default)]
    pub config_dir: Option<String>,
    pub listen: SocketAddr,
    pub ops_listen: SocketAddr,
    /// The public base URL of this service (callbacks and links are built from it).
    pub public_url: String,
    pub oauth: OAuthConfig,
    pub database: DatabaseSettings,
    /// `kid:base64(32 bytes)[,…]`: the first key encrypts, all decrypt.
    #[serde(default)]
    pub token_keys: Option<SecretString>,
    /// When set, the operator dashboard (`/admin` on the ops listener) requires this bearer token.
    #[serde(default)]
    pub dashboard_token: Option<SecretString>,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub clock: ClockConfig,
    pub clinic: ClinicConfig,
    #[serde(default)]
    pub messages: MessagesConfig,
    pub outbox: OutboxConfig,
    pub sinks: SinksConfig,
    pub poll: PollConfig,
    pub worker: WorkerConfig,
    pub log: LogConfig,
    #[serde(default)]
    pub partners: BTreeMap<String, PartnerConfig>,
}

fn default_env() -> String {
    "dev".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// May hold a password: treated as a secret.
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
    pub statement_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub algorithm: String,
    #[serde(default)]
    pub jwt_secret: Option<SecretString>,
    #[serde(default)]
    pub public_key_pem: Option<String>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    pub jwks_ttl_secs: u64,
    pub jwks_min_refetch_secs: u64,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    pub leeway_secs: u64,
    pub token_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    /// Sustained requests per minute per client address to the connect pages.
    pub connect_rate_per_minute: u32,
    /// Requests per client address the connect pages allow at once.
    pub connect_burst: u32,
    /// Proxies (addresses or CIDRs) whose `X-Forwarded-For` names the client. A list in files;
    /// a comma-separated string in the environment.
    #[serde(default, deserialize_with = "list_or_comma_separated")]
    pub trusted_proxies: Vec<String>,
}

/// A list of strings from a file, or one comma-separated string from the environment.
fn list_or_comma_separated<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        One(String),
    }
    Ok(match ListOrString::deserialize(d)? {
        ListOrString::List(list) => list,
        ListOrString::One(s) => s.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned).collect(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockSource {
    System,
    External,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    pub source: ClockSource,
    #[serde(default)]
    pub external_url: Option<String>,
    pub sync_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClinicConfig {
    /// Base URL of the clinic service (reports, patient checks). Unset: no clinic integration.
    #[serde(default)]
    pub url: Option<String>,
    /// Server token sent as `x-tidepool-session-token`, only to `url`.
    #[serde(default)]
    pub server_token: Option<SecretString>,
    pub timeout_secs: u64,
}

/// Patient messages. Without `smtp_url` they are stored and logged, not sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesConfig {
    /// `smtp://host:port`, `smtp://host:587?tls=required`, `smtps://host:465` (may hold credentials).
    #[serde(default)]
    pub smtp_url: Option<SecretString>,
    #[serde(default)]
    pub from: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    pub lease_secs: i64,
    pub base_backoff_secs: i64,
    pub max_backoff_secs: i64,
    pub idle_ms: u64,
}

/// Where mapped datums go (`sinks.enabled`): `local` — tidegate's own `datums` table, the
/// archive (the default); `tidepool` — the platform data service, with the local table kept as
/// a buffer of `retention_days` (it is what the sink delivers from, so it is always written).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// A list in files; a comma-separated string in the environment (`local,tidepool`).
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub enabled: Vec<String>,
    /// With `tidepool`: delivered datums older than this (by their time) are pruned locally.
    pub retention_days: i64,
    pub tidepool: TidepoolSinkConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TidepoolSinkConfig {
    /// The platform's base URL (server login and data service), e.g. `https://api.tidepool.org`.
    #[serde(default)]
    pub url: Option<String>,
    /// `X-Tidepool-Server-Name` of the server login.
    pub server_name: String,
    /// `X-Tidepool-Server-Secret`: from `TIDEGATE_SINKS__TIDEPOOL__SERVER_SECRET`.
    #[serde(default)]
    pub server_secret: Option<SecretString>,
    pub timeout_secs: u64,
    /// Datums per upload (the platform takes at most 2,000).
    pub batch: usize,
    /// Users delivered at once per process.
    pub concurrency: usize,
}

impl SinksConfig {
    pub fn tidepool(&self) -> bool {
        self.enabled.iter().any(|s| s == "tidepool")
    }
}

/// The poll worker (claiming, leases, concurrency; DESIGN §5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub lease_secs: i64,
    pub batch: i64,
    pub max_in_flight: usize,
    /// Connections the polls hold at most at once; unset: the pool less a quarter (at least 2)
    /// kept for the claim loop, upkeep and, in `serve`, the API and the outbox.
    #[serde(default)]
    pub poll_connections: Option<usize>,
    /// How long a poll's database phase waits for one of them; unset: a quarter of the lease.
    #[serde(default)]
    pub connection_wait_secs: Option<u64>,
    pub idle_ms: u64,
    pub shutdown_grace_secs: u64,
    pub history_hours: i64,
    pub breaker_threshold: u32,
    pub breaker_min_cooldown_secs: i64,
    pub breaker_max_cooldown_secs: i64,
    /// Seed for the scheduling jitter (simulations and tests only).
    #[serde(default)]
    pub rng_seed: Option<u64>,
}

/// How polls read partner data (scheduling itself is configured per partner).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    pub backfill_days: i64,
    pub look_back_minutes: i64,
    pub devices_every_hours: i64,
    pub refresh_skew_secs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

pub use partners::PartnerSettings as PartnerConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// Where to send the browser after a successful connection (our own page when unset).
    #[serde(default)]
    pub authorized_url: Option<String>,
    /// Where to send the browser when the person declined (our own page when unset).
    #[serde(default)]
    pub declined_url: Option<String>,
    /// Longest lifetime of a link token minted through the API.
    pub link_token_max_ttl_secs: u64,
    /// Lifetime of the link in a clinician's connection request.
    pub connection_request_ttl_days: i64,
    /// Lifetime of one OAuth attempt (state, PKCE verifier, browser binding).
    pub authorization_ttl_secs: i64,
}

/// Where to find the config files: `TIDEGATE_CONFIG_DIR`, else `./config`, else the repository's
/// `config/` next to this crate (so `cargo run` works from any directory of the checkout).
pub fn config_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TIDEGATE_CONFIG_DIR") {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("config");
    if local.join("default.toml").exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn files_builder(dir: &Path, env: &str, extra: Option<&Path>) -> config::ConfigBuilder<config::builder::DefaultState> {
    let default_file = dir.join("default.toml");
    let mut b = config::Config::builder();
    b = if default_file.exists() {
        b.add_source(config::File::from(default_file))
    } else {
        b.add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml))
    };
    b = b.add_source(config::File::from(dir.join(format!("{env}.toml"))).required(false));
    if let Some(extra) = extra {
        b = b.add_source(config::File::from(extra).required(true));
    }
    b.set_override("env", env).expect("static key")
}

fn environment() -> config::Environment {
    config::Environment::with_prefix("TIDEGATE").prefix_separator("_").separator("__").try_parsing(false)
}

impl Settings {
    /// Load from the files and the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let env = std::env::var("TIDEGATE_ENV").unwrap_or_else(|_| default_env());
        Self::load_from(&config_dir(), &env, std::env::vars())
    }

    /// Load from `dir` for `env`, with `vars` as the environment (tests pass their own).
    pub fn load_from(
        dir: &Path,
        env: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        if env.is_empty() || !env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(invalid("TIDEGATE_ENV", "must be a plain name such as dev, test or production"));
        }
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        let tidegate_vars: config::Map<String, String> = vars
            .iter()
            .filter(|(k, _)| {
                k.starts_with("TIDEGATE_")
                    && !["TIDEGATE_ENV", "TIDEGATE_CONFIG_DIR", "TIDEGATE_CONFIG_FILE"].contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let extra = vars.get("TIDEGATE_CONFIG_FILE").map(PathBuf::from);
        let mut b = files_builder(dir, env, extra.as_deref());
        if let Some(url) = vars.get("DATABASE_URL").filter(|_| !vars.contains_key("TIDEGATE_DATABASE__URL")) {
            b = b.set_override("database.url", url.as_str())?;
        }
        let cfg = b.add_source(environment().source(Some(tidegate_vars))).build()?;
        let settings: Settings = cfg.try_deserialize()?;
        settings.validate()?;
        if env == "production" {
            settings.check_production(dir, extra.as_deref())?;
        }
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match self.auth.algorithm.as_str() {
            "HS256" => {
                let secret = self.auth.jwt_secret.as_ref().ok_or_else(|| {
                    invalid("auth.jwt_secret", "missing: set TIDEGATE_AUTH__JWT_SECRET (HS256 needs a shared secret)")
                })?;
                if secret.expose_secret().len() < 32 {
                    return Err(invalid("auth.jwt_secret", "must be at least 32 bytes"));
                }
            }
            "RS256" | "ES256" => {
                if self.auth.public_key_pem.is_none() == self.auth.jwks_url.is_none() {
                    return Err(invalid(
                        "auth.public_key_pem",
                        "RS256/ES256 need exactly one of auth.public_key_pem or auth.jwks_url",
                    ));
                }
            }
            other => return Err(invalid("auth.algorithm", format!("{other:?} is not one of HS256, RS256, ES256"))),
        }
        if let Some(url) = &self.auth.jwks_url {
            check_url("auth.jwks_url", url)?;
        }
        if self.clock.source == ClockSource::External {
            let url = self
                .clock
                .external_url
                .as_ref()
                .ok_or_else(|| invalid("clock.external_url", "missing: clock.source is external"))?;
            check_url("clock.external_url", url)?;
        }
        if let Some(url) = &self.clinic.url {
            check_url("clinic.url", url)?;
            if self.clinic.server_token.is_none() {
                return Err(invalid(
                    "clinic.server_token",
                    "missing: set TIDEGATE_CLINIC__SERVER_TOKEN (clinic.url is set)",
                ));
            }
        }
        check_url("public_url", &self.public_url)?;
        self.validate_sinks()?;
        if self.messages.smtp_url.is_some() && self.messages.from.is_none() {
            return Err(invalid("messages.from", "missing: messages.smtp_url is set"));
        }
        for (key, url) in
            [("oauth.authorized_url", &self.oauth.authorized_url), ("oauth.declined_url", &self.oauth.declined_url)]
        {
            if let Some(url) = url {
                check_url(key, url)?;
            }
        }
        if self.http.body_limit_bytes < 1024 {
            return Err(invalid("http.body_limit_bytes", "must be at least 1024"));
        }
        if !(1..=1_000_000).contains(&self.http.connect_rate_per_minute) {
            return Err(invalid("http.connect_rate_per_minute", "must be 1–1000000"));
        }
        if !(1..=1_000_000).contains(&self.http.connect_burst) {
            return Err(invalid("http.connect_burst", "must be 1–1000000"));
        }
        api::TrustedProxies::parse(&self.http.trusted_proxies)
            .map_err(|e| invalid("http.trusted_proxies", e.to_string()))?;
        if !(1..=365).contains(&self.poll.backfill_days) {
            return Err(invalid("poll.backfill_days", "must be 1–365"));
        }
        if self.poll.look_back_minutes < 0 || self.poll.refresh_skew_secs < 0 || self.poll.devices_every_hours < 1 {
            return Err(invalid("poll", "look_back_minutes and refresh_skew_secs ≥ 0, devices_every_hours ≥ 1"));
        }
        let w = &self.worker;
        if w.lease_secs < 30 || w.batch < 1 || w.max_in_flight < 1 || w.history_hours < 1 || w.breaker_threshold < 1 {
            return Err(invalid(
                "worker",
                "lease_secs ≥ 30, batch ≥ 1, max_in_flight ≥ 1, history_hours ≥ 1, breaker_threshold ≥ 1",
            ));
        }
        if w.breaker_min_cooldown_secs < 1 || w.breaker_max_cooldown_secs < w.breaker_min_cooldown_secs {
            return Err(invalid("worker.breaker_max_cooldown_secs", "must be ≥ breaker_min_cooldown_secs ≥ 1"));
        }
        for (name, p) in &self.partners {
            partners::schedule::Policy::parse(&p.schedule)
                .map_err(|e| invalid("partners", format!("partners.{name}.schedule: {e}")))?;
        }
        if self.database.max_connections < 3 {
            return Err(invalid(
                "database.max_connections",
                "must be at least 3 (the claim loop, upkeep and at least one poll each need a connection)",
            ));
        }
        if w.connection_wait_secs.is_some_and(|s| s < 1 || s as i64 > w.lease_secs / 2) {
            return Err(invalid("worker.connection_wait_secs", "must be 1 s to half of worker.lease_secs"));
        }
        if let Some(n) = w.poll_connections {
            let most = self.database.max_connections as usize - 2;
            if n < 1 || n > most {
                return Err(invalid(
                    "worker.poll_connections",
                    format!(
                        "must be 1–{most}: database.max_connections = {} less 2 for the claim loop and upkeep",
                        self.database.max_connections
                    ),
                ));
            }
        }
        for name in self.partners.keys() {
            model::ProviderName::parse(name)
                .map_err(|_| invalid("partners", format!("{name:?} must match ^[a-z][a-z0-9-]{{0,31}}$")))?;
        }
        Ok(())
    }

    /// Production refuses dev secrets, secrets in files, and the HS256 shared secret.
    fn check_production(&self, dir: &Path, extra: Option<&Path>) -> Result<(), ConfigError> {
        if self.auth.algorithm == "HS256" {
            return Err(invalid(
                "auth.algorithm",
                "HS256 is for dev/test; use RS256/ES256 with auth.jwks_url or auth.public_key_pem",
            ));
        }
        if self.token_keys.is_none() {
            return Err(invalid("token_keys", "missing: set TIDEGATE_TOKEN_KEYS"));
        }
        // Secrets must come from the environment: none may be set by a file layer.
        let from_files = files_builder(dir, "production", extra).build()?;
        let in_files = "must come from the environment in production, not a file";
        for key in SECRET_KEYS.iter().filter(|k| **k != "database.url") {
            if from_files.get_string(key).is_ok() {
                return Err(ConfigError::Invalid { key, reason: in_files.into() });
            }
        }
        let file_partners = from_files.get_table("partners").unwrap_or_default();
        for partner in file_partners.keys().chain(self.partners.keys()) {
            if from_files.get_string(&format!("partners.{partner}.{PARTNER_SECRET}")).is_ok() {
                return Err(partner_invalid(partner, in_files));
            }
        }
        // And none may equal a dev secret.
        if let Ok(dev) = files_builder(dir, "dev", None).build() {
            let dev_secret = |path: &str, ours: Option<&SecretString>| {
                let (Ok(dev_value), Some(ours)) = (dev.get_string(path), ours) else { return false };
                ours.expose_secret() == dev_value || ours.expose_secret().contains(&dev_value)
            };
            let dev_refused = "is a dev secret; production refuses it";
            for key in SECRET_KEYS.iter().filter(|k| **k != "database.url") {
                if dev_secret(key, self.secret(key)) {
                    return Err(ConfigError::Invalid { key, reason: dev_refused.into() });
                }
            }
            for (partner, p) in &self.partners {
                if dev_secret(&format!("partners.{partner}.{PARTNER_SECRET}"), p.client_secret.as_ref()) {
                    return Err(partner_invalid(partner, dev_refused));
                }
            }
        }
        if !self.public_url.starts_with("https://") {
            return Err(invalid("public_url", "must be https in production"));
        }
        if let Some(keys) = &self.token_keys
            && keys.expose_secret().split(',').any(|e| e.trim().starts_with("dev"))
        {
            return Err(invalid("token_keys", "a key id starts with \"dev\"; production refuses dev keys"));
        }
        Ok(())
    }

    fn validate_sinks(&self) -> Result<(), ConfigError> {
        let s = &self.sinks;
        if s.enabled.is_empty() {
            return Err(invalid("sinks.enabled", "name at least one sink: local, tidepool"));
        }
        if let Some(other) = s.enabled.iter().find(|e| !["local", "tidepool"].contains(&e.as_str())) {
            return Err(invalid("sinks.enabled", format!("{other:?} is not a sink (local, tidepool)")));
        }
        if !(1..=3650).contains(&s.retention_days) {
            return Err(invalid("sinks.retention_days", "must be 1–3650"));
        }
        if s.tidepool() {
            let t = &s.tidepool;
            let url =
                t.url.as_ref().ok_or_else(|| invalid("sinks.tidepool.url", "missing: sinks.enabled names tidepool"))?;
            check_url("sinks.tidepool.url", url)?;
            if t.server_secret.is_none() {
                return Err(invalid(
                    "sinks.tidepool.server_secret",
                    "missing: set TIDEGATE_SINKS__TIDEPOOL__SERVER_SECRET (sinks.enabled names tidepool)",
                ));
            }
            if t.server_name.trim().is_empty() {
                return Err(invalid("sinks.tidepool.server_name", "must not be empty"));
            }
            if !(1..=2000).contains(&t.batch) {
                return Err(invalid("sinks.tidepool.batch", "must be 1–2000 (the platform's batch size)"));
            }
            if !(1..=64).contains(&t.concurrency) || t.timeout_secs == 0 {
                return Err(invalid("sinks.tidepool", "concurrency 1–64, timeout_secs ≥ 1"));
            }
            if t.timeout_secs as i64 * 2 >= self.outbox.lease_secs {
                return Err(invalid(
                    "sinks.tidepool.timeout_secs",
                    "must be under half of outbox.lease_secs (a request must end well inside its lease)",
                ));
            }
        }
        Ok(())
    }

    fn secret(&self, key: &str) -> Option<&SecretString> {
        match key {
            "sinks.tidepool.server_secret" => self.sinks.tidepool.server_secret.as_ref(),
            "token_keys" => self.token_keys.as_ref(),
            "auth.jwt_secret" => self.auth.jwt_secret.as_ref(),
            "clinic.server_token" => self.clinic.server_token.as_ref(),
            "messages.smtp_url" => self.messages.smtp_url.as_ref(),
            "database.url" => Some(&self.database.url),
            _ => None,
        }
    }
}

fn check_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://")) && reqwest::Url::parse(url).is_ok();
    if ok { Ok(()) } else { Err(invalid(key, format!("{url:?} is not an http(s) URL"))) }
}

impl Settings {
    /// Plain-http partner endpoints (e.g. revocation) are allowed only outside production.
    pub fn allow_insecure_http(&self) -> bool {
        self.env != "production"
    }
}
