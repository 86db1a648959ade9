//! The platform data-service stand-in (`/tidepool`): server login (`auth.v1.yaml`), data sets
//! (create, list by `client.name`, get, update, delete) and their data (upload, delete by
//! origin selectors), per `data.v1.yaml`. Every request body is validated against the published
//! models with the `ERRATA.md` patches (`crate::tidepool`); uploaded datums each against their
//! own type's schema, refused with the platform's error shape — `{"errors": [{code, title,
//! detail, source: {pointer: "/<index>/<field>"}}]}` — and nothing of a refused request is
//! stored, as the platform does.
//!
//! Deduplication is the platform's `org.tidepool.deduplicator.dataset.delete.origin.older`:
//! a datum with an `origin.id` replaces the stored one with the same id, except that a `bolus`
//! or `food` whose `origin.time` is not newer than the stored one's is dropped.
//!
//! Faults: down (503), down until a simulated time, 5xx and 429 (+ `Retry-After`) rates, failing
//! data-set updates, latency, an answer delayed after the write (the sender times out without
//! learning it landed), session expiry (401 until the next login), refusal of one datum type
//! (with or without naming the datums).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Shared, tidepool};

/// The deduplicator every data set we accept names.
pub const ORIGIN_OLDER: &str = "org.tidepool.deduplicator.dataset.delete.origin.older";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct PlatformFaults {
    /// Every request answers 503.
    pub down: bool,
    /// Every request answers 503 until this simulated time.
    #[serde(with = "opt_time")]
    pub down_until: Option<DateTime<Utc>>,
    /// Fraction of requests answered 500.
    pub error_rate: f64,
    /// Fraction of requests answered 429 with `Retry-After: retry_after_secs`.
    pub rate_limit_rate: f64,
    pub retry_after_secs: u64,
    pub latency_ms: u64,
    /// Apply a write (data set creation, upload, deletion), then wait this long before answering
    /// (the sender may time out without learning that it landed) …
    pub ack_delay_ms: u64,
    /// … for this fraction of writes (0: every one).
    pub ack_delay_rate: f64,
    /// Refuse uploaded datums of this `type` (400).
    pub reject_type: Option<String>,
    /// With `reject_type`: say the request is invalid without naming the datum.
    pub reject_without_pointer: bool,
    /// Data-set updates (`PUT /v1/data_sets/{id}`) answer 500; everything else works.
    pub fail_updates: bool,
}

mod opt_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => crate::ser_time(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| DateTime::parse_from_rfc3339(&s).map(|t| t.with_timezone(&Utc)).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// One data set as the stand-in holds it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldDataSet {
    pub user_id: String,
    /// The data set object as `GET` returns it.
    pub set: Value,
    /// Datums by `origin.id`.
    pub data: BTreeMap<String, Value>,
    /// What was done to the set's data, a line per accepted request (simulated time, what,
    /// how many): for a test's failure message.
    #[serde(skip)]
    pub log: Vec<String>,
}

/// What the stand-in counted.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformCounts {
    pub logins: u64,
    pub uploads: u64,
    pub datums_received: u64,
    /// Datums a deduplication dropped (not newer) or replaced.
    pub dropped_not_newer: u64,
    pub replaced: u64,
    pub refused_requests: u64,
    pub unauthorized: u64,
    pub faults_injected: u64,
    pub data_sets_created: u64,
    pub data_sets_deleted: u64,
    pub datums_deleted: u64,
}

#[derive(Debug, Default)]
pub struct PlatformState {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: std::collections::BTreeSet<String>,
    /// Data sets by id (deleted ones removed).
    sets: BTreeMap<String, HeldDataSet>,
    faults: PlatformFaults,
    counts: PlatformCounts,
}

