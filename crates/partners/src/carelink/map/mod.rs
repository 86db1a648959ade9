//! Mapping a CareLink `display/message` payload (generations A, B and C) to Tidepool datums, one
//! module per record kind: `sgs` (sensor glucose), `markers` (pump events), `alarms`
//! (notifications) and `status` (the pump's state at upload); `clock` places them in time.
//!
//! CareLink times are the pump's wall clock with no zone (or a fake `Z` / `-00:00`). One UTC
//! offset is derived per payload from a phone/server clock pair and rounded to 15 minutes; a
//! `TIME_CHANGE` marker in the payload gives records before it the old offset. `deviceTime` is the
//! wall clock normalised; the raw string goes into `payload`. Records are read into their typed
//! form (`super::wire`) and mapped from it; `payload` copies named fields as sent.

mod alarms;
mod clock;
mod markers;
mod sgs;
mod status;

use chrono::{Duration, NaiveDateTime};
use model::datum::{Base, Datum, Origin};
use model::time::{device_time, parse_partner_time};
use model::{DatumId, UserId};
use serde_json::Value;

use super::wire::{Device, Records};
use crate::fetch::{Batch, check_time};
use crate::wire::read;

const PROVIDER: &str = "carelink";
const ORIGIN_NAME: &str = "com.medtronic.carelink";

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
    body.get("patientData").filter(|d| d.is_object()).unwrap_or(body)
}

fn generation(records: &Records) -> Generation {
    let first_sg = records.sgs.as_deref().and_then(<[_]>::first);
    let first_marker = records.markers.as_deref().and_then(<[_]>::first);
    if first_sg.is_some_and(|s| s.raw.get("timestamp").is_some())
        || first_marker.is_some_and(|m| m.raw.get("data").is_some())
    {
        Generation::C
    } else if first_sg.and_then(|s| s.rec.datetime.as_deref()).is_some_and(|s| parse_partner_time(s).is_err()) {
        Generation::A
    } else {
        Generation::B
    }
}

/// The pump's offset from UTC (seconds east) for a payload, rounded to a quarter hour (see
/// `clock::payload_offset`).
pub fn payload_offset(data: &Value) -> Result<i64, PayloadError> {
    clock::payload_offset(&read::<Device>(data))
}

/// Insulin amounts are float32 artefacts (`2.424999952316284`): round to the pump's resolution
/// (CareLink reports `THOUSANDS` precision).
pub fn insulin_units(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
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
                time: None,
            },
            payload: Some(raw),
            annotations: Vec::new(),
            notes: Vec::new(),
        }
    }
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

/// Map a whole payload into `batch`.
pub fn map_payload(user: &UserId, body: &Value, batch: &mut Batch) -> Result<Generation, PayloadError> {
    let data = patient_data(body);
    let records = Records::read(data);
    if !data.is_object() || !(records.sgs.is_some() || records.markers.is_some()) {
        return Err(PayloadError::NotPatientData);
    }
    let generation = generation(&records);
    let device: Device = read(data);
    let offset = clock::payload_offset(&device)?;
    let info = device.medical_device_information.clone().unwrap_or_default();
    let serial = info
        .device_serial_number
        .or(device.medical_device_serial_number.clone())
        .or(device.conduit_serial_number.clone())
        .filter(|s| !s.is_empty() && s != "0")
        .unwrap_or_else(|| "unknown".into());
    let model_number = info.model_number.or(device.pump_model_number.clone());
    let family = device.medical_device_family.as_deref().unwrap_or("CareLink");
    let device_id = Some(format!("{}_{serial}", model_number.as_deref().unwrap_or(family)));
    let ctx = Ctx { user, device_id, serial };
    let markers = records.markers.as_deref().unwrap_or_default();
    let clock = clock::Clock { offset, change: markers::last_time_change(markers) };

    sgs::map(&ctx, &clock, records.sgs.as_deref().unwrap_or_default(), batch);
    markers::map(&ctx, &clock, markers, batch);
    if let Some(history) = &records.notification_history {
        alarms::map(&ctx, &clock, history, batch);
    }
    if let Some(d) = status::pump_status(&ctx, &device, data, offset).and_then(|d| validated(d, batch)) {
        batch.datums.push(d);
    }
    Ok(generation)
}
