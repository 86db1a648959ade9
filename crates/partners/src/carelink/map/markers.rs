//! Pump events (`markers[]`) → `bolus`, automated `basal`, `food`, `smbg` and `deviceEvent`s, one
//! function per marker kind.

use chrono::{Duration, NaiveDateTime};
use model::datum::{
    Basal, BasalDelivery, Bolus, BolusKind, Datum, DeviceEvent, DeviceEventKind, Food, MG_DL, Smbg, TimeChangeChange,
    tidepool_glucose,
};
use model::time::device_time;
use serde_json::{Map, Value, json};

use super::clock::{Clock, wall_clock};
use super::{Ctx, insulin_units, validated};
use crate::carelink::wire::{AutoBasalValues, GlucoseValues, InsulinValues, Marker, MealValues, TimeChangeValues};
use crate::fetch::Batch;
use crate::wire::Raw;

/// The 780G's auto-basal micro-dose interval.
const AUTO_BASAL_INTERVAL: Duration = Duration::minutes(5);

type Mapped = Result<Datum, &'static str>;

/// A marker and its wall-clock reading.
type Placed<'a> = (&'a Raw<'a, Marker>, NaiveDateTime);

/// The payload's last `TIME_CHANGE`: (old clock reading, new clock reading).
pub(super) fn last_time_change(markers: &[Raw<'_, Marker>]) -> Option<(NaiveDateTime, NaiveDateTime)> {
    markers
        .iter()
        .filter(|m| m.rec.kind.as_deref() == Some("TIME_CHANGE"))
        .filter_map(|m| {
            let v: TimeChangeValues = m.values();
            Some((wall_clock(v.previous_date_time.as_deref()?)?, wall_clock(v.new_date_time.as_deref()?)?))
        })
        .next_back()
}

/// Every marker: grouped by type, each group in the pump's order.
pub(super) fn map(ctx: &Ctx, clock: &Clock, markers: &[Raw<'_, Marker>], batch: &mut Batch) {
    let mut by_type: Vec<(&str, Vec<Placed>)> = Vec::new();
    for m in markers {
        let kind = m.rec.kind.as_deref().unwrap_or_default();
        // Auto-mode transitions have no Tidepool type; nothing is lost to a reader. Not records,
        // so not counted either, whatever their time says.
        if kind == "AUTO_MODE_STATUS" {
            continue;
        }
        let Some(local) = m.rec.time().and_then(wall_clock) else {
            batch.skip("bad_time", &format!("unreadable {kind} marker time"));
            continue;
        };
        match by_type.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, list)) => list.push((m, local)),
            None => by_type.push((kind, vec![(m, local)])),
        }
    }
    for (kind, list) in &by_type {
        let offsets = clock.offsets(&list.iter().map(|(_, t)| *t).collect::<Vec<_>>());
        for (i, ((m, local), offset)) in list.iter().zip(offsets).enumerate() {
            let at = At { ctx, marker: m, local: *local, offset, kind };
            let mapped = match *kind {
                "INSULIN" => insulin(&at),
                "AUTO_BASAL_DELIVERY" => auto_basal(&at, list.get(i + 1).map(|(_, t)| *t)),
                "MEAL" => meal(&at),
                "BG_READING" | "BG" => meter_reading(&at),
                "CALIBRATION" => calibration(&at),
                "LOW_GLUCOSE_SUSPENDED" => low_glucose_suspend(&at),
                "TIME_CHANGE" => time_change(&at),
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
}

/// One marker placed in time.
struct At<'a> {
    ctx: &'a Ctx<'a>,
    marker: &'a Raw<'a, Marker>,
    local: NaiveDateTime,
    offset: i64,
    kind: &'a str,
}

impl At<'_> {
    fn values<T: serde::de::DeserializeOwned + Default>(&self) -> T {
        self.marker.values()
    }

    /// The datum's common fields; `payload` keeps the marker's time and the named values as sent.
    fn base(&self, kind: &'static str, payload_keys: &[&str]) -> model::datum::Base {
        let src = self.marker.values_raw();
        let mut raw = Map::new();
        if let Some(t) = self.marker.rec.time() {
            raw.insert("time".into(), json!(t));
        }
        for k in payload_keys {
            if let Some(v) = src.get(*k).or_else(|| self.marker.raw.get(*k)).filter(|v| !v.is_null()) {
                raw.insert((*k).to_owned(), v.clone());
            }
        }
        self.ctx.base(kind, self.local, self.offset, Value::Object(raw), self.kind)
    }
}

