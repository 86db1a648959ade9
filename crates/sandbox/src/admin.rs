//! The admin API (only with `--admin`): clock, people, grants, faults, budget, ground truth,
//! clinic seeding and history, observability.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clinic::ClinicFaults;
use crate::faults::Faults;
use crate::people::Partner;
use crate::{Shared, fmt_time};

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/clock", get(get_clock).post(set_clock))
        .route("/people", get(people))
        .route("/people/{login}/revoke", post(revoke))
        .route("/truth/{login}", get(truth))
        .route("/faults", get(get_faults).put(set_global_faults).delete(clear_faults))
        .route("/faults/{login}", put(set_account_faults))
        .route("/dexcom/budget", get(get_budget).put(set_budget))
        .route("/requests", get(requests).delete(reset_requests))
        .route("/secrets", get(secrets))
        .route("/auth/stats", get(auth_stats))
        .route("/clinic/patients", post(add_clinic_patient))
        .route("/clinic/requests", get(clinic_requests).delete(clear_clinic_requests))
        .route("/clinic/faults", put(set_clinic_faults))
        .route("/platform", get(platform_held))
        .route("/platform/faults", put(set_platform_faults))
        .route("/platform/sessions", axum::routing::delete(expire_platform_sessions))
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

/// The simulated time to the microsecond: processes following this clock must not run up to a
/// second behind it (at whole seconds, a worker following a frozen clock never reached what it
/// had itself written a moment after the last whole second).
async fn get_clock(State(sim): State<Shared>) -> Response {
    Json(json!({"now": sim.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)})).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClockChange {
    set: Option<DateTime<Utc>>,
    advance_secs: Option<i64>,
}

async fn set_clock(State(sim): State<Shared>, Json(c): Json<ClockChange>) -> Response {
    match (c.set, c.advance_secs) {
        (Some(t), None) => sim.clock.set(t),
        (None, Some(s)) => sim.clock.advance(Duration::seconds(s)),
        _ => return bad("give exactly one of set (RFC 3339) or advanceSecs"),
    }
    get_clock(State(sim)).await
}

async fn people(State(sim): State<Shared>) -> Response {
    Json(json!({"historyStart": fmt_time(&sim.history_start), "people": sim.people})).into_response()
}

async fn revoke(State(sim): State<Shared>, Path(login): Path<String>) -> Response {
    let Some(p) = sim.person_by_login(&login) else { return StatusCode::NOT_FOUND.into_response() };
    let n = match p.partner {
        Partner::Dexcom => sim.dexcom_auth.iter().map(|(_, a)| a.revoke_person(p.index)).sum(),
        Partner::Carelink => sim.carelink_auth.revoke_person(p.index),
    };
    Json(json!({"revokedGrants": n})).into_response()
}

/// Dexcom: `?start&end[&asOf]` (RFC 3339) → every record in the window that had arrived by
/// `asOf` (default now).
/// CareLink: `?at` (default now) → every record inside the 24 h the API serves at that time.
async fn truth(
    State(sim): State<Shared>,
    Path(login): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(p) = sim.person_by_login(&login) else { return StatusCode::NOT_FOUND.into_response() };
    let time = |k: &str| q.get(k).map(|s| DateTime::parse_from_rfc3339(s).map(|t| t.to_utc()));
    let now = sim.clock.now();
    match p.partner {
        Partner::Dexcom => {
            let (Some(Ok(start)), Some(Ok(end))) = (time("start"), time("end")) else {
                return bad("start and end (RFC 3339) are required for a Dexcom account");
            };
            let as_of = match time("asOf") {
                None => now,
                Some(Ok(t)) => t,
                Some(Err(_)) => return bad("asOf must be RFC 3339"),
            };
            Json(crate::dexcom::truth(p, start.max(sim.history_start), end, as_of)).into_response()
        }
        Partner::Carelink => {
            let at = match time("at") {
                None => now,
                Some(Ok(t)) => t,
                Some(Err(_)) => return bad("at must be RFC 3339"),
            };
            Json(crate::carelink::truth(&sim, p, at)).into_response()
        }
    }
}

