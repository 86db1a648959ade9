//! The clinic service: patient checks for the API, data-source reports and patient e-mail
//! addresses for the outbox. The server token (`x-tidepool-session-token`) is sent only to the
//! configured clinic URL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use model::{ClinicId, DataSourceId, DataSourceState, ProviderName, UserId};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use crate::error::PartnerError;
use crate::http::{status_error, transport};

/// One entry of `PUT /v1/patients/{userId}/data_sources` (the clinic service's `DataSource`):
/// the report carries every provider's entry for the user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceReport {
    pub data_source_id: DataSourceId,
    pub provider_name: ProviderName,
    pub state: DataSourceState,
    #[serde(serialize_with = "model::time::serialize")]
    pub modified_time: DateTime<Utc>,
    /// Pending states only: when the invitation runs out.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "model::time::serialize_opt")]
    pub expiration_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "model::time::serialize_opt")]
    pub latest_data_time: Option<DateTime<Utc>>,
}

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

    async fn get_patient(
        &self,
        clinic: &ClinicId,
        patient: &UserId,
    ) -> Result<Option<serde_json::Value>, PartnerError> {
        // Both ids are validated hex/uuid strings: safe in a path without escaping.
        let url = format!("{}/v1/clinics/{clinic}/patients/{patient}", self.base_url);
        let resp = self
            .http
            .get(&url)
            .header("x-tidepool-session-token", self.server_token.expose_secret())
            .send()
            .await
            .map_err(transport)?;
        match resp.status() {
            StatusCode::OK => {
                Ok(Some(resp.json().await.map_err(|_| PartnerError::Protocol("clinic patient is not JSON".into()))?))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(&resp)),
        }
    }

    /// Is `patient` a patient of `clinic`? (200 → yes, 404 → no, anything else → an error: we
    /// never guess.)
    pub async fn is_patient(&self, clinic: &ClinicId, patient: &UserId) -> Result<bool, PartnerError> {
        Ok(self.get_patient(clinic, patient).await?.is_some())
    }

    /// The patient's e-mail address as the clinic knows it.
    pub async fn patient_email(&self, clinic: &ClinicId, patient: &UserId) -> Result<Option<String>, PartnerError> {
        Ok(self.get_patient(clinic, patient).await?.and_then(|p| p["email"].as_str().map(str::to_owned)))
    }

    /// `PUT /v1/patients/{userId}/data_sources` with every provider's entry for the user.
    /// Returns the HTTP status (the outbox decides what it means).
    pub async fn put_data_sources(&self, user: &UserId, body: &[DataSourceReport]) -> Result<StatusCode, PartnerError> {
        let url = format!("{}/v1/patients/{user}/data_sources", self.base_url);
        let resp = self
            .http
            .put(&url)
            .header("x-tidepool-session-token", self.server_token.expose_secret())
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        Ok(resp.status())
    }
}
