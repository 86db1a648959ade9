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
    /// When the partner last changed the record, when it says so. `None` otherwise: the store
    /// then sets when it first stored this version of the datum (so an edit is always newer
    /// than what it replaces, as the platform's `origin.older` deduplicator needs).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "crate::time::serialize_opt")]
    pub time: Option<DateTime<Utc>>,
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
    /// Free-text notes the person wrote (Tidepool's `notes`, 1–100 strings).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
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

fn check(ok: bool, field: &'static str, rule: &'static str) -> Result<(), Invalid> {
    if ok { Ok(()) } else { Err(Invalid { field, rule }) }
}

fn within(v: f64, lo: f64, hi: f64, field: &'static str, rule: &'static str) -> Result<(), Invalid> {
    check(v.is_finite() && (lo..=hi).contains(&v), field, rule)
}

fn within_opt(v: Option<f64>, lo: f64, hi: f64, field: &'static str, rule: &'static str) -> Result<(), Invalid> {
    v.map_or(Ok(()), |v| within(v, lo, hi, field, rule))
}

/// Tidepool's factor between mg/dL and mmol/L (`18.01559`, from the molar mass of glucose).
pub const MGDL_PER_MMOLL: f64 = 18.01559;

pub fn mgdl_to_mmoll(mgdl: f64) -> f64 {
    mgdl / MGDL_PER_MMOLL
}

pub fn mmoll_to_mgdl(mmoll: f64) -> f64 {
    mmoll * MGDL_PER_MMOLL
}

/// Blood-glucose units as Tidepool spells them.
pub const MG_DL: &str = "mg/dL";
pub const MMOL_L: &str = "mmol/L";

/// Tidepool's glucose value bounds per unit (`valuemgdl`: 0–1000, `valuemmol`: 0–55).
pub fn validate_glucose(units: &str, value: f64, field: &'static str) -> Result<(), Invalid> {
    match units {
        MG_DL => {
            within(value, 0.0, 1000.0, field, "mg/dL values are 0–1000")?;
            check(value.fract() == 0.0, field, "mg/dL values are whole numbers")
        }
        MMOL_L => within(value, 0.0, 55.0, field, "mmol/L values are 0–55"),
        _ => Err(Invalid { field: "units", rule: "must be mg/dL or mmol/L" }),
    }
}

/// A glucose reading in a form Tidepool's schemas accept: mg/dL values are integers there
/// (`blood/valuemgdl.v1.yaml`), so a fractional mg/dL value is written in mmol/L with
/// Tidepool's constant — exact, nothing rounded away. Everything else is unchanged.
pub fn tidepool_glucose(units: &'static str, value: f64) -> (&'static str, f64) {
    if units == MG_DL && value.fract() != 0.0 { (MMOL_L, mgdl_to_mmoll(value)) } else { (units, value) }
}

/// `162.0` → `162`, recursively; fractional numbers are left alone.
fn whole_numbers_as_integers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                // Exactly representable integers only (|x| < 2^53).
                if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                    *n = serde_json::Number::from(f as i64);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(o) => o.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

/// A wall-clock reading in Tidepool's `YYYY-MM-DDThh:mm:ss` form (no zone).
fn is_device_time(s: &str) -> bool {
    s.len() == 19 && chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").is_ok()
}

impl Base {
    fn validate(&self) -> Result<(), Invalid> {
        if let Some(tz) = self.timezone_offset {
            check((-14 * 60..=14 * 60).contains(&tz), "timezoneOffset", "must be within ±14 h")?;
        }
        if let Some(d) = self.clock_drift_offset {
            check(d.abs() <= 24 * 3_600_000, "clockDriftOffset", "must be within ±24 h")?;
        }
        if let Some(dt) = &self.device_time {
            check(is_device_time(dt), "deviceTime", "must be YYYY-MM-DDThh:mm:ss")?;
        }
        check(!self.origin.id.is_empty() && self.origin.id.len() <= 100, "origin.id", "1–100 characters")?;
        check(self.notes.len() <= 100, "notes", "at most 100")?;
        for n in &self.notes {
            check(!n.is_empty() && n.chars().count() <= 1000, "notes", "each 1–1000 characters")?;
        }
        Ok(())
    }
}

