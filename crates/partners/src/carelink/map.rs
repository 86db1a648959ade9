//! Mapping a CareLink `display/message` payload (generations A, B and C) to Tidepool datums.
//!
//! CareLink times are the pump's wall clock with no zone (or a fake `Z` / `-00:00`). One UTC
//! offset is derived per payload from a phone/server clock pair and rounded to 15 minutes; a
//! `TIME_CHANGE` marker in the payload gives records before it the old offset. `deviceTime` is the
//! wall clock normalised; the raw string goes into `payload`.

use crate::fetch::json_number as number;
use crate::fetch::{check_time, four_digit_year, partner_time};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use model::datum::{
    Basal, BasalDelivery, BasalDeliveryState, Base, Battery, Bolus, BolusKind, Cbg, Datum, DeviceEvent,
    DeviceEventKind, Food, MG_DL, Origin, PumpStatus, Reservoir, Smbg, TimeChangeChange, tidepool_glucose,
};
use model::time::{device_time, parse_partner_time};
use model::{DatumId, UserId};
use serde_json::{Map, Value, json};

use crate::fetch::Batch;

const PROVIDER: &str = "carelink";
const ORIGIN_NAME: &str = "com.medtronic.carelink";
/// The 780G's auto-basal micro-dose interval.
const AUTO_BASAL_INTERVAL: Duration = Duration::minutes(5);
const QUARTER_HOUR_SECS: i64 = 15 * 60;

/// Which payload generation a document is (for support output and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// 2015 legacy (`datetime` like `Oct 20, 2015 13:21:00`).
    A,
    /// 2021 BLE endpoint (flat markers, `dateTime`).
    B,
    /// 2025 v13 (`timestamp`, markers with `data.dataValues`).
    C,
}

/// Why a whole payload cannot be mapped (single records are skipped and counted instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("not a CareLink patient-data document")]
    NotPatientData,
    #[error("no clock pair to derive the pump's UTC offset from")]
    NoClock,
}

/// The payload (with or without the `{metadata, patientData}` envelope).
pub fn patient_data(body: &Value) -> &Value {
    if body["patientData"].is_object() { &body["patientData"] } else { body }
}

pub fn generation(data: &Value) -> Generation {
    let first_sg = &data["sgs"][0];
    if first_sg.get("timestamp").is_some() || data["markers"][0].get("data").is_some() {
        Generation::C
    } else if first_sg["datetime"].as_str().is_some_and(|s| parse_partner_time(s).is_err()) {
        Generation::A
    } else {
        Generation::B
    }
}

/// A CareLink wall-clock reading: ISO (any zone suffix ignored: it is fake) or the legacy
/// `Oct 20, 2015 13:21:00`.
///
/// Readings (here and in `epoch_ms`) outside years 0–9999 are unreadable: no datum could carry
/// them, and keeping every wall clock and server time within those years keeps the payload offset
/// within ±10,000 years, so placing a record (`local − offset`, `server time + offset`) stays far
/// inside chrono's ±262,000 years instead of panicking on overflow (issue 10: a
/// `lastConduitUpdateServerDateTime` at chrono's last millisecond did; pinned in
/// tests/fuzz_parsers.rs).
fn wall_clock(raw: &str) -> Option<NaiveDateTime> {
    let local = match partner_time(raw) {
        Ok(t) => t.local,
        Err(_) => NaiveDateTime::parse_from_str(raw.trim(), "%b %d, %Y %H:%M:%S").ok()?,
    };
    four_digit_year(&local).then_some(local)
}

fn epoch_ms(v: &Value) -> Option<DateTime<Utc>> {
    let ms = number(v)? as i64;
    (ms > 0).then(|| DateTime::from_timestamp_millis(ms)).flatten().filter(four_digit_year)
}

