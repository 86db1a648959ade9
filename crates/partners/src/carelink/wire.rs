//! CareLink's JSON as typed values (PARTNERS.md §CareLink; read leniently, see `crate::wire`):
//! the `display/message` payload of all three generations, and the discovery and account
//! documents. Field names are CareLink's (camelCase on the wire, with its own oddities).

use serde::Deserialize;
use serde_json::Value;

use crate::wire::{Raw, flag, id_text, list, number, object, raw_list, read, text};

/// The wall-clock fields a record's time may be in, by generation: `timestamp` (C), `dateTime`
/// (B), `datetime` (A, legacy text), `displayTime`. Written out in each record type rather than
/// `#[serde(flatten)]`, which buffers every record before reading it.
macro_rules! stamp_fields {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        $vis struct $name {
            #[serde(deserialize_with = "text")]
            pub timestamp: Option<String>,
            #[serde(deserialize_with = "text")]
            pub date_time: Option<String>,
            #[serde(deserialize_with = "text")]
            pub datetime: Option<String>,
            #[serde(deserialize_with = "text")]
            pub display_time: Option<String>,
            $($body)*
        }

        impl $name {
            /// The first of the time fields that is a string.
            pub fn time(&self) -> Option<&str> {
                [&self.timestamp, &self.date_time, &self.datetime, &self.display_time]
                    .into_iter()
                    .find_map(|t| t.as_deref())
            }
        }
    };
}

stamp_fields! {
    /// A sensor glucose slot (`sgs[]`).
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub(crate) struct Sg {
        #[serde(deserialize_with = "Reading::read")]
        pub sg: Reading,
        #[serde(deserialize_with = "text")]
        pub sensor_state: Option<String>,
    }
}

/// An `sg` value: absent (or `null`), unreadable, or a number (maybe inside a string).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) enum Reading {
    #[default]
    Absent,
    Unreadable,
    Value(f64),
}

impl Reading {
    fn read<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(match crate::fetch::json_number(&v) {
            Some(x) => Self::Value(x),
            None if v.is_null() => Self::Absent,
            None => Self::Unreadable,
        })
    }
}

stamp_fields! {
    /// A pump event (`markers[]`): `type`, a time, and its values — inside `data.dataValues` (C)
    /// or on the marker itself (A, B).
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub(crate) struct Marker {
        #[serde(rename = "type", deserialize_with = "text")]
        pub kind: Option<String>,
        #[serde(deserialize_with = "object")]
        pub data: Option<MarkerData>,
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct MarkerData {
    /// Kept as sent: which fields it has depends on the marker's type.
    #[serde(deserialize_with = "object")]
    pub data_values: Option<Value>,
}

impl Raw<'_, Marker> {
    /// The object holding this marker's values, as sent.
    pub fn values_raw(&self) -> &Value {
        self.rec.data.as_ref().and_then(|d| d.data_values.as_ref()).unwrap_or(self.raw)
    }

    /// This marker's values as `T` (one type per marker kind).
    pub fn values<T: serde::de::DeserializeOwned + Default>(&self) -> T {
        read(self.values_raw())
    }
}

/// `INSULIN` marker values (amounts in units, durations in minutes).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct InsulinValues {
    #[serde(deserialize_with = "number")]
    pub delivered_fast_amount: Option<f64>,
    #[serde(deserialize_with = "number")]
    pub programmed_fast_amount: Option<f64>,
    #[serde(deserialize_with = "number")]
    pub delivered_extended_amount: Option<f64>,
    #[serde(deserialize_with = "number")]
    pub programmed_extended_amount: Option<f64>,
    #[serde(deserialize_with = "number")]
    pub programmed_duration: Option<f64>,
    #[serde(deserialize_with = "number")]
    pub effective_duration: Option<f64>,
    /// `RECOMMENDED`, `MANUAL`, `AUTOCORRECTION`, …
    #[serde(deserialize_with = "text")]
    pub activation_type: Option<String>,
}