fn insulin(at: &At) -> Mapped {
    let v: InsulinValues = at.values();
    let fast = v.delivered_fast_amount.map(insulin_units);
    let fast_programmed = v.programmed_fast_amount.map(insulin_units);
    let ext = v.delivered_extended_amount.map(insulin_units).filter(|x| *x > 0.0);
    let ext_programmed = v.programmed_extended_amount.map(insulin_units).filter(|x| *x > 0.0);
    let minutes = |m: Option<f64>| m.filter(|m| *m >= 0.0).map(|m| (m * 60_000.0).round() as i64);
    let extended_part = ext.is_some() || ext_programmed.is_some();
    let fast_part = fast.is_some_and(|x| x > 0.0) || fast_programmed.is_some_and(|x| x > 0.0) || !extended_part;
    let automated = v.activation_type.as_deref() == Some("AUTOCORRECTION");
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
        let programmed = minutes(v.programmed_duration);
        let d = minutes(v.effective_duration).or(programmed).or(Some(0));
        (e, differs(e, ext_programmed), d, programmed.filter(|p| Some(*p) != d))
    } else {
        (None, None, None, None)
    };
    if normal.is_none() && extended.is_none() {
        return Err("no_value");
    }
    let base = at.base(
        "bolus",
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
    Ok(Bolus { base, sub_type, normal, expected_normal, extended, expected_extended, duration, expected_duration }
        .into())
}

/// An auto-basal micro-dose → an automated basal segment: the dose is delivered over the pump's
/// 5-minute interval (rate = dose / 5 min); the segment ends at the next dose or after 5
/// minutes, whichever is first (`expectedDuration` keeps the 5 minutes when cut short).
fn auto_basal(at: &At, next: Option<NaiveDateTime>) -> Mapped {
    let v: AutoBasalValues = at.values();
    let dose = v.bolus_amount.map(insulin_units).filter(|d| *d >= 0.0).ok_or("no_value")?;
    let interval = AUTO_BASAL_INTERVAL.num_milliseconds();
    let to_next = next.map(|n| (n - at.local).num_milliseconds()).filter(|ms| *ms > 0);
    let duration = to_next.map_or(interval, |ms| ms.min(interval));
    let rate = ((dose * 3_600_000.0 / interval as f64) * 10_000.0).round() / 10_000.0;
    Ok(Basal {
        base: at.base("basal", &["bolusAmount", "maxAutoBasalRate"]),
        delivery_type: BasalDelivery::Automated,
        duration,
        expected_duration: (duration < interval).then_some(interval),
        rate: Some(rate),
        schedule_name: None,
    }
    .into())
}

fn meal(at: &At) -> Mapped {
    let v: MealValues = at.values();
    let grams = v.amount.ok_or("no_value")?;
    Ok(Food::grams(at.base("food", &["amount"]), grams).into())
}

/// A meter or calibration value: `value`, else `unitValue`. `sg` and meter values are mg/dL in
/// every known payload, whatever `bgUnits` claims.
fn glucose(v: &GlucoseValues) -> Result<(&'static str, f64), &'static str> {
    let value = v.value.or(v.unit_value).ok_or("no_value")?;
    if value > 0.0 { Ok(tidepool_glucose(MG_DL, value)) } else { Err("no_value") }
}

fn meter_reading(at: &At) -> Mapped {
    let v: GlucoseValues = at.values();
    let (units, value) = glucose(&v)?;
    let sub_type = (v.bg_source.as_deref() == Some("BG_LINK")).then_some("linked");
    let base = at.base("smbg", &["value", "unitValue", "bgUnits", "bgSource"]);
    Ok(Smbg { base, sub_type, units, value }.into())
}

fn calibration(at: &At) -> Mapped {
    let v: GlucoseValues = at.values();
    let (units, value) = glucose(&v)?;
    let base = at.base("deviceEvent", &["value", "unitValue", "bgUnits", "calibrationSuccess"]);
    Ok(DeviceEvent { base, event: DeviceEventKind::Calibration { units, value } }.into())
}

fn low_glucose_suspend(at: &At) -> Mapped {
    Ok(DeviceEvent {
        base: at.base("deviceEvent", &[]),
        event: DeviceEventKind::Status {
            status: "suspended",
            // Low-glucose suspend is the pump's own decision.
            reason: Some(json!({"suspended": "automatic"})),
            duration: None,
        },
    }
    .into())
}

fn time_change(at: &At) -> Mapped {
    let v: TimeChangeValues = at.values();
    let from = v.previous_date_time.as_deref().and_then(wall_clock).ok_or("no_value")?;
    let to = v.new_date_time.as_deref().and_then(wall_clock).ok_or("no_value")?;
    Ok(DeviceEvent {
        base: at.base("deviceEvent", &["previousDateTime", "newDateTime"]),
        event: DeviceEventKind::TimeChange {
            change: TimeChangeChange {
                // MiniMed pumps change their clock only by the person's hand.
                agent: "manual",
                from: device_time(&from),
                to: device_time(&to),
            },
        },
    }
    .into())
}
