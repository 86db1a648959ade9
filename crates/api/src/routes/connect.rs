//! The connect flow's routes (browser-facing, HTML) and link-token minting (JSON).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::{DateTime, Utc};
use model::{LinkTokenId, UserId, paths};
use serde::{Deserialize, Serialize};
use store::audit::Entry;
use store::link_tokens::{self, Purpose};

use crate::auth::{Caller, Role};
use crate::connect_flow::{self, CallbackParams};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::limit::{ConnectGuard, limit_connect};
use crate::pages::problem;
use crate::state::AppState;

/// `guard` limits, per client address, the pages a person's browser opens without a bearer
/// token (authorize, redirect, choose); minting a link token is authenticated and not limited.
pub fn router(guard: ConnectGuard) -> Router<AppState> {
    let browser = Router::new()
        .route(paths::AUTHORIZE_ROUTE, get(authorize))
        .route(paths::REDIRECT_ROUTE, get(redirect_get).post(redirect_post))
        .route(paths::CHOOSE_ROUTE, post(choose))
        .route_layer(axum::middleware::from_fn_with_state(guard, limit_connect));
    Router::new().route("/v1/users/{userId}/restricted_tokens", post(mint_link_token)).merge(browser)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewLinkToken {
    paths: Vec<String>,
    expiration_time: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LinkTokenView {
    id: LinkTokenId,
    user_id: UserId,
    paths: Vec<String>,
    #[serde(serialize_with = "model::time::serialize")]
    expiration_time: DateTime<Utc>,
    #[serde(serialize_with = "model::time::serialize")]
    created_time: DateTime<Utc>,
    #[serde(serialize_with = "model::time::serialize")]
    modified_time: DateTime<Utc>,
}

/// `POST /v1/users/{userId}/restricted_tokens` (the user themself, or a service).
async fn mint_link_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<NewLinkToken>,
) -> Result<Response, ApiError> {
    let user = UserId::parse(&user)?;
    let allowed = match caller.role {
        Role::Service => true,
        Role::Patient => caller.patient_id().as_ref() == Some(&user),
        Role::Clinician => false,
    };
    if !allowed {
        return Err(ApiError::Forbidden("Only the user themself or a service may create link tokens."));
    }
    let now = state.clock.now();
    let mut invalid = Vec::new();
    if body.paths.is_empty() || body.paths.len() > 10 {
        invalid.push(("paths", "must hold 1 to 10 paths".to_owned()));
    }
    let mut seen = std::collections::HashSet::new();
    for p in &body.paths {
        if !p.starts_with('/') || p.len() > 256 || p.chars().any(char::is_control) {
            invalid.push(("paths", format!("{p:?} must start with / and be at most 256 characters")));
        }
        if !seen.insert(p) {
            invalid.push(("paths", format!("{p:?} appears twice")));
        }
    }
    if body.expiration_time <= now {
        invalid.push(("expirationTime", "must be in the future".to_owned()));
    } else if body.expiration_time > now + state.connect.link_token_max_ttl {
        invalid.push((
            "expirationTime",
            format!("must be at most {} seconds from now", state.connect.link_token_max_ttl.num_seconds()),
        ));
    }
    if !invalid.is_empty() {
        return Err(ApiError::InvalidParams(
            invalid.into_iter().map(|(n, r)| crate::error::InvalidParam { name: n.into(), reason: r }).collect(),
        ));
    }
    let id = LinkTokenId::generate();
    let mut tx = state.store.begin().await?;
    let token = link_tokens::insert(&mut tx, &id, &user, &body.paths, body.expiration_time, Purpose::Api, now).await?;
    store::audit::record(
        &mut tx,
        &Entry {
            actor: &caller.actor(),
            action: "mint_link_token",
            user_id: Some(&user),
            data_source_id: None,
            detail: serde_json::json!({ "paths": body.paths }),
            time: now,
        },
    )
    .await?;
    tx.commit().await?;
    let view = LinkTokenView {
        id,
        user_id: token.user_id,
        paths: token.paths,
        expiration_time: token.expiration_time,
        created_time: token.created_time,
        modified_time: token.modified_time,
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

fn unknown_partner() -> Response {
    problem(StatusCode::NOT_FOUND, "Unknown partner", "We do not connect to this partner.", "Check the link.")
}

async fn authorize(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Ok(provider) = state.provider(&provider) else { return unknown_partner() };
    connect_flow::authorize(
        &state,
        &provider,
        q.get("restricted_token").map(String::as_str),
        q.get("region").map(String::as_str),
    )
    .await
}

async fn redirect_get(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    headers: HeaderMap,
    Query(p): Query<CallbackParams>,
) -> Response {
    let Ok(provider) = state.provider(&provider) else { return unknown_partner() };
    connect_flow::callback(&state, &provider, &headers, p).await
}

#[derive(Debug, Deserialize)]
struct Pasted {
    #[serde(default)]
    url: String,
}

/// The paste-back form: the address the partner's sign-in ended on.
async fn redirect_post(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    headers: HeaderMap,
    Form(f): Form<Pasted>,
) -> Response {
    let Ok(provider) = state.provider(&provider) else { return unknown_partner() };
    match CallbackParams::from_pasted(&f.url) {
        Some(p) => connect_flow::callback(&state, &provider, &headers, p).await,
        None => problem(
            StatusCode::BAD_REQUEST,
            "That address is not the right one",
            "The pasted text does not contain the code and state from the sign-in.",
            "Copy the whole address that starts with com.medtronic.carepartner:/sso?code= and paste it again.",
        ),
    }
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    authorization: String,
    #[serde(default)]
    patient: String,
}

async fn choose(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    headers: HeaderMap,
    Form(c): Form<Choice>,
) -> Response {
    let Ok(provider) = state.provider(&provider) else { return unknown_partner() };
    connect_flow::choose(&state, &provider, &headers, &c.authorization, &c.patient).await
}
