//! Synthetic people: deterministic per seed, generated as pure functions of time, so any window
//! can be served (and its ground truth computed) without storing anything.
//!
//! Each person has a time zone (one crosses a DST change, one lives at +05:30), a CGM on a
//! 5-minute grid with plausible physiology (daily rhythm, meal responses, night lows and
//! post-dinner highs that leave the 40–400 range), sensor gaps, records that reach the partner
//! late (a phone that uploads hours later), meals with boluses, and partner-specific quirks.

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// Which partner a synthetic account lives at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Partner {
    Dexcom,
    Carelink,
}

/// How a Dexcom account writes `displayTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TimeStyle {
    /// Mobile app: local time with its UTC offset.
    Offset,
    /// Receiver upload: local time without any offset.
    NoOffset,
    /// A display clock that drifted: an odd offset such as `-06:59:58`, seconds dropped.
    Drifted,
}

/// A CareLink account's role.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum CarelinkRole {
    Patient,
    /// A care partner following these people (indexes into the population).
    CarePartner {
        patients: Vec<usize>,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub index: usize,
    /// The login name on the partner's sign-in page.
    pub login: String,
    pub partner: Partner,
    #[serde(serialize_with = "ser_tz")]
    pub tz: Tz,
    pub seed: u64,
    pub time_style: TimeStyle,
    pub transmitter_generation: &'static str,
    pub display_device: &'static str,
    pub display_app: &'static str,
    pub transmitter_id: String,
    pub carelink_role: Option<CarelinkRole>,
    /// Seconds after each 5-minute boundary at which this sensor reads.
    pub phase_secs: i64,
}

fn ser_tz<S: serde::Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

/// SplitMix64 over (seed, tag, index): cheap, deterministic, well mixed.
pub fn hash(seed: u64, tag: u64, index: i64) -> u64 {
    let mut z = seed ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1).
pub fn unit(seed: u64, tag: u64, index: i64) -> f64 {
    (hash(seed, tag, index) >> 11) as f64 / (1u64 << 53) as f64
}

/// A UUID-shaped id derived from a hash (lowercase, version-4 layout).
pub fn uuid_like(seed: u64, tag: u64, index: i64) -> String {
    let a = hash(seed, tag, index);
    let b = hash(seed, tag ^ 0x5555, index);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        8 + (b >> 62),
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

const TZS: [Tz; 6] = [
    chrono_tz::America::New_York, // crosses DST changes
    chrono_tz::Asia::Kolkata,     // +05:30
    chrono_tz::America::Los_Angeles,
    chrono_tz::Europe::Berlin,
    chrono_tz::America::Chicago,
    chrono_tz::Australia::Adelaide, // +09:30/+10:30, southern DST
];

/// The population for a seed: `dexcom` Dexcom accounts, then `carelink` CareLink accounts (the
/// last CareLink account, when there are at least three, is a care partner following two
/// patients; the one before it follows one).
pub fn population(seed: u64, dexcom: usize, carelink: usize) -> Vec<Person> {
    let mut people = Vec::with_capacity(dexcom + carelink);
    for i in 0..dexcom {
        let s = hash(seed, 1, i as i64);
        let (generation, device, app) = match i % 4 {
            0 => ("g7", "iOS", "G7"),
            1 => ("g6", "android", "G6"),
            2 => ("g6", "receiver", "receiver"),
            _ => ("g6 pro", "iOS", "G6"),
        };
        let time_style = match i % 6 {
            2 => TimeStyle::NoOffset,
            5 => TimeStyle::Drifted,
            _ => TimeStyle::Offset,
        };
        people.push(Person {
            index: i,
            login: format!("dexcom-{:03}", i + 1),
            partner: Partner::Dexcom,
            tz: TZS[i % TZS.len()],
            seed: s,
            time_style,
            transmitter_generation: generation,
            display_device: device,
            display_app: app,
            transmitter_id: transmitter_id(s),
            carelink_role: None,
            phase_secs: (s % 300) as i64,
        });
    }
    for j in 0..carelink {
        let i = dexcom + j;
        let s = hash(seed, 2, j as i64);
        let role = if carelink >= 3 && j == carelink - 1 {
            CarelinkRole::CarePartner { patients: vec![dexcom, dexcom + 1] }
        } else if carelink >= 3 && j == carelink - 2 {
            CarelinkRole::CarePartner { patients: vec![dexcom] }
        } else {
            CarelinkRole::Patient
        };
        people.push(Person {
            index: i,
            login: format!("carelink-{:03}", j + 1),
            partner: Partner::Carelink,
            tz: TZS[j % TZS.len()],
            seed: s,
            time_style: TimeStyle::NoOffset,
            transmitter_generation: "",
            display_device: "",
            display_app: "",
            transmitter_id: String::new(),
            carelink_role: Some(role),
            phase_secs: (s % 300) as i64,
        });
    }
    people
}

fn transmitter_id(seed: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..64).map(|k| ALPHABET[(hash(seed, 3, k) % 36) as usize] as char).collect()
}