/// The pump's offset from UTC (seconds east), rounded to a quarter hour. In order: the phone's
/// clock vs the server's receipt of the same upload (C, B), the real offset B writes into
/// `lastConduitDateTime`, the pump's clock vs the server's (A), the pump time in epoch form.
pub fn payload_offset(data: &Value) -> Result<i64, PayloadError> {
    let round = |secs: i64| (secs as f64 / QUARTER_HOUR_SECS as f64).round() as i64 * QUARTER_HOUR_SECS;
    let conduit_raw = data["lastConduitDateTime"].as_str().unwrap_or_default();
    let conduit = partner_time(conduit_raw).ok();
    if let Some(off) = conduit.and_then(|c| c.offset_secs).filter(|o| *o != 0) {
        return Ok(round(off as i64));
    }
    let conduit_server =
        epoch_ms(&data["lastConduitUpdateServerDateTime"]).or_else(|| epoch_ms(&data["lastConduitUpdateServerTime"]));
    if let (Some(c), Some(s)) = (conduit, conduit_server) {
        return Ok(round((c.local.and_utc() - s).num_seconds()));
    }
    let server = epoch_ms(&data["currentServerTime"]);
    let pump = data["sMedicalDeviceTime"]
        .as_str()
        .and_then(wall_clock)
        .or_else(|| epoch_ms(&data["medicalDeviceTime"]).map(|t| t.naive_utc()));
    match (pump, server) {
        (Some(p), Some(s)) => Ok(round((p.and_utc() - s).num_seconds())),
        _ => Err(PayloadError::NoClock),
    }
}

/// Insulin amounts are float32 artefacts (`2.424999952316284`): round to the pump's resolution
/// (CareLink reports `THOUSANDS` precision).
pub fn insulin_units(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// How one payload places wall-clock readings in UTC.
struct Clock {
    /// Seconds east of UTC now (after any time change in the payload).
    offset: i64,
    /// The last `TIME_CHANGE`: (old clock reading, new clock reading) at the same instant.
    change: Option<(NaiveDateTime, NaiveDateTime)>,
}

impl Clock {
    /// The offset for a record; `before` says it precedes the time change.
    fn offset(&self, before: bool) -> i64 {
        match (self.change, before) {
            (Some((old, new)), true) => self.offset + (old - new).num_seconds(),
            _ => self.offset,
        }
    }

    /// For a sequence of wall-clock readings in the order the pump recorded them: which come
    /// before the time change. Spring forward: everything below the new clock reading. Fall back:
    /// until the clock goes backwards or passes the old reading (the repeated hour is decided by
    /// order, not by value).
    fn before_flags(&self, times: &[NaiveDateTime]) -> Vec<bool> {
        let Some((old, new)) = self.change else { return vec![false; times.len()] };
        let mut crossed = false;
        let mut prev: Option<NaiveDateTime> = None;
        times
            .iter()
            .map(|t| {
                if !crossed {
                    crossed = if new > old {
                        *t >= new
                    } else {
                        *t >= old
                            || prev.is_some_and(|p| *t < p - Duration::minutes(10))
                            || *t < new - Duration::hours(23)
                    };
                }
                prev = Some(*t);
                !crossed
            })
            .collect()
    }
}

struct Ctx<'a> {
    user: &'a UserId,
    device_id: Option<String>,
    serial: String,
}

impl Ctx<'_> {
    fn base(&self, kind: &'static str, local: NaiveDateTime, offset_secs: i64, raw: Value, key: &str) -> Base {
        let time = (local - Duration::seconds(offset_secs)).and_utc();
        let ms = time.timestamp_millis().to_string();
        Base {
            id: DatumId::derive(self.user, PROVIDER, kind, &[&self.serial, key, &ms]),
            kind,
            time,
            device_time: Some(device_time(&local)),
            timezone_offset: Some(offset_secs / 60),
            clock_drift_offset: None,
            conversion_offset: None,
            device_id: self.device_id.clone(),
            origin: Origin {
                id: format!("{}:{key}:{ms}", self.serial).chars().take(100).collect(),
                name: ORIGIN_NAME.into(),
                kind: "service",
                version: "v13".into(),
                time,
            },
            payload: Some(raw),
            annotations: Vec::new(),
            notes: Vec::new(),
        }
    }
}

