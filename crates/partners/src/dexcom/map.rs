//! Mapping Dexcom v3 records to Tidepool datums (pure functions; one bad record is skipped and
//! counted, never fails its batch). Each function takes a record as sent, reads it into its typed
//! form (`super::wire`) and decides from that; the datum's `payload` copies named fields verbatim.

use super::wire::{self as dx, AlertSetting, Common};
use crate::fetch::{check_time, partner_time};
use crate::wire::{pick_value, read};
use chrono::{DateTime, Utc};
use model::datum::{
    Alert, Amount, Base, Cbg, CgmSettings, Datum, DeviceEvent, DeviceEventKind, Dose, Food, Insulin, LevelAlert, MG_DL,
    MMOL_L, Origin, OutOfRangeAlert, PhysicalActivity, RateAlert, RateOfChangeAlert, ReportedState, Smbg, StateEntry,
    Trend, mgdl_to_mmoll, tidepool_glucose,
};
use model::time::{PartnerTime, device_time, split_offset};
use model::{DatumId, UserId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PROVIDER: &str = "dexcom";
const ORIGIN_NAME: &str = "com.dexcom.api";

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
    #[error("unreadable value {0:?}")]
    BadValue(String),
    #[error("unknown event type {0:?}")]
    UnknownEvent(String),
    #[error("breaks Tidepool's rules: {0}")]
    Invalid(String),
}

