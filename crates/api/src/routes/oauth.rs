//! Disconnect: `DELETE /v1/oauth/{provider}/authorize` (the patient) and
//! `DELETE /v1/users/{userId}/oauth/{provider}/authorize` (a service).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::delete;
use model::UserId;

use crate::auth::{Caller, Patient, Service};
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/oauth/{provider}/authorize", delete(disconnect_own))
        .route("/v1/users/{userId}/oauth/{provider}/authorize", delete(disconnect_as_service))
}

async fn disconnect(state: &AppState, caller: &Caller, user: &UserId, provider: &str) -> Result<StatusCode, ApiError> {
    let provider = state.provider(provider)?;
    state.store.disconnect(&caller.actor(), user, &provider, state.clock.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn disconnect_own(
    State(state): State<AppState>,
    patient: Patient,
    ApiPath(provider): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    disconnect(&state, &patient.caller, &patient.user_id, &provider).await
}

async fn disconnect_as_service(
    State(state): State<AppState>,
    Service(caller): Service,
    ApiPath((user, provider)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user = UserId::parse(&user)?;
    disconnect(&state, &caller, &user, &provider).await
}