/// `AUTO_BASAL_DELIVERY` marker values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct AutoBasalValues {
    #[serde(deserialize_with = "number")]
    pub bolus_amount: Option<f64>,
}

/// `MEAL` marker values (grams).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct MealValues {
    #[serde(deserialize_with = "number")]
    pub amount: Option<f64>,
}

/// `BG_READING` / `BG` / `CALIBRATION` marker values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct GlucoseValues {
    #[serde(deserialize_with = "number")]
    pub value: Option<f64>,
    #[serde(deserialize_with = "number")]
    pub unit_value: Option<f64>,
    /// `BG_LINK` when a linked meter sent it.
    #[serde(deserialize_with = "text")]
    pub bg_source: Option<String>,
}

/// `TIME_CHANGE` marker values: the pump's clock before and after, at the same instant.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TimeChangeValues {
    #[serde(deserialize_with = "text")]
    pub previous_date_time: Option<String>,
    #[serde(deserialize_with = "text")]
    pub new_date_time: Option<String>,
}

/// A pump notification (`notificationHistory.{cleared,active}Notifications[]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Notification {
    /// `ALARM`, `ALERT`, `REMINDER`, …
    #[serde(rename = "type", deserialize_with = "text")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "text")]
    pub triggered_date_time: Option<String>,
    #[serde(deserialize_with = "text")]
    pub date_time: Option<String>,
    #[serde(deserialize_with = "id_text")]
    pub fault_id: Option<String>,
}

impl Notification {
    pub fn time(&self) -> Option<&str> {
        self.triggered_date_time.as_deref().or(self.date_time.as_deref())
    }
}

/// `notificationHistory`.
#[derive(Debug, Clone, Default)]
pub(crate) struct NotificationHistory<'a> {
    pub cleared_notifications: Option<Vec<Raw<'a, Notification>>>,
    pub active_notifications: Option<Vec<Raw<'a, Notification>>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct DeviceInformation {
    #[serde(deserialize_with = "text")]
    pub device_serial_number: Option<String>,
    #[serde(deserialize_with = "text")]
    pub model_number: Option<String>,
}

/// The records of a `display/message` payload, each kept as sent beside its typed reading (for
/// each datum's `payload`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Records<'a> {
    pub sgs: Option<Vec<Raw<'a, Sg>>>,
    pub markers: Option<Vec<Raw<'a, Marker>>>,
    pub notification_history: Option<NotificationHistory<'a>>,
}

impl<'a> Records<'a> {
    pub fn read(data: &'a Value) -> Self {
        let history = data.get("notificationHistory").filter(|h| h.is_object());
        Self {
            sgs: raw_list(data, "sgs"),
            markers: raw_list(data, "markers"),
            notification_history: history.map(|h| NotificationHistory {
                cleared_notifications: raw_list(h, "clearedNotifications"),
                active_notifications: raw_list(h, "activeNotifications"),
            }),
        }
    }
}

