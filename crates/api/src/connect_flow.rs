//! The connect flow (DESIGN §2a, RFC 6749 + RFC 9700): link token → authorization record and
//! browser binding → the partner's sign-in → callback (or pasted URL) → code exchange → partner
//! account identity → one transaction storing the connection. Every refusal is a page that says
//! what happened and what to do, and changes nothing.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chrono::Duration;
use model::{AccountChoice, LinkTokenId, ProviderName, paths};
use partners::registry::{Partner, ResolvedRegion};
use partners::{Identity, PartnerError, RedirectMode, TokenSet};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use store::audit::Actor;
use store::lifecycle::{ConnectError, Connection};
use store::link_tokens::{self, LinkToken};
use store::oauth_authorizations::{Authorization, NewAuthorization, Pending};

use crate::pages::{self, page, problem, see_other};
use crate::state::AppState;

pub const COOKIE: &str = "tidegate_oauth";

/// Callback parameters, from the query string or from a pasted URL.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
}

impl CallbackParams {
    /// Parse the address a person pasted (`scheme:/path?code=…&state=…`, or just the query).
    pub fn from_pasted(url: &str) -> Option<Self> {
        let url = url.trim();
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or(url);
        let query = query.split('#').next().unwrap_or(query);
        let parsed = reqwest::Url::parse(&format!("http://pasted.invalid/?{query}")).ok()?;
        let mut p = CallbackParams::default();
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "code" => p.code = Some(v.into_owned()),
                "state" => p.state = Some(v.into_owned()),
                "iss" => p.iss = Some(v.into_owned()),
                "error" => p.error = Some(v.into_owned()),
                _ => {}
            }
        }
        (p.state.is_some() || p.code.is_some() || p.error.is_some()).then_some(p)
    }
}

fn sha256(s: &str) -> Vec<u8> {
    Sha256::digest(s.as_bytes()).to_vec()
}

/// The browser binding the flow set (every `Cookie` header is read).
fn cookie_value(headers: &HeaderMap) -> Option<String> {
    CookieJar::from_headers(headers).get(COOKIE).map(|c| c.value().to_owned())
}

fn link_problem(title: &str, what: &str) -> Response {
    problem(StatusCode::GONE, title, what, "Ask for a new link (in the app, or from your clinic), then open it again.")
}

/// Check a link token for a provider's authorize path.
async fn check_link(state: &AppState, raw: Option<&str>, provider: &ProviderName) -> Result<LinkToken, Response> {
    let raw = raw.ok_or_else(|| {
        problem(
            StatusCode::BAD_REQUEST,
            "This link is incomplete",
            "The address is missing its access code.",
            "Open the link exactly as you received it.",
        )
    })?;
    let id = LinkTokenId::parse(raw).map_err(|_| {
        problem(
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            "The access code in the address is malformed.",
            "Open the link exactly as you received it.",
        )
    })?;
    let mut conn = state.store.acquire().await.map_err(|_| unavailable())?;
    let token = link_tokens::find(&mut conn, &link_tokens::hash(&id)).await.map_err(|_| unavailable())?;
    let token = token.ok_or_else(|| {
        problem(
            StatusCode::NOT_FOUND,
            "This link is not valid",
            "We do not know this link.",
            "Ask for a new link, then open it again.",
        )
    })?;
    if token.consumed_time.is_some() {
        return Err(link_problem("This link was already used", "The account was connected with this link already."));
    }
    if token.expiration_time <= state.clock.now() {
        return Err(link_problem(
            "This link has expired",
            "Links to connect an account are only valid for a limited time.",
        ));
    }
    if !token.allows(&paths::authorize(provider)) {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "This link is for something else",
            "This link does not allow connecting this partner.",
            "Use the link meant for this partner.",
        ));
    }
    Ok(token)
}

fn unavailable() -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again shortly",
        "We could not complete this step just now.",
        "Nothing was changed. Try again in a few minutes.",
    )
}

fn partner_unavailable(partner: &Partner) -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("{} cannot be reached", partner.display_name()),
        &format!("We could not reach {} just now.", partner.display_name()),
        "Nothing was changed. Try again in a few minutes with the same link.",
    )
}

