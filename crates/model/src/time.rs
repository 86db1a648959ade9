//! Time formatting shared by every API and report: RFC 3339 in UTC with milliseconds and `Z`
//! (what Tidepool's services emit), e.g. `2026-11-22T12:00:00.000Z`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

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

#[cfg(test)]
mod tests {
    #[test]
    fn millis_and_z() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-03-08T09:00:00.123456+01:00").unwrap().to_utc();
        assert_eq!(super::format(&t), "2026-03-08T08:00:00.123Z");
    }
}
