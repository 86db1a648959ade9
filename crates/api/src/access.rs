//! Tenant rules (DESIGN §4 "Multi-tenant auth"): a patient touches only their own data; a
//! clinician only patients of the clinics named in their token, as confirmed by the clinic
//! service; internal services everything.

use model::UserId;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::AppState;

/// May `caller` act on `user`'s data sources and data?
pub async fn authorize_user(state: &AppState, caller: &Caller, user: &UserId) -> Result<(), ApiError> {
    match caller.role {
        Role::Service => Ok(()),
        Role::Patient if caller.patient_id().as_ref() == Some(user) => Ok(()),
        Role::Patient => Err(ApiError::Forbidden("A patient may only access their own data.")),
        Role::Clinician => {
            let Some(clinic) = &state.clinic else {
                return Err(ApiError::Forbidden("Clinician access is not available: no clinic service is configured."));
            };
            for clinic_id in &caller.clinics {
                if clinic.is_patient(clinic_id, user).await.map_err(clinic_unavailable)? {
                    return Ok(());
                }
            }
            Err(ApiError::Forbidden("This user is not a patient of your clinics."))
        }
    }
}

/// The clinic service could not answer: a 503, never a guess.
pub fn clinic_unavailable(e: partners::PartnerError) -> ApiError {
    tracing::warn!(error = %e, "clinic service could not confirm the patient");
    ApiError::Unavailable("The clinic service could not confirm the patient; try again shortly.")
}