impl PlatformState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every data set held, by id (ground truth).
    pub fn data_sets(&self) -> BTreeMap<String, HeldDataSet> {
        self.lock().sets.clone()
    }

    pub fn counts(&self) -> PlatformCounts {
        self.lock().counts.clone()
    }

    pub fn set_faults(&self, f: PlatformFaults) {
        self.lock().faults = f;
    }

    pub fn faults(&self) -> PlatformFaults {
        self.lock().faults.clone()
    }

    /// Every session token stops working (the next request answers 401).
    pub fn expire_sessions(&self) {
        self.lock().sessions.clear();
    }
}

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/auth/serverlogin", post(server_login))
        .route("/v1/users/{userId}/data_sets", get(list_sets).post(create_set))
        .route("/v1/data_sets/{dataSetId}", get(get_set).put(update_set).delete(delete_set))
        .route("/v1/data_sets/{dataSetId}/data", post(upload).delete(delete_data))
}

/// The platform's error object.
fn error(status: StatusCode, code: &str, detail: &str) -> Response {
    let title = match status {
        StatusCode::BAD_REQUEST => "value is not valid",
        StatusCode::UNAUTHORIZED => "authentication token is invalid",
        StatusCode::NOT_FOUND => "resource not found",
        StatusCode::TOO_MANY_REQUESTS => "too many requests",
        _ => "internal server error",
    };
    (status, axum::Json(json!({"code": code, "title": title, "detail": detail, "message": detail}))).into_response()
}

/// Faults, then the session token. `Err` is the answer to send.
async fn admit(sim: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let faults = sim.platform.faults();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let now = sim.clock.now();
    let injected = if faults.down || faults.down_until.is_some_and(|t| now < t) {
        Some(error(StatusCode::SERVICE_UNAVAILABLE, "service-unavailable", "data service down"))
    } else if faults.error_rate > 0.0 && rand::random_bool(faults.error_rate.clamp(0.0, 1.0)) {
        Some(error(StatusCode::INTERNAL_SERVER_ERROR, "internal-server-error", "injected failure"))
    } else if faults.rate_limit_rate > 0.0 && rand::random_bool(faults.rate_limit_rate.clamp(0.0, 1.0)) {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "too-many-requests", "slow down");
        if let Ok(v) = HeaderValue::from_str(&faults.retry_after_secs.max(1).to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
        Some(r)
    } else {
        None
    };
    if let Some(r) = injected {
        sim.platform.lock().counts.faults_injected += 1;
        return Err(r);
    }
    let token = headers.get("x-tidepool-session-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mut g = sim.platform.lock();
    if !g.sessions.contains(token) {
        g.counts.unauthorized += 1;
        return Err(error(StatusCode::UNAUTHORIZED, "unauthenticated", "missing or invalid X-Tidepool-Session-Token"));
    }
    Ok(())
}

async fn server_login(State(sim): State<Shared>, headers: HeaderMap) -> Response {
    let faults = sim.platform.faults();
    let now = sim.clock.now();
    if faults.down || faults.down_until.is_some_and(|t| now < t) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "service-unavailable", "data service down");
    }
    let name = headers.get("x-tidepool-server-name").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let secret = headers.get("x-tidepool-server-secret").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if name.is_empty() {
        return error(StatusCode::BAD_REQUEST, "value-not-valid", "X-Tidepool-Server-Name is required");
    }
    let expected = &sim.cfg.platform_server_secret;
    if expected.is_empty() || secret != expected {
        sim.platform.lock().counts.unauthorized += 1;
        return error(StatusCode::UNAUTHORIZED, "unauthenticated", "server secret refused");
    }
    let token = crate::random_secret();
    sim.obs.secret(&token);
    let mut g = sim.platform.lock();
    g.sessions.insert(token.clone());
    g.counts.logins += 1;
    drop(g);
    let mut r = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&token) {
        r.headers_mut().insert("x-tidepool-session-token", v);
    }
    r
}

/// Parse a JSON body, or the platform's 400.
fn json_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, "json-malformed", &format!("body: {e}")))
}

