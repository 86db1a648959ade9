//! Medtronic CareLink as open-source followers use it in 2026 (PARTNERS.md): discovery (v13 /
//! app 3.6), the Auth0 SSO configuration and sign-in (`/carelink-login`), the CareLink web API
//! (`/carelink/patient/…`: roles, profile, country settings, a care partner's patients) and the
//! cloud's `display/message` (`/clcloud/connect/carepartner/v13/display/message`) returning the
//! last 24 h in the generation-C shape. Requests without a User-Agent are refused (403).

mod auth;
pub mod display;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::HashMap;

use crate::people::{CarelinkRole, Partner, Person};
use crate::{Shared, Sim, faults};

/// The only redirect URI CareLink's Auth0 client allows: the app's custom scheme.
pub const APP_REDIRECT_URI: &str = "com.medtronic.carepartner:/sso";
/// The Auth0 API audience the app asks for.
pub const AUDIENCE: &str = "https://carelink.minimed.com/carepartner";
pub const SCOPE: &str = "profile openid offline_access";

/// `/carelink-login`: the Auth0 tenant.
pub fn login_router() -> Router<Shared> {
    Router::new()
        .route("/authorize", get(auth::authorize).post(auth::sign_in))
        .route("/oauth/token", post(auth::token))
        .route("/oauth/revoke", post(auth::revoke))
        .route("/oauth/introspect", post(auth::introspect))
}

/// `/clcloud` and `/carelink`: discovery, SSO config, web API and display/message.
pub fn cloud_router() -> Router<Shared> {
    Router::new()
        .route("/connect/carepartner/v13/discover/android/{version}", get(discover))
        .route("/connect/carepartner/v13/display/message", post(display_message))
        .layer(axum::middleware::from_fn(require_user_agent))
}

pub fn web_router() -> Router<Shared> {
    Router::new()
        .route("/configs/v1/{file}", get(sso_config))
        .route("/patient/users/me", get(users_me))
        .route("/patient/users/me/profile", get(profile))
        .route("/patient/countries/settings", get(country_settings))
        .route("/patient/m2m/links/patients", get(linked_patients))
        .layer(axum::middleware::from_fn(require_user_agent))
}

/// CareLink's edge refuses requests without a browser or app User-Agent.
async fn require_user_agent(req: Request, next: Next) -> Response {
    let ua = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ua.trim().is_empty() {
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>403 Forbidden</h1></body></html>",
        )
            .into_response();
    }
    next.run(req).await
}

async fn discover(State(sim): State<Shared>, Path(version): Path<String>) -> Response {
    if !["3.6", "3.7", "3.8"].contains(&version.as_str()) {
        // Older app versions get the retired (Layer7) generation: not simulated.
        return StatusCode::NOT_FOUND.into_response();
    }
    let base = &sim.base_url;
    let cp = |region: &str| {
        json!({
            "region": region,
            "UseSSOConfiguration": "Auth0",
            "Auth0SSOConfiguration": format!("{base}/carelink/configs/v1/sso_cp_{}_auth0.json", region.to_lowercase()),
            "baseUrlCareLink": format!("{base}/carelink/patient"),
            "baseUrlCumulus": format!("{base}/clcloud/connect/carepartner/v13"),
            "baseUrlPde": format!("{base}/clcloud/connect/pde/v2"),
            "baseUrlAem": "https://www.medtronic.com/content/dam/emc",
        })
    };
    axum::Json(json!({
        "config": format!("android,{version}"),
        "supportedCountries": [
            {"US": {"region": "US", "isoCode": "US", "iso3Code": "USA"}},
            {"DE": {"region": "EU", "isoCode": "DE", "iso3Code": "DEU"}},
            {"GB": {"region": "EU", "isoCode": "GB", "iso3Code": "GBR"}},
            {"IN": {"region": "EU", "isoCode": "IN", "iso3Code": "IND"}},
        ],
        "CP": [cp("US"), cp("EU")],
    }))
    .into_response()
}