impl Skip {
    /// A stable short code (metric label, error detail).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoRecordId => "no_record_id",
            Self::BadTime(_) => "bad_time",
            Self::NoValue => "no_value",
            Self::Unit(_) => "unsupported_unit",
            Self::BadValue(_) => "bad_value",
            Self::UnknownEvent(_) => "unknown_event_type",
            Self::Invalid(_) => "invalid",
        }
    }
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
fn times(record: &Common) -> Result<Times, Skip> {
    let system = record.system_time.as_deref().ok_or(Skip::BadTime("systemTime"))?;
    let system = partner_time(system).map_err(|_| Skip::BadTime("systemTime"))?;
    let time = system.instant().unwrap_or_else(|| system.local.and_utc());
    let display: Option<PartnerTime> = match record.display_time.as_deref() {
        Some(d) => Some(partner_time(d).map_err(|_| Skip::BadTime("displayTime"))?),
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

const COMMON_PAYLOAD: [&str; 6] =
    ["systemTime", "displayTime", "transmitterId", "transmitterTicks", "transmitterGeneration", "displayDevice"];

/// The datum id for a Dexcom record mapped to `kind`.
pub fn datum_id(user: &UserId, kind: &str, record_id: &str) -> DatumId {
    DatumId::derive(user, PROVIDER, kind, &[record_id])
}

/// The common fields of a datum from one record (`raw`: as sent, for the payload).
fn base(user: &UserId, kind: &'static str, record: &Common, raw: &Value, extra_payload: &[&str]) -> Result<Base, Skip> {
    let id = record.id().ok_or(Skip::NoRecordId)?;
    let t = times(record)?;
    let mut keys: Vec<&str> = COMMON_PAYLOAD.to_vec();
    keys.extend_from_slice(extra_payload);
    Ok(Base {
        id: datum_id(user, kind, id),
        kind,
        time: t.time,
        device_time: t.device_time,
        timezone_offset: t.timezone_offset,
        clock_drift_offset: t.clock_drift_offset,
        conversion_offset: None,
        device_id: device_id(record.transmitter_generation.as_deref(), record.transmitter_id.as_deref()),
        origin: Origin {
            id: id.to_owned(),
            name: ORIGIN_NAME.into(),
            kind: "service",
            version: "3.0".into(),
            time: None,
        },
        payload: Some(pick_value(raw, &keys)),
        annotations: Vec::new(),
        notes: Vec::new(),
    })
}

fn validated(d: Datum) -> Result<Datum, Skip> {
    d.validate().map_err(|e| Skip::Invalid(e.to_string()))?;
    check_time(d.base()).map_err(|e| Skip::Invalid(e.into()))?;
    Ok(d)
}

/// Glucose units as Tidepool spells them (Dexcom: `mg/dL`, `mmol/L`; absent means mg/dL).
fn glucose_units(unit: Option<&str>) -> Result<&'static str, Skip> {
    match unit {
        Some("mg/dL") | None => Ok(MG_DL),
        Some("mmol/L") => Ok(MMOL_L),
        Some(other) => Err(Skip::Unit(other.to_owned())),
    }
}

/// An EGV record → `cbg` (39 and 401 carry Tidepool's out-of-range annotation).
pub fn egv(user: &UserId, record: &Value) -> Result<Cbg, Skip> {
    let r: dx::Egv = read(record);
    let mut base = base(user, "cbg", &r.common, record, &["displayApp", "status", "trend", "trendRate"])?;
    match r.unit.as_deref() {
        Some("mg/dL") | None => {}
        Some(other) => return Err(Skip::Unit(other.to_owned())),
    }
    let raw = r.value.ok_or(Skip::NoValue)?;
    let status = r.status.as_deref();
    let (value, annotation) = if raw < 40.0 || status == Some("low") {
        (39, Some(json!({"code": "bg/out-of-range", "value": "low", "threshold": 40})))
    } else if raw > 400.0 || status == Some("high") {
        (401, Some(json!({"code": "bg/out-of-range", "value": "high", "threshold": 400})))
    } else {
        (raw.round() as i64, None)
    };
    let trend_rate = r.trend_rate.filter(|_| annotation.is_none());
    let rate_units = match r.rate_unit.as_deref() {
        Some("mg/dL/min") | None => Some("mg/dL/minute"),
        _ => None,
    };
    base.annotations = annotation.into_iter().collect();
    let cbg = Cbg {
        base,
        units: MG_DL,
        value,
        trend: r.trend.as_deref().and_then(trend).filter(|_| value != 39 && value != 401),
        trend_rate_units: trend_rate.and(rate_units),
        trend_rate: trend_rate.filter(|_| rate_units.is_some()),
    };
    cbg.validate().map_err(|e| Skip::Invalid(e.to_string()))?;
    check_time(&cbg.base).map_err(|e| Skip::Invalid(e.into()))?;
    Ok(cbg)
}

/// A calibration → `deviceEvent/calibration`.
pub fn calibration(user: &UserId, record: &Value) -> Result<Datum, Skip> {
    let r: dx::Calibration = read(record);
    let base = base(user, "deviceEvent", &r.common, record, &["unit", "value"])?;
    let (units, value) = tidepool_glucose(glucose_units(r.unit.as_deref())?, r.value.ok_or(Skip::NoValue)?);
    validated(DeviceEvent { base, event: DeviceEventKind::Calibration { units, value } }.into())
}

/// An alert record → `alert` (issued at its systemTime).
pub fn alert(user: &UserId, record: &Value) -> Result<Datum, Skip> {
    let r: dx::AlertRecord = read(record);
    let base = base(user, "alert", &r.common, record, &["alertName", "alertState", "displayApp"])?;
    let name = r.alert_name.as_deref().filter(|n| !n.is_empty()).ok_or(Skip::NoValue)?;
    let issued_time = base.time;
    validated(Alert { base, name: name.to_owned(), priority: None, issued_time }.into())
}

/// What an event record asks of the store.
#[derive(Debug, Clone, PartialEq)]
pub enum EventChange {
    /// Created or updated: write (an update replaces the datum with the same id).
    Upsert(Box<Datum>),
    /// Deleted at Dexcom: remove our datum.
    Remove(DatumId),
}

/// The Tidepool type a Dexcom event type maps to.
fn event_kind(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "carbs" => "food",
        "insulin" => "insulin",
        "bloodGlucose" => "smbg",
        "exercise" => "physicalActivity",
        "health" | "notes" | "note" => "reportedState",
        _ => return None,
    })
}