impl Cbg {
    /// Tidepool's rules for `cbg`.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.base.validate()?;
        validate_glucose(self.units, self.value as f64, "value")?;
        if let Some(r) = self.trend_rate {
            within(r, -100.0, 100.0, "trendRate", "must be within ±100")?;
            check(self.trend_rate_units.is_some(), "trendRateUnits", "required with trendRate")?;
        }
        Ok(())
    }
}

/// A fingerstick (or linked meter) reading (`smbg`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Smbg {
    #[serde(flatten)]
    pub base: Base,
    /// `manual`, `linked` or `scanned`, when the partner says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_type: Option<&'static str>,
    pub units: &'static str,
    pub value: f64,
}

impl Smbg {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.base.validate()?;
        validate_glucose(self.units, self.value, "value")
    }
}

/// Longest basal segment Tidepool accepts (7 days, ms).
pub const MAX_BASAL_DURATION_MS: i64 = 604_800_000;
/// Longest extended bolus Tidepool accepts (24 h, ms).
pub const MAX_BOLUS_DURATION_MS: i64 = 86_400_000;

/// A basal segment: `automated` (closed-loop micro-doses as a rate) or `suspend`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Basal {
    #[serde(flatten)]
    pub base: Base,
    pub delivery_type: BasalDelivery,
    /// Milliseconds.
    pub duration: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_duration: Option<i64>,
    /// Units per hour (absent for a suspend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BasalDelivery {
    Automated,
    Scheduled,
    Temp,
    Suspend,
}

impl Basal {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.base.validate()?;
        check((0..=MAX_BASAL_DURATION_MS).contains(&self.duration), "duration", "0–604800000 ms")?;
        if let Some(e) = self.expected_duration {
            check((self.duration..=MAX_BASAL_DURATION_MS).contains(&e), "expectedDuration", "duration–604800000 ms")?;
        }
        match self.delivery_type {
            BasalDelivery::Suspend => check(self.rate.is_none(), "rate", "a suspend delivers nothing"),
            _ => {
                check(self.rate.is_some(), "rate", "required")?;
                within_opt(self.rate, 0.0, 100.0, "rate", "0–100 U/h")
            }
        }
    }
}

/// A bolus. Which amounts are present follows the sub type: `normal` and `automated` carry
/// `normal`; `square` carries `extended` + `duration`; `dual/square` carries all three.
/// `expected*` appear only when what was programmed differs from what was delivered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bolus {
    #[serde(flatten)]
    pub base: Base,
    pub sub_type: BolusKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normal: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_normal: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_extended: Option<f64>,
    /// Milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_duration: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BolusKind {
    #[serde(rename = "normal")]
    Normal,
    #[serde(rename = "square")]
    Square,
    #[serde(rename = "dual/square")]
    DualSquare,
    #[serde(rename = "automated")]
    Automated,
}

impl Bolus {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.base.validate()?;
        let amount = |v: Option<f64>, f| within_opt(v, 0.0, 100.0, f, "0–100 U");
        amount(self.normal, "normal")?;
        amount(self.expected_normal, "expectedNormal")?;
        amount(self.extended, "extended")?;
        amount(self.expected_extended, "expectedExtended")?;
        let has_normal = self.normal.is_some();
        let has_extended = self.extended.is_some() && self.duration.is_some();
        match self.sub_type {
            BolusKind::Normal | BolusKind::Automated => {
                check(has_normal, "normal", "required")?;
                check(self.extended.is_none() && self.duration.is_none(), "extended", "not for this subType")?;
            }
            BolusKind::Square => {
                check(has_extended, "extended", "extended and duration required")?;
                check(self.normal.is_none(), "normal", "not for a square bolus")?;
            }
            BolusKind::DualSquare => {
                check(has_normal && has_extended, "normal", "normal, extended and duration required")?
            }
        }
        if let (Some(n), Some(e)) = (self.normal, self.expected_normal) {
            check(e >= n, "expectedNormal", "at least normal")?;
        }
        if let (Some(x), Some(e)) = (self.extended, self.expected_extended) {
            check(e >= x, "expectedExtended", "at least extended")?;
        }
        if let Some(d) = self.duration {
            check((0..=MAX_BOLUS_DURATION_MS).contains(&d), "duration", "0–86400000 ms")?;
        }
        if let Some(e) = self.expected_duration {
            check(
                self.duration.is_some_and(|d| e >= d) && e <= MAX_BOLUS_DURATION_MS,
                "expectedDuration",
                "duration–86400000 ms",
            )?;
        }
        Ok(())
    }
}