async fn get_faults(State(sim): State<Shared>) -> Response {
    let (global, accounts) = sim.faults.snapshot();
    Json(json!({"global": global, "accounts": accounts})).into_response()
}

fn check(f: &Faults) -> Result<(), String> {
    if let Some(m) = &f.maintenance {
        m.validate()?;
    }
    Ok(())
}

async fn set_global_faults(State(sim): State<Shared>, Json(f): Json<Faults>) -> Response {
    if let Err(e) = check(&f) {
        return bad(&e);
    }
    sim.faults.set_global(f);
    get_faults(State(sim)).await
}

async fn set_account_faults(State(sim): State<Shared>, Path(login): Path<String>, Json(f): Json<Faults>) -> Response {
    if sim.person_by_login(&login).is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    if let Err(e) = check(&f) {
        return bad(&e);
    }
    sim.faults.set_account(&login, f);
    get_faults(State(sim)).await
}

async fn clear_faults(State(sim): State<Shared>) -> Response {
    sim.faults.clear();
    sim.clinic.set_faults(ClinicFaults::default());
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BudgetChange {
    per_hour: Option<u64>,
}

async fn get_budget(State(sim): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let client = q.get("clientId").cloned().unwrap_or_default();
    let (used, refused) = sim.dexcom_budget.usage(&client, sim.clock.now());
    Json(json!({"perHour": sim.dexcom_budget.limit(), "usedThisHour": used, "refused": refused})).into_response()
}

async fn set_budget(State(sim): State<Shared>, Json(b): Json<BudgetChange>) -> Response {
    sim.dexcom_budget.set_limit(b.per_hour);
    Json(json!({"perHour": b.per_hour})).into_response()
}

async fn requests(State(sim): State<Shared>) -> Response {
    Json(json!({"counts": sim.obs.counts(), "log": sim.obs.log()})).into_response()
}

async fn reset_requests(State(sim): State<Shared>) -> Response {
    sim.obs.reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn secrets(State(sim): State<Shared>) -> Response {
    Json(json!({"secrets": sim.obs.secrets()})).into_response()
}

async fn auth_stats(State(sim): State<Shared>) -> Response {
    let dexcom: serde_json::Map<String, Value> =
        sim.dexcom_auth.iter().map(|(r, a)| (r.clone(), json!({"refreshes": a.refresh_count()}))).collect();
    Json(json!({"dexcom": dexcom, "carelink": {"refreshes": sim.carelink_auth.refresh_count()}})).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Membership {
    clinic_id: String,
    user_id: String,
    #[serde(default)]
    email: Option<String>,
}

async fn add_clinic_patient(State(sim): State<Shared>, Json(m): Json<Membership>) -> Response {
    sim.clinic.add_patient(&m.clinic_id, &m.user_id, m.email.as_deref());
    StatusCode::NO_CONTENT.into_response()
}

async fn clinic_requests(State(sim): State<Shared>) -> Response {
    Json(json!({"received": sim.clinic.received()})).into_response()
}

async fn clear_clinic_requests(State(sim): State<Shared>) -> Response {
    sim.clinic.clear_history();
    StatusCode::NO_CONTENT.into_response()
}

async fn set_clinic_faults(State(sim): State<Shared>, Json(f): Json<ClinicFaults>) -> Response {
    sim.clinic.set_faults(f.clone());
    Json(json!(f)).into_response()
}

async fn platform_held(State(sim): State<Shared>) -> Response {
    Json(json!({"dataSets": sim.platform.data_sets(), "counts": sim.platform.counts()})).into_response()
}

async fn set_platform_faults(State(sim): State<Shared>, Json(f): Json<crate::platform::PlatformFaults>) -> Response {
    sim.platform.set_faults(f.clone());
    Json(json!(f)).into_response()
}

async fn expire_platform_sessions(State(sim): State<Shared>) -> Response {
    sim.platform.expire_sessions();
    StatusCode::NO_CONTENT.into_response()
}
