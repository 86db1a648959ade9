//! Imported data: `GET /v1/users/{userId}/data` (owner, clinician of the patient's clinic, or
//! service; keyset-paginated) and `DELETE /v1/users/{userId}/data` (service: erasure).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use model::UserId;
use serde_json::Value;
use store::audit::Entry;
use store::datums::PageQuery;
use store::lifecycle::EraseScope;

use crate::access::authorize_user;
use crate::auth::{Caller, Service};
use crate::error::{ApiError, InvalidParam};
use crate::extract::{ApiPath, ApiQuery};
use crate::routes::disconnect::revoke_at_partner;
use crate::state::AppState;

/// The Tidepool types tidegate stores (`type=` accepts these).
pub const DATUM_TYPES: [&str; 12] = [
    "alert",
    "basal",
    "bolus",
    "cbg",
    "cgmSettings",
    "deviceEvent",
    "food",
    "insulin",
    "physicalActivity",
    "pumpStatus",
    "reportedState",
    "smbg",
];
const DEFAULT_LIMIT: i64 = 1_000;
const MAX_LIMIT: i64 = 5_000;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/users/{userId}/data", get(read).delete(erase))
}

/// The parsed query of a data read.
#[derive(Debug, PartialEq)]
struct ReadParams {
    types: Vec<String>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    after: Option<(DateTime<Utc>, String)>,
    limit: i64,
}

/// The opaque cursor: the last row's (time, id).
fn encode_cursor(time: &DateTime<Utc>, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{id}", time.timestamp_micros()))
}

fn decode_cursor(c: &str) -> Option<(DateTime<Utc>, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    let (micros, id) = raw.split_once('.')?;
    let time = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    let ok = id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    ok.then(|| (time, id.to_owned()))
}

fn parse_read(q: &HashMap<String, String>) -> Result<ReadParams, ApiError> {
    let mut problems: Vec<InvalidParam> = Vec::new();
    let mut bad = |name: &str, reason: String| problems.push(InvalidParam { name: name.to_owned(), reason });
    let mut types = Vec::new();
    for t in q.get("type").map(String::as_str).unwrap_or_default().split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if DATUM_TYPES.contains(&t) {
            types.push(t.to_owned());
        } else {
            bad("type", format!("{t:?} is not one of {}", DATUM_TYPES.join(", ")));
        }
    }
    let mut time = |name: &str| {
        let v = q.get(name)?;
        let t = DateTime::parse_from_rfc3339(v).map(|t| t.to_utc()).ok();
        if t.is_none() {
            bad(name, "must be an RFC 3339 time, e.g. 2026-03-07T12:00:00Z".into());
        }
        t
    };
    let (start, end) = (time("startDate"), time("endDate"));
    let after = q.get("cursor").and_then(|c| {
        let d = decode_cursor(c);
        if d.is_none() {
            bad("cursor", "is not a cursor this API returned".into());
        }
        d
    });
    let limit = match q.get("limit").map(|l| l.parse::<i64>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(l)) if (1..=MAX_LIMIT).contains(&l) => l,
        Some(_) => {
            bad("limit", format!("must be an integer 1–{MAX_LIMIT}"));
            DEFAULT_LIMIT
        }
    };
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        bad("endDate", "must be after startDate".into());
    }
    for k in q.keys().filter(|k| !["type", "startDate", "endDate", "cursor", "limit"].contains(&k.as_str())) {
        bad(k, "is not a parameter of this route".into());
    }
    if problems.is_empty() {
        Ok(ReadParams { types, start, end, after, limit })
    } else {
        Err(ApiError::InvalidParams(problems))
    }
}

