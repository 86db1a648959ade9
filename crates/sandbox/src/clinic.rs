//! The clinic service stand-in: `PUT /v1/patients/{userId}/data_sources` (server token,
//! validated against the clinic contract), `GET /v1/clinics/{clinicId}/patients/{patientId}`,
//! the full request history, and faults (down, 5xx, slow).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Shared;

/// One PUT the stand-in received.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Received {
    pub user_id: String,
    pub body: Value,
    pub status: u16,
    /// Why it was refused, when it was.
    pub reason: Option<String>,
    #[serde(serialize_with = "crate::ser_time")]
    pub time: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ClinicFaults {
    /// Refuse connections' worth: every request answers 503.
    pub down: bool,
    /// Fraction of requests answered 500.
    pub error_rate: f64,
    pub latency_ms: u64,
    /// Record a PUT, then wait this long before answering (the sender may time out without
    /// learning that it was delivered).
    pub ack_delay_ms: u64,
}

#[derive(Debug, Default)]
pub struct ClinicState {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// clinic id → patient user ids.
    patients: BTreeMap<String, BTreeSet<String>>,
    /// user id → e-mail address.
    emails: BTreeMap<String, String>,
    received: Vec<Received>,
    faults: ClinicFaults,
}

impl ClinicState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add_patient(&self, clinic_id: &str, user_id: &str, email: Option<&str>) {
        let mut g = self.lock();
        g.patients.entry(clinic_id.to_owned()).or_default().insert(user_id.to_owned());
        if let Some(e) = email {
            g.emails.insert(user_id.to_owned(), e.to_owned());
        }
    }

    pub fn is_patient_anywhere(&self, user_id: &str) -> bool {
        self.lock().patients.values().any(|p| p.contains(user_id))
    }

    pub fn is_patient(&self, clinic_id: &str, user_id: &str) -> bool {
        self.lock().patients.get(clinic_id).is_some_and(|p| p.contains(user_id))
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// The last body accepted for each user.
    pub fn last_accepted(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for r in self.lock().received.iter().filter(|r| r.status == 200) {
            out.insert(r.user_id.clone(), r.body.clone());
        }
        out
    }

    pub fn set_faults(&self, f: ClinicFaults) {
        self.lock().faults = f;
    }

    pub fn faults(&self) -> ClinicFaults {
        self.lock().faults.clone()
    }

    pub fn clear_history(&self) {
        self.lock().received.clear();
    }
}

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/v1/patients/{userId}/data_sources", put(put_data_sources))
        .route("/v1/clinics/{clinicId}/patients/{patientId}", get(get_patient))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"code": status.as_u16(), "message": message}))).into_response()
}

async fn admit(sim: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let faults = sim.clinic.faults();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.down {
        return Err(error(StatusCode::SERVICE_UNAVAILABLE, "clinic service down"));
    }
    if faults.error_rate > 0.0 && rand::random_bool(faults.error_rate.clamp(0.0, 1.0)) {
        return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "injected failure"));
    }
    let token = headers.get("x-tidepool-session-token").and_then(|v| v.to_str().ok());
    if sim.cfg.clinic_server_token.is_empty() || token != Some(sim.cfg.clinic_server_token.as_str()) {
        return Err(error(StatusCode::UNAUTHORIZED, "missing or invalid x-tidepool-session-token"));
    }
    Ok(())
}

fn is_hex24(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str().is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok())
}

/// Validate a body against the clinic contract's `dataSources` (array of `dataSource`).
pub fn validate(body: &Value) -> Result<(), String> {
    let items = body.as_array().ok_or("body must be an array of data sources")?;
    for (i, item) in items.iter().enumerate() {
        let o = item.as_object().ok_or(format!("[{i}] must be an object"))?;
        let state = o.get("state").and_then(Value::as_str).ok_or(format!("[{i}].state is required"))?;
        if !["pending", "pendingReconnect", "connected", "disconnected", "error"].contains(&state) {
            return Err(format!("[{i}].state {state:?} is not in the enum"));
        }
        let name = o.get("providerName").and_then(Value::as_str).ok_or(format!("[{i}].providerName is required"))?;
        if name.is_empty() || name.chars().count() > 100 {
            return Err(format!("[{i}].providerName must be 1–100 characters"));
        }
        if let Some(id) = o.get("dataSourceId")
            && !id.as_str().is_some_and(is_hex24)
        {
            return Err(format!("[{i}].dataSourceId must match ^[a-f0-9]{{24}}$"));
        }
        for field in ["modifiedTime", "expirationTime", "latestDataTime"] {
            if let Some(v) = o.get(field)
                && !is_rfc3339(v)
            {
                return Err(format!("[{i}].{field} must be an RFC 3339 date-time"));
            }
        }
    }
    Ok(())
}

async fn put_data_sources(
    State(sim): State<Shared>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit(&sim, &headers).await {
        return r;
    }
    let now = sim.clock.now();
    let parsed: Result<Value, String> = serde_json::from_slice(&body).map_err(|e| format!("body is not JSON: {e}"));
    let (status, reason) = match parsed.as_ref().map_err(Clone::clone).and_then(validate) {
        Err(reason) => (StatusCode::BAD_REQUEST, Some(reason)),
        Ok(()) if !sim.clinic.is_patient_anywhere(&user_id) => {
            (StatusCode::NOT_FOUND, Some("not a patient of any clinic".into()))
        }
        Ok(()) => (StatusCode::OK, None),
    };
    sim.clinic.lock().received.push(Received {
        user_id,
        body: parsed.unwrap_or(Value::Null),
        status: status.as_u16(),
        reason: reason.clone(),
        time: now,
    });
    let ack_delay = sim.clinic.faults().ack_delay_ms;
    if ack_delay > 0 {
        tokio::time::sleep(Duration::from_millis(ack_delay)).await;
    }
    match reason {
        Some(r) => error(status, &r),
        None => StatusCode::OK.into_response(),
    }
}

async fn get_patient(
    State(sim): State<Shared>,
    Path((clinic_id, patient_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&sim, &headers).await {
        return r;
    }
    if !is_hex24(&clinic_id) {
        return error(StatusCode::BAD_REQUEST, "clinicId must be 24 hex characters");
    }
    if sim.clinic.is_patient(&clinic_id, &patient_id) {
        let email = sim.clinic.lock().emails.get(&patient_id).cloned();
        axum::Json(json!({"id": patient_id, "clinicId": clinic_id, "email": email})).into_response()
    } else {
        error(StatusCode::NOT_FOUND, "patient not found")
    }
}

#[cfg(test)]
mod tests {
    use super::validate;
    use serde_json::json;

    #[test]
    fn contract_rules() {
        assert!(validate(&json!([{"providerName": "dexcom", "state": "connected", "dataSourceId": "0123456789abcdef01234567", "modifiedTime": "2026-01-01T00:00:00.000Z"}])).is_ok());
        assert!(validate(&json!([])).is_ok());
        assert!(validate(&json!({})).is_err());
        assert!(validate(&json!([{"providerName": "dexcom", "state": "Connected"}])).is_err());
        assert!(validate(&json!([{"providerName": "", "state": "connected"}])).is_err());
        assert!(validate(&json!([{"providerName": "dexcom", "state": "connected", "dataSourceId": "XYZ"}])).is_err());
        assert!(
            validate(&json!([{"providerName": "dexcom", "state": "pending", "expirationTime": "tomorrow"}])).is_err()
        );
    }
}