/// The pump's identity, clocks and status in a `display/message` payload. Epoch times are
/// milliseconds (a number or a number in a string).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Device {
    #[serde(deserialize_with = "object")]
    pub medical_device_information: Option<DeviceInformation>,
    #[serde(deserialize_with = "text")]
    pub medical_device_serial_number: Option<String>,
    #[serde(deserialize_with = "text")]
    pub conduit_serial_number: Option<String>,
    #[serde(deserialize_with = "text")]
    pub pump_model_number: Option<String>,
    #[serde(deserialize_with = "text")]
    pub medical_device_family: Option<String>,
    /// The phone's clock at its last upload (B writes the real offset into it).
    #[serde(deserialize_with = "text")]
    pub last_conduit_date_time: Option<String>,
    #[serde(deserialize_with = "number")]
    pub last_conduit_update_server_date_time: Option<f64>,
    #[serde(deserialize_with = "number")]
    pub last_conduit_update_server_time: Option<f64>,
    #[serde(deserialize_with = "number")]
    pub current_server_time: Option<f64>,
    /// The pump's clock (A: legacy text).
    #[serde(rename = "sMedicalDeviceTime", deserialize_with = "text")]
    pub s_medical_device_time: Option<String>,
    #[serde(deserialize_with = "number")]
    pub medical_device_time: Option<f64>,
    #[serde(deserialize_with = "number")]
    pub last_medical_device_data_update_server_time: Option<f64>,
    #[serde(deserialize_with = "number")]
    pub pump_battery_level_percent: Option<f64>,
    #[serde(deserialize_with = "number")]
    pub medical_device_battery_level_percent: Option<f64>,
    #[serde(deserialize_with = "number")]
    pub reservoir_remaining_units: Option<f64>,
    #[serde(deserialize_with = "flag")]
    pub pump_suspended: Option<bool>,
    #[serde(deserialize_with = "flag")]
    pub medical_device_suspended: Option<bool>,
    #[serde(deserialize_with = "object")]
    pub active_insulin: Option<ActiveInsulin>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ActiveInsulin {
    #[serde(deserialize_with = "number")]
    pub amount: Option<f64>,
}

/// The discovery document: one entry per region (`CP`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Discovery {
    #[serde(rename = "CP", deserialize_with = "list")]
    pub regions: Option<Vec<RegionEntry>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RegionEntry {
    #[serde(deserialize_with = "text")]
    pub region: Option<String>,
    #[serde(rename = "Auth0SSOConfiguration", deserialize_with = "text")]
    pub sso_configuration: Option<String>,
    #[serde(rename = "baseUrlCumulus", deserialize_with = "text")]
    pub cloud_base_url: Option<String>,
    #[serde(rename = "baseUrlCareLink", deserialize_with = "text")]
    pub web_base_url: Option<String>,
}

/// The Auth0 SSO configuration a region entry points at.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SsoConfiguration {
    #[serde(deserialize_with = "object")]
    pub server: Option<SsoServer>,
    #[serde(deserialize_with = "object")]
    pub system_endpoints: Option<SsoEndpoints>,
    #[serde(deserialize_with = "object")]
    pub client: Option<SsoClient>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SsoServer {
    #[serde(deserialize_with = "text")]
    pub hostname: Option<String>,
    #[serde(deserialize_with = "port")]
    pub port: Option<u64>,
    #[serde(deserialize_with = "text")]
    pub prefix: Option<String>,
}

fn port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Value::deserialize(d)?.as_u64())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SsoEndpoints {
    #[serde(deserialize_with = "text")]
    pub authorization_endpoint_path: Option<String>,
    #[serde(deserialize_with = "text")]
    pub token_endpoint_path: Option<String>,
    #[serde(deserialize_with = "text")]
    pub revocation_endpoint_path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SsoClient {
    #[serde(deserialize_with = "text")]
    pub client_id: Option<String>,
    /// Space-separated.
    #[serde(deserialize_with = "text")]
    pub scope: Option<String>,
    #[serde(deserialize_with = "text")]
    pub audience: Option<String>,
    #[serde(deserialize_with = "text")]
    pub redirect_uri: Option<String>,
}

/// `users/me`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Me {
    #[serde(deserialize_with = "text")]
    pub role: Option<String>,
}

/// `users/me/profile`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Profile {
    #[serde(deserialize_with = "text")]
    pub username: Option<String>,
}

/// One entry of `m2m/links/patients`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct LinkedPatient {
    #[serde(deserialize_with = "text")]
    pub patient_id: Option<String>,
    #[serde(deserialize_with = "text")]
    pub username: Option<String>,
}

impl LinkedPatient {
    pub fn id(&self) -> Option<&str> {
        self.patient_id.as_deref().or(self.username.as_deref())
    }
}