/// Datums in Tidepool's JSON, ordered by (time, id). When more remain, a `Link: <…>; rel="next"`
/// header carries the next page's URL (the same query plus `cursor`).
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let user = UserId::parse(&user)?;
    let params = parse_read(&q)?;
    authorize_user(&state, &caller, &user).await?;
    let page = state
        .store
        .datum_page(&PageQuery {
            user: &user,
            types: &params.types,
            start: params.start,
            end: params.end,
            after: params.after.clone(),
            limit: params.limit + 1,
        })
        .await?;
    let more = page.len() as i64 > params.limit;
    let rows = &page[..page.len().min(params.limit as usize)];
    let mut headers = HeaderMap::new();
    if let (true, Some(last)) = (more, rows.last()) {
        let mut next: Vec<(String, String)> =
            q.iter().filter(|(k, _)| k.as_str() != "cursor").map(|(k, v)| (k.clone(), v.clone())).collect();
        next.sort();
        next.push(("cursor".into(), encode_cursor(&last.time, &last.id)));
        let mut url = reqwest::Url::parse("http://link.invalid/").expect("static URL");
        url.set_path(&format!("/v1/users/{user}/data"));
        url.query_pairs_mut().extend_pairs(&next);
        let link = format!("<{}?{}>; rel=\"next\"", url.path(), url.query().unwrap_or_default());
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.insert(header::LINK, v);
        }
    }
    state
        .store
        .audit(&Entry {
            actor: &caller.actor(),
            action: "read_data",
            user_id: Some(&user),
            data_source_id: None,
            detail: serde_json::json!({ "count": rows.len(), "types": params.types }),
            time: state.clock.now(),
        })
        .await?;
    let body: Vec<&Value> = rows.iter().map(|r| &r.body).collect();
    Ok((headers, Json(body)).into_response())
}

/// Erase a user's imported data (`scope=imported`, the default) or everything of theirs
/// (`scope=all`: grants are revoked at the partners first, best effort). Answers what went.
async fn erase(
    State(state): State<AppState>,
    Service(caller): Service,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let user = UserId::parse(&user)?;
    let scope = match q.get("scope").map(String::as_str) {
        None | Some("imported") => EraseScope::Imported,
        Some("all") => EraseScope::Everything,
        Some(_) => return Err(ApiError::invalid_param("scope", "must be imported or all")),
    };
    if let Some(k) = q.keys().find(|k| k.as_str() != "scope") {
        return Err(ApiError::invalid_param(k.clone(), "is not a parameter of this route"));
    }
    if scope == EraseScope::Everything {
        for source in state.store.list_data_sources(&user).await? {
            revoke_at_partner(&state, &user, &source.provider).await;
        }
    }
    let erased = state.store.erase_user(&caller.actor(), &user, scope, state.clock.now()).await?;
    tracing::info!(user = %user, scope = ?scope, datums = erased.datums, sources = erased.data_sources, "erased");
    Ok((StatusCode::OK, Json(erased)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let t = DateTime::parse_from_rfc3339("2026-03-07T12:00:00.123456Z").unwrap().to_utc();
        let id = "0123456789abcdefghijklmnopqrstuv";
        assert_eq!(decode_cursor(&encode_cursor(&t, id)), Some((t, id.to_owned())));
        for bad in [
            "",
            "xyz",
            &URL_SAFE_NO_PAD.encode("12.short"),
            &URL_SAFE_NO_PAD.encode("x.0123456789abcdefghijklmnopqrstuv"),
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let Err(ApiError::InvalidParams(p)) = parse_read(&q(&[
            ("type", "cbg,nonsense"),
            ("startDate", "yesterday"),
            ("limit", "0"),
            ("cursor", "x"),
            ("foo", "1"),
        ])) else {
            panic!("refused")
        };
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        for n in ["type", "startDate", "limit", "cursor", "foo"] {
            assert!(names.contains(&n), "{names:?}");
        }
        let ok = parse_read(&q(&[("type", "cbg, bolus"), ("startDate", "2026-03-01T00:00:00Z")])).unwrap();
        assert_eq!(ok.types, vec!["cbg", "bolus"]);
        assert_eq!(ok.limit, DEFAULT_LIMIT);
        assert!(parse_read(&q(&[("startDate", "2026-03-02T00:00:00Z"), ("endDate", "2026-03-01T00:00:00Z")])).is_err());
    }
}