/// `GET /v1/oauth/{provider}/authorize?restricted_token=…[&region=…]`
pub async fn authorize(
    state: &AppState,
    provider: &ProviderName,
    restricted_token: Option<&str>,
    region: Option<&str>,
) -> Response {
    let Some(partner) = state.partners.get(provider) else {
        return problem(
            StatusCode::NOT_FOUND,
            "Unknown partner",
            "We do not connect to this partner.",
            "Check the link.",
        );
    };
    let link = match check_link(state, restricted_token, provider).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let region = match region.map(str::to_owned).or_else(|| partner.implied_region()) {
        Some(r) if partner.regions().contains(&r) => r,
        Some(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Unknown region",
                "The region in the address is not one we know.",
                "Go back and choose your region again.",
            );
        }
        None => return region_choice(partner, provider, restricted_token.unwrap_or_default()),
    };
    let resolved = match partner.resolve(&region).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(provider = %provider, region, error = %e, "resolving partner endpoints failed");
            return partner_unavailable(partner);
        }
    };
    let oauth_state = partners::oauth::random_token(32);
    let binding = partners::oauth::random_token(32);
    let verifier = resolved.oauth.pkce.then(|| partners::oauth::random_token(48));
    let challenge = verifier.as_ref().map(partners::oauth::pkce_challenge);
    let now = state.clock.now();
    let new = NewAuthorization {
        state: oauth_state.clone(),
        browser_binding: binding.clone(),
        user_id: link.user_id.clone(),
        provider: provider.clone(),
        region: region.clone(),
        link_token_hash: link.token_hash.clone(),
        pkce_verifier: verifier,
        expires_at: now + state.connect.authorization_ttl,
    };
    if let Err(e) = state.store.start_authorization(&new, now).await {
        tracing::error!(error = %e, "storing the authorization failed");
        return unavailable();
    }
    let url = resolved.oauth.authorize_url(oauth_state.expose_secret(), challenge.as_deref());
    let mut resp = match partner.redirect_mode() {
        RedirectMode::Web => see_other(&url),
        RedirectMode::Paste => paste_page(partner, provider, &resolved, &url),
    };
    let cookie = Cookie::build((COOKIE, binding.expose_secret().to_owned()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path(paths::oauth_prefix(provider))
        .max_age(cookie::time::Duration::seconds(state.connect.authorization_ttl.num_seconds()))
        .secure(state.connect.secure_cookies())
        .build();
    if let Ok(v) = cookie.to_string().parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

fn region_choice(partner: &Partner, provider: &ProviderName, token: &str) -> Response {
    let regions: Vec<(String, String)> = partner
        .regions()
        .iter()
        .map(|r| {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("restricted_token", token)
                .append_pair("region", r)
                .finish();
            (format!("{}?{query}", paths::authorize(provider)), partner.region_label(r))
        })
        .collect();
    let name = partner.display_name();
    page(StatusCode::OK, &format!("Connect {name}"), pages::region_choice(name, &regions))
}

fn paste_page(partner: &Partner, provider: &ProviderName, resolved: &ResolvedRegion, url: &str) -> Response {
    let name = partner.display_name();
    // The address the partner sends the browser to starts with its registered redirect URI.
    let body = pages::paste(name, url, &resolved.oauth.redirect_uri, &paths::redirect(provider));
    page(StatusCode::OK, &format!("Connect {name}"), body)
}

fn finished(state: &AppState, partner: &Partner) -> Response {
    match &state.connect.authorized_url {
        Some(url) => see_other(url),
        None => page(
            StatusCode::OK,
            &format!("{} is connected", partner.display_name()),
            pages::connected(partner.display_name()),
        ),
    }
}

fn declined(state: &AppState, partner: &Partner) -> Response {
    match &state.connect.declined_url {
        Some(url) => see_other(url),
        None => page(StatusCode::OK, "Nothing was connected", pages::declined(partner.display_name())),
    }
}

fn refused(title: &str, what: &str) -> Response {
    problem(StatusCode::BAD_REQUEST, title, what, "Nothing was changed. Open your link again to start over.")
}

/// `GET|POST /v1/oauth/{provider}/redirect`.
pub async fn callback(state: &AppState, provider: &ProviderName, headers: &HeaderMap, p: CallbackParams) -> Response {
    let Some(partner) = state.partners.get(provider) else {
        return problem(
            StatusCode::NOT_FOUND,
            "Unknown partner",
            "We do not connect to this partner.",
            "Check the link.",
        );
    };
    let Some(raw_state) = p.state.as_deref().filter(|s| !s.is_empty() && s.len() <= 512) else {
        return refused("This sign-in cannot be completed", "The answer from the partner is missing its state.");
    };
    let now = state.clock.now();
    let a = match state.store.claim_authorization(&SecretString::from(raw_state.to_owned()), now).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return refused("This sign-in cannot be completed", "We did not start this sign-in (unknown state).");
        }
        Err(e) => {
            tracing::error!(error = %e, "claiming the authorization failed");
            return unavailable();
        }
    };
    if a.used_at.is_some() {
        return refused("This sign-in was already used", "Each sign-in can be completed only once.");
    }
    if a.expires_at <= now {
        return refused("This sign-in has expired", "More than 10 minutes passed since you started.");
    }
    if &a.provider != provider {
        return refused("This sign-in belongs to another partner", "The answer arrived at the wrong place.");
    }
    match cookie_value(headers) {
        Some(c) if sha256(&c) == a.browser_binding_hash => {}
        _ => {
            return refused(
                "Please finish in the same browser",
                "This sign-in was started in another browser (or its cookie was removed).",
            );
        }
    }
    if let Some(err) = &p.error {
        if err == "access_denied" {
            return declined(state, partner);
        }
        tracing::info!(provider = %provider, error = %err.chars().take(64).collect::<String>(), "partner returned an error");
        return refused(
            &format!("{} did not complete the sign-in", partner.display_name()),
            "The partner reported an error.",
        );
    }
    if let Some(expected) = &partner.settings.expected_issuer
        && p.iss.as_deref() != Some(expected.as_str())
    {
        return refused(
            "This sign-in cannot be completed",
            "The answer did not come from the expected sign-in server.",
        );
    }
    let Some(code) = p.code.as_deref().filter(|c| !c.is_empty()) else {
        return refused("This sign-in cannot be completed", "The answer from the partner is missing its code.");
    };
    let region = a.region.clone().unwrap_or_default();
    let resolved = match partner.resolve(&region).await {
        Ok(r) => r,
        Err(_) => return partner_unavailable(partner),
    };
    let tokens = match resolved.oauth.exchange_code(&partner.http, code, a.pkce_verifier.as_ref()).await {
        Ok(t) => t,
        Err(e) => return exchange_failed(partner, &e),
    };
    finish_with_identity(state, partner, &resolved, a, tokens).await
}