/// An event → `food`, `insulin`, `smbg`, `physicalActivity` or `reportedState`; `updated`
/// events replace their datum, `deleted` ones remove it.
pub fn event(user: &UserId, record: &Value) -> Result<EventChange, Skip> {
    let r: dx::Event = read(record);
    let id = r.common.id().ok_or(Skip::NoRecordId)?;
    let event_type = r.event_type.as_deref().unwrap_or_default();
    let kind = event_kind(event_type).ok_or_else(|| Skip::UnknownEvent(event_type.chars().take(40).collect()))?;
    if r.event_status.as_deref() == Some("deleted") {
        return Ok(EventChange::Remove(datum_id(user, kind, id)));
    }
    let mut base = base(user, kind, &r.common, record, &["eventType", "eventSubType", "eventStatus", "unit", "value"])?;
    let sub = r.event_sub_type.as_deref();
    let unit = r.unit.as_deref();
    let amount = || r.value.number().ok_or_else(|| Skip::BadValue(r.value.describe()));
    let note = || r.value.text().map(str::trim).filter(|v| !v.is_empty()).map(|v| v.chars().take(1000).collect());
    let datum: Datum = match event_type {
        "carbs" => {
            match unit {
                Some("grams") | None => {}
                Some(other) => return Err(Skip::Unit(other.to_owned())),
            }
            Food::grams(base, amount()?).into()
        }
        "insulin" => {
            match unit {
                Some("units") | None => {}
                Some(other) => return Err(Skip::Unit(other.to_owned())),
            }
            // fastActing / longActing stays in payload.eventSubType: Tidepool's formulation
            // schema cannot validate any value (docs/SCHEMA-DEFECTS.md).
            Insulin { base, dose: Dose { total: amount()?, units: "Units" } }.into()
        }
        "bloodGlucose" => {
            let (units, value) = tidepool_glucose(glucose_units(unit)?, amount()?);
            Smbg { base, sub_type: None, units, value }.into()
        }
        "exercise" => {
            let minutes = match unit {
                Some("minutes") | None => r.value.number(),
                Some(other) => return Err(Skip::Unit(other.to_owned())),
            };
            let reported_intensity = match sub {
                Some("light") => Some("low"),
                Some("medium") => Some("medium"),
                Some("heavy") => Some("high"),
                _ => None,
            };
            PhysicalActivity {
                base,
                reported_intensity,
                duration: minutes.map(|value| Amount { units: "minutes", value }),
            }
            .into()
        }
        "health" => {
            let state = match sub {
                Some("illness") => "illness",
                Some("stress") => "stress",
                Some("highSymptoms") => "hyperglycemiaSymptoms",
                Some("lowSymptoms") => "hypoglycemiaSymptoms",
                Some("cycle") => "cycle",
                Some("alcohol") => "alcohol",
                _ => "other",
            };
            let state_other = (state == "other").then(|| sub.unwrap_or_default().chars().take(100).collect::<String>());
            if let Some(note) = note() {
                base.notes = vec![note];
            }
            ReportedState {
                base,
                states: vec![StateEntry { state, state_other: state_other.filter(|s| !s.is_empty()) }],
            }
            .into()
        }
        // A free-text note: Tidepool keeps notes on a datum; the closest home is a reported
        // state of kind `other` carrying the text (README, "Where Dexcom notes go").
        _ => {
            base.notes = vec![note().ok_or(Skip::NoValue)?];
            ReportedState { base, states: vec![StateEntry { state: "other", state_other: None }] }.into()
        }
    };
    validated(datum).map(|d| EventChange::Upsert(Box::new(d)))
}

