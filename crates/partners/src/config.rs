//! Partner configuration (the `[partners.<name>]` tables).

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// `client_secret_basic` (RFC 6749 §2.3.1, the default of the RFC).
    Basic,
    /// `client_secret_post`: credentials in the form body (Dexcom).
    Body,
    /// Public client: `client_id` only (CareLink's app client, with PKCE).
    None,
}

/// Where the browser ends after the partner's sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectMode {
    /// A normal web redirect to our callback.
    Web,
    /// The partner only redirects to an app scheme: the person pastes the final URL back.
    Paste,
}

/// One region of a partner (tokens are regional). Either fixed endpoints, or a discovery URL
/// from which they come at run time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSettings {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub authorize_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    /// RFC 7009 revocation endpoint, when the partner has one.
    #[serde(default)]
    pub revocation_url: Option<String>,
    /// Base URL of the partner's data API in this region.
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// A discovery document naming the endpoints (CareLink).
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// The region's key inside the discovery document (CareLink: `US`, `EU`).
    #[serde(default)]
    pub discovery_region: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerSettings {
    pub display_name: String,
    /// OAuth client id (for discovery-configured partners it may come from discovery).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default = "default_client_auth")]
    pub client_auth: ClientAuth,
    #[serde(default)]
    pub pkce: bool,
    /// The `iss` the authorization server sends with the code (RFC 9207), if it sends one.
    #[serde(default)]
    pub expected_issuer: Option<String>,
    #[serde(default = "default_redirect_mode")]
    pub redirect_mode: RedirectMode,
    /// Extra authorize parameters (e.g. `audience`).
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    /// Region used when the person does not choose one.
    #[serde(default)]
    pub default_region: Option<String>,
    #[serde(default)]
    pub regions: BTreeMap<String, RegionSettings>,
    /// User-Agent for every request to this partner (CareLink refuses requests without one).
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// How this partner's data sources are polled.
    #[serde(default)]
    pub schedule: ScheduleSettings,
}

/// A daily window in partner-local time during which no poll starts (maintenance).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackoutSettings {
    /// `HH:MM`, partner-local.
    pub start: String,
    /// `HH:MM`, partner-local (may be before `start`: the window crosses midnight).
    pub end: String,
    /// IANA zone, e.g. `America/Los_Angeles` (DST followed).
    pub time_zone: String,
}

/// Polling policy of one partner (DESIGN §5).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSettings {
    /// Interval between polls after a success: uniform in [min, max] (before any stretch).
    pub interval_min_secs: u64,
    pub interval_max_secs: u64,
    /// New and reconnected sources are first polled within this (uniform jitter).
    pub first_poll_within_secs: u64,
    pub blackouts: Vec<BlackoutSettings>,
    /// Auth failures seen this long after a blackout ends still count as transient.
    pub blackout_grace_secs: u64,
    /// First backoff after a transient failure (doubling, jittered, capped at the interval).
    pub backoff_base_secs: u64,
    /// Consecutive auth failures (`invalid_grant`, 401 after a refresh) before the failure is
    /// confirmed (state `error`), spaced by a doubling backoff from `auth_backoff_base_secs`.
    pub auth_failures_to_confirm: u32,
    pub auth_backoff_base_secs: u64,
    /// Partner calls allowed per hour for this app, across every replica (unset: no limit).
    pub calls_per_hour: Option<u64>,
    /// The most calls one poll can make (reserved from the budget before it starts).
    pub max_calls_per_poll: u32,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            interval_min_secs: 45 * 60,
            interval_max_secs: 75 * 60,
            first_poll_within_secs: 60,
            blackouts: Vec::new(),
            blackout_grace_secs: 30 * 60,
            backoff_base_secs: 60,
            auth_failures_to_confirm: 4,
            auth_backoff_base_secs: 2 * 3600,
            calls_per_hour: None,
            max_calls_per_poll: 6,
        }
    }
}

fn default_client_auth() -> ClientAuth {
    ClientAuth::Basic
}

fn default_redirect_mode() -> RedirectMode {
    RedirectMode::Web
}

fn default_timeout() -> u64 {
    20
}