/// A model's validation, plus: no field the model does not define (`ERRATA.md`).
fn validate_model(rel: &str, body: &Value) -> Result<(), String> {
    tidepool::validate(rel, body).map_err(|e| e.join("; "))?;
    let defined = tidepool::properties(rel)?;
    if let Some(o) = body.as_object()
        && let Some(extra) = o.keys().find(|k| !defined.contains(*k))
    {
        return Err(format!("{extra} is not a field of {rel}"));
    }
    Ok(())
}

/// `client.name` filters; `deleted` is accepted and means nothing here: a deleted data set is
/// removed, not kept.
#[derive(Deserialize)]
struct ListQuery {
    #[serde(rename = "client.name")]
    client_name: Option<String>,
}

async fn list_sets(
    State(sim): State<Shared>,
    Path(user_id): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&sim, &headers).await {
        return r;
    }
    let g = sim.platform.lock();
    let sets: Vec<Value> = g
        .sets
        .values()
        .filter(|s| s.user_id == user_id)
        .filter(|s| q.client_name.as_deref().is_none_or(|n| s.set["client"]["name"] == n))
        .map(|s| s.set.clone())
        .collect();
    axum::Json(json!({ "data": sets })).into_response()
}

async fn create_set(
    State(sim): State<Shared>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit(&sim, &headers).await {
        return r;
    }
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(e) = validate_model("data/models/newdataset.v1.yaml", &body) {
        sim.platform.lock().counts.refused_requests += 1;
        return error(StatusCode::BAD_REQUEST, "value-not-valid", &e);
    }
    if body["dataSetType"] != "continuous" || body["deduplicator"]["name"] != ORIGIN_OLDER {
        sim.platform.lock().counts.refused_requests += 1;
        return error(
            StatusCode::BAD_REQUEST,
            "value-not-valid",
            "a partner data set is continuous and deduplicated by origin.older",
        );
    }
    let id = crate::random_secret();
    let now = crate::fmt_time(&sim.clock.now());
    let mut set = body;
    if let Some(o) = set.as_object_mut() {
        o.insert("id".into(), json!(id));
        o.insert("uploadId".into(), json!(id));
        o.insert("type".into(), json!("upload"));
        o.insert("byUser".into(), json!(user_id));
        o.insert("createdTime".into(), json!(now));
        o.insert("modifiedTime".into(), json!(now));
    }
    {
        let mut g = sim.platform.lock();
        g.counts.data_sets_created += 1;
        g.sets.insert(id.clone(), HeldDataSet { user_id, set: set.clone(), data: BTreeMap::new(), log: Vec::new() });
    }
    ack_delay(&sim).await;
    (StatusCode::CREATED, axum::Json(set)).into_response()
}

fn not_found(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, "not-found", &format!("data set {id} not found"))
}

async fn get_set(State(sim): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&sim, &headers).await {
        return r;
    }
    match sim.platform.lock().sets.get(&id) {
        Some(s) => axum::Json(s.set.clone()).into_response(),
        None => not_found(&id),
    }
}

async fn update_set(State(sim): State<Shared>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = admit(&sim, &headers).await {
        return r;
    }
    if sim.platform.faults().fail_updates {
        sim.platform.lock().counts.faults_injected += 1;
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal-server-error", "injected update failure");
    }
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(e) = validate_model("data/models/updatedataset.v1.yaml", &body) {
        sim.platform.lock().counts.refused_requests += 1;
        return error(StatusCode::BAD_REQUEST, "value-not-valid", &e);
    }
    let now = crate::fmt_time(&sim.clock.now());
    let mut g = sim.platform.lock();
    let Some(s) = g.sets.get_mut(&id) else { return not_found(&id) };
    if let (Some(set), Some(change)) = (s.set.as_object_mut(), body.as_object()) {
        for (k, v) in change {
            set.insert(k.clone(), v.clone());
        }
        set.insert("modifiedTime".into(), json!(now));
    }
    axum::Json(s.set.clone()).into_response()
}

async fn delete_set(State(sim): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&sim, &headers).await {
        return r;
    }
    let removed = {
        let mut g = sim.platform.lock();
        let removed = g.sets.remove(&id).is_some();
        if removed {
            g.counts.data_sets_deleted += 1;
        }
        removed
    };
    if !removed {
        return not_found(&id);
    }
    ack_delay(&sim).await;
    axum::Json(json!({})).into_response()
}

