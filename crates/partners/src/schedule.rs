//! A partner's schedule policy (DESIGN §5), as pure functions of time, policy and a random source:
//! the first poll of a new connection, the jittered interval after a success, maintenance
//! blackouts in partner-local time (DST-correct), backoffs after failures. Parsed once per
//! partner when the registry is built ([`crate::Partner::schedule`]); the connect flow and the
//! poll worker both ask it.

use crate::config::{BlackoutSettings, ScheduleSettings};
use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use rand::Rng;

/// A daily window in a partner's local time.
#[derive(Debug, Clone, PartialEq)]
pub struct Blackout {
    start: NaiveTime,
    end: NaiveTime,
    tz: Tz,
}

impl Blackout {
    pub fn parse(b: &BlackoutSettings) -> Result<Self, String> {
        let time = |s: &str| NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| format!("{s:?} is not HH:MM"));
        let tz: Tz = b.time_zone.parse().map_err(|_| format!("unknown time zone {:?}", b.time_zone))?;
        let (start, end) = (time(&b.start)?, time(&b.end)?);
        if start == end {
            return Err("a blackout's start and end must differ".into());
        }
        Ok(Self { start, end, tz })
    }

    /// The UTC instant of a local wall-clock reading: a reading that does not exist (the
    /// spring-forward gap) maps to the transition itself (the first instant after the gap); an
    /// ambiguous one (fall back) to its earlier instant.
    fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => t.to_utc(),
            LocalResult::Ambiguous(a, _) => a.to_utc(),
            LocalResult::None => {
                let offset_at = |x: DateTime<Utc>| x.with_timezone(&self.tz).naive_local() - x.naive_utc();
                // Read with the offset in force before the gap, the reading lands after the
                // transition; bisect back to the transition (one-second resolution).
                let before = self.tz.from_local_datetime(&(local - Duration::hours(3))).earliest();
                let Some(before) = before else { return local.and_utc() };
                let old = offset_at(before.to_utc());
                let mut hi = (local - old).and_utc();
                let mut lo = hi - Duration::hours(3);
                while hi - lo > Duration::seconds(1) {
                    let mid = lo + (hi - lo) / 2;
                    if offset_at(mid) == old { lo = mid } else { hi = mid }
                }
                hi
            }
        }
    }

    /// The window that starts on local date `d` as UTC instants [start, end).
    fn on(&self, d: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = self.instant(d.and_time(self.start));
        let end_day = if self.end > self.start { d } else { d.succ_opt().unwrap_or(d) };
        let end = self.instant(end_day.and_time(self.end));
        (start, end.max(start))
    }

    /// The window containing `t`, if any: (start, end) in UTC.
    pub fn containing(&self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let local_date = t.with_timezone(&self.tz).date_naive();
        [local_date.pred_opt(), Some(local_date)]
            .into_iter()
            .flatten()
            .map(|d| self.on(d))
            .find(|(s, e)| *s <= t && t < *e)
    }

    /// Did a window end within `within` before `t` (at or before `t`)?
    pub fn ended_within(&self, t: DateTime<Utc>, within: Duration) -> bool {
        let local_date = t.with_timezone(&self.tz).date_naive();
        [local_date.pred_opt(), Some(local_date)]
            .into_iter()
            .flatten()
            .map(|d| self.on(d))
            .any(|(_, e)| e <= t && t - e < within)
    }
}

/// A partner's schedule policy, parsed.
#[derive(Debug, Clone)]
pub struct Policy {
    pub interval_min: Duration,
    pub interval_max: Duration,
    pub first_poll_within: Duration,
    pub blackouts: Vec<Blackout>,
    pub blackout_grace: Duration,
    pub backoff_base: Duration,
    pub auth_failures_to_confirm: i32,
    pub auth_backoff_base: Duration,
    pub calls_per_hour: Option<i64>,
    pub max_calls_per_poll: i64,
}

fn secs(s: u64) -> Duration {
    Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}

impl Policy {
    pub fn parse(s: &ScheduleSettings) -> Result<Self, String> {
        if s.interval_min_secs == 0 || s.interval_min_secs > s.interval_max_secs {
            return Err("interval_min_secs must be > 0 and ≤ interval_max_secs".into());
        }
        if s.auth_failures_to_confirm == 0 || s.max_calls_per_poll == 0 {
            return Err("auth_failures_to_confirm and max_calls_per_poll must be ≥ 1".into());
        }
        if s.calls_per_hour == Some(0) {
            return Err("calls_per_hour must be ≥ 1 (or unset)".into());
        }
        Ok(Self {
            interval_min: secs(s.interval_min_secs),
            interval_max: secs(s.interval_max_secs),
            first_poll_within: secs(s.first_poll_within_secs.max(1)),
            blackouts: s.blackouts.iter().map(Blackout::parse).collect::<Result<_, _>>()?,
            blackout_grace: secs(s.blackout_grace_secs),
            backoff_base: secs(s.backoff_base_secs.max(1)),
            auth_failures_to_confirm: i32::try_from(s.auth_failures_to_confirm).unwrap_or(i32::MAX),
            auth_backoff_base: secs(s.auth_backoff_base_secs.max(1)),
            calls_per_hour: s.calls_per_hour.map(|c| i64::try_from(c).unwrap_or(i64::MAX)),
            max_calls_per_poll: i64::from(s.max_calls_per_poll),
        })
    }