fn time_field(v: &Value) -> Option<&str> {
    ["timestamp", "dateTime", "datetime", "displayTime"].iter().find_map(|k| v[*k].as_str())
}

/// A marker's values: `data.dataValues` (C) or the marker itself (A, B).
fn values(marker: &Value) -> &Value {
    if marker["data"]["dataValues"].is_object() { &marker["data"]["dataValues"] } else { marker }
}

fn raw_payload(record: &Value, keys: &[&str]) -> Value {
    let src = values(record);
    let mut m = Map::new();
    if let Some(t) = time_field(record) {
        m.insert("time".into(), json!(t));
    }
    for k in keys {
        if let Some(v) = src.get(*k).or_else(|| record.get(*k)).filter(|v| !v.is_null()) {
            m.insert((*k).to_owned(), v.clone());
        }
    }
    Value::Object(m)
}

fn validated(d: Datum, batch: &mut Batch) -> Option<Datum> {
    match d.validate().map_err(|e| e.to_string()).and_then(|()| check_time(d.base()).map_err(str::to_owned)) {
        Ok(()) => Some(d),
        Err(e) => {
            batch.skip("invalid", &format!("{}: {e}", d.base().kind));
            None
        }
    }
}

/// Sensor states that mean "no reading" whatever `sg` says.
fn reading_ok(state: Option<&str>) -> bool {
    matches!(state, None | Some("NO_ERROR_MESSAGE" | "NORMAL" | "SG_BELOW_40_MG_DL" | "SG_ABOVE_400_MG_DL"))
}

/// An `sgs` slot without a reading — a sensor state that means "no reading" (warm-up, no data
/// from the pump, …), or `sg` 0 or −1, CareLink's "no value" — is not a record: it is neither
/// mapped nor counted as skipped, whatever its time says. Every other entry is a reading, mapped
/// or skipped and counted (issue 10: a reading with no time, or an unreadable `sg`, used to
/// vanish uncounted).
fn empty_slot(sg: &Value) -> bool {
    match sg["sensorState"].as_str() {
        Some("SG_BELOW_40_MG_DL" | "SG_ABOVE_400_MG_DL") => false,
        state if !reading_ok(state) => true,
        _ => number(&sg["sg"]).is_some_and(|v| v <= 0.0),
    }
}