/// Carbohydrates eaten (`food` with `nutrition.carbohydrate`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Food {
    #[serde(flatten)]
    pub base: Base,
    pub nutrition: Nutrition,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Nutrition {
    pub carbohydrate: Carbohydrate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Carbohydrate {
    pub net: f64,
    pub units: &'static str,
}

impl Food {
    pub fn grams(base: Base, net: f64) -> Self {
        Self { base, nutrition: Nutrition { carbohydrate: Carbohydrate { net, units: "grams" } } }
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        self.base.validate()?;
        within(self.nutrition.carbohydrate.net, 0.0, 1000.0, "nutrition.carbohydrate.net", "0–1000 g")
    }
}

/// Insulin logged outside a pump (pen or syringe): `insulin` with `dose.total`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Insulin {
    #[serde(flatten)]
    pub base: Base,
    pub dose: Dose,
    // No `formulation`: both branches of Tidepool's `insulin/formulation.v1.yaml` oneOf have no
    // required member, so every formulation object matches both and fails validation
    // (docs/SCHEMA-DEFECTS.md). The partner's own words (e.g. Dexcom `eventSubType`) stay in `payload`.
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dose {
    pub total: f64,
    pub units: &'static str,
}

impl Insulin {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.base.validate()?;
        within(self.dose.total, 0.0, 250.0, "dose.total", "0–250 U")
    }
}

/// A device event: `calibration`, `status` (suspend/resume), `timeChange` or `alarm`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceEvent {
    #[serde(flatten)]
    pub base: Base,
    #[serde(flatten)]
    pub event: DeviceEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "subType", rename_all = "camelCase")]
pub enum DeviceEventKind {
    Calibration {
        units: &'static str,
        value: f64,
    },
    /// Insulin delivery suspended or resumed (`reason` only when the device says).
    Status {
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        duration: Option<i64>,
    },
    /// The device clock was changed, in Tidepool's `change {agent, from, to}` shape: the
    /// newer `method`/`from`/`to` shape also matches the legacy branch of
    /// `timechange.v1.yaml`'s oneOf and so can never validate (docs/SCHEMA-DEFECTS.md).
    TimeChange {
        change: TimeChangeChange,
    },
    Alarm {
        #[serde(rename = "alarmType")]
        alarm_type: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeChangeChange {
    /// `manual` or `automatic`.
    pub agent: &'static str,
    /// Wall clock before the change, `YYYY-MM-DDThh:mm:ss`.
    pub from: String,
    /// Wall clock after the change, `YYYY-MM-DDThh:mm:ss`.
    pub to: String,
}

/// Tidepool's alarm types (anything else is `other`).
pub const ALARM_TYPES: [&str; 9] = [
    "auto_off",
    "low_insulin",
    "low_power",
    "no_delivery",
    "no_insulin",
    "no_power",
    "occlusion",
    "other",
    "over_limit",
];

impl DeviceEvent {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.base.validate()?;
        match &self.event {
            DeviceEventKind::Calibration { units, value } => validate_glucose(units, *value, "value"),
            DeviceEventKind::Status { status, duration, .. } => {
                check(matches!(*status, "suspended" | "resumed"), "status", "suspended or resumed")?;
                check(duration.is_none_or(|d| d >= 0), "duration", "not negative")
            }
            DeviceEventKind::TimeChange { change } => {
                check(matches!(change.agent, "automatic" | "manual"), "change.agent", "automatic or manual")?;
                check(is_device_time(&change.from), "change.from", "must be YYYY-MM-DDThh:mm:ss")?;
                check(is_device_time(&change.to), "change.to", "must be YYYY-MM-DDThh:mm:ss")
            }
            DeviceEventKind::Alarm { alarm_type } => {
                check(ALARM_TYPES.contains(alarm_type), "alarmType", "a Tidepool alarm type")
            }
        }
    }
}

/// A device alert the person was shown (`alert`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    #[serde(flatten)]
    pub base: Base,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<&'static str>,
    #[serde(serialize_with = "crate::time::serialize")]
    pub issued_time: DateTime<Utc>,
}

