//! Disconnect: `DELETE /v1/oauth/{provider}/authorize` (the patient) and
//! `DELETE /v1/users/{userId}/oauth/{provider}/authorize` (a service).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::delete;
use model::UserId;

use crate::auth::{Caller, Patient, Service};
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(model::paths::AUTHORIZE_ROUTE, delete(disconnect_own))
        .route(model::paths::USER_AUTHORIZE_ROUTE, delete(disconnect_as_service))
}

/// `?deleteData=true` also erases the source's imported data.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DisconnectParams {
    #[serde(default)]
    delete_data: bool,
}

async fn disconnect(
    state: &AppState,
    caller: &Caller,
    user: &UserId,
    provider: &str,
    params: DisconnectParams,
) -> Result<StatusCode, ApiError> {
    let provider = state.provider(provider)?;
    revoke_at_partner(state, user, &provider).await;
    state.store.disconnect(&caller.actor(), user, &provider, params.delete_data, state.clock.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke our grant at the partner when it has an RFC 7009 endpoint. Best effort: logged, never
/// blocks the disconnect (deleting our tokens is what "disconnected" means).
pub(crate) async fn revoke_at_partner(state: &AppState, user: &UserId, provider: &model::ProviderName) {
    let Some(partner) = state.partners.get(provider) else { return };
    let Ok(sources) = state.store.list_data_sources(user).await else { return };
    let Some(source) = sources.into_iter().find(|s| &s.provider == provider) else { return };
    let session = match state.store.get_provider_session(&source.id).await {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "reading the session to revoke failed");
            return;
        }
    };
    let region = session.region.clone().or_else(|| partner.implied_region()).unwrap_or_default();
    let endpoints = match partner.resolve(&region).await {
        Ok(r) => r.oauth,
        Err(e) => {
            tracing::warn!(provider = %provider, error = %e, "cannot resolve the partner to revoke; disconnecting anyway");
            return;
        }
    };
    let (token, hint) = match &session.refresh_token {
        Some(r) => (r, "refresh_token"),
        None => (&session.access_token, "access_token"),
    };
    match endpoints.revoke(&partner.http, token, hint, state.connect.allow_insecure_http).await {
        Ok(true) => tracing::info!(provider = %provider, data_source = %source.id, "revoked at the partner"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(provider = %provider, data_source = %source.id, error = %e, "revocation at the partner failed; disconnecting anyway")
        }
    }
}

async fn disconnect_own(
    State(state): State<AppState>,
    patient: Patient,
    ApiPath(provider): ApiPath<String>,
    ApiQuery(params): ApiQuery<DisconnectParams>,
) -> Result<StatusCode, ApiError> {
    disconnect(&state, &patient.caller, &patient.user_id, &provider, params).await
}

async fn disconnect_as_service(
    State(state): State<AppState>,
    Service(caller): Service,
    ApiPath((user, provider)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<DisconnectParams>,
) -> Result<StatusCode, ApiError> {
    let user = UserId::parse(&user)?;
    disconnect(&state, &caller, &user, &provider, params).await
}
