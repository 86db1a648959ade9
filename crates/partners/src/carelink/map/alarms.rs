//! The pump's alarms (`notificationHistory`, type `ALARM`; alerts and reminders are not alarms)
//! → `deviceEvent/alarm`.

use chrono::NaiveDateTime;
use model::datum::{DeviceEvent, DeviceEventKind};
use serde_json::{Value, json};

use super::clock::{Clock, wall_clock};
use super::{Ctx, validated};
use crate::carelink::wire::{Notification, NotificationHistory};
use crate::fetch::Batch;
use crate::wire::Raw;

/// The history reaches further back than the markers, so a clock change inside the payload can
/// fall after some alarms: they are placed with the offset before it, oldest first (alarms carry
/// no sequence; in an hour repeated by a change back, one could still be an hour off).
pub(super) fn map(ctx: &Ctx, clock: &Clock, history: &NotificationHistory, batch: &mut Batch) {
    let mut alarms: Vec<(&Raw<'_, Notification>, NaiveDateTime)> = Vec::new();
    for n in history.cleared_notifications.iter().chain(&history.active_notifications).flatten() {
        if n.rec.kind.as_deref() != Some("ALARM") {
            continue;
        }
        match n.rec.time().and_then(wall_clock) {
            Some(local) => alarms.push((n, local)),
            None => batch.skip("bad_time", "unreadable alarm time"),
        }
    }
    alarms.sort_by_key(|(_, local)| *local);
    let offsets = clock.offsets(&alarms.iter().map(|(_, t)| *t).collect::<Vec<_>>());
    for ((n, local), offset) in alarms.into_iter().zip(offsets) {
        let fault = n.rec.fault_id.as_deref();
        // As sent, for provenance.
        let sent = |k: &str| n.raw.get(k).cloned().unwrap_or(Value::Null);
        let raw = json!({
            "time": n.rec.time(),
            "faultId": fault,
            "messageId": sent("messageId"),
            "referenceGUID": sent("referenceGUID"),
            "additionalInfo": sent("additionalInfo"),
        });
        let key = format!("ALARM:{}", fault.unwrap_or("?"));
        let d = DeviceEvent {
            base: ctx.base("deviceEvent", local, offset, raw, &key),
            event: DeviceEventKind::Alarm { alarm_type: "other" },
        };
        if let Some(d) = validated(d.into(), batch) {
            batch.datums.push(d);
        }
    }
}
