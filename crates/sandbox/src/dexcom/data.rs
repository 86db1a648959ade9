//! Dexcom's data endpoints under `/v3/users/self/`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde_json::{Value, json};

use super::records;
use crate::people::Person;
use crate::{Shared, faults};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Egvs,
    Events,
    Calibrations,
    Alerts,
}

impl Kind {
    fn record_type(self) -> &'static str {
        match self {
            Self::Egvs => "egv",
            Self::Events => "event",
            Self::Calibrations => "calibration",
            Self::Alerts => "alert",
        }
    }
}

/// Dexcom's gateway answer for a missing, expired or revoked token.
fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"fault": {"faultstring": "Invalid Access Token", "detail": {"errorcode": "keymanagement.service.invalid_access_token"}}})),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_request", "error_description": message})))
        .into_response()
}

/// Who is calling: a live token (checked locally, or through the configured introspection
/// endpoint), its owner, and the app it was issued to.
async fn caller<'a>(sim: &'a Shared, headers: &HeaderMap, region: &str) -> Result<(&'a Person, String), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let now = sim.clock.now();
    if sim.cfg.introspection.is_some() {
        return crate::introspect_remote(sim, token).await?.ok_or_else(unauthorized);
    }
    let auth = sim.dexcom_region(region).ok_or_else(unauthorized)?;
    let owner = auth.owner(token, now).ok_or_else(unauthorized)?;
    Ok((&sim.people[owner.person], owner.client_id))
}

/// Authenticate, spend budget, apply faults. On success: (person, client id, drift?, malformed?).
async fn admit<'a>(
    sim: &'a Shared,
    headers: &HeaderMap,
    region: &str,
) -> Result<(&'a Person, String, bool, bool), Response> {
    let (person, client_id) = caller(sim, headers, region).await?;
    let now = sim.clock.now();
    if let Err(retry_after) = sim.dexcom_budget.spend(&client_id, now) {
        return Err(faults::too_many_requests(retry_after));
    }
    let decision = sim.faults.decide(Some(&person.login), now, false);
    if let Some(resp) = faults::apply(&decision).await {
        return Err(resp);
    }
    Ok((person, client_id, decision.drift, decision.malformed))
}

fn envelope(record_type: &str, user_id: &str, records: Vec<Value>, malformed: bool) -> Response {
    let body = json!({"recordType": record_type, "recordVersion": "3.0", "userId": user_id, "records": records});
    json_response(body, malformed)
}

fn json_response(body: Value, malformed: bool) -> Response {
    let mut text = body.to_string();
    if malformed {
        text.truncate(text.len() / 2);
    }
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// Dexcom's date format: `YYYY-MM-DDThh:mm:ss`, UTC, no zone.
fn parse_date(q: &HashMap<String, String>, name: &str) -> Result<DateTime<Utc>, Response> {
    let raw = q.get(name).ok_or_else(|| bad_request(&format!("{name} is required")))?;
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .filter(|_| raw.len() == 19)
        .map(|t| t.and_utc())
        .ok_or_else(|| bad_request(&format!("{name} must be formatted YYYY-MM-DDThh:mm:ss")))
}

pub async fn endpoint(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    region: &str,
    kind: Kind,
) -> Response {
    let (person, client_id, drift, malformed) = match admit(&sim, &headers, region).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (start, end) = match (parse_date(&q, "startDate"), parse_date(&q, "endDate")) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if end <= start {
        return bad_request("endDate must be after startDate");
    }
    if end - start > Duration::days(30) {
        return bad_request("the date range must not exceed 30 days");
    }
    let now = sim.clock.now();
    let start = start.max(sim.history_start);
    let records = match kind {
        _ if end <= start => Vec::new(),
        Kind::Egvs => records::egvs(person, start, end, now, drift),
        Kind::Events => records::events(person, start, end, now, drift),
        Kind::Calibrations => records::calibrations(person, start, end, now),
        Kind::Alerts => records::alerts(person, start, end, now),
    };
    envelope(kind.record_type(), &records::user_id(person, &client_id), records, malformed)
}

pub async fn devices(State(sim): State<Shared>, headers: HeaderMap, region: &str) -> Response {
    let (person, client_id, _, malformed) = match admit(&sim, &headers, region).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    envelope("device", &records::user_id(person, &client_id), vec![records::device(person, sim.clock.now())], malformed)
}

/// `GET /v3/users/self/dataRange[?lastSyncTime=…]`: earliest and latest record per type.
pub async fn data_range(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    region: &str,
) -> Response {
    let (person, client_id, _, malformed) = match admit(&sim, &headers, region).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = sim.clock.now();
    // The synthetic history starts 120 days before now; lastSyncTime narrows the answer to records
    // synced after it (like Dexcom, only trustworthy when recent). An event edited or deleted in
    // the app syncs again when that happens, so it counts as news then.
    let since = q.get("lastSyncTime").and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.to_utc());
    let history = sim.history_start;
    // (system time, first arrival, last sync): a record is in the range once it has arrived,
    // and is news after `since` when it last synced after it.
    let range = |times: Vec<(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)>| -> Value {
        let visible: Vec<DateTime<Utc>> = times
            .into_iter()
            .filter(|(_, arrival, synced)| *arrival <= now && since.is_none_or(|s| *synced > s))
            .map(|(t, _, _)| t)
            .collect();
        match (visible.iter().min(), visible.iter().max()) {
            (Some(a), Some(b)) => json!({
                "start": {"systemTime": records::system_time(a), "displayTime": records::display_time(person, a)},
                "end": {"systemTime": records::system_time(b), "displayTime": records::display_time(person, b)},
            }),
            _ => Value::Null,
        }
    };
    // Only the ends matter: look at the first and last days of the history and the last 2 days.
    let recent = now - Duration::days(2);
    let egv_times = |from, to| {
        crate::people::readings(person, from, to).map(|r| (r.system_time, r.arrival, r.arrival)).collect::<Vec<_>>()
    };
    let mut egvs = egv_times(history, history + Duration::days(1));
    egvs.extend(egv_times(recent, now + Duration::hours(1)));
    let entry_times = |from, to| {
        crate::people::entries(person, from, to)
            .into_iter()
            .map(|e| {
                let changes = [Some(e.arrival), e.updated.map(|(t, _)| t), e.deleted_at];
                let synced = changes.into_iter().flatten().filter(|t| *t <= now).max().unwrap_or(e.arrival);
                (e.system_time, e.arrival, synced)
            })
            .collect::<Vec<_>>()
    };
    let mut events = entry_times(history, history + Duration::days(2));
    events.extend(entry_times(recent, now + Duration::hours(1)));
    let cal_times = |from, to| {
        crate::people::calibrations(person, from, to)
            .into_iter()
            .map(|(_, t, _)| (t, t + Duration::minutes(1), t + Duration::minutes(1)))
            .collect::<Vec<_>>()
    };
    let mut cals = cal_times(history, history + Duration::days(2));
    cals.extend(cal_times(recent, now + Duration::hours(1)));
    let body = json!({
        "recordType": "dataRange",
        "recordVersion": "3.0",
        "userId": records::user_id(person, &client_id),
        "calibrations": range(cals),
        "egvs": range(egvs),
        "events": range(events),
    });
    json_response(body, malformed)
}