fn exchange_failed(partner: &Partner, e: &PartnerError) -> Response {
    tracing::warn!(provider = %partner.name, error = %e, "code exchange failed");
    if e.is_transient() {
        return partner_unavailable(partner);
    }
    refused(
        &format!("{} did not accept the sign-in", partner.display_name()),
        &format!("{} refused to complete the connection (the sign-in code was not accepted).", partner.display_name()),
    )
}

/// Take one call from the partner's shared hourly budget (when it has one) for the identity
/// request. A database problem does not block the person: the call is made.
async fn spend_budget(state: &AppState, partner: &Partner) -> bool {
    let Some(cap) = partner.settings.schedule.calls_per_hour else { return true };
    let calls = i64::from(partner.driver.identity_calls());
    if calls == 0 {
        return true;
    }
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    match state.store.reserve_partner_calls(partner.name.as_str(), state.clock.now(), calls, cap).await {
        Ok(granted) => granted == calls,
        Err(e) => {
            tracing::warn!(error = %e, "reserving a partner call failed; calling anyway");
            true
        }
    }
}

/// After the exchange: find the partner account, then store (or ask the care partner to choose).
async fn finish_with_identity(
    state: &AppState,
    partner: &Partner,
    resolved: &ResolvedRegion,
    a: Authorization,
    tokens: TokenSet,
) -> Response {
    if !spend_budget(state, partner).await {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{} is busy", partner.display_name()),
            &format!(
                "{} allows us only so many requests an hour, and this hour's are used up.",
                partner.display_name()
            ),
            "Nothing was changed. Try again in a few minutes with the same link.",
        );
    }
    let call = partner.call(resolved, tokens.access_token.expose_secret());
    let account_id = match partner.driver.identify(call, &a.user_id).await {
        Ok(Identity::Account(id)) => id,
        Ok(Identity::Choose(choices)) => return choose_account(state, partner, &a, tokens, choices).await,
        Ok(Identity::Unusable { title, detail, remedy }) => {
            return problem(StatusCode::BAD_REQUEST, &title, &detail, &remedy);
        }
        Err(e) => return identity_failed(partner, &e),
    };
    store_connection(state, partner, &a, tokens, account_id).await
}

fn identity_failed(partner: &Partner, e: &PartnerError) -> Response {
    tracing::warn!(provider = %partner.name, error = %e, "looking up the partner account failed");
    if e.is_transient() {
        return partner_unavailable(partner);
    }
    problem(
        StatusCode::BAD_GATEWAY,
        &format!("{} answered unexpectedly", partner.display_name()),
        "We could not identify the account you signed in with.",
        "Nothing was changed. Please try again later.",
    )
}

