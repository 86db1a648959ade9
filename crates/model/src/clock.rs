//! One injectable clock for the whole service (DESIGN §4 "Clock").
//!
//! Scheduling and expiry code never calls `Utc::now()` directly: it asks a [`Clock`]. Production
//! uses [`SystemClock`]; tests use [`ManualClock`]; processes that must agree on a simulated time
//! (several workers following the simulator's admin clock) use [`OffsetClock`], whose offset a
//! follower task keeps in step with the external source.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

/// A source of "now". Implementations must be cheap: this is called on every poll and request.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The clock shared by every part of one process.
pub type SharedClock = Arc<dyn Clock>;

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. For tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self { now: Mutex::new(start) }
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.lock() = to;
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        *now += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A poisoned lock only means another thread panicked while holding a plain value.
        self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

/// Wall-clock time plus an offset that can be changed at run time.
///
/// Used to follow an external clock (the simulator's admin clock): a follower task reads the
/// external time and calls [`OffsetClock::sync_to`]. Between syncs time runs at the normal rate.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Make `now()` equal `external_now` at the wall-clock instant `observed_at`.
    pub fn sync_to(&self, external_now: DateTime<Utc>, observed_at: DateTime<Utc>) {
        let offset = (external_now - observed_at).num_milliseconds();
        self.offset_ms.store(offset, Ordering::Relaxed);
    }

    pub fn offset(&self) -> Duration {
        Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = DateTime::parse_from_rfc3339("2026-03-08T09:00:00Z").unwrap().to_utc();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::days(2));
        assert_eq!(clock.now(), start + Duration::days(2));
        clock.set(start);
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn offset_clock_follows_external_time() {
        let clock = OffsetClock::new();
        let wall = Utc::now();
        let external = wall + Duration::days(3);
        clock.sync_to(external, wall);
        let drift = (clock.now() - external).num_milliseconds();
        assert!((0..5_000).contains(&drift), "drift {drift} ms");
        assert_eq!(clock.offset(), Duration::days(3));
    }
}