impl Alert {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.base.validate()?;
        check(!self.name.is_empty() && self.name.chars().count() <= 100, "name", "1–100 characters")
    }
}

/// CGM alert settings (`cgmSettings`), in Tidepool's published shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CgmSettings {
    #[serde(flatten)]
    pub base: Base,
    pub units: &'static str,
    pub manufacturers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transmitter_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_alerts: Option<LevelAlert>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_alerts: Option<LevelAlert>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_range_alerts: Option<OutOfRangeAlert>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_of_change_alert: Option<RateOfChangeAlert>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelAlert {
    pub enabled: bool,
    pub level: f64,
    /// Milliseconds.
    pub snooze: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutOfRangeAlert {
    pub enabled: bool,
    /// Milliseconds.
    pub snooze: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateOfChangeAlert {
    pub fall_rate: RateAlert,
    pub rise_rate: RateAlert,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateAlert {
    pub enabled: bool,
    /// Per minute in the settings' units (negative for falls).
    pub rate: f64,
}

impl CgmSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.base.validate()?;
        for (a, f) in [(&self.high_alerts, "highAlerts"), (&self.low_alerts, "lowAlerts")] {
            if let Some(a) = a {
                validate_glucose(self.units, a.level, f)?;
                check((0..=86_400_000).contains(&a.snooze), f, "snooze 0–86400000 ms")?;
            }
        }
        if let Some(o) = &self.out_of_range_alerts {
            check((0..=86_400_000).contains(&o.snooze), "outOfRangeAlerts", "snooze 0–86400000 ms")?;
        }
        if let Some(r) = &self.rate_of_change_alert {
            let (f, u) = (r.fall_rate.rate, r.rise_rate.rate);
            if self.units == MG_DL {
                check(
                    f.fract() == 0.0 && (-10.0..0.0).contains(&f),
                    "rateOfChangeAlert.fallRate",
                    "whole mg/dL/min in [-10, 0)",
                )?;
                check(
                    u.fract() == 0.0 && u > 0.0 && u <= 10.0,
                    "rateOfChangeAlert.riseRate",
                    "whole mg/dL/min in (0, 10]",
                )?;
            } else {
                check((-0.55..0.0).contains(&f), "rateOfChangeAlert.fallRate", "mmol/L/min in [-0.55, 0)")?;
                check(u > 0.0 && u <= 0.55, "rateOfChangeAlert.riseRate", "mmol/L/min in (0, 0.55]")?;
            }
        }
        check(!self.manufacturers.is_empty() && self.manufacturers.len() <= 10, "manufacturers", "1–10")
    }
}

/// The pump's status at one moment (`pumpStatus`): battery, reservoir, basal delivery state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PumpStatus {
    #[serde(flatten)]
    pub base: Base,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery: Option<Battery>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservoir: Option<Reservoir>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basal_delivery: Option<BasalDeliveryState>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Battery {
    /// Fraction 0–1.
    pub remaining: f64,
    pub units: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reservoir {
    pub remaining: f64,
    pub units: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BasalDeliveryState {
    /// `scheduled` or `suspended` (what a CareLink snapshot can tell).
    pub state: &'static str,
}

impl PumpStatus {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.base.validate()?;
        within_opt(self.battery.as_ref().map(|b| b.remaining), 0.0, 1.0, "battery.remaining", "0–1")?;
        within_opt(self.reservoir.as_ref().map(|r| r.remaining), 0.0, 10_000.0, "reservoir.remaining", "0–10000 U")
    }
}

/// Exercise the person logged (`physicalActivity`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhysicalActivity {
    #[serde(flatten)]
    pub base: Base,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_intensity: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Amount>,
}

/// `{units, value}` (durations in `minutes`, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Amount {
    pub units: &'static str,
    pub value: f64,
}

