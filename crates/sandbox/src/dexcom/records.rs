//! Dexcom v3 records built from the synthetic people, exactly as the API serializes them.
//! The data endpoints and the ground truth use the same builders; what differs is visibility
//! (a record exists at the partner only once it has arrived) and the request's window.

use chrono::{DateTime, Duration, FixedOffset, Offset, Utc};
use serde_json::{Value, json};

use crate::people::{self, EntryKind, Person, TimeStyle, hash, uuid_like};

/// Dexcom's `userId`: stable per account and client application.
pub fn user_id(p: &Person, client_id: &str) -> String {
    let client = client_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    uuid_like(p.seed ^ client, 90, 0)
}

pub fn system_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `displayTime` in the person's style.
pub fn display_time(p: &Person, t: &DateTime<Utc>) -> String {
    let offset = t.with_timezone(&p.tz).offset().fix();
    match p.time_style {
        TimeStyle::Offset => t.with_timezone(&offset).format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        TimeStyle::NoOffset => t.with_timezone(&offset).format("%Y-%m-%dT%H:%M:%S").to_string(),
        TimeStyle::Drifted => {
            // The display clock runs 2 s ahead; Dexcom reports the drifted offset, no seconds.
            let drifted = FixedOffset::east_opt(offset.local_minus_utc() + 2).expect("valid offset");
            let local = t.with_timezone(&drifted);
            let secs = drifted.local_minus_utc();
            let sign = if secs < 0 { '-' } else { '+' };
            let a = secs.abs();
            format!("{}{sign}{:02}:{:02}:{:02}", local.format("%Y-%m-%dT%H:%M"), a / 3600, a % 3600 / 60, a % 60)
        }
    }
}

fn ticks(p: &Person, t: &DateTime<Utc>) -> i64 {
    // Seconds since this transmitter started (a new one every 10 days).
    let start = (p.seed % 864_000) as i64;
    (t.timestamp() + start).rem_euclid(864_000)
}

pub fn egv(p: &Person, r: &people::Reading, drift: bool) -> Value {
    let mut v = json!({
        "recordId": uuid_like(p.seed, 100, r.slot),
        "systemTime": system_time(&r.system_time),
        "displayTime": display_time(p, &r.system_time),
        "transmitterId": p.transmitter_id,
        "transmitterTicks": ticks(p, &r.system_time),
        "value": r.value,
        "status": r.status,
        "trend": r.trend,
        "trendRate": r.trend_rate,
        "unit": "mg/dL",
        "rateUnit": "mg/dL/min",
        "displayDevice": p.display_device,
        "transmitterGeneration": p.transmitter_generation,
        "displayApp": p.display_app,
    });
    if drift {
        drift_record(&mut v, r.slot);
    }
    v
}

/// Schema drift: unknown enum values and missing optional fields.
fn drift_record(v: &mut Value, salt: i64) {
    let Some(o) = v.as_object_mut() else { return };
    if o.contains_key("trend") && salt % 3 == 0 {
        o.insert("trend".into(), json!("sidewaysUp"));
    }
    if o.contains_key("transmitterGeneration") {
        o.insert("transmitterGeneration".into(), json!("g8"));
    }
    o.remove("displayApp");
    o.remove("transmitterTicks");
    o.insert("newFieldFromTheFuture".into(), json!({"nested": true}));
}

/// An event as it stands at `now` (updated value, or deleted status).
pub fn event(p: &Person, e: &people::Entry, now: DateTime<Utc>, drift: bool) -> Value {
    let (kind, sub, unit) = match &e.kind {
        EntryKind::Carbs { .. } => ("carbs", None, Some("grams")),
        EntryKind::Insulin { long_acting: false, .. } => ("insulin", Some("fastActing"), Some("units")),
        EntryKind::Insulin { long_acting: true, .. } => ("insulin", Some("longActing"), Some("units")),
        EntryKind::BloodGlucose { .. } => ("bloodGlucose", None, Some("mg/dL")),
        EntryKind::Exercise { intensity, .. } => ("exercise", Some(*intensity), Some("minutes")),
        EntryKind::Health { what } => ("health", Some(*what), None),
        EntryKind::Note { .. } => ("notes", None, None),
    };
    let mut status = "created";
    let mut value = match &e.kind {
        EntryKind::Note { text } => text.to_string(),
        EntryKind::Health { .. } => String::new(),
        k => trim_number(k.value()),
    };
    if let Some((at, new_value)) = e.updated
        && at <= now
    {
        status = "updated";
        value = trim_number(new_value);
    }
    if e.deleted_at.is_some_and(|at| at <= now) {
        status = "deleted";
    }
    let mut v = json!({
        "recordId": e.id,
        "systemTime": system_time(&e.system_time),
        "displayTime": display_time(p, &e.system_time),
        "eventStatus": status,
        "eventType": kind,
        "eventSubType": sub,
        "unit": unit,
        "value": value,
        "transmitterId": p.transmitter_id,
        "transmitterGeneration": p.transmitter_generation,
        "displayDevice": p.display_device,
    });
    if drift {
        drift_record(&mut v, hash(p.seed, 91, e.system_time.timestamp()) as i64);
    }
    v
}

