//! Placing CareLink wall-clock readings in UTC: the payload's offset, and a `TIME_CHANGE` inside
//! the payload.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};

use super::PayloadError;
use crate::carelink::wire::Device;
use crate::fetch::{four_digit_year, partner_time};

const QUARTER_HOUR_SECS: i64 = 15 * 60;

/// A CareLink wall-clock reading: ISO (any zone suffix ignored: it is fake) or the legacy
/// `Oct 20, 2015 13:21:00`.
///
/// Readings (here and in `epoch_ms`) outside years 0–9999 are unreadable: no datum could carry
/// them, and keeping every wall clock and server time within those years keeps the payload offset
/// within ±10,000 years, so placing a record (`local − offset`, `server time + offset`) stays far
/// inside chrono's ±262,000 years instead of panicking on overflow (issue 10: a
/// `lastConduitUpdateServerDateTime` at chrono's last millisecond did; pinned in
/// tests/fuzz_parsers.rs).
pub(super) fn wall_clock(raw: &str) -> Option<NaiveDateTime> {
    let local = match partner_time(raw) {
        Ok(t) => t.local,
        Err(_) => NaiveDateTime::parse_from_str(raw.trim(), "%b %d, %Y %H:%M:%S").ok()?,
    };
    four_digit_year(&local).then_some(local)
}

/// An epoch-milliseconds field.
pub(super) fn epoch_ms(ms: Option<f64>) -> Option<DateTime<Utc>> {
    let ms = ms? as i64;
    (ms > 0).then(|| DateTime::from_timestamp_millis(ms)).flatten().filter(four_digit_year)
}

/// The pump's offset from UTC (seconds east), rounded to a quarter hour. In order: the phone's
/// clock vs the server's receipt of the same upload (C, B), the real offset B writes into
/// `lastConduitDateTime`, the pump's clock vs the server's (A), the pump time in epoch form.
pub(super) fn payload_offset(device: &Device) -> Result<i64, PayloadError> {
    let round = |secs: i64| (secs as f64 / QUARTER_HOUR_SECS as f64).round() as i64 * QUARTER_HOUR_SECS;
    let conduit = partner_time(device.last_conduit_date_time.as_deref().unwrap_or_default()).ok();
    if let Some(off) = conduit.and_then(|c| c.offset_secs).filter(|o| *o != 0) {
        return Ok(round(off as i64));
    }
    let conduit_server = epoch_ms(device.last_conduit_update_server_date_time)
        .or_else(|| epoch_ms(device.last_conduit_update_server_time));
    if let (Some(c), Some(s)) = (conduit, conduit_server) {
        return Ok(round((c.local.and_utc() - s).num_seconds()));
    }
    let server = epoch_ms(device.current_server_time);
    let pump = device
        .s_medical_device_time
        .as_deref()
        .and_then(wall_clock)
        .or_else(|| epoch_ms(device.medical_device_time).map(|t| t.naive_utc()));
    match (pump, server) {
        (Some(p), Some(s)) => Ok(round((p.and_utc() - s).num_seconds())),
        _ => Err(PayloadError::NoClock),
    }
}

/// How one payload places wall-clock readings in UTC.
pub(super) struct Clock {
    /// Seconds east of UTC now (after any time change in the payload).
    pub offset: i64,
    /// The last `TIME_CHANGE`: (old clock reading, new clock reading) at the same instant.
    pub change: Option<(NaiveDateTime, NaiveDateTime)>,
}

impl Clock {
    /// The offset for a record; `before` says it precedes the time change.
    pub fn offset(&self, before: bool) -> i64 {
        match (self.change, before) {
            (Some((old, new)), true) => self.offset + (old - new).num_seconds(),
            _ => self.offset,
        }
    }

    /// For a sequence of wall-clock readings in the order the pump recorded them: which come
    /// before the time change. Spring forward: everything below the new clock reading. Fall back:
    /// until the clock goes backwards or passes the old reading (the repeated hour is decided by
    /// order, not by value).
    pub fn before_flags(&self, times: &[NaiveDateTime]) -> Vec<bool> {
        let Some((old, new)) = self.change else { return vec![false; times.len()] };
        let mut crossed = false;
        let mut prev: Option<NaiveDateTime> = None;
        times
            .iter()
            .map(|t| {
                if !crossed {
                    crossed = if new > old {
                        *t >= new
                    } else {
                        *t >= old
                            || prev.is_some_and(|p| *t < p - Duration::minutes(10))
                            || *t < new - Duration::hours(23)
                    };
                }
                prev = Some(*t);
                !crossed
            })
            .collect()
    }

    /// The offset for each reading, in the pump's order (see [`Clock::before_flags`]).
    pub fn offsets(&self, times: &[NaiveDateTime]) -> Vec<i64> {
        self.before_flags(times).into_iter().map(|before| self.offset(before)).collect()
    }
}
