//! A circuit breaker per partner (per process): when a partner fails across many sources in a
//! row, stop spending calls on it, probe with one poll after a cool-down, and resume when the
//! probe succeeds. Other partners are never held back by it.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: poll as usual.
    All,
    /// Half-open: one probe poll.
    Probe,
    /// Open until then.
    None(DateTime<Utc>),
}

#[derive(Debug, Default, Clone)]
struct State {
    consecutive_failures: u32,
    open_until: Option<DateTime<Utc>>,
    cooldown: Option<Duration>,
    probe_in_flight: bool,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    min_cooldown: Duration,
    max_cooldown: Duration,
    states: Mutex<HashMap<String, State>>,
}

impl Breaker {
    pub fn new(threshold: u32, min_cooldown: Duration, max_cooldown: Duration) -> Self {
        Self { threshold: threshold.max(1), min_cooldown, max_cooldown, states: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May polls of `partner` start now?
    pub fn admit(&self, partner: &str, now: DateTime<Utc>) -> Admit {
        let mut states = self.lock();
        let s = states.entry(partner.to_owned()).or_default();
        match s.open_until {
            None => Admit::All,
            Some(until) if now < until => Admit::None(until),
            Some(_) if s.probe_in_flight => Admit::None(now + self.min_cooldown),
            Some(_) => {
                s.probe_in_flight = true;
                Admit::Probe
            }
        }
    }

    /// Record a poll's result: `true` for success (or a failure that says nothing about the
    /// partner's health, like one account's revoked grant), `false` for a partner-side failure.
    /// Returns whether this opened the circuit.
    pub fn record(&self, partner: &str, healthy: bool, now: DateTime<Utc>) -> bool {
        let mut states = self.lock();
        let s = states.entry(partner.to_owned()).or_default();
        if healthy {
            *s = State::default();
            return false;
        }
        s.consecutive_failures += 1;
        let was_probe = std::mem::take(&mut s.probe_in_flight);
        if s.open_until.is_some() && !was_probe {
            return false;
        }
        if was_probe || s.consecutive_failures >= self.threshold {
            let cooldown = match s.cooldown {
                Some(c) if was_probe => (c * 2).min(self.max_cooldown),
                Some(c) => c,
                None => self.min_cooldown,
            };
            s.cooldown = Some(cooldown);
            s.open_until = Some(now + cooldown);
            return true;
        }
        false
    }

    pub fn is_open(&self, partner: &str) -> bool {
        self.lock().get(partner).is_some_and(|s| s.open_until.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_probes_and_closes() {
        let b = Breaker::new(3, Duration::seconds(30), Duration::minutes(10));
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc();
        assert_eq!(b.admit("dexcom", t0), Admit::All);
        assert!(!b.record("dexcom", false, t0));
        assert!(!b.record("dexcom", false, t0));
        assert!(b.record("dexcom", false, t0), "third failure opens");
        assert_eq!(b.admit("dexcom", t0), Admit::None(t0 + Duration::seconds(30)));
        assert_eq!(b.admit("carelink", t0), Admit::All, "other partners unaffected");
        let t1 = t0 + Duration::seconds(31);
        assert_eq!(b.admit("dexcom", t1), Admit::Probe);
        assert!(matches!(b.admit("dexcom", t1), Admit::None(_)), "one probe at a time");
        assert!(b.record("dexcom", false, t1), "a failed probe reopens, longer");
        assert_eq!(b.admit("dexcom", t1 + Duration::seconds(59)), Admit::None(t1 + Duration::seconds(60)));
        let t2 = t1 + Duration::seconds(61);
        assert_eq!(b.admit("dexcom", t2), Admit::Probe);
        b.record("dexcom", true, t2);
        assert_eq!(b.admit("dexcom", t2), Admit::All);
        assert!(!b.is_open("dexcom"));
    }
}
