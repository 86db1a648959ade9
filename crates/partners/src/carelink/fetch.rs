//! One CareLink poll: `POST {baseUrlCumulus}/display/message` → the last 24 h → datums.

use model::UserId;
use reqwest::header;
use serde_json::json;

use super::map;
use crate::error::PartnerError;
use crate::fetch::Batch;
use crate::http::{status_error, transport};

/// The app version CareLink expects in the request (the v13 API answers 3.6–3.8).
pub const APP_VERSION: &str = "3.6.0";

/// Whose data a CareLink data source follows, from its stored partner account id
/// (`username/patient` or `username/carepartner/{patientId}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follow {
    pub username: String,
    /// `None` for a patient reading their own data.
    pub patient_id: Option<String>,
}

impl Follow {
    pub fn parse(account_id: &str) -> Result<Self, PartnerError> {
        let mut parts = account_id.splitn(3, '/');
        let (username, role, patient) = (parts.next(), parts.next(), parts.next());
        match (username, role, patient) {
            (Some(u), Some("patient"), None) if !u.is_empty() => Ok(Self { username: u.into(), patient_id: None }),
            (Some(u), Some("carepartner"), Some(p)) if !u.is_empty() && !p.is_empty() => {
                Ok(Self { username: u.into(), patient_id: Some(p.into()) })
            }
            // A care partner who follows several patients and chose none: never guess.
            (Some(_), Some("carepartner"), None) => Err(PartnerError::Permanent {
                code: "patient_not_chosen".into(),
                message: "This CareLink care-partner account follows several people and none was chosen. Reconnect and choose whose data to share.".into(),
            }),
            _ => Err(PartnerError::Protocol("unreadable CareLink account id".into())),
        }
    }
}

pub async fn poll(
    http: &reqwest::Client,
    cloud_base_url: &str,
    access_token: &str,
    user: &UserId,
    follow: &Follow,
) -> Result<Batch, PartnerError> {
    let url = format!("{}/display/message", cloud_base_url.trim_end_matches('/'));
    let body = match &follow.patient_id {
        None => json!({"username": follow.username, "role": "patient", "appVersion": APP_VERSION}),
        Some(p) => {
            json!({"username": follow.username, "role": "carepartner", "patientId": p, "appVersion": APP_VERSION})
        }
    };
    let resp = http
        .post(&url)
        .header(header::AUTHORIZATION, format!("Bearer {access_token}"))
        .json(&body)
        .send()
        .await
        .map_err(transport)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(match status.as_u16() {
            // CareLink answers 400 when the follow link is gone (patient removed the care partner).
            400 | 403 | 404 => PartnerError::Permanent {
                code: "carelink_refused".into(),
                message: format!(
                    "CareLink refused to share this person's data (status {status}). Reconnect to continue."
                ),
            },
            _ => status_error(&resp),
        });
    }
    let text = resp.text().await.map_err(transport)?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| PartnerError::Protocol("display/message is not JSON".into()))?;
    let mut batch = Batch { calls: 1, ..Batch::default() };
    map::map_payload(user, &doc, &mut batch).map_err(|e| PartnerError::Protocol(e.to_string()))?;
    Ok(batch)
}
