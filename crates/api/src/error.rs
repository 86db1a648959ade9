//! The API's one error enum, mapped once to `application/problem+json` (RFC 9457).
//!
//! Every `type` is a stable URN; `title` is fixed per type; `detail` is written for the caller
//! and never carries SQL, tokens or internal messages (those go to the log, with the request id).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::InvalidId;
use serde::Serialize;
use store::StoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One request parameter that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidParam {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request parameters")]
    InvalidParams(Vec<InvalidParam>),
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("authentication required: {0}")]
    Unauthenticated(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// Too many requests from one client address; the next is allowed after this many seconds.
    #[error("rate limited (retry after {retry_after_secs} s)")]
    RateLimited { retry_after_secs: u64 },
    #[error("request timed out")]
    Timeout,
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    /// Any other HTTP error produced below the handlers (kept with its own status).
    #[error("HTTP error {0}")]
    Http(StatusCode),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn invalid_param(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidParams(vec![InvalidParam { name: name.into(), reason: reason.into() }])
    }

    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(e))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidParams(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Http(status) => *status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable slug of the problem type (`urn:tidegate:problem:{slug}`).
    pub fn slug(&self) -> &'static str {
        match self {
            Self::InvalidParams(_) => "invalid-parameters",
            Self::BadRequest(_) => "bad-request",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::RateLimited { .. } => "rate-limited",
            Self::Timeout => "timeout",
            Self::Unavailable(_) => "unavailable",
            Self::Http(_) => "http-error",
            Self::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::InvalidParams(_) => "Invalid request parameters",
            Self::BadRequest(_) => "Malformed request",
            Self::Unauthenticated(_) => "Authentication required",
            Self::Forbidden(_) => "Forbidden",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Conflict(_) => "Conflict",
            Self::PayloadTooLarge => "Request body too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::RateLimited { .. } => "Too many requests",
            Self::Timeout => "Request timed out",
            Self::Unavailable(_) => "Service unavailable",
            Self::Http(status) => status.canonical_reason().unwrap_or("HTTP error"),
            Self::Internal(_) => "Internal error",
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            Self::InvalidParams(_) => Some("One or more parameters are invalid; see invalidParams.".into()),
            Self::BadRequest(d) | Self::Conflict(d) => Some(d.clone()),
            Self::Unauthenticated(d) | Self::Forbidden(d) | Self::Unavailable(d) => Some((*d).to_owned()),
            Self::Internal(_) => Some("Something went wrong on our side; it has been logged.".into()),
            Self::RateLimited { retry_after_secs } => Some(format!(
                "Too many requests from this address; try again in {retry_after_secs} second{}.",
                if *retry_after_secs == 1 { "" } else { "s" }
            )),
            _ => None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Problem<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invalid_params: Option<&'a [InvalidParam]>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(e) => tracing::error!(error = %e, source = ?e.source(), "internal error"),
            // Causes are logged where they are known (readiness changes, dependency clients).
            Self::Unavailable(reason) => tracing::debug!(reason, "service unavailable"),
            _ => tracing::debug!(error = %self, "request refused"),
        }
        let problem = Problem {
            type_: format!("urn:tidegate:problem:{}", self.slug()),
            title: self.title(),
            status: status.as_u16(),
            detail: self.detail(),
            invalid_params: match &self {
                Self::InvalidParams(p) => Some(p.as_slice()),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::RateLimited { retry_after_secs } = &self {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        resp
    }
}

impl From<InvalidId> for ApiError {
    fn from(e: InvalidId) -> Self {
        Self::invalid_param(e.field, format!("must match {}", e.pattern))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::Unavailable("The database is unavailable; try again shortly.")
            }
            StoreError::PoolBusy => {
                tracing::warn!("database pool busy: no connection came free in time");
                Self::Unavailable("The service is busy; try again shortly.")
            }
            StoreError::Conflict { constraint } => {
                tracing::info!(constraint, "write refused by a constraint");
                Self::Conflict("The request conflicts with the current state of the resource.".into())
            }
            other => Self::internal(other),
        }
    }
}