    /// The blackout window containing `t`, if any.
    pub fn blackout_at(&self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.blackouts.iter().find_map(|b| b.containing(t))
    }

    /// Inside a blackout, or within the grace period after one (auth errors there are the
    /// partner's maintenance, not a dead grant).
    pub fn near_blackout(&self, t: DateTime<Utc>) -> bool {
        self.blackout_at(t).is_some() || self.blackouts.iter().any(|b| b.ended_within(t, self.blackout_grace))
    }

    /// Move `t` out of any blackout: past the window's end plus fresh jitter (spread over the
    /// interval range, so a herd held back by the window spreads out). Returns the time and
    /// whether it moved.
    pub fn avoid_blackout(&self, t: DateTime<Utc>, rng: &mut impl Rng) -> (DateTime<Utc>, bool) {
        let mut t = t;
        let mut moved = false;
        // Windows could touch; a few rounds settle any configuration.
        for _ in 0..4 {
            match self.blackout_at(t) {
                Some((_, end)) => {
                    t = end + self.jitter(rng);
                    moved = true;
                }
                None => break,
            }
        }
        (t, moved)
    }

    fn jitter(&self, rng: &mut impl Rng) -> Duration {
        let spread = (self.interval_max - self.interval_min).num_milliseconds().max(60_000);
        Duration::milliseconds(rng.random_range(0..spread))
    }

    /// After a success at `started`: `started + uniform(min, max) × stretch`, out of blackouts.
    /// The kind says why: `regular`, `stretched` or `blackout`.
    pub fn next_after_success(
        &self,
        started: DateTime<Utc>,
        stretch: f64,
        rng: &mut impl Rng,
    ) -> (DateTime<Utc>, &'static str) {
        let (lo, hi) = (self.interval_min.num_milliseconds(), self.interval_max.num_milliseconds());
        let drawn = if hi > lo { rng.random_range(lo..=hi) } else { lo };
        let stretch = if stretch.is_finite() { stretch.max(1.0) } else { 1.0 };
        let interval = Duration::milliseconds((drawn as f64 * stretch).round() as i64);
        let (t, moved) = self.avoid_blackout(started + interval, rng);
        (
            t,
            if moved {
                "blackout"
            } else if stretch > 1.0 {
                "stretched"
            } else {
                "regular"
            },
        )
    }

    /// The first poll of a new or reconnected source: within `first_poll_within`, jittered.
    pub fn first_poll(&self, now: DateTime<Utc>, rng: &mut impl Rng) -> DateTime<Utc> {
        let within = self.first_poll_within.num_milliseconds().max(1);
        self.avoid_blackout(now + Duration::milliseconds(rng.random_range(0..within)), rng).0
    }

