//! The pump's status when the payload was uploaded → one `pumpStatus`.

use chrono::Duration;
use model::datum::{BasalDeliveryState, Battery, Datum, PumpStatus, Reservoir};
use serde_json::{Map, Value, json};

use super::clock::epoch_ms;
use super::{Ctx, insulin_units};
use crate::carelink::wire::Device;
use crate::fetch::json_number;

/// Status fields kept verbatim in the datum's `payload` (they have no `pumpStatus` field).
const PAYLOAD_FIELDS: [&str; 9] = [
    "sensorState",
    "calibStatus",
    "sensorDurationHours",
    "timeToNextCalibHours",
    "systemStatusMessage",
    "therapyAlgorithmState",
    "reservoirLevelPercent",
    "conduitBatteryLevel",
    "medicalDeviceFamily",
];

/// Battery, reservoir, suspended; active insulin and the sensor's state ride in its `payload`.
/// `raw` is the payload as sent (for those payload fields).
pub(super) fn pump_status(ctx: &Ctx, device: &Device, raw: &Value, offset: i64) -> Option<Datum> {
    let at = epoch_ms(device.last_medical_device_data_update_server_time)
        .or_else(|| epoch_ms(device.last_conduit_update_server_date_time))
        .or_else(|| epoch_ms(device.last_conduit_update_server_time))?;
    let local = (at + Duration::seconds(offset)).naive_utc();
    let battery = device
        .pump_battery_level_percent
        .or(device.medical_device_battery_level_percent)
        .filter(|p| (0.0..=100.0).contains(p))
        .map(|p| Battery { remaining: p / 100.0, units: "percent" });
    let reservoir = device
        .reservoir_remaining_units
        .filter(|r| (0.0..=10_000.0).contains(r))
        .map(|r| Reservoir { remaining: insulin_units(r), units: "Units" });
    let suspended = device.pump_suspended.or(device.medical_device_suspended);
    if battery.is_none() && reservoir.is_none() && suspended != Some(true) {
        return None;
    }
    let mut payload = Map::new();
    if let Some(iob) = device.active_insulin.as_ref().and_then(|a| a.amount).filter(|a| *a >= 0.0) {
        payload.insert("activeInsulin".into(), json!({"amount": insulin_units(iob), "units": "Units"}));
    }
    for k in PAYLOAD_FIELDS {
        let Some(v) = raw.get(k).filter(|v| !v.is_null()) else { continue };
        // 255 and −1 are CareLink's "unknown".
        let sentinel = matches!(json_number(v), Some(x) if x == 255.0 || x < 0.0);
        if !sentinel {
            payload.insert(k.into(), v.clone());
        }
    }
    payload.insert("serverTime".into(), json!(model::time::format(&at)));
    Some(
        PumpStatus {
            base: ctx.base("pumpStatus", local, offset, Value::Object(payload), "STATUS"),
            battery,
            reservoir,
            basal_delivery: (suspended == Some(true)).then_some(BasalDeliveryState { state: "suspended" }),
        }
        .into(),
    )
}
