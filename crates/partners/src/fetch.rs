//! What a poll brings back, whatever the partner: datums to write, datums to remove, records
//! skipped (counted by reason), and how many partner calls it cost.

use std::collections::BTreeMap;

use chrono::Duration;
use model::DatumId;
use model::datum::Datum;
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
