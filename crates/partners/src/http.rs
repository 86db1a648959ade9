//! The HTTP client every partner call goes through: timeout, User-Agent, no redirects (an
//! authorization server must never bounce our token requests elsewhere), and one place that turns
//! statuses into [`PartnerError`]s.

use std::time::Duration;

use reqwest::{Response, StatusCode, header};

use crate::error::PartnerError;

pub const DEFAULT_USER_AGENT: &str = concat!("tidegate/", env!("CARGO_PKG_VERSION"));

pub fn client(user_agent: Option<&str>, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent.unwrap_or(DEFAULT_USER_AGENT))
        .build()
        .expect("building an HTTP client with static settings")
}

/// A transport failure, described without its URL (query strings may carry secrets).
pub fn transport(e: reqwest::Error) -> PartnerError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() || e.is_body() {
        "response body unreadable"
    } else {
        "request failed"
    };
    PartnerError::Transient(kind.to_owned())
}

pub fn retry_after(resp: &Response) -> Option<Duration> {
    resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Map a non-success status of a data call.
pub fn status_error(resp: &Response) -> PartnerError {
    match resp.status() {
        StatusCode::UNAUTHORIZED => PartnerError::Unauthorized,
        StatusCode::TOO_MANY_REQUESTS => PartnerError::RateLimited { retry_after: retry_after(resp) },
        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => PartnerError::Transient(format!("status {s}")),
        s => PartnerError::Protocol(format!("status {s}")),
    }
}

/// GET a JSON document.
pub async fn get_json(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
) -> Result<serde_json::Value, PartnerError> {
    let mut req = http.get(url);
    if let Some(token) = bearer {
        // Written by hand: some servers want exactly "Bearer".
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let resp = req.send().await.map_err(transport)?;
    if !resp.status().is_success() {
        return Err(status_error(&resp));
    }
    resp.json().await.map_err(|_| PartnerError::Protocol("response is not JSON".into()))
}