fn trim_number(x: f64) -> String {
    if x.fract() == 0.0 { format!("{x:.0}") } else { format!("{x}") }
}

pub fn calibration(p: &Person, id: &str, at: &DateTime<Utc>, value: f64) -> Value {
    json!({
        "recordId": id,
        "systemTime": system_time(at),
        "displayTime": display_time(p, at),
        "unit": "mg/dL",
        "value": value as i64,
        "displayDevice": p.display_device,
        "transmitterId": p.transmitter_id,
        "transmitterTicks": ticks(p, at),
        "transmitterGeneration": p.transmitter_generation,
    })
}

pub fn alert(p: &Person, id: &str, name: &str, r: &people::Reading) -> Value {
    json!({
        "recordId": id,
        "systemTime": system_time(&r.system_time),
        "displayTime": display_time(p, &r.system_time),
        "alertName": name,
        "alertState": "activeAlarming",
        "displayDevice": p.display_device,
        "transmitterGeneration": p.transmitter_generation,
        "transmitterId": p.transmitter_id,
        "displayApp": p.display_app,
    })
}

/// The device record (alert settings), as of `now`.
pub fn device(p: &Person, now: DateTime<Utc>) -> Value {
    let last_upload = people::readings(p, now - Duration::days(2), now)
        .filter(|r| r.arrival <= now)
        .map(|r| r.arrival)
        .max()
        .unwrap_or(now - Duration::days(2));
    // Every 20 days the person changes their high alert (a new cgmSettings for tidegate); the
    // settings carry the time of that change.
    let period = now.timestamp().div_euclid(20 * 86_400);
    let changed = DateTime::from_timestamp(period * 20 * 86_400 + 9 * 3600, 0).unwrap_or(now).min(now);
    let setting = |name: &str, unit: &str, value: f64, enabled: bool| {
        json!({
            "systemTime": system_time(&changed),
            "displayTime": display_time(p, &changed),
            "alertName": name, "unit": unit, "value": value, "snooze": 30,
            "enabled": enabled, "secondaryTriggerCondition": 0,
            "soundTheme": "modern", "soundOutputMode": "sound",
        })
    };
    let high = 200.0 + 10.0 * period.rem_euclid(5) as f64;
    json!({
        "lastUploadDate": system_time(&last_upload),
        "alertSchedules": [{
            "alertScheduleSettings": {
                "isDefaultSchedule": true, "isEnabled": true, "isActive": true,
                "alertScheduleName": "", "startTime": "00:00", "endTime": "00:00",
                "daysOfWeek": ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"],
            },
            "alertSettings": [
                setting("high", "mg/dL", high, true),
                setting("low", "mg/dL", 70.0, true),
                setting("urgentLow", "mg/dL", 55.0, true),
                setting("rise", "mg/dL/min", 3.0, false),
                setting("fall", "mg/dL/min", 3.0, false),
                setting("outOfRange", "minutes", 20.0, true),
            ],
        }],
        "transmitterGeneration": p.transmitter_generation,
        "transmitterId": p.transmitter_id,
        "displayDevice": p.display_device,
        "displayApp": p.display_app,
    })
}

/// Every record of a person that has reached Dexcom by `now`, with `start <= systemTime < end`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GroundTruth {
    pub egvs: Vec<Value>,
    pub events: Vec<Value>,
    pub calibrations: Vec<Value>,
    pub alerts: Vec<Value>,
}

pub fn egvs(p: &Person, start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>, drift: bool) -> Vec<Value> {
    people::readings(p, start, end).filter(|r| r.arrival <= now).map(|r| egv(p, &r, drift)).collect()
}

pub fn events(p: &Person, start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>, drift: bool) -> Vec<Value> {
    people::entries(p, start, end).iter().filter(|e| e.arrival <= now).map(|e| event(p, e, now, drift)).collect()
}

pub fn calibrations(p: &Person, start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> Vec<Value> {
    // Calibrations are entered on the display device and upload within a minute.
    people::calibrations(p, start, end)
        .into_iter()
        .filter(|(_, at, _)| *at + Duration::minutes(1) <= now)
        .map(|(id, at, v)| calibration(p, &id, &at, v))
        .collect()
}

pub fn alerts(p: &Person, start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> Vec<Value> {
    people::alerts(p, start, end)
        .into_iter()
        .filter(|(_, _, r)| r.arrival <= now)
        .map(|(id, name, r)| alert(p, &id, name, &r))
        .collect()
}

pub fn truth(p: &Person, start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> GroundTruth {
    GroundTruth {
        egvs: egvs(p, start, end, now, false),
        events: events(p, start, end, now, false),
        calibrations: calibrations(p, start, end, now),
        alerts: alerts(p, start, end, now),
    }
}
