//! The clinic service, as far as the API needs it: does a clinic have this patient?
//!
//! `GET {clinic}/v1/clinics/{clinicId}/patients/{patientId}` with the server token in
//! `x-tidepool-session-token`: 200 → a patient of that clinic, 404 → not. Anything else means we
//! cannot tell, and the caller gets a 503 rather than a guess.

use std::time::Duration;

use model::{ClinicId, UserId};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct ClinicDirectory {
    base_url: String,
    server_token: SecretString,
    http: reqwest::Client,
}

impl ClinicDirectory {
    pub fn new(base_url: &str, server_token: SecretString, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tidegate/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("building an HTTP client with static settings");
        Self { base_url: base_url.trim_end_matches('/').to_owned(), server_token, http }
    }

    /// Is `patient` a patient of `clinic`?
    pub async fn is_patient(&self, clinic: &ClinicId, patient: &UserId) -> Result<bool, ApiError> {
        // Both ids are validated hex/uuid strings: safe in a path without escaping.
        let url = format!("{}/v1/clinics/{clinic}/patients/{patient}", self.base_url);
        let resp = self
            .http
            .get(&url)
            .header("x-tidepool-session-token", self.server_token.expose_secret())
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "clinic service unreachable");
                ApiError::Unavailable("The clinic service cannot be reached; try again shortly.")
            })?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => {
                tracing::warn!(%status, "clinic service answered unexpectedly");
                Err(ApiError::Unavailable("The clinic service could not confirm the patient; try again shortly."))
            }
        }
    }
}
