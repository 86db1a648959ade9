//! Clinician-initiated connection requests.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use model::{ClinicId, UserId};
use serde::Serialize;
use store::connection_requests::ConnectionRequest;
use store::lifecycle::{RequestConnection, RequestOutcome};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/clinics/{clinicId}/patients/{patientId}/connect/{provider}", post(request))
        .route("/v1/clinics/{clinicId}/patients/{patientId}/connection_requests", get(list_for_clinic))
        .route("/v1/users/{userId}/connection_requests", get(list_for_patient))
}

/// A clinician of `clinic` (named in their token) whose clinic the clinic service confirms has
/// `patient`.
async fn clinician_of(state: &AppState, caller: &Caller, clinic: &ClinicId, patient: &UserId) -> Result<(), ApiError> {
    if caller.role != Role::Clinician {
        return Err(ApiError::Forbidden("This endpoint is for clinicians."));
    }
    if !caller.clinics.contains(clinic) {
        return Err(ApiError::Forbidden("Your token does not name this clinic."));
    }
    let directory = state.clinic.as_ref().ok_or(ApiError::Unavailable("No clinic service is configured."))?;
    if !directory.is_patient(clinic, patient).await.map_err(crate::access::clinic_unavailable)? {
        return Err(ApiError::Forbidden("This user is not a patient of this clinic."));
    }
    Ok(())
}

async fn request(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((clinic, patient, provider)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    let clinic = ClinicId::parse(&clinic)?;
    let patient = UserId::parse(&patient)
        .map_err(|e| ApiError::invalid_param("patientId", format!("must match {}", e.pattern)))?;
    let provider = state.provider(&provider)?;
    clinician_of(&state, &caller, &clinic, &patient).await?;
    let r = RequestConnection {
        clinic_id: clinic,
        user: patient,
        link_base: model::paths::link_base(&state.connect.public_url, &provider),
        provider,
        ttl: state.connect.connection_request_ttl,
    };
    match state.store.request_connection(&caller.actor(), &r, state.clock.now()).await? {
        RequestOutcome::Requested(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        RequestOutcome::AlreadyConnected => {
            Err(ApiError::Conflict("The patient's data source is already connected.".into()))
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestView {
    provider_name: String,
    clinic_id: ClinicId,
    #[serde(serialize_with = "model::time::serialize")]
    created_time: DateTime<Utc>,
    #[serde(serialize_with = "model::time::serialize")]
    expiration_time: DateTime<Utc>,
}

/// Tidepool's `providerConnectionRequests` shape: one array per configured provider.
fn by_provider(state: &AppState, requests: Vec<ConnectionRequest>) -> BTreeMap<String, Vec<RequestView>> {
    let mut out: BTreeMap<String, Vec<RequestView>> =
        state.partners.names().map(|p| (p.to_string(), Vec::new())).collect();
    for r in requests {
        out.entry(r.provider.to_string()).or_default().push(RequestView {
            provider_name: r.provider.to_string(),
            clinic_id: r.clinic_id,
            created_time: r.created_time,
            expiration_time: r.expiration_time,
        });
    }
    out
}

async fn list_for_clinic(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((clinic, patient)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let clinic = ClinicId::parse(&clinic)?;
    let patient = UserId::parse(&patient)
        .map_err(|e| ApiError::invalid_param("patientId", format!("must match {}", e.pattern)))?;
    clinician_of(&state, &caller, &clinic, &patient).await?;
    let requests = state.store.connection_requests(&patient, Some(&clinic)).await?;
    Ok(axum::Json(by_provider(&state, requests)).into_response())
}

/// The patient's own requests that can still be acted on.
async fn list_for_patient(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> Result<Response, ApiError> {
    let user = UserId::parse(&user)?;
    match caller.role {
        Role::Service => {}
        Role::Patient if caller.patient_id().as_ref() == Some(&user) => {}
        _ => return Err(ApiError::Forbidden("Only the patient (or a service) sees their connection requests.")),
    }
    let now = state.clock.now();
    let requests =
        state.store.connection_requests(&user, None).await?.into_iter().filter(|r| r.expiration_time > now).collect();
    Ok(axum::Json(by_provider(&state, requests)).into_response())
}
