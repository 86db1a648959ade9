//! One Dexcom poll: `dataRange` first (one call when nothing is new), then windows of at most 30
//! days over `egvs`, `events`, `calibrations` and `alerts` with a look-back overlap, and `devices`
//! at most daily. Pure I/O and mapping: the caller stores the result and the new cursor.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use model::UserId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::map::{self, EventChange};
use super::wire;
use crate::error::PartnerError;
use crate::fetch::{Batch, FetchSettings};
use crate::http::get_json;

/// The longest window Dexcom serves per request.
pub const MAX_WINDOW: Duration = Duration::days(30);
/// Dexcom's `lastSyncTime` is unreliable when old; use it only when younger than this.
const LAST_SYNC_TRUST: Duration = Duration::days(30);

/// Where the next Dexcom poll starts (stored on the poll schedule as JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    /// Records with systemTime before this were fetched (the end of the last window).
    #[serde(default)]
    pub fetched_until: Option<DateTime<Utc>>,
    /// When the last `dataRange` was asked (its `lastSyncTime` next time).
    #[serde(default)]
    pub last_sync: Option<DateTime<Utc>>,
    /// When `devices` was last read, and the fingerprint of the settings seen then.
    #[serde(default)]
    pub devices_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// The Dexcom date format: UTC, no zone, whole seconds.
fn dexcom_date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn range_time(end: Option<&wire::RangeEnd>) -> Option<DateTime<Utc>> {
    let raw = end?.system_time.as_deref()?;
    let t = crate::fetch::partner_time(raw).ok()?;
    Some(t.instant().unwrap_or_else(|| t.local.and_utc()))
}

/// What `dataRange` said about the record types it covers.
#[derive(Debug, Default)]
struct Ranges {
    /// Earliest start and latest end over egvs, events and calibrations.
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    calibrations: bool,
}

fn ranges(body: &Value) -> Ranges {
    let range: wire::DataRange = crate::wire::read(body);
    let mut r = Ranges { calibrations: range.calibrations.is_some(), ..Ranges::default() };
    for span in [&range.egvs, &range.events, &range.calibrations].into_iter().flatten() {
        if let Some(s) = range_time(span.start.as_ref()) {
            r.start = Some(r.start.map_or(s, |x| x.min(s)));
        }
        if let Some(e) = range_time(span.end.as_ref()) {
            r.end = Some(r.end.map_or(e, |x| x.max(e)));
        }
    }
    r
}

/// Poll one Dexcom account.
pub async fn poll(
    http: &reqwest::Client,
    api_base_url: &str,
    access_token: &str,
    user: &UserId,
    cursor: &Cursor,
    now: DateTime<Utc>,
    settings: &FetchSettings,
) -> Result<(Batch, Cursor), PartnerError> {
    let base = format!("{}/v3/users/self", api_base_url.trim_end_matches('/'));
    let mut batch = Batch::default();
    let mut next = cursor.clone();

    // 1. dataRange: with lastSyncTime only what arrived since, so "nothing new" costs one call.
    let mut url = format!("{base}/dataRange");
    let since = cursor.last_sync.filter(|t| now - *t < LAST_SYNC_TRUST && cursor.fetched_until.is_some());
    if let Some(t) = since {
        url.push_str(&format!("?lastSyncTime={}", t.format("%Y-%m-%dT%H:%M:%SZ")));
    }
    let range_body = get_json(http, &url, Some(access_token)).await?;
    batch.calls += 1;
    check_envelope(&range_body, "dataRange")?;
    let r = ranges(&range_body);
    next.last_sync = Some(now);
    let devices_due = cursor.devices_at.is_none_or(|t| now - t >= settings.devices_every);
    if r.end.is_none() && cursor.fetched_until.is_some() && !devices_due {
        // Nothing arrived since the last sync. Keep the window where it was so the look-back
        // still covers edits of recent events on the next poll that has news.
        return Ok((batch, next));
    }

    // 2. The window: from the last fetch minus the look-back (or the backfill on first poll),
    // widened to the earliest newly arrived record, to now.
    let end = now + Duration::seconds(1);
    let mut start = match cursor.fetched_until {
        Some(t) => t - settings.look_back,
        None => now - settings.backfill,
    };
    if let Some(s) = r.start {
        if cursor.fetched_until.is_none() {
            // First poll: no need to walk empty days before the account's first record.
            start = start.max(s);
        } else {
            start = start.min(s).max(now - settings.backfill);
        }
    }
    let start = start.min(end - Duration::seconds(1));
    let mut kinds = vec!["egvs", "events", "alerts"];
    if r.calibrations || cursor.fetched_until.is_none() {
        kinds.push("calibrations");
    }
    if r.end.is_some() || cursor.fetched_until.is_none() {
        for kind in kinds {
            let mut from = start;
            while from < end {
                let to = (from + MAX_WINDOW).min(end);
                let url = format!("{base}/{kind}?startDate={}&endDate={}", dexcom_date(from), dexcom_date(to));
                let body = get_json(http, &url, Some(access_token)).await?;
                batch.calls += 1;
                check_envelope(&body, kind)?;
                map_records(user, kind, &body, from, to, &mut batch);
                from = to;
            }
        }
        next.fetched_until = Some(end);
    }

    // 3. devices, at most every `devices_every`: a cgmSettings datum only when they changed.
    if devices_due {
        let body = get_json(http, &format!("{base}/devices"), Some(access_token)).await?;
        batch.calls += 1;
        check_envelope(&body, "devices")?;
        for record in records(&body) {
            let key = crate::wire::read::<wire::Device>(record).transmitter_id.unwrap_or_default();
            let fingerprint = map::settings_fingerprint(record);
            if cursor.settings.get(&key) == Some(&fingerprint) {
                continue;
            }
            match map::device(user, record) {
                Ok(d) => {
                    batch.datums.push(d);
                    next.settings.insert(key, fingerprint);
                }
                Err(e) => batch.skip(e.code(), &e.to_string()),
            }
        }
        next.devices_at = Some(now);
    }
    Ok((batch, next))
}

fn records(body: &Value) -> &[Value] {
    wire::records(body).unwrap_or_default()
}

/// An envelope must be an object; `records` (when the endpoint has them) must be a list.
fn check_envelope(body: &Value, what: &str) -> Result<(), PartnerError> {
    if !body.is_object() || (what != "dataRange" && wire::records(body).is_none()) {
        return Err(PartnerError::Protocol(format!("{what}: not a Dexcom envelope")));
    }
    Ok(())
}

/// Map one endpoint's records; records outside [from, to) are dropped (Dexcom's own filter),
/// bad ones skipped and counted.
pub fn map_records(user: &UserId, kind: &str, body: &Value, from: DateTime<Utc>, to: DateTime<Utc>, batch: &mut Batch) {
    for record in records(body) {
        let mapped = match kind {
            "egvs" => map::egv(user, record).map(|c| EventChange::Upsert(Box::new(c.into()))),
            "events" => map::event(user, record),
            "calibrations" => map::calibration(user, record).map(|d| EventChange::Upsert(Box::new(d))),
            "alerts" => map::alert(user, record).map(|d| EventChange::Upsert(Box::new(d))),
            "devices" => map::device(user, record).map(|d| EventChange::Upsert(Box::new(d))),
            _ => continue,
        };
        match mapped {
            Ok(EventChange::Upsert(d)) => {
                let t = d.base().time;
                if kind == "devices" || (t >= from && t < to) {
                    batch.datums.push(*d);
                }
            }
            Ok(EventChange::Remove(id)) => batch.removed.push(id),
            Err(e) => batch.skip(e.code(), &e.to_string()),
        }
    }
}