/// Meal times (local hour, minute) and carbs for a day; jittered per person and day.
pub fn meals(p: &Person, day: i64) -> Vec<(u32, u32, f64)> {
    let base = [(7, 30, 45.0), (12, 30, 60.0), (19, 0, 75.0)];
    base.iter()
        .enumerate()
        .filter(|(k, _)| unit(p.seed, 40 + *k as u64, day) > 0.1) // sometimes a meal is skipped
        .map(|(k, (h, m, carbs))| {
            let jitter = (unit(p.seed, 50 + k as u64, day) * 40.0) as u32; // 0–40 min later
            let grams = (carbs * (0.6 + 0.8 * unit(p.seed, 60 + k as u64, day))).round();
            let minutes = h * 60 + m + jitter;
            (minutes / 60, minutes % 60, grams)
        })
        .collect()
}

/// Local day number (days since 1970-01-01 in the person's zone) of an instant.
pub fn local_day(p: &Person, t: DateTime<Utc>) -> i64 {
    let local = t.with_timezone(&p.tz).date_naive();
    local.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("static date")).num_days()
}

/// The UTC instant of a local wall time on a local day (DST gaps move forward, folds take the
/// earlier instant).
pub fn local_instant(p: &Person, day: i64, hour: u32, minute: u32) -> DateTime<Utc> {
    let date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("static date") + Duration::days(day);
    let naive = date.and_hms_opt(hour, minute, 0).expect("valid wall time");
    resolve_local(p.tz, naive)
}

pub fn resolve_local(tz: Tz, naive: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => t.to_utc(),
        chrono::LocalResult::Ambiguous(a, _) => a.to_utc(),
        chrono::LocalResult::None => resolve_local(tz, naive + Duration::hours(1)),
    }
}

/// True glucose (mg/dL, unclamped) at an instant.
pub fn glucose(p: &Person, t: DateTime<Utc>) -> f64 {
    let local = t.with_timezone(&p.tz);
    let hour = local.hour() as f64 + local.minute() as f64 / 60.0;
    let base = 115.0 + 20.0 * unit(p.seed, 7, 0);
    let rhythm = 18.0 * ((hour - 4.0) / 24.0 * std::f64::consts::TAU).sin();
    let day = local_day(p, t);
    let mut meal_rise = 0.0;
    for d in [day - 1, day] {
        for (h, m, grams) in meals(p, d) {
            let start = local_instant(p, d, h, m);
            let x = (t - start).num_seconds() as f64 / 2700.0; // peak 45 min after the meal
            if (0.0..8.0).contains(&x) {
                meal_rise += grams * 1.3 * x * (1.0 - x).exp();
            }
        }
    }
    // Excursions that leave the sensor's range: a night low on some days, a high on others.
    let excursion = match hash(p.seed, 8, day) % 4 {
        0 => {
            let x = (hour - 3.0) / 0.5;
            -110.0 * (-x * x).exp()
        }
        1 => {
            let x = (hour - 21.0) / 0.6;
            300.0 * (-x * x).exp()
        }
        _ => 0.0,
    };
    base + rhythm + meal_rise + excursion
}

