//! The `display/message` payload (generation C, v13): the last 24 h of a patient's pump and
//! sensor as the CareLink cloud serves it — pump-local times without a zone, numbers inside
//! strings, float32 artefacts, sentinels, placeholder SGs, markers and notifications.

use chrono::{DateTime, Duration, NaiveDateTime, Offset, Utc};
use serde_json::{Value, json};

use crate::people::{self, Person, hash, meals};

/// The pump's wall clock: the person's local time, no zone.
pub fn pump_time(p: &Person, t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&p.tz).naive_local()
}

fn fmt(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// A float32 artefact as the pump reports it ("0.10000000149011612").
fn f32_string(x: f64) -> String {
    format!("{}", (x as f32) as f64)
}

/// Round to the pump's 0.025 U resolution.
fn units(x: f64) -> f64 {
    (x / 0.025).round() * 0.025
}

fn views(icon: &str, position: i64) -> Value {
    json!([
        {"viewType": "GRAPH", "items": [{"action": "DISPLAY", "contents": [], "iconIdentifier": icon, "position": position}]},
        {"viewType": "HISTORY", "items": [{"position": -1}]}
    ])
}

fn marker(kind: &str, at: NaiveDateTime, data_values: Value, resource_values: Value, views: Value) -> Value {
    json!({
        "type": kind,
        "timestamp": fmt(at),
        "displayTime": fmt(at),
        "data": {"dataValues": data_values, "resourceValues": resource_values},
        "views": views,
    })
}

/// A record of the window, with the instant it happened (for sorting and ground truth).
struct Timed {
    at: DateTime<Utc>,
    value: Value,
}

/// Has a record of this instant reached the cloud by `now`? (Pump data arrives with the phone's
/// upload; some hours arrive hours late and are then marked as backfill.)
fn arrived(p: &Person, t: DateTime<Utc>, now: DateTime<Utc>) -> (bool, bool) {
    let slot = people::slot_at_or_before(p, t);
    let hour_block = slot.div_euclid(12);
    let late = hash(p.seed, 11, hour_block).is_multiple_of(12);
    let delay = if late {
        Duration::seconds(7200 + (hash(p.seed, 12, hour_block) % 7200) as i64)
    } else {
        Duration::seconds(60)
    };
    (t + delay <= now, late)
}

/// The phone uploads every five minutes (49 s after the slot): repeated calls between uploads
/// see the same upload time, as with the real service.
fn last_upload(now: DateTime<Utc>) -> DateTime<Utc> {
    let slot = (now - Duration::seconds(49)).timestamp().div_euclid(300) * 300;
    DateTime::from_timestamp(slot + 49, 0).unwrap_or(now)
}

fn sgs(p: &Person, now: DateTime<Utc>) -> Vec<Value> {
    let last = people::slot_at_or_before(p, now - Duration::seconds(60));
    ((last - 287)..=last)
        .map(|slot| {
            let t = people::slot_time(p, slot);
            // CareLink's sensor reads on the minute.
            let ts = pump_time(p, t).with_second(0);
            let (arrived, late) = arrived(p, t, now);
            if !arrived {
                // Placeholder: not uploaded yet, no time.
                return json!({"kind": "SG", "version": 1, "sg": 0, "sensorState": "NO_DATA_FROM_PUMP", "isBackfill": false});
            }
            match people::reading(p, slot) {
                None => json!({"kind": "SG", "version": 1, "sg": 0, "sensorState": "SENSOR_ERROR", "timestamp": fmt(ts), "isBackfill": late}),
                Some(r) => {
                    let (sg, state) = match r.value {
                        None => (0, "CALIBRATING"),
                        Some(39) => (0, "SG_BELOW_40_MG_DL"),
                        Some(401) => (0, "SG_ABOVE_400_MG_DL"),
                        Some(v) => (v, "NO_ERROR_MESSAGE"),
                    };
                    json!({"kind": "SG", "version": 1, "sg": sg, "sensorState": state, "timestamp": fmt(ts), "isBackfill": late})
                }
            }
        })
        .collect()
}

trait WithSecond {
    fn with_second(self, s: u32) -> Self;
}

impl WithSecond for NaiveDateTime {
    fn with_second(self, s: u32) -> Self {
        chrono::Timelike::with_second(&self, s).unwrap_or(self)
    }
}

fn markers(p: &Person, now: DateTime<Utc>) -> Vec<Timed> {
    let start = now - Duration::hours(24);
    let mut out: Vec<Timed> = Vec::new();
    let mut push = |at: DateTime<Utc>, v: Value| out.push(Timed { at, value: v });
    let max_auto = 1.4616;
    // Auto-basal micro-doses every 5 minutes, suspended below 65 mg/dL.
    let first = people::slot_at_or_before(p, start) + 1;
    let last = people::slot_at_or_before(p, now);
    for slot in first..=last {
        let t = people::slot_time(p, slot) + Duration::seconds(55);
        if t <= start || t > now || !arrived(p, t, now).0 {
            continue;
        }
        let g = people::glucose(p, t);
        if g < 65.0 {
            // The suspension's start is the pump's record, whatever window or upload shows it.
            let before = people::glucose(p, people::slot_time(p, slot - 1) + Duration::seconds(55));
            if before >= 65.0 {
                push(t, marker("LOW_GLUCOSE_SUSPENDED", pump_time(p, t), json!({}), json!({}), views("TBD", -1)));
            }
            continue;
        }
        let rate = (0.45 + (g - 120.0) / 120.0).clamp(0.0, max_auto);
        let dose = units(rate / 12.0);
        if dose > 0.0 {
            push(
                t,
                marker(
                    "AUTO_BASAL_DELIVERY",
                    pump_time(p, t),
                    json!({"bolusAmount": f32_string(dose), "maxAutoBasalRate": f32_string(max_auto)}),
                    json!({}),
                    views("", 350),
                ),
            );
        }
        // Auto-corrections when high, at most hourly.
        if g > 180.0 && slot.rem_euclid(12) == 0 {
            let amount = units((g - 150.0) / 100.0);
            push(
                t + Duration::seconds(2),
                insulin(p, t + Duration::seconds(2), "AUTOCORRECTION", "FAST", amount, amount, None),
            );
        }
    }
    let day_first = people::local_day(p, start);
    for day in day_first..=people::local_day(p, now) {
        for (k, (h, m, grams)) in meals(p, day).into_iter().enumerate() {
            let at = people::local_instant(p, day, h, m);
            if at <= start || at > now || !arrived(p, at, now).0 {
                continue;
            }
            let g = format!("{grams:.0}");
            push(
                at,
                marker(
                    "MEAL",
                    pump_time(p, at),
                    json!({"amount": grams}),
                    json!({"LS_Grams": [g], "LS_CarbsWithValue": [g], "LS_CarbsEnteredWithValue": [format!("{grams:.1}")], "LS_Meal": []}),
                    views("icon_event_meal.png", 0),
                ),
            );
            let bolus_at = at + Duration::seconds(40);
            let amount = units(grams / 10.0);
            let tag = day * 8 + k as i64;
            let v = match hash(p.seed, 70, tag) % 10 {
                // A square (extended) bolus and a dual wave now and then; one interrupted.
                0 => insulin(p, bolus_at, "RECOMMENDED", "SQUARE", 0.0, 0.0, Some((amount, amount, 120))),
                1 => insulin(
                    p,
                    bolus_at,
                    "RECOMMENDED",
                    "DUAL",
                    units(amount * 0.6),
                    units(amount * 0.6),
                    Some((units(amount * 0.4), units(amount * 0.4), 90)),
                ),
                2 => insulin(p, bolus_at, "RECOMMENDED", "FAST", amount, units(amount * 0.5), None),
                _ => insulin(p, bolus_at, "RECOMMENDED", "FAST", amount, amount, None),
            };
            push(bolus_at, v);
        }
        // Morning fingerstick and calibration.
        let bg_at = people::local_instant(p, day, 7, 5);
        if bg_at > start && bg_at <= now && arrived(p, bg_at, now).0 {
            let bg = people::glucose(p, bg_at).clamp(40.0, 400.0).round();
            push(
                bg_at,
                marker(
                    "BG_READING",
                    pump_time(p, bg_at),
                    json!({"unitValue": format!("{bg:.0}"), "bgUnits": "MG_DL", "bgSource": "BG_LINK"}),
                    json!({}),
                    views("icon_event_bg.png", 0),
                ),
            );
            let cal_at = bg_at + Duration::minutes(1);
            push(
                cal_at,
                marker(
                    "CALIBRATION",
                    pump_time(p, cal_at),
                    json!({"unitValue": format!("{bg:.0}"), "bgUnits": "MG_DL", "calibrationSuccess": true}),
                    json!({}),
                    views("icon_event_calibration.png", 0),
                ),
            );
        }
    }
    // A daylight-saving change inside the window: the pump's clock is moved. The marker sits on
    // the change's own instant (zones change on the hour or half hour: walk half hours aligned
    // to the clock, whatever the window's start) and comes with the first upload after it, the
    // one whose phone clock (`lastConduitDateTime`) shows the new time.
    // The window is the SGs' (their oldest slot can be up to a slot older than 24 h): a change
    // older than 24 h whose earlier readings are still served keeps its marker, or those readings
    // would be placed with the new offset.
    let upload = last_upload(now);
    let from = start.min(people::slot_time(p, people::slot_at_or_before(p, now - Duration::seconds(60)) - 287));
    let mut t = DateTime::from_timestamp(from.timestamp().div_euclid(1800) * 1800, 0).unwrap_or(from);
    while t < now {
        let next = t + Duration::minutes(30);
        let (a, b) = (t.with_timezone(&p.tz).offset().fix(), next.with_timezone(&p.tz).offset().fix());
        if a != b && next > from && next <= upload {
            let change = json!({"previousDateTime": fmt(next.with_timezone(&a).naive_local()), "newDateTime": fmt(pump_time(p, next))});
            push(next, marker("TIME_CHANGE", pump_time(p, next), change, json!({}), views("TBD", -1)));
        }
        t = next;
    }
    out.sort_by_key(|m| m.at);
    out
}

fn insulin(
    p: &Person,
    at: DateTime<Utc>,
    activation: &str,
    bolus_type: &str,
    fast_programmed: f64,
    fast_delivered: f64,
    extended: Option<(f64, f64, i64)>,
) -> Value {
    let mut values = json!({
        "insulinType": "UNKNOWN",
        "activationType": activation,
        "bolusType": bolus_type,
    });
    let mut complete = (fast_delivered - fast_programmed).abs() < 1e-9;
    values["programmedFastAmount"] = json!(f32_string(fast_programmed));
    values["deliveredFastAmount"] = json!(f32_string(fast_delivered));
    if let Some((programmed, delivered, minutes)) = extended {
        complete &= (delivered - programmed).abs() < 1e-9;
        values["programmedExtendedAmount"] = json!(f32_string(programmed));
        values["deliveredExtendedAmount"] = json!(f32_string(delivered));
        values["programmedDuration"] = json!(minutes.to_string());
        values["effectiveDuration"] = json!(minutes.to_string());
    }
    values["completed"] = json!(complete);
    let shown = f32_string(fast_delivered + extended.map(|e| e.1).unwrap_or(0.0));
    marker(
        "INSULIN",
        pump_time(p, at),
        values,
        json!({"LS_Bolus": [], "LS_Insulin_Units": [shown.clone()], "LS_RegularBolusCompletedDeliveryTitle": [shown.clone()], "LS_RegularBolusCompletedDeliveryDesc": [shown]}),
        views("", 999),
    )
}

fn notifications(p: &Person, now: DateTime<Utc>) -> Value {
    let mut cleared = Vec::new();
    for (id, name, r) in people::alerts(p, now - Duration::hours(24), now) {
        if !arrived(p, r.system_time, now).0 {
            continue;
        }
        let (fault, kind) = match name {
            "urgentLow" => ("802", "ALARM"),
            "low" => ("805", "ALERT"),
            _ => ("816", "ALERT"),
        };
        let triggered = pump_time(p, r.system_time);
        cleared.push(json!({
            "faultId": fault,
            "version": "1",
            "referenceGUID": id.to_uppercase(),
            "dateTime": fmt(triggered + Duration::minutes(4)),
            "type": kind,
            "triggeredDateTime": fmt(triggered),
            "additionalInfo": {"sg": r.value.unwrap_or(0), "pumpDeliverySuspendState": false, "alertSilenced": false, "resourceBundleKey": format!("page.connect.sms.content.ble.alarm.{fault}")},
        }));
    }
    json!({"activeNotifications": [], "clearedNotifications": cleared})
}

/// The `patientData` object for a patient at `now`.
pub fn patient_data(p: &Person, now: DateTime<Utc>) -> Value {
    let sgs = sgs(p, now);
    let markers: Vec<Value> = markers(p, now).into_iter().map(|m| m.value).collect();
    let real: Vec<i64> = sgs.iter().filter_map(|s| s["sg"].as_i64()).filter(|v| *v > 0).collect();
    let last_sg = sgs.iter().rev().find(|s| s["sg"].as_i64().unwrap_or(0) > 0 && s.get("timestamp").is_some()).cloned().unwrap_or_else(
        || json!({"kind": "SG", "version": 1, "sg": 0, "sensorState": "NO_DATA_FROM_PUMP", "timestamp": fmt(pump_time(p, now))}),
    );
    let avg = if real.is_empty() { 0.0 } else { real.iter().sum::<i64>() as f64 / real.len() as f64 };
    let in_range = real.iter().filter(|v| (70..=180).contains(*v)).count();
    let tir = if real.is_empty() { 0 } else { (in_range * 100 / real.len()) as i64 };
    let conduit = last_upload(now);
    let pump_now = pump_time(p, now);
    json!({
        "clientTimeZoneName": p.tz.name(),
        "lastName": "lastName",
        "firstName": "firstName",
        "appModelType": "BLE_20_COMM",
        "appModelNumber": "NA",
        "currentServerTime": now.timestamp_millis(),
        "conduitSerialNumber": format!("{:011X}-SIM-{:012}", hash(p.seed, 80, 0) % 0xFFF_FFFF_FFFF, hash(p.seed, 81, 0) % 1_000_000_000_000),
        "conduitBatteryLevel": 20 + (hash(p.seed, 82, now.timestamp() / 3600) % 80) as i64,
        "conduitBatteryStatus": "FULL",
        "lastConduitDateTime": fmt(pump_time(p, conduit)),
        "lastConduitUpdateServerDateTime": conduit.timestamp_millis(),
        "medicalDeviceFamily": "NGP",
        "medicalDeviceInformation": {
            "manufacturer": "Medtronic", "modelNumber": "MMT-1884", "hardwareRevision": "A2.01",
            "firmwareRevision": "24.11.9", "softwareRevision": "6.60U", "systemId": format!("{} 9207", 40_000_000_000u64 + hash(p.seed, 83, 0) % 9_999_999),
            "pnpId": "01.3.0", "deviceSerialNumber": format!("NG{:07}H", hash(p.seed, 84, 0) % 10_000_000),
        },
        // Local wall time encoded as if it were UTC epoch milliseconds (as the real API does).
        "medicalDeviceTime": pump_now.and_utc().timestamp_millis(),
        "lastMedicalDeviceDataUpdateServerTime": conduit.timestamp_millis(),
        "cgmInfo": {"sensorType": "DISPOSABLE", "sensorSerialNumber": format!("B{:09}", hash(p.seed, 85, 0) % 1_000_000_000), "sensorSoftwareRevision": "2.3C.297", "sensorFirmwareRevision": "01.30", "sensorProductModel": "MMT-5120       "},
        "calFreeSensor": true,
        "calibStatus": "UNKNOWN",
        "calibrationIconId": "NO_ICON",
        "timeToNextEarlyCalibrationMinutes": 15555,
        "timeToNextCalibrationMinutes": -1,
        "timeToNextCalibrationRecommendedMinutes": -1,
        "timeToNextCalibHours": 255,
        "finalCalibration": true,
        "sensorDurationMinutes": 3248,
        "sensorDurationHours": 54,
        "transmitterPairedTime": "NA",
        "systemStatusTimeRemaining": -1,
        "gstBatteryLevel": 255,
        "pumpBannerState": [],
        "therapyAlgorithmState": {"autoModeShieldState": "AUTO_BASAL", "autoModeReadinessState": "NO_ACTION_REQUIRED", "plgmLgsState": "FEATURE_OFF", "waitToCalibrateDuration": 0, "safeBasalDuration": 0},
        "reservoirLevelPercent": 42,
        "reservoirAmount": 300,
        "pumpSuspended": false,
        "pumpBatteryLevelPercent": 75,
        "reservoirRemainingUnits": 126.5,
        "conduitInRange": true,
        "conduitMedicalDeviceInRange": true,
        "conduitSensorInRange": true,
        "systemStatusMessage": "NO_ERROR_MESSAGE",
        "sensorState": "NO_ERROR_MESSAGE",
        "gstCommunicationState": true,
        "pumpCommunicationState": true,
        "timeFormat": "HR_12",
        "bgUnits": "MGDL",
        "maxAutoBasalRate": 1.4616,
        "maxBolusAmount": 25.0,
        "sgBelowLimit": 50,
        "approvedForTreatment": false,
        "lastAlarm": {"faultId": "802", "version": "1", "GUID": "7D0F0000-2203-0000-4377-C22E00000000", "dateTime": fmt(pump_now - Duration::hours(6)), "type": "ALARM", "additionalInfo": {"sg": 80, "pumpDeliverySuspendState": false, "alertSilenced": false}},
        "activeInsulin": {"amount": (f32_string(1.275)).parse::<f64>().unwrap_or(1.275), "datetime": fmt(pump_now), "kind": "INSULIN", "version": 1, "precision": "THOUSANDS"},
        "basal": null,
        "lastSensorTime": 0,
        "lastSG": {"kind": "SG", "version": 1, "sg": last_sg["sg"], "sensorState": last_sg["sensorState"], "timestamp": last_sg["timestamp"]},
        "lastSGTrend": "NONE",
        "limits": [{"timestamp": fmt(pump_time(p, now - Duration::hours(24))), "highLimit": 165, "lowLimit": 80, "kind": "LIMITS", "version": 1}],
        "belowHypoLimit": real.iter().filter(|v| **v < 70).count(),
        "aboveHyperLimit": real.iter().filter(|v| **v > 180).count(),
        "timeInRange": tir,
        "averageSGFloat": (avg * 100_000.0).round() / 100_000.0,
        "averageSG": avg.round() as i64,
        "markers": markers,
        "sgs": sgs,
        "notificationHistory": notifications(p, now),
        "sensorLifeText": "LS_DayHoursGracePeriod",
        "sensorLifeIcon": "ic_calendar_normal@3x.png",
    })
}

/// What "nothing lost" means for CareLink at `at`: every real SG (with a time and a value) and
/// every marker inside the 24 h the API serves at that moment.
pub fn truth(p: &Person, at: DateTime<Utc>) -> Value {
    let data = patient_data(p, at);
    let sgs: Vec<Value> = data["sgs"]
        .as_array()
        .map(|a| {
            a.iter().filter(|s| s["sg"].as_i64().unwrap_or(0) > 0 && s.get("timestamp").is_some()).cloned().collect()
        })
        .unwrap_or_default();
    json!({"sgs": sgs, "markers": data["markers"], "clearedNotifications": data["notificationHistory"]["clearedNotifications"]})
}
