//! Time formatting shared by every API and report: RFC 3339 in UTC with milliseconds and `Z`
//! (what Tidepool's services emit), e.g. `2026-11-22T12:00:00.000Z`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

pub fn format(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `#[serde(serialize_with = "model::time::serialize")]`
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(t))
}

/// `#[serde(serialize_with = "model::time::serialize_opt")]` (pair with `skip_serializing_if`).
pub fn serialize_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format(t)),
        None => s.serialize_none(),
    }
}

/// `#[serde(deserialize_with = "model::time::deserialize")]`: any RFC 3339 time, as UTC.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let raw = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(&raw).map(|t| t.to_utc()).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    #[test]
    fn millis_and_z() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-03-08T09:00:00.123456+01:00").unwrap().to_utc();
        assert_eq!(super::format(&t), "2026-03-08T08:00:00.123Z");
    }
}

/// A partner timestamp read leniently: the wall-clock reading, and the UTC offset when the
/// string carries one. Accepts missing seconds, fractional seconds, `Z`, `±HH`, `±HHMM`,
/// `±HH:MM` and `±HH:MM:SS` offsets, or no zone at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartnerTime {
    pub local: chrono::NaiveDateTime,
    /// Seconds east of UTC, when the string named an offset.
    pub offset_secs: Option<i32>,
}

impl PartnerTime {
    /// The instant, when the offset is known.
    pub fn instant(&self) -> Option<DateTime<Utc>> {
        self.offset_secs.map(|o| (self.local - chrono::Duration::seconds(o as i64)).and_utc())
    }
}

/// Why a timestamp could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable time {0:?}")]
pub struct BadTime(pub String);

pub fn parse_partner_time(raw: &str) -> Result<PartnerTime, BadTime> {
    let bad = || BadTime(raw.chars().take(64).collect());
    let s = raw.trim();
    if s.len() < 16 || !s.is_char_boundary(10) {
        return Err(bad());
    }
    // Split the zone designator off the end (after the time part).
    let (body, zone) = match s[10..].find(['Z', 'z', '+', '-']) {
        Some(i) => (&s[..10 + i], Some(&s[10 + i..])),
        None => (s, None),
    };
    let local =
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(body, f).ok())
            .ok_or_else(bad)?;
    let offset_secs = match zone {
        None => None,
        Some("Z" | "z") => Some(0),
        Some(z) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: String = z[1..].chars().filter(|c| c.is_ascii_digit()).collect();
            let n = |a: usize, b: usize| digits.get(a..b).and_then(|d| d.parse::<i32>().ok());
            let (h, m, sec) = match digits.len() {
                2 => (n(0, 2), Some(0), Some(0)),
                4 => (n(0, 2), n(2, 4), Some(0)),
                6 => (n(0, 2), n(2, 4), n(4, 6)),
                _ => (None, None, None),
            };
            match (h, m, sec) {
                (Some(h), Some(m), Some(sec)) if h <= 18 && m < 60 && sec < 60 => {
                    Some(sign * (h * 3600 + m * 60 + sec))
                }
                _ => return Err(bad()),
            }
        }
    };
    Ok(PartnerTime { local, offset_secs })
}

/// Tidepool's `deviceTime`: a wall-clock reading as `YYYY-MM-DDThh:mm:ss`, no zone.
pub fn device_time(local: &chrono::NaiveDateTime) -> String {
    local.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Split "local clock − UTC" into a time-zone offset (whole quarter hours: every real zone,
/// including +05:45) and the clock's drift, in milliseconds.
pub fn split_offset(local_minus_utc_ms: i64) -> (i64, i64) {
    const QUARTER: i64 = 15 * 60 * 1000;
    let zone_ms = ((local_minus_utc_ms as f64 / QUARTER as f64).round() as i64) * QUARTER;
    (zone_ms / 60_000, local_minus_utc_ms - zone_ms)
}

#[cfg(test)]
mod partner_time_tests {
    use super::*;

    #[test]
    fn every_shape_in_the_wild() {
        let t = |s: &str| parse_partner_time(s).unwrap();
        assert_eq!(t("2025-01-30T23:49:55Z").instant().unwrap().to_rfc3339(), "2025-01-30T23:49:55+00:00");
        assert_eq!(t("2025-01-30T15:49:55-08:00").instant().unwrap().to_rfc3339(), "2025-01-30T23:49:55+00:00");
        assert_eq!(t("2025-01-30T15:49:55-0800").offset_secs, Some(-8 * 3600));
        assert_eq!(t("2025-01-30T15:49:55-08").offset_secs, Some(-8 * 3600));
        assert_eq!(t("2025-01-30T16:49-06:59:58").offset_secs, Some(-(6 * 3600 + 59 * 60 + 58)));
        assert_eq!(t("2025-01-30T16:49").local.format("%H:%M:%S").to_string(), "16:49:00");
        assert_eq!(t("2025-01-30T15:49:55").offset_secs, None);
        assert_eq!(t("2021-05-21T01:08:00.000Z").offset_secs, Some(0));
        assert_eq!(t("2025-11-10T21:22:27.123").local.format("%S%.3f").to_string(), "27.123");
        for bad in [
            "",
            "yesterday",
            "2025-13-01T00:00:00",
            "2018-02-29T20:59:33",
            "2025-01-30T15:49:55+99:00",
            "2025-01-30T15:49:55+1",
        ] {
            assert!(parse_partner_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn offsets_split_into_zone_and_drift() {
        assert_eq!(split_offset(-8 * 3_600_000), (-480, 0));
        assert_eq!(split_offset(5 * 3_600_000 + 45 * 60_000), (345, 0), "Nepal");
        assert_eq!(split_offset(-(6 * 3_600_000 + 59 * 60_000 + 58_000)), (-420, 2_000), "2 s of drift");
    }
}
