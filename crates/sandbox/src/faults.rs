//! Faults, switchable at run time, globally or per account: 5xx rate, 429 bursts with
//! Retry-After, added latency, hangs past any client timeout, malformed JSON, schema drift,
//! and a maintenance window (partner-local time) during which token refresh fails.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Faults {
    /// Fraction of data and token requests answered with `errorStatus` (default 503).
    pub error_rate: f64,
    pub error_status: Option<u16>,
    /// The next `count` requests answer 429 with `Retry-After: retryAfterSecs`.
    pub rate_limit: Option<RateLimitBurst>,
    /// Added to every response.
    pub latency_ms: u64,
    /// Hold every response this long (past tidegate's client timeout), then answer 504.
    pub hang_ms: u64,
    /// Fraction of data responses whose JSON is cut short.
    pub malformed_json_rate: f64,
    /// Unknown enum values and missing optional fields in data records.
    pub schema_drift: bool,
    pub maintenance: Option<Maintenance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitBurst {
    pub count: u32,
    pub retry_after_secs: u64,
}

/// A daily window in partner-local time (e.g. 02:45–03:45 America/Los_Angeles).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maintenance {
    pub start: String,
    pub end: String,
    pub time_zone: String,
    /// `invalidGrant`: refresh answers 400 invalid_grant; `unavailable`: every call answers 503.
    pub mode: MaintenanceMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MaintenanceMode {
    InvalidGrant,
    Unavailable,
}

impl Maintenance {
    pub fn validate(&self) -> Result<(), String> {
        self.window().map(|_| ())
    }

    fn window(&self) -> Result<(NaiveTime, NaiveTime, Tz), String> {
        let parse = |s: &str| NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| format!("{s:?} is not HH:MM"));
        let tz: Tz = self.time_zone.parse().map_err(|_| format!("unknown time zone {:?}", self.time_zone))?;
        Ok((parse(&self.start)?, parse(&self.end)?, tz))
    }

    /// Is `t` inside the window (in the window's own zone, so DST is followed)?
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let Ok((start, end, tz)) = self.window() else { return false };
        let local = t.with_timezone(&tz).time();
        if start <= end { local >= start && local < end } else { local >= start || local < end }
    }
}

/// Global faults plus per-account overrides.
#[derive(Debug, Default)]
pub struct FaultBoard {
    inner: Mutex<(Faults, HashMap<String, Faults>)>,
}

/// How a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    RateLimited { retry_after_secs: u64 },
    Status(u16),
    InvalidGrant,
}

impl Failure {
    pub fn response(self) -> Response {
        match self {
            Self::RateLimited { retry_after_secs } => too_many_requests(retry_after_secs),
            Self::Status(s) => unavailable(s),
            Self::InvalidGrant => crate::oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "maintenance"),
        }
    }
}

/// What a request should suffer.
#[derive(Debug, Default)]
pub struct Decision {
    pub latency: Duration,
    pub hang: Duration,
    pub fail: Option<Failure>,
    pub malformed: bool,
    pub drift: bool,
}

impl FaultBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Faults, HashMap<String, Faults>)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_global(&self, f: Faults) {
        self.lock().0 = f;
    }

    pub fn set_account(&self, account: &str, f: Faults) {
        self.lock().1.insert(account.to_owned(), f);
    }

    pub fn clear(&self) {
        *self.lock() = Default::default();
    }

    pub fn snapshot(&self) -> (Faults, HashMap<String, Faults>) {
        self.lock().clone()
    }

    /// The faults in force for an account (its own, else the global ones).
    pub fn effective(&self, account: Option<&str>) -> Faults {
        let g = self.lock();
        account.and_then(|a| g.1.get(a).cloned()).unwrap_or_else(|| g.0.clone())
    }

    /// Decide what happens to one request; consumes a 429 from a burst.
    pub fn decide(&self, account: Option<&str>, now: DateTime<Utc>, is_token_refresh: bool) -> Decision {
        let mut g = self.lock();
        let faults = match account.and_then(|a| g.1.get_mut(a)) {
            Some(f) => f,
            None => &mut g.0,
        };
        let mut d = Decision {
            latency: Duration::from_millis(faults.latency_ms),
            hang: Duration::from_millis(faults.hang_ms),
            drift: faults.schema_drift,
            ..Default::default()
        };
        if let Some(burst) = faults.rate_limit.as_mut()
            && burst.count > 0
        {
            burst.count -= 1;
            d.fail = Some(Failure::RateLimited { retry_after_secs: burst.retry_after_secs });
            return d;
        }
        if let Some(m) = &faults.maintenance
            && m.contains(now)
        {
            match m.mode {
                MaintenanceMode::Unavailable => {
                    d.fail = Some(Failure::Status(503));
                    return d;
                }
                MaintenanceMode::InvalidGrant if is_token_refresh => {
                    d.fail = Some(Failure::InvalidGrant);
                    return d;
                }
                MaintenanceMode::InvalidGrant => {}
            }
        }
        let mut rng = rand::rng();
        if faults.error_rate > 0.0 && rng.random_bool(faults.error_rate.clamp(0.0, 1.0)) {
            d.fail = Some(Failure::Status(faults.error_status.unwrap_or(503)));
            return d;
        }
        d.malformed = faults.malformed_json_rate > 0.0 && rng.random_bool(faults.malformed_json_rate.clamp(0.0, 1.0));
        d
    }
}

pub fn too_many_requests(retry_after_secs: u64) -> Response {
    let mut r = (StatusCode::TOO_MANY_REQUESTS, axum::Json(serde_json::json!({"fault": {"faultstring": "Rate limit quota violation", "detail": {"errorcode": "policies.ratelimit.QuotaViolation"}}}))).into_response();
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    r
}

pub fn unavailable(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (status, [(header::CONTENT_TYPE, "text/html")], "<html><body><h1>Service Unavailable</h1></body></html>")
        .into_response()
}

/// Apply latency / hang, then the failure if any. Returns `Some(response)` to short-circuit.
pub async fn apply(d: &Decision) -> Option<Response> {
    if !d.latency.is_zero() {
        tokio::time::sleep(d.latency).await;
    }
    if !d.hang.is_zero() {
        tokio::time::sleep(d.hang).await;
        return Some(unavailable(504));
    }
    d.fail.map(Failure::response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_window_follows_dst() {
        let m = Maintenance {
            start: "02:45".into(),
            end: "03:45".into(),
            time_zone: "America/Los_Angeles".into(),
            mode: MaintenanceMode::InvalidGrant,
        };
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        assert!(m.contains(t("2026-01-15T10:50:00Z"))); // 02:50 PST
        assert!(!m.contains(t("2026-01-15T11:50:00Z"))); // 03:50 PST
        assert!(m.contains(t("2026-07-15T09:50:00Z"))); // 02:50 PDT
        assert!(!m.contains(t("2026-07-15T10:50:00Z"))); // 03:50 PDT
    }
}
