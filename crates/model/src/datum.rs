//! Tidepool device-data datums (the `data` service's model), serialized exactly as Tidepool's
//! JSON, with Tidepool's validation rules. Only what a mapping received is set: medical data we
//! did not receive stays absent.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::ids::DatumId;

/// Where a datum came from (Tidepool's `origin`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Origin {
    /// The partner's record id.
    pub id: String,
    /// e.g. `com.dexcom.api`.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub version: String,
    #[serde(serialize_with = "crate::time::serialize")]
    pub time: DateTime<Utc>,
}

/// The fields every datum has (`base.v1.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Base {
    pub id: DatumId,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(serialize_with = "crate::time::serialize")]
    pub time: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_drift_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub origin: Origin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<Value>,
}

/// A CGM trend, in Tidepool's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Trend {
    Constant,
    SlowFall,
    SlowRise,
    ModerateFall,
    ModerateRise,
    RapidFall,
    RapidRise,
}

/// A continuous glucose reading (`cbg`), in mg/dL.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cbg {
    #[serde(flatten)]
    pub base: Base,
    pub units: &'static str,
    pub value: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trend: Option<Trend>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trend_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trend_rate_units: Option<&'static str>,
}

/// A rule a datum breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct Invalid {
    pub field: &'static str,
    pub rule: &'static str,
}

impl Cbg {
    /// Tidepool's rules for `cbg` in mg/dL.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(0..=1000).contains(&self.value) {
            return Err(Invalid { field: "value", rule: "mg/dL values are 0–1000" });
        }
        if let Some(r) = self.trend_rate {
            if !(-100.0..=100.0).contains(&r) || !r.is_finite() {
                return Err(Invalid { field: "trendRate", rule: "must be within ±100" });
            }
            if self.trend_rate_units.is_none() {
                return Err(Invalid { field: "trendRateUnits", rule: "required with trendRate" });
            }
        }
        if let Some(tz) = self.base.timezone_offset
            && !(-14 * 60..=14 * 60).contains(&tz)
        {
            return Err(Invalid { field: "timezoneOffset", rule: "must be within ±14 h" });
        }
        Ok(())
    }
}