async fn ack_delay(sim: &Shared) {
    let f = sim.platform.faults();
    let delay = f.ack_delay_ms;
    let this_one = f.ack_delay_rate <= 0.0 || rand::random_bool(f.ack_delay_rate.clamp(0.0, 1.0));
    if delay > 0 && this_one {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
}

/// The schema a datum is validated against, by its type (and subtype).
pub fn schema_of(datum: &Value) -> Option<String> {
    let sub = |field: &str| datum[field].as_str().unwrap_or_default();
    let rel = match datum["type"].as_str()? {
        "cbg" => "blood/continuousglucose".into(),
        "smbg" => "blood/selfmonitoredglucose".into(),
        "basal" => match sub("deliveryType") {
            "automated" => "basal/automated".into(),
            "scheduled" => "basal/scheduled".into(),
            "suspend" => "basal/suspend".into(),
            "temp" => "basal/temporary".into(),
            _ => return None,
        },
        "bolus" => match sub("subType") {
            "normal" => "bolus/normal".into(),
            "square" => "bolus/extended".into(),
            "dual/square" => "bolus/combination".into(),
            "automated" => "bolus/automated".into(),
            _ => return None,
        },
        "deviceEvent" => match sub("subType") {
            s @ ("alarm" | "calibration" | "prime" | "reservoirChange" | "timeChange" | "status") => {
                format!("deviceevent/{}", s.to_ascii_lowercase())
            }
            _ => return None,
        },
        "food" => "food/food".into(),
        "insulin" => "insulin/insulin".into(),
        "alert" => "alert".into(),
        "cgmSettings" => "cgmsettings".into(),
        "pumpStatus" => "pumpstatus".into(),
        "physicalActivity" => "activity/physical/physical".into(),
        "reportedState" => "state/reportedstate".into(),
        _ => return None,
    };
    Some(format!("data/models/{rel}.v1.yaml"))
}

/// The validation problems of one datum at `index`: (pointer, detail).
fn datum_problems(index: usize, datum: &Value, reject: Option<&str>) -> Vec<(String, String)> {
    let Some(rel) = schema_of(datum) else {
        return vec![(format!("/{index}/type"), format!("type {} is not supported", datum["type"]))];
    };
    let mut out: Vec<(String, String)> = tidepool::problems(&rel, datum)
        .into_iter()
        .map(|(path, message)| (format!("/{index}{path}"), message))
        .collect();
    if datum["origin"]["id"].as_str().is_none_or(str::is_empty) {
        out.push((format!("/{index}/origin/id"), "origin.id is required by the origin deduplicator".into()));
    }
    if reject.is_some_and(|t| datum["type"] == t) {
        out.push((format!("/{index}/type"), format!("type {} refused (injected)", datum["type"])));
    }
    out
}

async fn upload(State(sim): State<Shared>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = admit(&sim, &headers).await {
        return r;
    }
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !sim.platform.lock().sets.contains_key(&id) {
        return not_found(&id);
    }
    let Some(items) = body.as_array().filter(|a| !a.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "value-not-valid", "body must be a non-empty array of data");
    };
    let faults = sim.platform.faults();
    let problems: Vec<(String, String)> =
        items.iter().enumerate().flat_map(|(i, d)| datum_problems(i, d, faults.reject_type.as_deref())).collect();
    if !problems.is_empty() {
        sim.platform.lock().counts.refused_requests += 1;
        if faults.reject_without_pointer {
            return error(StatusCode::BAD_REQUEST, "value-not-valid", "data is not valid");
        }
        let errors: Vec<Value> = problems
            .iter()
            .map(|(pointer, detail)| {
                json!({"code": "value-not-valid", "title": "value is not valid", "detail": detail, "source": {"pointer": pointer}})
            })
            .collect();
        return (StatusCode::BAD_REQUEST, axum::Json(json!({ "errors": errors }))).into_response();
    }
    if !store_upload(&sim, &id, items) {
        return not_found(&id);
    }
    ack_delay(&sim).await;
    axum::Json(body).into_response()
}

