//! Dexcom Developer API v3 (PARTNERS.md): the OAuth endpoints and sign-in page of Dexcom's
//! sandbox, and the data endpoints under `/v3/users/self/` with the real envelopes, field names,
//! types and enums, date-format and 30-day-window checks, and the per-app hourly call budget.

mod data;
mod oauth;
pub mod records;

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Router;
use axum::routing::{get, post};
use chrono::{DateTime, Timelike, Utc};

use crate::Shared;

pub use oauth::urlencode;
pub use records::{GroundTruth, truth};

pub fn router(region: &'static str) -> Router<Shared> {
    Router::new()
        .route(
            "/v3/oauth2/login",
            get(move |s, q| oauth::login_page(s, q, region)).post(move |s, f| oauth::decide(s, f, region)),
        )
        .route("/v3/oauth2/token", post(move |s, h, f| oauth::token(s, h, f, region)))
        .route("/v3/oauth2/introspect", post(move |s, f| oauth::introspect(s, f, region)))
        .route("/v3/users/self/dataRange", get(move |s, h, q| data::data_range(s, h, q, region)))
        .route("/v3/users/self/egvs", get(move |s, h, q| data::endpoint(s, h, q, region, data::Kind::Egvs)))
        .route("/v3/users/self/events", get(move |s, h, q| data::endpoint(s, h, q, region, data::Kind::Events)))
        .route(
            "/v3/users/self/calibrations",
            get(move |s, h, q| data::endpoint(s, h, q, region, data::Kind::Calibrations)),
        )
        .route("/v3/users/self/alerts", get(move |s, h, q| data::endpoint(s, h, q, region, data::Kind::Alerts)))
        .route("/v3/users/self/devices", get(move |s, h| data::devices(s, h, region)))
}

/// The per-app hourly call budget (Dexcom: 60,000 calls per app per hour, all users together),
/// counted in fixed windows of the simulated clock's hours.
#[derive(Debug)]
pub struct Budget {
    limit: Mutex<Option<u64>>,
    used: Mutex<HashMap<String, (i64, u64)>>,
    refused: Mutex<u64>,
}

impl Budget {
    pub fn new(limit: Option<u64>) -> Self {
        Self { limit: Mutex::new(limit), used: Mutex::new(HashMap::new()), refused: Mutex::new(0) }
    }

    pub fn set_limit(&self, limit: Option<u64>) {
        *self.limit.lock().unwrap_or_else(|e| e.into_inner()) = limit;
    }

    pub fn limit(&self) -> Option<u64> {
        *self.limit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count one call; `Err(retry_after_secs)` when the app's hour is spent.
    pub fn spend(&self, client_id: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let Some(limit) = self.limit() else { return Ok(()) };
        let hour = now.timestamp().div_euclid(3600);
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let entry = used.entry(client_id.to_owned()).or_insert((hour, 0));
        if entry.0 != hour {
            *entry = (hour, 0);
        }
        if entry.1 >= limit {
            *self.refused.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            let into_hour = now.minute() as u64 * 60 + now.second() as u64;
            return Err((3600 - into_hour).max(1));
        }
        entry.1 += 1;
        Ok(())
    }

    /// (calls counted this hour for the client, calls refused with 429 so far).
    pub fn usage(&self, client_id: &str, now: DateTime<Utc>) -> (u64, u64) {
        let hour = now.timestamp().div_euclid(3600);
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let n = used.get(client_id).filter(|(h, _)| *h == hour).map(|(_, n)| *n).unwrap_or(0);
        (n, *self.refused.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
