//! Dexcom API v3: the account's stable id (the envelope's `userId`).

use crate::error::PartnerError;
use crate::http::get_json;

/// The Dexcom account behind an access token: `userId` of the `dataRange` envelope (stable per
/// account and client application). One call, which the first poll needs anyway.
pub async fn account_id(
    http: &reqwest::Client,
    api_base_url: &str,
    access_token: &str,
) -> Result<String, PartnerError> {
    let url = format!("{}/v3/users/self/dataRange", api_base_url.trim_end_matches('/'));
    let body = get_json(http, &url, Some(access_token)).await?;
    body["userId"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| PartnerError::Protocol("dataRange has no userId".into()))
}

/// Mapping Dexcom v3 records to Tidepool datums (pure functions; one bad record is skipped and
/// counted, never fails its batch).
pub mod map {
    use chrono::{DateTime, Utc};
    use model::datum::{Base, Cbg, Origin, Trend};
    use model::time::{PartnerTime, device_time, parse_partner_time, split_offset};
    use model::{DatumId, UserId};
    use serde_json::{Value, json};

    /// Why a record was skipped.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum Skip {
        #[error("record has no recordId")]
        NoRecordId,
        #[error("unreadable {0}")]
        BadTime(&'static str),
        #[error("no glucose value")]
        NoValue,
        #[error("unsupported unit {0:?}")]
        Unit(String),
        #[error("breaks Tidepool's rules: {0}")]
        Invalid(String),
    }

    /// Dexcom trend arrows in Tidepool's words; `none`, `notComputable`, `rateOutOfRange`,
    /// `unknown` and anything new give no trend.
    pub fn trend(arrow: &str) -> Option<Trend> {
        Some(match arrow {
            "doubleUp" => Trend::RapidRise,
            "singleUp" => Trend::ModerateRise,
            "fortyFiveUp" => Trend::SlowRise,
            "flat" => Trend::Constant,
            "fortyFiveDown" => Trend::SlowFall,
            "singleDown" => Trend::ModerateFall,
            "doubleDown" => Trend::RapidFall,
            _ => return None,
        })
    }

    /// `deviceId` from transmitter generation + id (absent without a transmitter id).
    pub fn device_id(generation: Option<&str>, transmitter: Option<&str>) -> Option<String> {
        let tx = transmitter.filter(|t| !t.is_empty())?;
        let prefix = match generation.unwrap_or("unknown") {
            "g4" => "DexcomG4",
            "g5" => "DexcomG5",
            "g6" => "DexcomG6",
            "g6 pro" | "g6Pro" => "DexcomG6Pro",
            "g6+" => "DexcomG6Plus",
            "dexcomPro" => "DexcomPro",
            "g7" => "DexcomG7",
            "g715day" => "DexcomG7-15Day",
            _ => "Dexcom",
        };
        Some(format!("{prefix}_{tx}"))
    }

    struct Times {
        time: DateTime<Utc>,
        device_time: Option<String>,
        timezone_offset: Option<i64>,
        clock_drift_offset: Option<i64>,
    }

    /// `time` from systemTime (UTC when it names no zone); `deviceTime`, `timezoneOffset` and
    /// `clockDriftOffset` from displayTime (its own offset when it has one, else the difference
    /// from systemTime), split into a quarter-hour zone and the clock's drift.
    fn times(record: &Value) -> Result<Times, Skip> {
        let system = record["systemTime"].as_str().ok_or(Skip::BadTime("systemTime"))?;
        let system = parse_partner_time(system).map_err(|_| Skip::BadTime("systemTime"))?;
        let time = system.instant().unwrap_or_else(|| system.local.and_utc());
        let display: Option<PartnerTime> = match record["displayTime"].as_str() {
            Some(d) => Some(parse_partner_time(d).map_err(|_| Skip::BadTime("displayTime"))?),
            None => None,
        };
        let Some(display) = display else {
            return Ok(Times { time, device_time: None, timezone_offset: None, clock_drift_offset: None });
        };
        let local_minus_utc_ms = (display.local.and_utc() - time).num_milliseconds();
        let (zone_min, drift_ms) = split_offset(local_minus_utc_ms);
        Ok(Times {
            time,
            device_time: Some(device_time(&display.local)),
            timezone_offset: Some(zone_min),
            clock_drift_offset: (drift_ms != 0).then_some(drift_ms),
        })
    }

    /// An EGV record → `cbg` (39 and 401 carry Tidepool's out-of-range annotation).
    pub fn egv(user: &UserId, record: &Value) -> Result<Cbg, Skip> {
        let record_id = record["recordId"].as_str().filter(|s| !s.is_empty()).ok_or(Skip::NoRecordId)?;
        let t = times(record)?;
        match record["unit"].as_str() {
            Some("mg/dL") | None => {}
            Some(other) => return Err(Skip::Unit(other.to_owned())),
        }
        let raw = record["value"].as_f64().ok_or(Skip::NoValue)?;
        let status = record["status"].as_str();
        let (value, annotation) = if raw < 40.0 || status == Some("low") {
            (39, Some(json!({"code": "bg/out-of-range", "value": "low", "threshold": 40})))
        } else if raw > 400.0 || status == Some("high") {
            (401, Some(json!({"code": "bg/out-of-range", "value": "high", "threshold": 400})))
        } else {
            (raw.round() as i64, None)
        };
        let trend_rate = record["trendRate"].as_f64().filter(|_| annotation.is_none());
        let rate_units = match record["rateUnit"].as_str() {
            Some("mg/dL/min") | None => Some("mg/dL/minute"),
            _ => None,
        };
        let payload_keys = [
            "systemTime",
            "displayTime",
            "transmitterId",
            "transmitterTicks",
            "transmitterGeneration",
            "displayDevice",
            "displayApp",
            "status",
            "trend",
            "trendRate",
        ];
        let payload: serde_json::Map<String, Value> = payload_keys
            .iter()
            .filter_map(|k| record.get(*k).filter(|v| !v.is_null()).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        let cbg = Cbg {
            base: Base {
                id: DatumId::derive(user, "dexcom", "cbg", &[record_id]),
                kind: "cbg",
                time: t.time,
                device_time: t.device_time,
                timezone_offset: t.timezone_offset,
                clock_drift_offset: t.clock_drift_offset,
                conversion_offset: None,
                device_id: device_id(record["transmitterGeneration"].as_str(), record["transmitterId"].as_str()),
                origin: Origin {
                    id: record_id.to_owned(),
                    name: "com.dexcom.api".into(),
                    kind: "service",
                    version: "3.0".into(),
                    time: t.time,
                },
                payload: Some(Value::Object(payload)),
                annotations: annotation.into_iter().collect(),
            },
            units: "mg/dL",
            value,
            trend: record["trend"].as_str().and_then(trend).filter(|_| value != 39 && value != 401),
            trend_rate_units: trend_rate.and(rate_units),
            trend_rate: trend_rate.filter(|_| rate_units.is_some()),
        };
        cbg.validate().map_err(|e| Skip::Invalid(e.to_string()))?;
        Ok(cbg)
    }
}