impl PhysicalActivity {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.base.validate()?;
        if let Some(i) = self.reported_intensity {
            check(matches!(i, "low" | "medium" | "high"), "reportedIntensity", "low, medium or high")?;
        }
        if let Some(d) = &self.duration {
            check(d.units == "minutes", "duration.units", "minutes")?;
            within(d.value, 0.0, 10_080.0, "duration.value", "0–10080 minutes")?;
        }
        Ok(())
    }
}

/// How the person felt (`reportedState`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportedState {
    #[serde(flatten)]
    pub base: Base,
    pub states: Vec<StateEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateEntry {
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_other: Option<String>,
}

pub const STATES: [&str; 7] =
    ["alcohol", "cycle", "hyperglycemiaSymptoms", "hypoglycemiaSymptoms", "illness", "other", "stress"];

impl ReportedState {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.base.validate()?;
        check((1..=100).contains(&self.states.len()), "states", "1–100 entries")?;
        for s in &self.states {
            check(STATES.contains(&s.state), "states.state", "a Tidepool state")?;
            if let Some(o) = &s.state_other {
                check(!o.is_empty() && o.chars().count() <= 100, "states.stateOther", "1–100 characters")?;
            }
        }
        Ok(())
    }
}

/// Any datum a driver produces.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Datum {
    Cbg(Cbg),
    Smbg(Smbg),
    Basal(Basal),
    Bolus(Bolus),
    Food(Food),
    Insulin(Insulin),
    DeviceEvent(DeviceEvent),
    Alert(Alert),
    CgmSettings(CgmSettings),
    PumpStatus(PumpStatus),
    PhysicalActivity(PhysicalActivity),
    ReportedState(ReportedState),
}

macro_rules! each_datum {
    ($self:ident, $d:ident => $e:expr) => {
        match $self {
            Datum::Cbg($d) => $e,
            Datum::Smbg($d) => $e,
            Datum::Basal($d) => $e,
            Datum::Bolus($d) => $e,
            Datum::Food($d) => $e,
            Datum::Insulin($d) => $e,
            Datum::DeviceEvent($d) => $e,
            Datum::Alert($d) => $e,
            Datum::CgmSettings($d) => $e,
            Datum::PumpStatus($d) => $e,
            Datum::PhysicalActivity($d) => $e,
            Datum::ReportedState($d) => $e,
        }
    };
}

impl Datum {
    pub fn base(&self) -> &Base {
        each_datum!(self, d => &d.base)
    }

    /// Tidepool's rules for this datum's type.
    pub fn validate(&self) -> Result<(), Invalid> {
        each_datum!(self, d => d.validate())
    }

    /// The JSON Tidepool would store. Whole numbers are written as integers (`162`, not
    /// `162.0`), as Tidepool's platform writes them — its schemas type mg/dL values as integers.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        whole_numbers_as_integers(&mut v);
        v
    }

    /// The Tidepool schema (relative to `TidepoolApi/reference/data/models`) this datum must
    /// validate against.
    pub fn schema(&self) -> &'static str {
        match self {
            Datum::Cbg(_) => "blood/continuousglucose.v1.yaml",
            Datum::Smbg(_) => "blood/selfmonitoredglucose.v1.yaml",
            Datum::Basal(b) => match b.delivery_type {
                BasalDelivery::Automated => "basal/automated.v1.yaml",
                BasalDelivery::Scheduled => "basal/scheduled.v1.yaml",
                BasalDelivery::Temp => "basal/temporary.v1.yaml",
                BasalDelivery::Suspend => "basal/suspend.v1.yaml",
            },
            Datum::Bolus(b) => match b.sub_type {
                BolusKind::Normal => "bolus/normal.v1.yaml",
                BolusKind::Square => "bolus/extended.v1.yaml",
                BolusKind::DualSquare => "bolus/combination.v1.yaml",
                BolusKind::Automated => "bolus/automated.v1.yaml",
            },
            Datum::Food(_) => "food/food.v1.yaml",
            Datum::Insulin(_) => "insulin/insulin.v1.yaml",
            Datum::DeviceEvent(e) => match e.event {
                DeviceEventKind::Calibration { .. } => "deviceevent/calibration.v1.yaml",
                DeviceEventKind::Status { .. } => "deviceevent/status.v1.yaml",
                DeviceEventKind::TimeChange { .. } => "deviceevent/timechange.v1.yaml",
                DeviceEventKind::Alarm { .. } => "deviceevent/alarm.v1.yaml",
            },
            Datum::Alert(_) => "alert.v1.yaml",
            Datum::CgmSettings(_) => "cgmsettings.v1.yaml",
            Datum::PumpStatus(_) => "pumpstatus.v1.yaml",
            Datum::PhysicalActivity(_) => "activity/physical/physical.v1.yaml",
            Datum::ReportedState(_) => "state/reportedstate.v1.yaml",
        }
    }
}