async fn store_connection(
    state: &AppState,
    partner: &Partner,
    a: &Authorization,
    tokens: TokenSet,
    account_id: String,
) -> Response {
    let now = state.clock.now();
    // First poll within the partner's `first_poll_within_secs` (a minute by default), jittered so
    // a wave of connections does not poll in step, and never inside a blackout.
    let first_poll_at = partner.schedule.first_poll(now, &mut rand::rng());
    let c = Connection {
        user: a.user_id.clone(),
        provider: a.provider.clone(),
        region: a.region.clone(),
        partner_account_id: account_id,
        access_expires_at: tokens.expires_in.and_then(|d| Duration::from_std(d).ok()).map(|d| now + d),
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        scope: tokens.scope,
        link_token_hash: a.link_token_hash.clone(),
        first_poll_at,
    };
    let actor = Actor { sub: a.user_id.to_string(), role: "patient".into() };
    match state.store.connect(&actor, &c, now).await {
        Ok(source) => {
            tracing::info!(provider = %a.provider, data_source = %source.id, "connected");
            if let Err(e) = state.store.complete_authorization(a.id, now).await {
                // The connection is stored; the attempt's row expires and is swept anyway.
                tracing::warn!(error = %e, "marking the authorization complete failed");
            }
            finished(state, partner)
        }
        Err(ConnectError::AccountLinkedElsewhere) => problem(
            StatusCode::CONFLICT,
            "This account is already connected",
            &format!("This {} account is already connected to another person's account here.", partner.display_name()),
            "Nothing was changed. Sign in with your own account, or ask the other person to disconnect it first.",
        ),
        Err(ConnectError::Store(e)) => {
            tracing::error!(error = %e, "storing the connection failed");
            unavailable()
        }
    }
}

/// The sign-in reaches several partner accounts (a care partner following several patients):
/// the person chooses one; the tokens wait, sealed.
async fn choose_account(
    state: &AppState,
    partner: &Partner,
    a: &Authorization,
    tokens: TokenSet,
    choices: Vec<AccountChoice>,
) -> Response {
    let now = state.clock.now();
    let pending = Pending {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        expires_at: tokens.expires_in.and_then(|d| Duration::from_std(d).ok()).map(|d| now + d),
        choices,
        scope: tokens.scope,
    };
    if let Err(e) = state.store.hold_for_choice(a.id, &pending).await {
        tracing::error!(error = %e, "holding the tokens for a choice failed");
        return unavailable();
    }
    let labels: Vec<&str> = pending.choices.iter().map(|c| c.label.as_str()).collect();
    let body = pages::choose(partner.display_name(), &paths::choose(&partner.name), &a.id.to_string(), &labels);
    page(StatusCode::OK, "Whose data should we import?", body)
}

/// `POST /v1/oauth/{provider}/choose` (form: authorization, patient).
pub async fn choose(
    state: &AppState,
    provider: &ProviderName,
    headers: &HeaderMap,
    authorization: &str,
    patient: &str,
) -> Response {
    let Some(partner) = state.partners.get(provider) else {
        return problem(
            StatusCode::NOT_FOUND,
            "Unknown partner",
            "We do not connect to this partner.",
            "Check the link.",
        );
    };
    let Ok(id) = uuid::Uuid::parse_str(authorization) else {
        return refused("This choice cannot be completed", "The form was altered.");
    };
    let now = state.clock.now();
    let (a, pending) = match state.store.pending_choice(id).await {
        Ok(Some(x)) => x,
        Ok(None) => return refused("This choice cannot be completed", "There is no sign-in waiting for a choice."),
        Err(_) => return unavailable(),
    };
    if a.completed_at.is_some() || a.expires_at <= now || &a.provider != provider {
        return refused("This choice has expired", "More than 10 minutes passed, or it was already made.");
    }
    match cookie_value(headers) {
        Some(c) if sha256(&c) == a.browser_binding_hash => {}
        _ => return refused("Please finish in the same browser", "This sign-in was started in another browser."),
    }
    let Some(chosen) = pending.choices.iter().find(|c| c.label == patient) else {
        return refused("This choice cannot be completed", "That person is not followed by this account.");
    };
    let account_id = chosen.account_id.clone();
    let tokens = TokenSet {
        access_token: pending.access_token,
        refresh_token: pending.refresh_token,
        expires_in: pending.expires_at.and_then(|t| (t - now).to_std().ok()),
        scope: pending.scope,
    };
    store_connection(state, partner, &a, tokens, account_id).await
}