/// Map a whole payload into `batch`.
pub fn map_payload(user: &UserId, body: &Value, batch: &mut Batch) -> Result<Generation, PayloadError> {
    let data = patient_data(body);
    if !data.is_object() || !(data["sgs"].is_array() || data["markers"].is_array()) {
        return Err(PayloadError::NotPatientData);
    }
    let generation = generation(data);
    let offset = payload_offset(data)?;
    let info = &data["medicalDeviceInformation"];
    let serial = info["deviceSerialNumber"]
        .as_str()
        .or(data["medicalDeviceSerialNumber"].as_str())
        .or(data["conduitSerialNumber"].as_str())
        .filter(|s| !s.is_empty() && *s != "0")
        .unwrap_or("unknown")
        .to_owned();
    let model_number = info["modelNumber"].as_str().or(data["pumpModelNumber"].as_str());
    let family = data["medicalDeviceFamily"].as_str().unwrap_or("CareLink");
    let device_id = Some(format!("{}_{serial}", model_number.unwrap_or(family)));
    let ctx = Ctx { user, device_id, serial };
    let markers: Vec<&Value> = data["markers"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let change = markers
        .iter()
        .filter(|m| m["type"].as_str() == Some("TIME_CHANGE"))
        .filter_map(|m| {
            let v = values(m);
            Some((wall_clock(v["previousDateTime"].as_str()?)?, wall_clock(v["newDateTime"].as_str()?)?))
        })
        .next_back();
    let clock = Clock { offset, change };

    // SGs, in the pump's order.
    let sgs: Vec<&Value> = data["sgs"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    // Empty slots with a readable time stay in the sequence: they help place the time change.
    let timed: Vec<(&Value, NaiveDateTime)> = sgs
        .iter()
        .filter_map(|s| match time_field(s).and_then(wall_clock) {
            Some(l) => Some((*s, l)),
            None if empty_slot(s) => None,
            // No time field at all is as unreadable as a malformed one (it used to drop silently).
            None => {
                batch.skip("bad_time", "unreadable SG time");
                None
            }
        })
        .collect();
    let flags = clock.before_flags(&timed.iter().map(|(_, t)| *t).collect::<Vec<_>>());
    for ((sg, local), before) in timed.iter().zip(flags) {
        if empty_slot(sg) {
            continue;
        }
        match map_sg(&ctx, sg, *local, clock.offset(before)) {
            Ok(d) => {
                if let Some(d) = validated(d, batch) {
                    batch.datums.push(d);
                }
            }
            Err(code) => batch.skip(code, "SG"),
        }
    }

    // Markers: grouped by type, each group in the pump's order.
    let mut by_type: Vec<(&str, Vec<(&Value, NaiveDateTime)>)> = Vec::new();
    for m in &markers {
        let kind = m["type"].as_str().unwrap_or_default();
        // Auto-mode transitions have no Tidepool type; nothing is lost to a reader. Not records,
        // so not counted either, whatever their time says.
        if kind == "AUTO_MODE_STATUS" {
            continue;
        }
        let Some(local) = time_field(m).and_then(wall_clock) else {
            batch.skip("bad_time", &format!("unreadable {kind} marker time"));
            continue;
        };
        match by_type.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, list)) => list.push((m, local)),
            None => by_type.push((kind, vec![(m, local)])),
        }
    }
    for (kind, list) in &by_type {
        let flags = clock.before_flags(&list.iter().map(|(_, t)| *t).collect::<Vec<_>>());
        for (i, ((m, local), before)) in list.iter().zip(flags).enumerate() {
            let offset = clock.offset(before);
            let mapped = match *kind {
                "INSULIN" => map_insulin(&ctx, m, *local, offset),
                "AUTO_BASAL_DELIVERY" => {
                    let next = list.get(i + 1).map(|(_, t)| *t);
                    map_auto_basal(&ctx, m, *local, next, offset)
                }
                "MEAL" => number(&values(m)["amount"])
                    .map(|g| Food::grams(ctx.base("food", *local, offset, raw_payload(m, &["amount"]), kind), g).into())
                    .ok_or("no_value"),
                "BG_READING" | "BG" => glucose_value(m)
                    .map(|(units, value)| {
                        let sub_type = (values(m)["bgSource"].as_str() == Some("BG_LINK")).then_some("linked");
                        let raw = raw_payload(m, &["value", "unitValue", "bgUnits", "bgSource"]);
                        Smbg { base: ctx.base("smbg", *local, offset, raw, kind), sub_type, units, value }.into()
                    })
                    .ok_or("no_value"),
                "CALIBRATION" => glucose_value(m)
                    .map(|(units, value)| {
                        let raw = raw_payload(m, &["value", "unitValue", "bgUnits", "calibrationSuccess"]);
                        DeviceEvent {
                            base: ctx.base("deviceEvent", *local, offset, raw, kind),
                            event: DeviceEventKind::Calibration { units, value },
                        }
                        .into()
                    })
                    .ok_or("no_value"),
                "LOW_GLUCOSE_SUSPENDED" => Ok(DeviceEvent {
                    base: ctx.base("deviceEvent", *local, offset, raw_payload(m, &[]), kind),
                    event: DeviceEventKind::Status {
                        status: "suspended",
                        // Low-glucose suspend is the pump's own decision.
                        reason: Some(json!({"suspended": "automatic"})),
                        duration: None,
                    },
                }
                .into()),
                "TIME_CHANGE" => {
                    let v = values(m);
                    match (
                        v["previousDateTime"].as_str().and_then(wall_clock),
                        v["newDateTime"].as_str().and_then(wall_clock),
                    ) {
                        (Some(from), Some(to)) => Ok(DeviceEvent {
                            base: ctx.base(
                                "deviceEvent",
                                *local,
                                offset,
                                raw_payload(m, &["previousDateTime", "newDateTime"]),
                                kind,
                            ),
                            event: DeviceEventKind::TimeChange {
                                change: TimeChangeChange {
                                    // MiniMed pumps change their clock only by the person's hand.
                                    agent: "manual",
                                    from: device_time(&from),
                                    to: device_time(&to),
                                },
                            },
                        }
                        .into()),
                        _ => Err("no_value"),
                    }
                }
                _ => Err("unknown_marker"),
            };
            match mapped {
                Ok(d) => {
                    if let Some(d) = validated(d, batch) {
                        batch.datums.push(d);
                    }
                }
                Err(code) => batch.skip(code, &format!("{kind} marker")),
            }
        }
    }

    // Alarms (the pump's `ALARM` notifications; alerts and reminders are not alarms). The history
    // reaches further back than the markers, so a clock change inside the payload can fall
    // after some alarms: they are placed with the offset before it, oldest first (alarms carry
    // no sequence; in an hour repeated by a change back, one could still be an hour off).
    let history = &data["notificationHistory"];
    let mut alarms: Vec<(&Value, NaiveDateTime)> = Vec::new();
    for n in history["clearedNotifications"]
        .as_array()
        .into_iter()
        .chain(history["activeNotifications"].as_array())
        .flatten()
    {
        if n["type"].as_str() != Some("ALARM") {
            continue;
        }
        match n["triggeredDateTime"].as_str().or(n["dateTime"].as_str()).and_then(wall_clock) {
            Some(local) => alarms.push((n, local)),
            None => batch.skip("bad_time", "unreadable alarm time"),
        }
    }
    alarms.sort_by_key(|(_, local)| *local);
    let flags = clock.before_flags(&alarms.iter().map(|(_, t)| *t).collect::<Vec<_>>());
    for ((n, local), before) in alarms.into_iter().zip(flags) {
        let fault = n["faultId"].as_str().map(str::to_owned).or_else(|| n["faultId"].as_i64().map(|f| f.to_string()));
        let raw = json!({
            "time": n["triggeredDateTime"].as_str().or(n["dateTime"].as_str()),
            "faultId": fault,
            "messageId": n["messageId"],
            "referenceGUID": n["referenceGUID"],
            "additionalInfo": n["additionalInfo"],
        });
        let key = format!("ALARM:{}", fault.as_deref().unwrap_or("?"));
        let d = DeviceEvent {
            base: ctx.base("deviceEvent", local, clock.offset(before), raw, &key),
            event: DeviceEventKind::Alarm { alarm_type: "other" },
        };
        if let Some(d) = validated(d.into(), batch) {
            batch.datums.push(d);
        }
    }

    if let Some(d) = pump_status(&ctx, data, offset).and_then(|d| validated(d, batch)) {
        batch.datums.push(d);
    }
    Ok(generation)
}

