use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::FromRef;
use model::{ProviderName, SharedClock};
use store::Store;

use crate::auth::Authenticator;
use crate::clinic::ClinicDirectory;
use crate::error::ApiError;
use crate::readiness::ReadinessProbe;

/// Everything a handler may need. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub clock: SharedClock,
    pub auth: Arc<Authenticator>,
    pub readiness: Arc<ReadinessProbe>,
    /// The partners configured on this deployment.
    pub providers: Arc<BTreeSet<ProviderName>>,
    /// The clinic service (clinician access checks); `None` when not configured.
    pub clinic: Option<ClinicDirectory>,
}

impl AppState {
    /// A configured partner named in a path, or a 404.
    pub fn provider(&self, raw: &str) -> Result<ProviderName, ApiError> {
        let name = ProviderName::parse(raw)?;
        if self.providers.contains(&name) { Ok(name) } else { Err(ApiError::NotFound) }
    }
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(s: &AppState) -> Self {
        s.auth.clone()
    }
}