/// One CGM reading as the sensor reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub slot: i64,
    pub system_time: DateTime<Utc>,
    /// When the reading reaches the partner's cloud.
    pub arrival: DateTime<Utc>,
    /// mg/DL as reported: 39 below 40, 401 above 400, `None` when the sensor gave no value.
    pub value: Option<i64>,
    /// `low`/`high` for out-of-range values.
    pub status: Option<&'static str>,
    /// mg/dL/min over the last 5 minutes.
    pub trend_rate: Option<f64>,
    pub trend: &'static str,
}

pub const SLOT_SECS: i64 = 300;

pub fn slot_time(p: &Person, slot: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(slot * SLOT_SECS + p.phase_secs, 0).expect("in range")
}

/// The slot of the last reading at or before `t`.
pub fn slot_at_or_before(p: &Person, t: DateTime<Utc>) -> i64 {
    (t.timestamp() - p.phase_secs).div_euclid(SLOT_SECS)
}

fn quantize(g: f64, noise: f64) -> i64 {
    (g + noise).round() as i64
}

fn raw_value(p: &Person, slot: i64) -> i64 {
    let noise = (unit(p.seed, 9, slot) - 0.5) * 6.0;
    quantize(glucose(p, slot_time(p, slot)), noise)
}

pub fn trend_for(rate: f64) -> &'static str {
    match rate {
        r if r >= 3.0 => "doubleUp",
        r if r >= 2.0 => "singleUp",
        r if r >= 1.0 => "fortyFiveUp",
        r if r > -1.0 => "flat",
        r if r > -2.0 => "fortyFiveDown",
        r if r > -3.0 => "singleDown",
        _ => "doubleDown",
    }
}

/// The reading in a slot, or `None` in a sensor gap.
pub fn reading(p: &Person, slot: i64) -> Option<Reading> {
    let hour_block = slot.div_euclid(12);
    if hash(p.seed, 10, hour_block).is_multiple_of(40) {
        return None; // sensor gap: a whole hour missing
    }
    let system_time = slot_time(p, slot);
    // Usually uploaded within three minutes; some hours reach the cloud 2–4 h late.
    let delay = if hash(p.seed, 11, hour_block).is_multiple_of(12) {
        Duration::seconds(7200 + (hash(p.seed, 12, hour_block) % 7200) as i64)
    } else {
        Duration::seconds((hash(p.seed, 13, slot) % 180) as i64)
    };
    let arrival = system_time + delay;
    if hash(p.seed, 14, slot).is_multiple_of(400) {
        return Some(Reading {
            slot,
            system_time,
            arrival,
            value: None,
            status: None,
            trend_rate: None,
            trend: "notComputable",
        });
    }
    let raw = raw_value(p, slot);
    let (value, status) = match raw {
        v if v < 40 => (39, Some("low")),
        v if v > 400 => (401, Some("high")),
        v => (v, None),
    };
    let prev = raw_value(p, slot - 1);
    let rate = ((raw.clamp(39, 401) - prev.clamp(39, 401)) as f64 / 5.0 * 10.0).round() / 10.0;
    let (trend_rate, trend) = if status.is_some() { (None, "rateOutOfRange") } else { (Some(rate), trend_for(rate)) };
    Some(Reading { slot, system_time, arrival, value: Some(value), status, trend_rate, trend })
}

/// Readings with `start <= systemTime < end`.
pub fn readings(p: &Person, start: DateTime<Utc>, end: DateTime<Utc>) -> impl Iterator<Item = Reading> + '_ {
    let first = slot_at_or_before(p, start - Duration::seconds(1)) + 1;
    let last = slot_at_or_before(p, end - Duration::seconds(1));
    (first..=last).filter_map(move |s| reading(p, s)).filter(move |r| r.system_time >= start && r.system_time < end)
}

