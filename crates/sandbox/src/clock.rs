//! The simulator's clock: wall time plus an offset an admin can set or advance. Every partner
//! behaviour (token expiry, late records, budgets, maintenance windows) reads this clock, and
//! tidegate can follow it (`clock.source = "external"`), so separate processes share one time.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Default)]
pub struct SimClock {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    offset: Duration,
    /// Set: time stands still there (until `thaw`); `set` and `advance` move it.
    frozen: Option<DateTime<Utc>>,
}

impl SimClock {
    pub fn starting_at(start: Option<DateTime<Utc>>) -> Self {
        let clock = Self::default();
        if let Some(t) = start {
            clock.set(t);
        }
        clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now(&self) -> DateTime<Utc> {
        let s = self.lock();
        s.frozen.unwrap_or_else(|| Utc::now() + s.offset)
    }

    pub fn set(&self, to: DateTime<Utc>) {
        let mut s = self.lock();
        match &mut s.frozen {
            Some(t) => *t = to,
            None => s.offset = to - Utc::now(),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut s = self.lock();
        match &mut s.frozen {
            Some(t) => *t += by,
            None => s.offset += by,
        }
    }

    /// Stop time where it is (tests that compare against "what had arrived by now").
    pub fn freeze(&self) {
        let mut s = self.lock();
        if s.frozen.is_none() {
            s.frozen = Some(Utc::now() + s.offset);
        }
    }

    /// Let time run again from where it stood.
    pub fn thaw(&self) {
        let mut s = self.lock();
        if let Some(t) = s.frozen.take() {
            s.offset = t - Utc::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_clock_stands_still_and_moves_only_when_told() {
        let start = DateTime::parse_from_rfc3339("2026-03-07T12:00:00Z").unwrap().to_utc();
        let c = SimClock::starting_at(Some(start));
        c.freeze();
        let t = c.now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(c.now(), t);
        c.advance(Duration::minutes(5));
        assert_eq!(c.now(), t + Duration::minutes(5));
        c.set(start);
        assert_eq!(c.now(), start);
        c.thaw();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(c.now() > start && c.now() - start < Duration::seconds(5));
    }
}
