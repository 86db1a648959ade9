use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use store::Readiness;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/openapi.yaml", get(openapi))
}

/// The process is up (says nothing about the database).
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready to serve: the database answers and is migrated.
async fn readyz(State(state): State<AppState>) -> Response {
    match state.readiness.check(&state.store).await {
        Readiness::Ready => axum::Json(json!({ "status": "ready" })).into_response(),
        Readiness::Unreachable => ApiError::Unavailable("The database is unreachable.").into_response(),
        Readiness::NotMigrated { .. } => {
            ApiError::Unavailable("Database migrations are not applied yet.").into_response()
        }
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], crate::OPENAPI_YAML)
}
