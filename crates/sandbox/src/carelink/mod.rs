//! Medtronic CareLink (placeholder filled in below).
use axum::Router;

use crate::Shared;

/// The only redirect URI CareLink's Auth0 client allows: the app's custom scheme.
pub const APP_REDIRECT_URI: &str = "com.medtronic.carepartner:/sso";

pub fn login_router() -> Router<Shared> {
    Router::new()
}

pub fn cloud_router() -> Router<Shared> {
    Router::new()
}

/// Ground truth for a CareLink account at `at` (filled in with the CareLink simulator).
pub fn truth(_sim: &crate::Sim, _p: &crate::people::Person, _at: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    serde_json::Value::Null
}