/// A content hash of a device's alert settings, ignoring when they were read.
pub fn settings_fingerprint(record: &Value) -> String {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(o) => Value::Object(
                o.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "lastUploadDate" | "systemTime" | "displayTime"))
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    let digest = Sha256::digest(strip(record).to_string().as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// A device record → `cgmSettings` from its default (or first) alert schedule. The datum's id
/// comes from the settings' content, its time from when they last changed (or the upload).
pub fn device(user: &UserId, record: &Value) -> Result<Datum, Skip> {
    let r: dx::Device = read(record);
    let settings: &[AlertSetting] = r.schedule().and_then(|s| s.alert_settings.as_deref()).unwrap_or_default();
    let changed = settings
        .iter()
        .filter_map(|s| s.system_time.as_deref())
        .filter_map(|t| partner_time(t).ok())
        .map(|t| t.instant().unwrap_or_else(|| t.local.and_utc()))
        .max();
    let uploaded = r
        .last_upload_date
        .as_deref()
        .and_then(|t| partner_time(t).ok())
        .map(|t| t.instant().unwrap_or_else(|| t.local.and_utc()));
    let time = changed.or(uploaded).ok_or(Skip::BadTime("lastUploadDate"))?;
    let fingerprint = settings_fingerprint(record);
    let tx = r.transmitter_id.as_deref().unwrap_or_default();
    let find = |name: &str| settings.iter().find(|s| s.alert_name.as_deref() == Some(name));
    let enabled = |s: &AlertSetting| s.enabled.unwrap_or(false);
    let snooze_ms = |s: &AlertSetting| s.snooze.map_or(0, |m| (m * 60_000.0).round() as i64);
    // Levels and rates are written in mmol/L: a whole mg/dL number matches both branches of
    // Tidepool's blood `value.v1.yaml` oneOf (docs/SCHEMA-DEFECTS.md), and mmol/L is the unit
    // Tidepool stores. Dexcom's own values stay in payload.alertSchedules.
    let level = |name: &str| {
        find(name).and_then(|s| {
            let mmol = match s.unit.as_deref() {
                Some("mg/dL") | None => s.value.map(mgdl_to_mmoll),
                Some("mmol/L") => s.value,
                Some(_) => None,
            };
            mmol.map(|level| LevelAlert { enabled: enabled(s), level, snooze: snooze_ms(s) })
        })
    };
    let rate = |name: &str, sign: f64| {
        find(name).and_then(|s| {
            let mmol = match s.unit.as_deref() {
                Some("mg/dL/min") | None => s.value.map(mgdl_to_mmoll),
                Some("mmol/L/min") => s.value,
                Some(_) => None,
            };
            mmol.map(|v| RateAlert { enabled: enabled(s), rate: sign * v.abs() })
        })
    };
    let rate_of_change_alert = match (rate("fall", -1.0), rate("rise", 1.0)) {
        (Some(fall_rate), Some(rise_rate)) => Some(RateOfChangeAlert { fall_rate, rise_rate }),
        _ => None,
    };
    let mut keys: Vec<&str> =
        vec!["lastUploadDate", "transmitterGeneration", "transmitterId", "displayDevice", "displayApp"];
    keys.push("alertSchedules");
    let settings_datum = CgmSettings {
        base: Base {
            id: DatumId::derive(user, PROVIDER, "cgmSettings", &[tx, &fingerprint]),
            kind: "cgmSettings",
            time,
            device_time: None,
            timezone_offset: None,
            clock_drift_offset: None,
            conversion_offset: None,
            device_id: device_id(r.transmitter_generation.as_deref(), Some(tx)),
            origin: Origin {
                id: format!("device:{tx}:{fingerprint}").chars().take(100).collect(),
                name: ORIGIN_NAME.into(),
                kind: "service",
                version: "3.0".into(),
                time: None,
            },
            payload: Some(pick_value(record, &keys)),
            annotations: Vec::new(),
            notes: Vec::new(),
        },
        units: MMOL_L,
        manufacturers: vec!["Dexcom".into()],
        model: r.display_device.as_deref().filter(|s| !s.is_empty()).map(|s| s.chars().take(100).collect()),
        transmitter_id: Some(tx.to_owned()).filter(|t| !t.is_empty()),
        software_version: None,
        high_alerts: level("high"),
        low_alerts: level("low"),
        out_of_range_alerts: find("outOfRange").map(|s| OutOfRangeAlert { enabled: enabled(s), snooze: snooze_ms(s) }),
        rate_of_change_alert,
    };
    validated(settings_datum.into())
}
