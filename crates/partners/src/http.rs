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

/// The longest `Retry-After` we honour: a partner asking for more is asked again after a day
/// (a larger value, or a garbage one, must not push a source's next poll out of range).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

pub fn retry_after(resp: &Response) -> Option<Duration> {
    parse_retry_after(resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?, std::time::SystemTime::now())
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date (a date in the past is no
/// wait), capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(now).unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::{MAX_RETRY_AFTER, parse_retry_after};

    #[test]
    fn retry_after_reads_seconds_and_http_dates_and_is_capped() {
        // 2026-03-07T12:00:00Z
        let now = UNIX_EPOCH + Duration::from_secs(1_772_884_800);
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sat, 07 Mar 2026 12:05:00 GMT", now), Some(Duration::from_secs(300)));
        assert_eq!(parse_retry_after("Sat, 07 Mar 2026 11:00:00 GMT", now), Some(Duration::ZERO), "a past date");
        assert_eq!(parse_retry_after("99999999999999", now), Some(MAX_RETRY_AFTER), "far too long is a day");
        assert_eq!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now), Some(MAX_RETRY_AFTER));
        for bad in ["", "soon", "-5", "1.5", "Sat, 07 Mar 2026"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        assert!(parse_retry_after("0", SystemTime::now()).is_some());
    }
}