/// The Auth0 SSO configuration (`{server, client, system_endpoints}`).
async fn sso_config(State(sim): State<Shared>, Path(file): Path<String>) -> Response {
    let region = file.strip_prefix("sso_cp_").and_then(|f| f.strip_suffix("_auth0.json")).unwrap_or("");
    if !["us", "eu"].contains(&region) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let url = reqwest::Url::parse(&sim.base_url).ok();
    let host = url.as_ref().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_else(|| "127.0.0.1".into());
    let port = url.as_ref().and_then(|u| u.port_or_known_default()).unwrap_or(443);
    let prefix = url.as_ref().map(|u| u.path().trim_matches('/').to_owned()).filter(|p| !p.is_empty());
    let prefix = match prefix {
        Some(p) => format!("{p}/carelink-login"),
        None => "carelink-login".to_owned(),
    };
    axum::Json(json!({
        "server": {"hostname": host, "port": port, "prefix": prefix},
        "client": {
            "client_id": sim.cfg.carelink_client_id,
            "scope": SCOPE,
            "audience": AUDIENCE,
            "redirect_uri": APP_REDIRECT_URI,
        },
        "system_endpoints": {
            "authorization_endpoint_path": "/authorize",
            "token_endpoint_path": "/oauth/token",
            "revocation_endpoint_path": "/oauth/revoke",
            "introspection_endpoint_path": "/oauth/introspect",
        },
    }))
    .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "unauthorized", "message": "Invalid or expired access token"})),
    )
        .into_response()
}

/// The signed-in account, from a live bearer token; applies the account's faults.
async fn caller<'a>(sim: &'a Sim, headers: &HeaderMap) -> Result<&'a Person, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let now = sim.clock.now();
    let person = if sim.cfg.introspection.is_some() {
        crate::introspect_remote(sim, token).await?.ok_or_else(unauthorized)?.0
    } else {
        let owner = sim.carelink_auth.owner(token, now).ok_or_else(unauthorized)?;
        &sim.people[owner.person]
    };
    let decision = sim.faults.decide(Some(&person.login), now, false);
    if let Some(resp) = faults::apply(&decision).await {
        return Err(resp);
    }
    Ok(person)
}

fn role_name(p: &Person) -> &'static str {
    // Accounts in the US are PATIENT / CARE_PARTNER; elsewhere the _OUS variants.
    let us = p.tz.name().starts_with("America/");
    match (&p.carelink_role, us) {
        (Some(CarelinkRole::CarePartner { .. }), true) => "CARE_PARTNER",
        (Some(CarelinkRole::CarePartner { .. }), false) => "CARE_PARTNER_OUS",
        (_, true) => "PATIENT",
        (_, false) => "PATIENT_OUS",
    }
}

fn country(p: &Person) -> &'static str {
    match p.tz.name() {
        n if n.starts_with("America/") => "US",
        "Asia/Kolkata" => "IN",
        "Australia/Adelaide" => "AU",
        _ => "DE",
    }
}

async fn users_me(State(sim): State<Shared>, headers: HeaderMap) -> Response {
    let p = match caller(&sim, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    axum::Json(json!({
        "loginDateUTC": crate::fmt_time(&sim.clock.now()),
        "id": format!("{}", 10_000_000 + p.index),
        "country": country(p),
        "language": "en",
        "lastName": "Simulated",
        "firstName": p.login,
        "accountId": 20_000_000 + p.index,
        "role": role_name(p),
        "cpRegistrationStatus": null,
        "accountSuspended": null,
        "needToReconsent": false,
        "mfaRequired": false,
        "mfaEnabled": false,
    }))
    .into_response()
}

async fn profile(State(sim): State<Shared>, headers: HeaderMap) -> Response {
    let p = match caller(&sim, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    axum::Json(json!({
        "username": p.login,
        "firstName": p.login,
        "lastName": "Simulated",
        "middleName": null,
        "address": null,
        "city": null,
        "stateProvince": null,
        "postalCode": null,
        "country": country(p),
        "dateOfBirth": null,
        "phone": null,
        "email": format!("{}@example.invalid", p.login),
        "patientNickname": null,
    }))
    .into_response()
}

async fn country_settings(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = caller(&sim, &headers).await {
        return r;
    }
    let code = q.get("countryCode").map(|c| c.to_uppercase()).unwrap_or_else(|| "US".into());
    axum::Json(json!({
        "name": code,
        "shortDateFormat": "MM/dd/yyyy",
        "shortTimeFormat": "hh:mm a",
        "mediaHost": "https://carelink.minimed.com",
        "blePereodicDataEndpoint": format!("{}/clcloud/connect/carepartner/v13/display/message", sim.base_url),
        "region": if code == "US" { "US" } else { "EU" },
        "language": {"name": "English", "code": q.get("language").cloned().unwrap_or_else(|| "en".into())},
        "bgUnits": "MG_DL",
        "carbohydrateUnits": "GRAMS",
        "timeFormat": "HR_12",
        "techSupport": "",
        "supportedReports": [],
    }))
    .into_response()
}

fn patients_of<'a>(sim: &'a Sim, p: &Person) -> Vec<&'a Person> {
    match &p.carelink_role {
        Some(CarelinkRole::CarePartner { patients }) => patients.iter().filter_map(|i| sim.people.get(*i)).collect(),
        _ => Vec::new(),
    }
}