fn glucose_value(m: &Value) -> Option<(&'static str, f64)> {
    let v = values(m);
    let value = number(&v["value"]).or_else(|| number(&v["unitValue"]))?;
    // `sg` and meter values are mg/dL in every known payload, whatever `bgUnits` claims.
    (value > 0.0).then(|| tidepool_glucose(MG_DL, value))
}

/// A reading (never an [`empty_slot`]) → `cbg`; an `sg` missing or unreadable is a skip code.
fn map_sg(ctx: &Ctx, sg: &Value, local: NaiveDateTime, offset: i64) -> Result<Datum, &'static str> {
    let state = sg["sensorState"].as_str();
    let (value, annotation) = match state {
        Some("SG_BELOW_40_MG_DL") => (39, Some(json!({"code": "bg/out-of-range", "value": "low", "threshold": 40}))),
        Some("SG_ABOVE_400_MG_DL") => {
            (401, Some(json!({"code": "bg/out-of-range", "value": "high", "threshold": 400})))
        }
        // 0 and −1 ("no value") and 255 beside an error state are empty slots, filtered before.
        _ => match number(&sg["sg"]) {
            Some(v) => (v.round() as i64, None),
            None if sg["sg"].is_null() => return Err("no_value"),
            None => return Err("bad_value"),
        },
    };
    let mut raw = Map::new();
    for k in ["timestamp", "datetime", "sg", "sensorState", "isBackfill", "timeChange"] {
        if let Some(v) = sg.get(k).filter(|v| !v.is_null()) {
            raw.insert(k.into(), v.clone());
        }
    }
    let mut base = ctx.base("cbg", local, offset, Value::Object(raw), "SG");
    base.annotations = annotation.into_iter().collect();
    Ok(Cbg { base, units: MG_DL, value, trend: None, trend_rate: None, trend_rate_units: None }.into())
}