/// A user-entered event (meal, insulin dose, fingerstick, exercise, health, note).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    pub kind: EntryKind,
    pub system_time: DateTime<Utc>,
    pub arrival: DateTime<Utc>,
    /// Later edits: (when it changes at the partner, the new value) and deletion time.
    pub updated: Option<(DateTime<Utc>, f64)>,
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EntryKind {
    Carbs {
        grams: f64,
    },
    /// Meal bolus (fast) or daily basal insulin (long).
    Insulin {
        units: f64,
        long_acting: bool,
    },
    BloodGlucose {
        mg_dl: f64,
    },
    Exercise {
        minutes: f64,
        intensity: &'static str,
    },
    Health {
        what: &'static str,
    },
    Note {
        text: &'static str,
    },
}

impl EntryKind {
    pub fn value(&self) -> f64 {
        match self {
            Self::Carbs { grams } => *grams,
            Self::Insulin { units, .. } => *units,
            Self::BloodGlucose { mg_dl } => *mg_dl,
            Self::Exercise { minutes, .. } => *minutes,
            Self::Health { .. } | Self::Note { .. } => 0.0,
        }
    }
}

const NOTES: [&str; 4] = ["Pizza night", "Sensor felt loose", "Forgot bolus, corrected", "Long walk with the dog"];
const HEALTH: [&str; 6] = ["illness", "stress", "highSymptoms", "lowSymptoms", "cycle", "alcohol"];

/// Every entry of a local day, in time order.
pub fn entries_of_day(p: &Person, day: i64) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut push = |k: i64, kind: EntryKind, at: DateTime<Utc>| {
        let tag = day * 16 + k;
        let arrival = at + Duration::seconds(30 + (hash(p.seed, 20, tag) % 600) as i64);
        let updated = (hash(p.seed, 21, tag).is_multiple_of(11) && kind.value() > 0.0)
            .then(|| (at + Duration::hours(2), (kind.value() * 1.1 * 10.0).round() / 10.0));
        let deleted_at = (hash(p.seed, 22, tag).is_multiple_of(17)).then(|| at + Duration::hours(3));
        out.push(Entry { id: uuid_like(p.seed, 23, tag), kind, system_time: at, arrival, updated, deleted_at });
    };
    for (k, (h, m, grams)) in meals(p, day).into_iter().enumerate() {
        let at = local_instant(p, day, h, m);
        push(k as i64, EntryKind::Carbs { grams }, at);
        let units = (grams / 10.0 * 2.0).round() / 2.0;
        push(4 + k as i64, EntryKind::Insulin { units, long_acting: false }, at + Duration::minutes(2));
    }
    push(8, EntryKind::Insulin { units: 18.0, long_acting: true }, local_instant(p, day, 22, 0));
    let fingerstick_at = local_instant(p, day, 7, 5);
    push(9, EntryKind::BloodGlucose { mg_dl: glucose(p, fingerstick_at).clamp(40.0, 400.0).round() }, fingerstick_at);
    if hash(p.seed, 24, day).is_multiple_of(3) {
        let intensity = ["light", "medium", "heavy"][(hash(p.seed, 25, day) % 3) as usize];
        push(10, EntryKind::Exercise { minutes: 30.0, intensity }, local_instant(p, day, 18, 0));
    }
    if hash(p.seed, 26, day).is_multiple_of(5) {
        push(
            11,
            EntryKind::Health { what: HEALTH[(hash(p.seed, 27, day) % 6) as usize] },
            local_instant(p, day, 16, 30),
        );
    }
    if hash(p.seed, 28, day).is_multiple_of(4) {
        push(12, EntryKind::Note { text: NOTES[(hash(p.seed, 29, day) % 4) as usize] }, local_instant(p, day, 20, 15));
    }
    out.sort_by_key(|e| e.system_time);
    out
}

