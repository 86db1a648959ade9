//! The simulator's clock: wall time plus an offset an admin can set or advance. Every partner
//! behaviour (token expiry, late records, budgets, maintenance windows) reads this clock, and
//! tidegate can follow it (`clock.source = "external"`), so separate processes share one time.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Default)]
pub struct SimClock {
    offset: Mutex<Duration>,
}

impl SimClock {
    pub fn starting_at(start: Option<DateTime<Utc>>) -> Self {
        let clock = Self::default();
        if let Some(t) = start {
            clock.set(t);
        }
        clock
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) = to - Utc::now();
    }

    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}
