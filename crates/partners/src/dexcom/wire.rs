//! Dexcom v3 records as typed values (PARTNERS.md §Dexcom; read leniently, see `crate::wire`).
//!
//! Every v3 record type shares the [`Common`] fields; each endpoint adds its own. Field names are
//! Dexcom's (camelCase on the wire).

use serde::Deserialize;

use crate::wire::{Scalar, flag, json_f64, list, number, object, text, unless_null};

/// The fields every v3 record has.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Common {
    #[serde(deserialize_with = "text")]
    pub record_id: Option<String>,
    /// v2's name for `recordId`.
    #[serde(deserialize_with = "text")]
    pub event_id: Option<String>,
    /// UTC (Dexcom writes it without a zone).
    #[serde(deserialize_with = "text")]
    pub system_time: Option<String>,
    /// The receiver's or phone's wall clock, sometimes with its offset.
    #[serde(deserialize_with = "text")]
    pub display_time: Option<String>,
    #[serde(deserialize_with = "text")]
    pub transmitter_id: Option<String>,
    #[serde(deserialize_with = "text")]
    pub transmitter_generation: Option<String>,
}

impl Common {
    /// `recordId` (or v2's `eventId`), non-empty and at most 100 characters.
    pub fn id(&self) -> Option<&str> {
        self.record_id.as_deref().or(self.event_id.as_deref()).filter(|s| !s.is_empty() && s.len() <= 100)
    }
}

/// An `egvs` record.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Egv {
    #[serde(flatten)]
    pub common: Common,
    #[serde(deserialize_with = "text")]
    pub unit: Option<String>,
    /// A JSON number only.
    #[serde(deserialize_with = "json_f64")]
    pub value: Option<f64>,
    /// `low` / `high` when the reading is out of the sensor's range.
    #[serde(deserialize_with = "text")]
    pub status: Option<String>,
    #[serde(deserialize_with = "text")]
    pub trend: Option<String>,
    #[serde(deserialize_with = "json_f64")]
    pub trend_rate: Option<f64>,
    #[serde(deserialize_with = "text")]
    pub rate_unit: Option<String>,
}

/// A `calibrations` record.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Calibration {
    #[serde(flatten)]
    pub common: Common,
    #[serde(deserialize_with = "text")]
    pub unit: Option<String>,
    #[serde(deserialize_with = "number")]
    pub value: Option<f64>,
}

/// An `alerts` record.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct AlertRecord {
    #[serde(flatten)]
    pub common: Common,
    #[serde(deserialize_with = "text")]
    pub alert_name: Option<String>,
}

/// An `events` record (carbs, insulin, blood glucose, exercise, health, notes).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Event {
    #[serde(flatten)]
    pub common: Common,
    #[serde(deserialize_with = "text")]
    pub event_type: Option<String>,
    #[serde(deserialize_with = "text")]
    pub event_sub_type: Option<String>,
    /// `created`, `updated` or `deleted`.
    #[serde(deserialize_with = "text")]
    pub event_status: Option<String>,
    #[serde(deserialize_with = "text")]
    pub unit: Option<String>,
    /// Grams, units, minutes (a number, often inside a string) or a note's text.
    #[serde(deserialize_with = "Scalar::read")]
    pub value: Scalar,
}

/// A `devices` record: one receiver or app with its alert schedules.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Device {
    #[serde(deserialize_with = "text")]
    pub last_upload_date: Option<String>,
    #[serde(deserialize_with = "text")]
    pub transmitter_id: Option<String>,
    #[serde(deserialize_with = "text")]
    pub transmitter_generation: Option<String>,
    #[serde(deserialize_with = "text")]
    pub display_device: Option<String>,
    #[serde(deserialize_with = "list")]
    pub alert_schedules: Option<Vec<AlertSchedule>>,
}

impl Device {
    /// The default schedule, else the first.
    pub fn schedule(&self) -> Option<&AlertSchedule> {
        let schedules = self.alert_schedules.as_deref().unwrap_or_default();
        schedules
            .iter()
            .find(|s| s.alert_schedule_settings.as_ref().and_then(|x| x.is_default_schedule) == Some(true))
            .or_else(|| schedules.first())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct AlertSchedule {
    #[serde(deserialize_with = "object")]
    pub alert_schedule_settings: Option<ScheduleSettings>,
    #[serde(deserialize_with = "list")]
    pub alert_settings: Option<Vec<AlertSetting>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ScheduleSettings {
    #[serde(deserialize_with = "flag")]
    pub is_default_schedule: Option<bool>,
}

/// One alert's settings (`high`, `low`, `rise`, `fall`, `outOfRange`, …).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct AlertSetting {
    #[serde(deserialize_with = "text")]
    pub alert_name: Option<String>,
    /// When this alert's settings last changed.
    #[serde(deserialize_with = "text")]
    pub system_time: Option<String>,
    #[serde(deserialize_with = "flag")]
    pub enabled: Option<bool>,
    /// Minutes.
    #[serde(deserialize_with = "number")]
    pub snooze: Option<f64>,
    #[serde(deserialize_with = "text")]
    pub unit: Option<String>,
    #[serde(deserialize_with = "number")]
    pub value: Option<f64>,
}

/// The head of a records envelope (`{recordType, recordVersion, userId, records}`); the records
/// themselves are read one by one, each into its endpoint's type.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct EnvelopeHead {
    #[serde(deserialize_with = "text")]
    pub record_type: Option<String>,
}

/// The records of an envelope, as sent (absent when `records` is not a list).
pub(crate) fn records(envelope: &serde_json::Value) -> Option<&[serde_json::Value]> {
    envelope.get("records").and_then(serde_json::Value::as_array).map(Vec::as_slice)
}

/// A `dataRange` answer: the span of each record type the account has (absent: none), and the
/// account's stable id.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct DataRange {
    #[serde(deserialize_with = "text")]
    pub user_id: Option<String>,
    #[serde(deserialize_with = "unless_null")]
    pub egvs: Option<Span>,
    #[serde(deserialize_with = "unless_null")]
    pub events: Option<Span>,
    #[serde(deserialize_with = "unless_null")]
    pub calibrations: Option<Span>,
}

/// One record type's span in a `dataRange` answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Span {
    #[serde(deserialize_with = "object")]
    pub start: Option<RangeEnd>,
    #[serde(deserialize_with = "object")]
    pub end: Option<RangeEnd>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct RangeEnd {
    #[serde(deserialize_with = "text")]
    pub system_time: Option<String>,
}