macro_rules! into_datum {
    ($($t:ident),*) => {$(
        impl From<$t> for Datum {
            fn from(d: $t) -> Self {
                Datum::$t(d)
            }
        }
    )*};
}
into_datum!(
    Cbg,
    Smbg,
    Basal,
    Bolus,
    Food,
    Insulin,
    DeviceEvent,
    Alert,
    CgmSettings,
    PumpStatus,
    PhysicalActivity,
    ReportedState
);

#[cfg(test)]
mod tests {
    use super::*;

    fn base(kind: &'static str) -> Base {
        let t = DateTime::parse_from_rfc3339("2026-03-07T12:00:00Z").unwrap().to_utc();
        Base {
            id: DatumId::derive(&crate::UserId::parse("0123456789").unwrap(), "test", kind, &["1"]),
            kind,
            time: t,
            device_time: Some("2026-03-07T07:00:00".into()),
            timezone_offset: Some(-300),
            clock_drift_offset: None,
            conversion_offset: None,
            device_id: None,
            origin: Origin { id: "1".into(), name: "test".into(), kind: "service", version: "1".into(), time: Some(t) },
            payload: None,
            annotations: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn bolus_rules() {
        let mut b = Bolus {
            base: base("bolus"),
            sub_type: BolusKind::Normal,
            normal: Some(2.5),
            expected_normal: Some(3.0),
            extended: None,
            expected_extended: None,
            duration: None,
            expected_duration: None,
        };
        assert!(b.validate().is_ok());
        let j = serde_json::to_value(&b).unwrap();
        assert_eq!(j["subType"], "normal");
        assert_eq!(j["type"], "bolus");
        b.expected_normal = Some(2.0);
        assert_eq!(b.validate().unwrap_err().field, "expectedNormal");
        b.expected_normal = None;
        b.sub_type = BolusKind::DualSquare;
        assert!(b.validate().is_err());
        b.extended = Some(1.0);
        b.duration = Some(3_600_000);
        assert!(b.validate().is_ok());
        assert_eq!(serde_json::to_value(&b).unwrap()["subType"], "dual/square");
        b.normal = Some(150.0);
        assert_eq!(b.validate().unwrap_err().field, "normal");
    }

    #[test]
    fn basal_and_device_events_serialize_as_tidepool() {
        let b = Basal {
            base: base("basal"),
            delivery_type: BasalDelivery::Automated,
            duration: 300_000,
            expected_duration: None,
            rate: Some(0.6),
            schedule_name: None,
        };
        b.validate().unwrap();
        assert_eq!(serde_json::to_value(&b).unwrap()["deliveryType"], "automated");
        let mut s = b.clone();
        s.delivery_type = BasalDelivery::Suspend;
        assert!(s.validate().is_err(), "a suspend has no rate");
        let e = DeviceEvent { base: base("deviceEvent"), event: DeviceEventKind::Alarm { alarm_type: "occlusion" } };
        e.validate().unwrap();
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(
            (j["type"].as_str(), j["subType"].as_str(), j["alarmType"].as_str()),
            (Some("deviceEvent"), Some("alarm"), Some("occlusion"))
        );
    }

    #[test]
    fn glucose_units_and_conversion() {
        assert!(validate_glucose(MG_DL, 1000.0, "value").is_ok());
        assert!(validate_glucose(MG_DL, 1000.5, "value").is_err());
        assert!(validate_glucose(MMOL_L, 55.0, "value").is_ok());
        assert!(validate_glucose("mg/dl", 100.0, "value").is_err());
        assert!((mmoll_to_mgdl(mgdl_to_mmoll(180.0)) - 180.0).abs() < 1e-9);
        assert!((mgdl_to_mmoll(180.0) - 9.9913).abs() < 1e-4);
    }
}