    /// After the `attempt`-th consecutive transient failure (1-based): doubling from the base,
    /// "equal jitter" (half fixed, half random), capped at the normal interval; `retry_after`
    /// (the partner's own word) wins.
    pub fn next_after_transient(
        &self,
        now: DateTime<Utc>,
        attempt: i32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> (DateTime<Utc>, &'static str) {
        if let Some(r) = retry_after {
            let (t, _) = self.avoid_blackout(now + r.max(Duration::seconds(1)), rng);
            return (t, "retry_after");
        }
        let base = self.backoff_base.num_milliseconds();
        let exp = base.saturating_mul(1_i64 << attempt.clamp(1, 30).saturating_sub(1));
        let capped = exp.min(self.interval_min.num_milliseconds()).max(1);
        let delay = capped / 2 + rng.random_range(0..=capped / 2);
        (self.avoid_blackout(now + Duration::milliseconds(delay), rng).0, "backoff")
    }

    /// After the `failure`-th consecutive auth failure (1-based): doubling from the auth base
    /// (Tidepool: 2, 4, 8, 16 h), with a little jitter.
    pub fn next_after_auth_failure(&self, now: DateTime<Utc>, failure: i32, rng: &mut impl Rng) -> DateTime<Utc> {
        let base = self.auth_backoff_base.num_milliseconds();
        let delay = base.saturating_mul(1_i64 << failure.clamp(1, 20).saturating_sub(1));
        let jitter = rng.random_range(0..=(delay / 20).max(1));
        self.avoid_blackout(now + Duration::milliseconds(delay + jitter), rng).0
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn dexcom() -> Policy {
        Policy::parse(&ScheduleSettings {
            blackouts: vec![BlackoutSettings {
                start: "02:45".into(),
                end: "03:45".into(),
                time_zone: "America/Los_Angeles".into(),
            }],
            ..ScheduleSettings::default()
        })
        .unwrap()
    }

    #[test]
    fn the_dexcom_window_follows_los_angeles_time_across_dst() {
        let p = dexcom();
        // Winter (PST, UTC−8): 10:45–11:45 UTC.
        assert_eq!(
            p.blackout_at(t("2026-01-15T10:50:00Z")),
            Some((t("2026-01-15T10:45:00Z"), t("2026-01-15T11:45:00Z")))
        );
        assert_eq!(p.blackout_at(t("2026-01-15T10:44:59Z")), None);
        assert_eq!(p.blackout_at(t("2026-01-15T11:45:00Z")), None);
        // Summer (PDT, UTC−7): 09:45–10:45 UTC.
        assert!(p.blackout_at(t("2026-07-01T09:45:00Z")).is_some());
        assert!(p.blackout_at(t("2026-07-01T10:50:00Z")).is_none());
        // Spring forward (2026-03-08: 02:00 PST → 03:00 PDT at 10:00 UTC): 02:45 does not exist;
        // the window runs from the jump (03:00 PDT) to 03:45 PDT.
        assert_eq!(
            p.blackout_at(t("2026-03-08T10:10:00Z")),
            Some((t("2026-03-08T10:00:00Z"), t("2026-03-08T10:45:00Z")))
        );
        assert!(p.blackout_at(t("2026-03-08T09:59:00Z")).is_none());
        // Fall back (2026-11-01: 02:00 PDT → 01:00 PST at 09:00 UTC): 02:45 PST is 10:45 UTC.
        assert_eq!(
            p.blackout_at(t("2026-11-01T11:00:00Z")),
            Some((t("2026-11-01T10:45:00Z"), t("2026-11-01T11:45:00Z")))
        );
        assert!(p.blackout_at(t("2026-11-01T09:50:00Z")).is_none(), "01:50 PST, the repeated hour");
    }

    #[test]
    fn a_due_time_inside_a_window_moves_past_its_end_with_jitter() {
        let p = dexcom();
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = Vec::new();
        for _ in 0..200 {
            let (next, moved) = p.avoid_blackout(t("2026-01-15T11:00:00Z"), &mut rng);
            assert!(moved);
            assert!(next >= t("2026-01-15T11:45:00Z") && next < t("2026-01-15T12:15:00Z"), "{next}");
            seen.push(next);
        }
        seen.sort();
        seen.dedup();
        assert!(seen.len() > 150, "jittered, not one instant");
        assert_eq!(p.avoid_blackout(t("2026-01-15T12:00:00Z"), &mut rng), (t("2026-01-15T12:00:00Z"), false));
    }

    #[test]
    fn intervals_backoffs_and_auth_backoffs() {
        let p = dexcom();
        let mut rng = StdRng::seed_from_u64(1);
        let start = t("2026-01-15T18:00:00Z");
        for _ in 0..1000 {
            let (next, kind) = p.next_after_success(start, 1.0, &mut rng);
            assert_eq!(kind, "regular");
            let m = (next - start).num_seconds();
            assert!((2700..=4500).contains(&m), "{m}");
            let (stretched, kind) = p.next_after_success(start, 2.0, &mut rng);
            assert_eq!(kind, "stretched");
            assert!((5400..=9000).contains(&(stretched - start).num_seconds()));
        }
        let (b1, _) = p.next_after_transient(start, 1, None, &mut rng);
        assert!((30..=60).contains(&(b1 - start).num_seconds()));
        let (b20, _) = p.next_after_transient(start, 20, None, &mut rng);
        assert!((b20 - start) <= Duration::minutes(45), "capped at the normal interval");
        let (r, kind) = p.next_after_transient(start, 3, Some(Duration::seconds(900)), &mut rng);
        assert_eq!((r - start, kind), (Duration::seconds(900), "retry_after"));
        let a1 = p.next_after_auth_failure(start, 1, &mut rng) - start;
        let a4 = p.next_after_auth_failure(start, 4, &mut rng) - start;
        assert!(a1 >= Duration::hours(2) && a1 < Duration::minutes(127));
        assert!(a4 >= Duration::hours(16) && a4 < Duration::hours(17));
        assert!(p.near_blackout(t("2026-01-15T11:50:00Z")), "just after the window");
        assert!(!p.near_blackout(t("2026-01-15T12:30:00Z")));
    }
}