async fn linked_patients(State(sim): State<Shared>, headers: HeaderMap) -> Response {
    let p = match caller(&sim, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let list: Vec<Value> = patients_of(&sim, p)
        .into_iter()
        .map(|pt| json!({"username": pt.login, "firstName": pt.login, "lastName": "Simulated", "status": "ACTIVE", "patientId": pt.login}))
        .collect();
    axum::Json(list).into_response()
}

/// `POST …/v13/display/message` with `{username, role, patientId?, appVersion}`.
async fn display_message(State(sim): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let caller = match caller(&sim, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"message": "body must be JSON"}))).into_response();
    };
    if req["username"].as_str() != Some(caller.login.as_str()) {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"message": "username does not match the signed-in account"})),
        )
            .into_response();
    }
    let patient = match (req["role"].as_str(), &caller.carelink_role) {
        (Some("patient"), Some(CarelinkRole::Patient)) => caller,
        (Some("carepartner"), Some(CarelinkRole::CarePartner { .. })) => {
            let wanted = req["patientId"].as_str().unwrap_or("");
            match patients_of(&sim, caller).into_iter().find(|pt| pt.login == wanted) {
                Some(pt) => pt,
                None => {
                    return (
                        StatusCode::BAD_REQUEST,
                        axum::Json(json!({"message": "patientId is not a patient of this care partner"})),
                    )
                        .into_response();
                }
            }
        }
        _ => {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"message": "role does not match the account"})))
                .into_response();
        }
    };
    let now = sim.clock.now();
    let decision = sim.faults.decide(Some(&patient.login), now, false);
    let mut data = display::patient_data(patient, now);
    if decision.drift {
        drift(&mut data);
    }
    let body =
        json!({"metadata": {"lastUpdated": now.timestamp_millis(), "kind": "CARE_PARTNER_DATA"}, "patientData": data})
            .to_string();
    let body = if decision.malformed { body[..body.len() / 2].to_owned() } else { body };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Schema drift: an unknown marker type, an unknown sensor state, a missing optional field.
fn drift(data: &mut Value) {
    let at = data["lastConduitDateTime"].clone();
    if let Some(markers) = data["markers"].as_array_mut() {
        markers.push(json!({"type": "NEW_MARKER_KIND", "timestamp": at, "data": {"dataValues": {"x": "1"}}}));
    }
    if let Some(first) = data["sgs"].as_array_mut().and_then(|s| s.first_mut()) {
        first["sensorState"] = json!("SOME_NEW_STATE");
    }
    if let Some(o) = data.as_object_mut() {
        o.remove("cgmInfo");
        o.remove("lastAlarm");
    }
}

/// Ground truth for a CareLink account at `at`; a care partner has none of their own.
pub fn truth(_sim: &Sim, p: &Person, at: DateTime<Utc>) -> Value {
    match p.carelink_role {
        Some(CarelinkRole::Patient) | None if p.partner == Partner::Carelink => display::truth(p, at),
        _ => json!({"sgs": [], "markers": [], "clearedNotifications": []}),
    }
}