fn map_insulin(ctx: &Ctx, m: &Value, local: NaiveDateTime, offset: i64) -> Result<Datum, &'static str> {
    let v = values(m);
    let amount = |k: &str| number(&v[k]).map(insulin_units);
    let fast = amount("deliveredFastAmount");
    let fast_programmed = amount("programmedFastAmount");
    let ext = amount("deliveredExtendedAmount").filter(|x| *x > 0.0);
    let ext_programmed = amount("programmedExtendedAmount").filter(|x| *x > 0.0);
    let minutes = |k: &str| number(&v[k]).filter(|m| *m >= 0.0).map(|m| (m * 60_000.0).round() as i64);
    let extended_part = ext.is_some() || ext_programmed.is_some();
    let fast_part = fast.is_some_and(|x| x > 0.0) || fast_programmed.is_some_and(|x| x > 0.0) || !extended_part;
    let automated = v["activationType"].as_str() == Some("AUTOCORRECTION");
    let sub_type = match (fast_part, extended_part) {
        (_, false) if automated => BolusKind::Automated,
        (_, false) => BolusKind::Normal,
        (false, true) => BolusKind::Square,
        (true, true) => BolusKind::DualSquare,
    };
    let differs = |delivered: Option<f64>, programmed: Option<f64>| programmed.filter(|p| Some(*p) != delivered);
    let (normal, expected_normal) = if fast_part {
        let n = fast.or(Some(0.0));
        (n, differs(n, fast_programmed))
    } else {
        (None, None)
    };
    let (extended, expected_extended, duration, expected_duration) = if extended_part {
        let e = ext.or(Some(0.0));
        let d = minutes("effectiveDuration").or(minutes("programmedDuration")).or(Some(0));
        (e, differs(e, ext_programmed), d, minutes("programmedDuration").filter(|p| Some(*p) != d))
    } else {
        (None, None, None, None)
    };
    if normal.is_none() && extended.is_none() {
        return Err("no_value");
    }
    let raw = raw_payload(
        m,
        &[
            "bolusType",
            "activationType",
            "insulinType",
            "completed",
            "programmedFastAmount",
            "deliveredFastAmount",
            "programmedExtendedAmount",
            "deliveredExtendedAmount",
            "programmedDuration",
            "effectiveDuration",
        ],
    );
    Ok(Bolus {
        base: ctx.base("bolus", local, offset, raw, "INSULIN"),
        sub_type,
        normal,
        expected_normal,
        extended,
        expected_extended,
        duration,
        expected_duration,
    }
    .into())
}

