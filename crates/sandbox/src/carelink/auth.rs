//! CareLink's sign-in (an Auth0 tenant since 2026-01-02): `/authorize` with a login page that
//! ends in a 302 to the app's custom scheme (`com.medtronic.carepartner:/sso?code=…&state=…`),
//! `/oauth/token` (public client, PKCE S256 required, 3 h access tokens, rotating refresh tokens
//! whose reuse answers 403 `invalid_grant`), `/oauth/revoke` (RFC 7009) and introspection.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::APP_REDIRECT_URI;
use crate::dexcom::urlencode;
use crate::people::Partner;
use crate::{Shared, esc, oauth_error, page};

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> &'a str {
    q.get(k).map(String::as_str).unwrap_or("")
}

/// Auth0 accepts both JSON and form bodies at `/oauth/token` and `/oauth/revoke`.
fn body_params(headers: &HeaderMap, body: &Bytes) -> Option<HashMap<String, String>> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.starts_with("application/json") {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        Some(v.as_object()?.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned()))).collect())
    } else if ct.starts_with("application/x-www-form-urlencoded") {
        Some(url_form(body))
    } else {
        None
    }
}

fn url_form(body: &[u8]) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// `GET /authorize?client_id&response_type=code&redirect_uri&scope&audience&state&code_challenge&code_challenge_method=S256`
pub async fn authorize(State(sim): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let (client_id, redirect_uri) = (param(&q, "client_id"), param(&q, "redirect_uri"));
    if let Err(why) = sim.carelink_auth.check_client(client_id, redirect_uri) {
        return (StatusCode::BAD_REQUEST, page("CareLink: invalid request", &format!("<p>{}</p>", esc(why))))
            .into_response();
    }
    if param(&q, "response_type") != "code"
        || param(&q, "code_challenge").is_empty()
        || param(&q, "code_challenge_method") != "S256"
    {
        return (
            StatusCode::BAD_REQUEST,
            page("CareLink: invalid request", "<p>response_type=code and a PKCE S256 code_challenge are required.</p>"),
        )
            .into_response();
    }
    let hidden: String = ["client_id", "redirect_uri", "state", "scope", "code_challenge"]
        .iter()
        .map(|k| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(param(&q, k))))
        .collect();
    let users: String = sim
        .people_of(Partner::Carelink)
        .map(|p| format!("<option value=\"{0}\">{0}</option>", esc(&p.login)))
        .collect();
    let body = format!(
        "<p>Sign in to CareLink (simulated). Any password is accepted here.</p>\
         <form method=\"post\" action=\"authorize\">{hidden}\
         <label>Username <select name=\"username\" id=\"username\">{users}</select></label>\
         <label>Password <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"off\"></label>\
         <button type=\"submit\" name=\"decision\" value=\"approve\" id=\"login\">Sign in</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"cancel\">Cancel</button></form>"
    );
    page("CareLink sign in", &body)
}

/// `POST /authorize`: sign-in submitted. Ends in a 302 to the app scheme, which a browser does not
/// display: the person copies that address back into tidegate.
pub async fn sign_in(State(sim): State<Shared>, body: Bytes) -> Response {
    let f = url_form(&body);
    let (client_id, redirect_uri, state) = (param(&f, "client_id"), param(&f, "redirect_uri"), param(&f, "state"));
    if sim.carelink_auth.check_client(client_id, redirect_uri).is_err() {
        return (StatusCode::BAD_REQUEST, page("CareLink: invalid request", "<p>Unknown client.</p>")).into_response();
    }
    let location = if param(&f, "decision") != "approve" {
        format!("{APP_REDIRECT_URI}?error=access_denied&error_description=User%20cancelled&state={}", urlencode(state))
    } else {
        let Some(person) = sim.person_by_login(param(&f, "username")).filter(|p| p.partner == Partner::Carelink) else {
            return (StatusCode::UNAUTHORIZED, page("CareLink sign in", "<p>Wrong username or password.</p>"))
                .into_response();
        };
        let challenge = param(&f, "code_challenge").to_owned();
        sim.obs.secret(&challenge);
        let code = sim.carelink_auth.issue_code(
            client_id,
            redirect_uri,
            person.index,
            param(&f, "scope"),
            Some(challenge),
            sim.clock.now(),
        );
        sim.obs.secret(&code);
        format!("{APP_REDIRECT_URI}?code={code}&state={}", urlencode(state))
    };
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// `POST /oauth/token`.
pub async fn token(State(sim): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(f) = body_params(&headers, &body) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "JSON or form body required");
    };
    let auth = &sim.carelink_auth;
    let client_id = param(&f, "client_id");
    if let Err(e) = auth.authenticate_client(client_id, None) {
        return oauth_error(StatusCode::UNAUTHORIZED, e.error, e.description);
    }
    let now = sim.clock.now();
    let (result, failure_status) = match param(&f, "grant_type") {
        "authorization_code" => {
            let verifier = f.get("code_verifier").map(String::as_str).filter(|v| !v.is_empty());
            if let Some(v) = verifier {
                sim.obs.secret(v);
            }
            (
                auth.exchange_code(client_id, param(&f, "code"), param(&f, "redirect_uri"), verifier, now),
                StatusCode::BAD_REQUEST,
            )
        }
        "refresh_token" => match crate::refresh_with_faults(&sim, auth, client_id, param(&f, "refresh_token")).await {
            Ok(t) => (Ok(t), StatusCode::FORBIDDEN),
            Err(Ok(e)) => (Err(e), StatusCode::FORBIDDEN),
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
        Ok(t) => {
            sim.obs.secret(&t.access_token);
            sim.obs.secret(&t.refresh_token);
            let body = serde_json::json!({
                "access_token": t.access_token,
                "refresh_token": t.refresh_token,
                "id_token": crate::random_secret(),
                "scope": t.scope,
                "expires_in": t.expires_in,
                "token_type": "Bearer",
            });
            (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
        }
        Err(e) => oauth_error(failure_status, e.error, e.description),
    }
}

/// `POST /oauth/revoke` (RFC 7009): always 200, revokes the grant of a known token.
pub async fn revoke(State(sim): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(f) = body_params(&headers, &body) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "JSON or form body required");
    };
    if sim.carelink_auth.authenticate_client(param(&f, "client_id"), None).is_err() {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    }
    sim.carelink_auth.revoke_token(param(&f, "token"));
    StatusCode::OK.into_response()
}

/// `POST /oauth/introspect` (RFC 7662).
pub async fn introspect(State(sim): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(f) = body_params(&headers, &body) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "JSON or form body required");
    };
    axum::Json(sim.carelink_auth.introspect(param(&f, "token"), |i| sim.people[i].login.clone(), sim.clock.now()))
        .into_response()
}
