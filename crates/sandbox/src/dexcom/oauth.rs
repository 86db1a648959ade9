//! Dexcom's OAuth endpoints: `/v3/oauth2/login` (sign-in page: choose a sandbox user, approve or
//! deny), `/v3/oauth2/token` (client_secret_post), `/v3/oauth2/introspect` (RFC 7662).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::people::Partner;
use crate::{Shared, esc, oauth_error, page};

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> &'a str {
    q.get(k).map(String::as_str).unwrap_or("")
}

/// `GET /v3/oauth2/login?client_id&redirect_uri&response_type=code&scope=offline_access&state`
pub async fn login_page(State(sim): State<Shared>, Query(q): Query<HashMap<String, String>>, region: &str) -> Response {
    let Some(auth) = sim.dexcom_region(region) else { return StatusCode::NOT_FOUND.into_response() };
    let (client_id, redirect_uri) = (param(&q, "client_id"), param(&q, "redirect_uri"));
    // An unknown client or redirect URI is never redirected to (RFC 6749 §4.1.2.1).
    if let Err(why) = auth.check_client(client_id, redirect_uri) {
        return (StatusCode::BAD_REQUEST, page("Dexcom: invalid request", &format!("<p>{}</p>", esc(why))))
            .into_response();
    }
    if param(&q, "response_type") != "code" || !param(&q, "scope").split(' ').any(|s| s == "offline_access") {
        let to = format!("{redirect_uri}?error=invalid_request&state={}", urlencode(param(&q, "state")));
        return Redirect::to(&to).into_response();
    }
    let options: String = sim
        .people_of(Partner::Dexcom)
        .map(|p| format!("<option value=\"{0}\">{0} ({1})</option>", esc(&p.login), esc(p.tz.name())))
        .collect();
    let hidden: String = ["client_id", "redirect_uri", "state", "scope"]
        .iter()
        .map(|k| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(param(&q, k))))
        .collect();
    let body = format!(
        "<p>Dexcom sandbox ({region}). Choose a sandbox user, then allow or deny access to their data.</p>\
         <form method=\"post\">{hidden}<label>Sandbox user <select name=\"user\" id=\"user\">{options}</select></label>\
         <button type=\"submit\" name=\"decision\" value=\"approve\" id=\"approve\">Authorize</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button></form>"
    );
    page("Dexcom sign in", &body)
}

/// `POST /v3/oauth2/login`: the person's decision.
pub async fn decide(State(sim): State<Shared>, Form(f): Form<HashMap<String, String>>, region: &str) -> Response {
    let Some(auth) = sim.dexcom_region(region) else { return StatusCode::NOT_FOUND.into_response() };
    let (client_id, redirect_uri, state) = (param(&f, "client_id"), param(&f, "redirect_uri"), param(&f, "state"));
    if let Err(why) = auth.check_client(client_id, redirect_uri) {
        return (StatusCode::BAD_REQUEST, page("Dexcom: invalid request", &format!("<p>{}</p>", esc(why))))
            .into_response();
    }
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    if param(&f, "decision") != "approve" {
        return Redirect::to(&format!("{redirect_uri}{sep}error=access_denied&state={}", urlencode(state)))
            .into_response();
    }
    let Some(person) = sim.person_by_login(param(&f, "user")).filter(|p| p.partner == Partner::Dexcom) else {
        return (StatusCode::BAD_REQUEST, page("Dexcom: invalid request", "<p>Unknown sandbox user.</p>"))
            .into_response();
    };
    let code = auth.issue_code(client_id, redirect_uri, person.index, param(&f, "scope"), None, sim.clock.now());
    sim.obs.secret(&code);
    Redirect::to(&format!("{redirect_uri}{sep}code={code}&state={}", urlencode(state))).into_response()
}

/// `POST /v3/oauth2/token` (form body; client credentials in the body).
pub async fn token(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
    region: &str,
) -> Response {
    let Some(auth) = sim.dexcom_region(region) else { return StatusCode::NOT_FOUND.into_response() };
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| !v.starts_with("application/x-www-form-urlencoded"))
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "form body required");
    }
    let client_id = param(&f, "client_id");
    let secret = f.get("client_secret").map(String::as_str);
    if let Err(e) = auth.authenticate_client(client_id, secret) {
        return oauth_error(StatusCode::UNAUTHORIZED, e.error, e.description);
    }
    let now = sim.clock.now();
    let result = match param(&f, "grant_type") {
        "authorization_code" => auth.exchange_code(client_id, param(&f, "code"), param(&f, "redirect_uri"), None, now),
        "refresh_token" => match crate::refresh_with_faults(&sim, auth, client_id, param(&f, "refresh_token")).await {
            Ok(t) => Ok(t),
            Err(Ok(e)) => Err(e),
            Err(Err(resp)) => return resp,
        },
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "use authorization_code or refresh_token",
            );
        }
    };
    match result {
        Ok(tokens) => {
            sim.obs.secret(&tokens.access_token);
            sim.obs.secret(&tokens.refresh_token);
            (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], axum::Json(tokens)).into_response()
        }
        Err(e) => oauth_error(
            StatusCode::from_u16(auth.policy.invalid_grant_status).unwrap_or(StatusCode::BAD_REQUEST),
            e.error,
            e.description,
        ),
    }
}

/// `POST /v3/oauth2/introspect` (RFC 7662), client-authenticated.
pub async fn introspect(State(sim): State<Shared>, Form(f): Form<HashMap<String, String>>, region: &str) -> Response {
    let Some(auth) = sim.dexcom_region(region) else { return StatusCode::NOT_FOUND.into_response() };
    if let Err(e) = auth.authenticate_client(param(&f, "client_id"), f.get("client_secret").map(String::as_str)) {
        return oauth_error(StatusCode::UNAUTHORIZED, e.error, e.description);
    }
    axum::Json(auth.introspect(param(&f, "token"), |i| sim.people[i].login.clone(), sim.clock.now())).into_response()
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
