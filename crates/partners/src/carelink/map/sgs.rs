//! Sensor glucose slots (`sgs[]`) → `cbg`.

use chrono::NaiveDateTime;
use model::datum::{Cbg, Datum, MG_DL};
use serde_json::json;

use super::clock::{Clock, wall_clock};
use super::{Ctx, validated};
use crate::carelink::wire::{Reading, Sg};
use crate::fetch::Batch;
use crate::wire::{Raw, pick_value};

/// Sensor states that mean "no reading" whatever `sg` says.
fn reading_ok(state: Option<&str>) -> bool {
    matches!(state, None | Some("NO_ERROR_MESSAGE" | "NORMAL" | "SG_BELOW_40_MG_DL" | "SG_ABOVE_400_MG_DL"))
}

/// An `sgs` slot without a reading — a sensor state that means "no reading" (warm-up, no data
/// from the pump, …), or `sg` 0 or −1, CareLink's "no value" — is not a record: it is neither
/// mapped nor counted as skipped, whatever its time says. Every other entry is a reading, mapped
/// or skipped and counted (issue 10: a reading with no time, or an unreadable `sg`, used to
/// vanish uncounted).
fn empty_slot(sg: &Sg) -> bool {
    match sg.sensor_state.as_deref() {
        Some("SG_BELOW_40_MG_DL" | "SG_ABOVE_400_MG_DL") => false,
        state if !reading_ok(state) => true,
        _ => matches!(sg.sg, Reading::Value(v) if v <= 0.0),
    }
}

/// Every slot, in the pump's order.
pub(super) fn map(ctx: &Ctx, clock: &Clock, sgs: &[Raw<'_, Sg>], batch: &mut Batch) {
    // Empty slots with a readable time stay in the sequence: they help place the time change.
    let timed: Vec<(&Raw<'_, Sg>, NaiveDateTime)> = sgs
        .iter()
        .filter_map(|s| match s.rec.time().and_then(wall_clock) {
            Some(l) => Some((s, l)),
            None if empty_slot(&s.rec) => None,
            // No time field at all is as unreadable as a malformed one (it used to drop silently).
            None => {
                batch.skip("bad_time", "unreadable SG time");
                None
            }
        })
        .collect();
    let offsets = clock.offsets(&timed.iter().map(|(_, t)| *t).collect::<Vec<_>>());
    for ((sg, local), offset) in timed.iter().zip(offsets) {
        if empty_slot(&sg.rec) {
            continue;
        }
        match cbg(ctx, sg, *local, offset) {
            Ok(d) => {
                if let Some(d) = validated(d, batch) {
                    batch.datums.push(d);
                }
            }
            Err(code) => batch.skip(code, "SG"),
        }
    }
}

/// A reading (never an [`empty_slot`]) → `cbg`; an `sg` missing or unreadable is a skip code.
fn cbg(ctx: &Ctx, sg: &Raw<'_, Sg>, local: NaiveDateTime, offset: i64) -> Result<Datum, &'static str> {
    let (value, annotation) = match sg.rec.sensor_state.as_deref() {
        Some("SG_BELOW_40_MG_DL") => (39, Some(json!({"code": "bg/out-of-range", "value": "low", "threshold": 40}))),
        Some("SG_ABOVE_400_MG_DL") => {
            (401, Some(json!({"code": "bg/out-of-range", "value": "high", "threshold": 400})))
        }
        // 0 and −1 ("no value") and 255 beside an error state are empty slots, filtered before.
        _ => match sg.rec.sg {
            Reading::Value(v) => (v.round() as i64, None),
            Reading::Absent => return Err("no_value"),
            Reading::Unreadable => return Err("bad_value"),
        },
    };
    let raw = pick_value(sg.raw, &["timestamp", "datetime", "sg", "sensorState", "isBackfill", "timeChange"]);
    let mut base = ctx.base("cbg", local, offset, raw, "SG");
    base.annotations = annotation.into_iter().collect();
    Ok(Cbg { base, units: MG_DL, value, trend: None, trend_rate: None, trend_rate_units: None }.into())
}
