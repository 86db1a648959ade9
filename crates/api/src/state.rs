use std::sync::Arc;

use axum::extract::FromRef;
use model::{ProviderName, SharedClock};
use store::Store;

use crate::auth::Authenticator;
use crate::error::ApiError;
use crate::readiness::ReadinessProbe;
use partners::clinic::ClinicDirectory;

/// Everything a handler may need. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub clock: SharedClock,
    pub auth: Arc<Authenticator>,
    pub readiness: Arc<ReadinessProbe>,
    /// The partners configured on this deployment.
    pub partners: partners::Registry,
    /// Connect-flow settings.
    pub connect: Arc<ConnectSettings>,
    /// The clinic service (clinician access checks); `None` when not configured.
    pub clinic: Option<ClinicDirectory>,
}

impl AppState {
    /// A configured partner named in a path, or a 404.
    pub fn provider(&self, raw: &str) -> Result<ProviderName, ApiError> {
        let name = ProviderName::parse(raw)?;
        if self.partners.contains(&name) { Ok(name) } else { Err(ApiError::NotFound) }
    }
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(s: &AppState) -> Self {
        s.auth.clone()
    }
}

/// Settings of the connect flow.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// Our public base URL (links in messages, cookie security).
    pub public_url: String,
    pub authorized_url: Option<String>,
    pub declined_url: Option<String>,
    pub link_token_max_ttl: chrono::Duration,
    pub connection_request_ttl: chrono::Duration,
    pub authorization_ttl: chrono::Duration,
    /// Plain-http partner endpoints allowed (dev/test).
    pub allow_insecure_http: bool,
}

impl ConnectSettings {
    /// Cookies are `Secure` unless we are served from plain-http localhost.
    pub fn secure_cookies(&self) -> bool {
        !(self.public_url.starts_with("http://127.0.0.1") || self.public_url.starts_with("http://localhost"))
    }
}
