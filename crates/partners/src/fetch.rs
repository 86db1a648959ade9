//! What a poll brings back, whatever the partner: datums to write, datums to remove, records
//! skipped (counted by reason), and how many partner calls it cost.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration};
use model::DatumId;
use model::datum::{Base, Datum};
use model::time::{BadTime, PartnerTime, parse_partner_time};
use serde_json::Value;

/// A number that may arrive as a JSON number or inside a string (Dexcom v3 event values,
/// CareLink marker values); never NaN or infinite.
pub(crate) fn json_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

/// Whether a reading's year has the four digits (0–9999) every Tidepool time is written with.
pub(crate) fn four_digit_year(t: &impl Datelike) -> bool {
    (0..=9999).contains(&t.year())
}

/// A partner timestamp (`model::time::parse_partner_time`), refused unless its year has four
/// digits. The lenient reader also takes signed six-digit years, and at chrono's edge
/// `PartnerTime::instant` then overflows and panics (`-262143-1-1T00:00:00+18:00` did; issue 10,
/// pinned in tests/fuzz_parsers.rs); no Tidepool time could say such a year anyway.
pub(crate) fn partner_time(raw: &str) -> Result<PartnerTime, BadTime> {
    parse_partner_time(raw)
        .and_then(|t| if four_digit_year(&t.local) { Ok(t) } else { Err(BadTime(raw.chars().take(64).collect())) })
}

/// A rule of Tidepool's that `model`'s `validate` leaves out: `time` is an RFC 3339 date-time, so
/// its year has four digits. A partner wall clock of `9999-12-31T23:59:59` west of UTC lands in
/// year 10000, which no Tidepool time can say: such a record is skipped as invalid (found by
/// tests/fuzz_parsers.rs, issue 10).
pub(crate) fn check_time(base: &Base) -> Result<(), &'static str> {
    if four_digit_year(&base.time) { Ok(()) } else { Err("time: year must have four digits") }
}

/// How far back and how often a driver reads.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// First poll of a new connection: how much history to import.
    pub backfill: Duration,
    /// Every later poll re-reads this much before where the last one ended (late records,
    /// edited and deleted events); idempotent writes make the overlap free.
    pub look_back: Duration,
    /// Device settings are read at most this often.
    pub devices_every: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self { backfill: Duration::days(30), look_back: Duration::hours(6), devices_every: Duration::hours(24) }
    }
}

/// Records skipped for one reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    pub count: u64,
    /// The last one's description (no values beyond what identifies the problem).
    pub example: String,
}

#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub datums: Vec<Datum>,
    pub removed: Vec<DatumId>,
    pub skipped: BTreeMap<&'static str, Skipped>,
    /// Partner requests made.
    pub calls: u32,
}

impl Batch {
    pub fn skip(&mut self, code: &'static str, detail: &str) {
        let s = self.skipped.entry(code).or_default();
        s.count += 1;
        s.example = detail.chars().take(200).collect();
    }

    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().map(|s| s.count).sum()
    }

    /// A one-line summary of what was skipped, e.g. `bad_time: 2 (unreadable systemTime)`.
    pub fn skipped_summary(&self) -> Option<String> {
        (!self.skipped.is_empty()).then(|| {
            self.skipped.iter().map(|(k, s)| format!("{k}: {} ({})", s.count, s.example)).collect::<Vec<_>>().join("; ")
        })
    }
}