/// An auto-basal micro-dose → an automated basal segment: the dose is delivered over the pump's
/// 5-minute interval (rate = dose / 5 min); the segment ends at the next dose or after 5
/// minutes, whichever is first (`expectedDuration` keeps the 5 minutes when cut short).
fn map_auto_basal(
    ctx: &Ctx,
    m: &Value,
    local: NaiveDateTime,
    next: Option<NaiveDateTime>,
    offset: i64,
) -> Result<Datum, &'static str> {
    let dose = number(&values(m)["bolusAmount"]).map(insulin_units).filter(|d| *d >= 0.0).ok_or("no_value")?;
    let interval = AUTO_BASAL_INTERVAL.num_milliseconds();
    let to_next = next.map(|n| (n - local).num_milliseconds()).filter(|ms| *ms > 0);
    let duration = to_next.map_or(interval, |ms| ms.min(interval));
    let rate = ((dose * 3_600_000.0 / interval as f64) * 10_000.0).round() / 10_000.0;
    Ok(Basal {
        base: ctx.base(
            "basal",
            local,
            offset,
            raw_payload(m, &["bolusAmount", "maxAutoBasalRate"]),
            "AUTO_BASAL_DELIVERY",
        ),
        delivery_type: BasalDelivery::Automated,
        duration,
        expected_duration: (duration < interval).then_some(interval),
        rate: Some(rate),
        schedule_name: None,
    }
    .into())
}

/// The pump's status when the payload was uploaded: battery, reservoir, suspended; active
/// insulin and the sensor's state have no field in `pumpStatus` and ride in its `payload`.
fn pump_status(ctx: &Ctx, data: &Value, offset: i64) -> Option<Datum> {
    let at = epoch_ms(&data["lastMedicalDeviceDataUpdateServerTime"])
        .or_else(|| epoch_ms(&data["lastConduitUpdateServerDateTime"]))
        .or_else(|| epoch_ms(&data["lastConduitUpdateServerTime"]))?;
    let local = (at + Duration::seconds(offset)).naive_utc();
    let battery = number(&data["pumpBatteryLevelPercent"])
        .or_else(|| number(&data["medicalDeviceBatteryLevelPercent"]))
        .filter(|p| (0.0..=100.0).contains(p))
        .map(|p| Battery { remaining: p / 100.0, units: "percent" });
    let reservoir = number(&data["reservoirRemainingUnits"])
        .filter(|r| (0.0..=10_000.0).contains(r))
        .map(|r| Reservoir { remaining: insulin_units(r), units: "Units" });
    let suspended = data["pumpSuspended"].as_bool().or(data["medicalDeviceSuspended"].as_bool());
    if battery.is_none() && reservoir.is_none() && suspended != Some(true) {
        return None;
    }
    let mut raw = Map::new();
    if let Some(iob) = number(&data["activeInsulin"]["amount"]).filter(|a| *a >= 0.0) {
        raw.insert("activeInsulin".into(), json!({"amount": insulin_units(iob), "units": "Units"}));
    }
    for k in [
        "sensorState",
        "calibStatus",
        "sensorDurationHours",
        "timeToNextCalibHours",
        "systemStatusMessage",
        "therapyAlgorithmState",
        "reservoirLevelPercent",
        "conduitBatteryLevel",
        "medicalDeviceFamily",
    ] {
        let v = &data[k];
        // 255 and −1 are CareLink's "unknown".
        let sentinel = matches!(number(v), Some(x) if x == 255.0 || x < 0.0);
        if !v.is_null() && !sentinel {
            raw.insert(k.into(), v.clone());
        }
    }
    raw.insert("serverTime".into(), json!(model::time::format(&at)));
    Some(
        PumpStatus {
            base: ctx.base("pumpStatus", local, offset, Value::Object(raw), "STATUS"),
            battery,
            reservoir,
            basal_delivery: (suspended == Some(true)).then_some(BasalDeliveryState { state: "suspended" }),
        }
        .into(),
    )
}