/// Entries with `start <= systemTime < end`.
pub fn entries(p: &Person, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Entry> {
    let (first, last) = (local_day(p, start) - 1, local_day(p, end) + 1);
    (first..=last)
        .flat_map(|d| entries_of_day(p, d))
        .filter(|e| e.system_time >= start && e.system_time < end)
        .collect()
}

/// Fingerstick calibrations (G6 sensors only): daily at 08:10 local.
pub fn calibrations(p: &Person, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(String, DateTime<Utc>, f64)> {
    if !p.transmitter_generation.starts_with("g6") {
        return Vec::new();
    }
    (local_day(p, start) - 1..=local_day(p, end) + 1)
        .map(|d| {
            let at = local_instant(p, d, 8, 10);
            (uuid_like(p.seed, 30, d), at, glucose(p, at).clamp(40.0, 400.0).round())
        })
        .filter(|(_, at, _)| *at >= start && *at < end)
        .collect()
}

/// CGM alerts: a `low` when a reading drops below 70, an `urgentLow` below 55, a `high` when one
/// rises above 250 (each on the crossing reading).
pub fn alerts(p: &Person, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(String, &'static str, Reading)> {
    let mut out = Vec::new();
    for r in readings(p, start, end) {
        let Some(v) = r.value else { continue };
        let Some(prev) = reading(p, r.slot - 1).and_then(|x| x.value) else { continue };
        let name = if v < 55 && prev >= 55 {
            "urgentLow"
        } else if v < 70 && prev >= 70 {
            "low"
        } else if v > 250 && prev <= 250 {
            "high"
        } else {
            continue;
        };
        out.push((uuid_like(p.seed, 31, r.slot), name, r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn deterministic_per_seed() {
        let a = population(7, 4, 3);
        let b = population(7, 4, 3);
        let (s, e) = (t("2026-03-01T00:00:00Z"), t("2026-03-02T00:00:00Z"));
        assert_eq!(readings(&a[0], s, e).collect::<Vec<_>>(), readings(&b[0], s, e).collect::<Vec<_>>());
        assert_ne!(
            readings(&a[0], s, e).collect::<Vec<_>>(),
            readings(&population(8, 4, 3)[0], s, e).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_week_has_gaps_out_of_range_values_and_late_records() {
        let people = population(42, 8, 0);
        let (s, e) = (t("2026-03-01T00:00:00Z"), t("2026-03-15T00:00:00Z"));
        let all: Vec<Reading> = people.iter().flat_map(|p| readings(p, s, e).collect::<Vec<_>>()).collect();
        assert!(all.iter().any(|r| r.value == Some(39) && r.status == Some("low")));
        assert!(all.iter().any(|r| r.value == Some(401) && r.status == Some("high")));
        assert!(all.iter().any(|r| r.value.is_none()));
        assert!(all.iter().any(|r| r.arrival - r.system_time > Duration::hours(2)));
        let expected_slots = 8 * 14 * 288;
        assert!(all.len() < expected_slots, "gaps exist");
        assert!(all.len() > expected_slots * 9 / 10);
        for r in &all {
            if let Some(v) = r.value {
                assert!((39..=401).contains(&v));
            }
        }
    }

    #[test]
    fn trends_agree_with_rates() {
        let p = &population(1, 1, 0)[0];
        for r in readings(p, t("2026-03-01T00:00:00Z"), t("2026-03-03T00:00:00Z")) {
            if let Some(rate) = r.trend_rate {
                assert_eq!(r.trend, trend_for(rate));
            }
        }
    }

    #[test]
    fn local_times_follow_dst() {
        let p = &population(1, 1, 0)[0]; // America/New_York
        assert_eq!(p.tz, chrono_tz::America::New_York);
        // 2026-03-08 is the spring-forward day in the US: 07:30 local is 11:30Z, the day before 12:30Z.
        let day = local_day(p, t("2026-03-08T15:00:00Z"));
        assert_eq!(local_instant(p, day, 7, 30), t("2026-03-08T11:30:00Z"));
        assert_eq!(local_instant(p, day - 1, 7, 30), t("2026-03-07T12:30:00Z"));
        // 02:30 does not exist that day: moved an hour later.
        assert_eq!(local_instant(p, day, 2, 30), t("2026-03-08T07:30:00Z"));
    }
}
