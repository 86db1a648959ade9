//! `tidegate map`: a saved partner response → Tidepool datums, for support cases and for checking
//! a payload by hand. Pure: no configuration, no database, no network.

use chrono::{DateTime, Utc};
use model::UserId;
use partners::fetch::Batch;
use serde_json::Value;

/// The partners `tidegate map` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MapPartner {
    Dexcom,
    Carelink,
}

/// Dexcom v3 endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DexcomEndpoint {
    Egvs,
    Events,
    Calibrations,
    Alerts,
    Devices,
}

impl DexcomEndpoint {
    fn as_str(self) -> &'static str {
        match self {
            Self::Egvs => "egvs",
            Self::Events => "events",
            Self::Calibrations => "calibrations",
            Self::Alerts => "alerts",
            Self::Devices => "devices",
        }
    }

    /// From a v3 envelope's `recordType`.
    fn from_record_type(t: &str) -> Option<Self> {
        Some(match t {
            "egv" => Self::Egvs,
            "event" => Self::Events,
            "calibration" => Self::Calibrations,
            "alert" => Self::Alerts,
            "device" => Self::Devices,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error("the input is not JSON: {0}")]
    NotJson(String),
    #[error("say which Dexcom endpoint this response came from (--endpoint): it has no recordType")]
    UnknownEndpoint,
    #[error("--endpoint is for Dexcom responses only")]
    EndpointForCarelink,
    #[error("{0}")]
    Payload(String),
}

/// What mapping produced: datums as Tidepool JSON, the ids of datums a deletion removes, and
/// the skipped records.
#[derive(Debug)]
pub struct Mapped {
    pub datums: Vec<Value>,
    pub removed: Vec<String>,
    pub batch: Batch,
    /// What the input was understood as (e.g. `dexcom egvs`, `carelink generation C`).
    pub understood_as: String,
}

/// Map one saved response. `user` only seeds the datum ids.
pub fn map(
    partner: MapPartner,
    endpoint: Option<DexcomEndpoint>,
    input: &str,
    user: &UserId,
) -> Result<Mapped, MapError> {
    let doc: Value = serde_json::from_str(input).map_err(|e| MapError::NotJson(e.to_string()))?;
    let mut batch = Batch::default();
    let understood_as = match partner {
        MapPartner::Dexcom => {
            let endpoint = endpoint
                .or_else(|| doc["recordType"].as_str().and_then(DexcomEndpoint::from_record_type))
                .ok_or(MapError::UnknownEndpoint)?;
            let (from, to) = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
            partners::dexcom::fetch::map_records(user, endpoint.as_str(), &doc, from, to, &mut batch);
            format!("dexcom {}", endpoint.as_str())
        }
        MapPartner::Carelink => {
            if endpoint.is_some() {
                return Err(MapError::EndpointForCarelink);
            }
            let generation = partners::carelink::map::map_payload(user, &doc, &mut batch)
                .map_err(|e| MapError::Payload(e.to_string()))?;
            format!("carelink {generation:?}")
        }
    };
    Ok(Mapped {
        datums: batch.datums.iter().map(|d| d.to_json()).collect(),
        removed: batch.removed.iter().map(|r| r.as_str().to_owned()).collect(),
        understood_as,
        batch,
    })
}

/// The stderr summary: what was read, produced, removed and skipped (with why).
pub fn summary(m: &Mapped) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for d in &m.datums {
        let t = d["type"].as_str().unwrap_or("?");
        let key = match d["subType"].as_str() {
            Some(s) => format!("{t}/{s}"),
            None => t.to_owned(),
        };
        *counts.entry(key).or_default() += 1;
    }
    let mut out = format!("read as {}: {} datums", m.understood_as, m.datums.len());
    if !counts.is_empty() {
        let by: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        out.push_str(&format!(" ({})", by.join(", ")));
    }
    out.push('\n');
    if !m.removed.is_empty() {
        out.push_str(&format!("{} deleted at the partner (datum ids {})\n", m.removed.len(), m.removed.join(", ")));
    }
    if m.batch.skipped.is_empty() {
        out.push_str("skipped: none\n");
    } else {
        out.push_str(&format!("skipped: {}\n", m.batch.skipped_total()));
        for (code, s) in &m.batch.skipped {
            out.push_str(&format!("  {code}: {} (last: {})\n", s.count, s.example));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::parse("0123456789").unwrap()
    }

    #[test]
    fn a_dexcom_envelope_is_recognised_by_its_record_type() {
        let body = r#"{"recordType":"egv","recordVersion":"3.0","userId":"x","records":[
            {"recordId":"a1","systemTime":"2026-03-07T12:00:00","displayTime":"2026-03-07T07:00:00","value":120,"unit":"mg/dL","trend":"flat","status":null},
            {"recordId":"a2","systemTime":"2026-02-30T12:05:00","displayTime":"2026-03-07T07:05:00","value":121,"unit":"mg/dL"}]}"#;
        let m = map(MapPartner::Dexcom, None, body, &user()).unwrap();
        assert_eq!(m.datums.len(), 1);
        assert_eq!(m.datums[0]["type"], "cbg");
        assert_eq!(m.datums[0]["trend"], "constant");
        let s = summary(&m);
        assert!(s.contains("read as dexcom egvs: 1 datums (cbg 1)"), "{s}");
        assert!(s.contains("bad_time: 1"), "{s}");
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(matches!(map(MapPartner::Dexcom, None, "not json", &user()), Err(MapError::NotJson(_))));
        assert_eq!(map(MapPartner::Dexcom, None, r#"{"records":[]}"#, &user()).unwrap_err(), MapError::UnknownEndpoint);
        assert!(matches!(map(MapPartner::Carelink, None, r#"{"hello":1}"#, &user()), Err(MapError::Payload(_))));
        assert_eq!(
            map(MapPartner::Carelink, Some(DexcomEndpoint::Egvs), "{}", &user()).unwrap_err(),
            MapError::EndpointForCarelink
        );
    }
}