/// Apply an accepted upload with the origin deduplicator. False when the set is gone.
fn store_upload(sim: &Shared, id: &str, items: &[Value]) -> bool {
    let mut g = sim.platform.lock();
    let Inner { sets, counts, .. } = &mut *g;
    let Some(set) = sets.get_mut(id) else { return false };
    counts.uploads += 1;
    let held_before = set.data.len();
    for d in items {
        counts.datums_received += 1;
        let origin = d["origin"]["id"].as_str().unwrap_or_default().to_owned();
        if let Some(old) = set.data.get(&origin) {
            let keeps_older = matches!(d["type"].as_str(), Some("bolus" | "food"));
            if keeps_older && !newer(&d["origin"]["time"], &old["origin"]["time"]) {
                counts.dropped_not_newer += 1;
                continue;
            }
            counts.replaced += 1;
        }
        set.data.insert(origin, d.clone());
    }
    let line = format!(
        "{} upload {} datums ({} new; first origin {})",
        crate::fmt_time(&sim.clock.now()),
        items.len(),
        set.data.len() - held_before,
        items[0]["origin"]["id"]
    );
    set.log.push(line);
    true
}

/// Whether origin time `a` is after `b` (an unreadable time is never newer).
fn newer(a: &Value, b: &Value) -> bool {
    let t = |v: &Value| v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    match (t(a), t(b)) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        _ => false,
    }
}

async fn delete_data(State(sim): State<Shared>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = admit(&sim, &headers).await {
        return r;
    }
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    // Selectors: `{"origin": {"id": …}}` (or `{"id": …}`, the platform's own datum id).
    let Some(selectors) = body.as_array().filter(|a| !a.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "value-not-valid", "body must be a non-empty array of selectors");
    };
    let mut origins = Vec::new();
    for (i, s) in selectors.iter().enumerate() {
        match s["origin"]["id"].as_str() {
            Some(o) if !o.is_empty() => origins.push(o.to_owned()),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "value-not-valid",
                    &format!("selector /{i} must be {{\"origin\": {{\"id\": …}}}}"),
                );
            }
        }
    }
    let found = {
        let mut g = sim.platform.lock();
        let Inner { sets, counts, .. } = &mut *g;
        match sets.get_mut(&id) {
            Some(set) => {
                let asked = origins.len();
                let mut gone = 0;
                for o in origins {
                    if set.data.remove(&o).is_some() {
                        counts.datums_deleted += 1;
                        gone += 1;
                    }
                }
                set.log.push(format!("{} delete {asked} origins ({gone} held)", crate::fmt_time(&sim.clock.now())));
                true
            }
            None => false,
        }
    };
    if !found {
        return not_found(&id);
    }
    ack_delay(&sim).await;
    axum::Json(json!({})).into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{newer, schema_of};

    #[test]
    fn schemas_by_type_and_origin_times() {
        assert_eq!(schema_of(&json!({"type": "cbg"})).as_deref(), Some("data/models/blood/continuousglucose.v1.yaml"));
        assert_eq!(
            schema_of(&json!({"type": "deviceEvent", "subType": "timeChange"})).as_deref(),
            Some("data/models/deviceevent/timechange.v1.yaml")
        );
        assert_eq!(
            schema_of(&json!({"type": "bolus", "subType": "dual/square"})).as_deref(),
            Some("data/models/bolus/combination.v1.yaml")
        );
        assert_eq!(schema_of(&json!({"type": "upload"})), None);
        assert!(newer(&json!("2026-01-02T00:00:00.000Z"), &json!("2026-01-01T00:00:00.000Z")));
        assert!(!newer(&json!("2026-01-01T00:00:00.000Z"), &json!("2026-01-01T00:00:00.000Z")));
        assert!(!newer(&json!("garbage"), &json!("2026-01-01T00:00:00.000Z")));
    }
}
