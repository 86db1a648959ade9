//! tidegate's HTTP API: routers, auth extractors, problem+json errors, the ops listener.

mod access;
pub mod auth;
mod connect_flow;
pub mod dashboard;
pub mod error;
mod extract;
pub mod limit;
mod middleware;
mod pages;
mod readiness;
mod routes;
mod state;

pub use auth::{AuthConfigError, AuthSettings, Authenticator, Caller, Claims, KeySource, Role};
pub use error::ApiError;
pub use limit::{IpNet, RateLimit, TrustedProxies};
pub use partners::clinic::ClinicDirectory;
pub use readiness::ReadinessProbe;
pub use routes::{HttpSettings, ops_router, public_router};
pub use state::{AppState, ConnectSettings};

/// The OpenAPI document served at `/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../../../openapi.yaml");
