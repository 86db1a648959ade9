//! Routers. Each module exposes `fn router() -> Router<AppState>`; handlers stay thin and call
//! the store (domain operations) and the tenant rules.

mod connect;
mod data;
mod data_sources;
mod disconnect;
mod health;
mod requests;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::limit::{ConnectGuard, Limiter, RateLimit, TrustedProxies};
use crate::middleware::{problem_catch_all, track_metrics};
use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Limits applied to every public request.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// A request still running after this answers 503 (problem+json).
    pub request_timeout: Duration,
    /// Requests per client address to the connect pages (authorize, redirect, choose).
    pub connect_limit: RateLimit,
    /// Proxies whose `X-Forwarded-For` names the client (empty: the TCP peer is the client).
    pub trusted_proxies: TrustedProxies,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            connect_limit: RateLimit::default(),
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// Headers every public response carries unless its handler set its own: no MIME sniffing, no
/// referrer, no framing, no active content, and no caching (answers carry tokens and personal
/// data). The connect pages set a stricter page CSP of their own (`pages::secure`).
fn security_headers() -> [(HeaderName, HeaderValue); 5] {
    [
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

/// The public listener: health, OpenAPI and the API.
pub fn public_router(state: AppState, http: &HttpSettings) -> Router {
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
        let request_id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
        let route = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "unmatched".into());
        tracing::info_span!("request", method = %req.method(), route, request_id, caller_role = tracing::field::Empty)
    });
    let guard = ConnectGuard {
        limiter: Arc::new(Limiter::new(http.connect_limit)),
        proxies: Arc::new(http.trusted_proxies.clone()),
        clock: state.clock.clone(),
    };
    let mut secured = Router::new()
        .merge(health::router())
        .merge(data_sources::router())
        .merge(disconnect::router())
        .merge(connect::router(guard))
        .merge(requests::router())
        .merge(data::router())
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(trace)
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(axum::middleware::from_fn(problem_catch_all))
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async { ApiError::Timeout.into_response() }))
                .timeout(http.request_timeout)
                .layer(DefaultBodyLimit::max(http.body_limit_bytes))
                .layer(tower_http::limit::RequestBodyLimitLayer::new(http.body_limit_bytes)),
        )
        // Metrics innermost of the route layers so the matched route is known.
        .route_layer(axum::middleware::from_fn(track_metrics));
    // Outermost, so every answer gets them (timeouts, 404s and 413s included).
    for (name, value) in security_headers() {
        secured = secured.layer(SetResponseHeaderLayer::if_not_present(name, value));
    }
    secured
}

/// Renders the Prometheus text exposition.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// The ops listener (loopback by default): `/metrics`, and the operator dashboard (`/admin`)
/// when one is given.
pub fn ops_router(render: MetricsRenderer, dashboard: Option<crate::dashboard::Dashboard>) -> Router {
    let base = match dashboard {
        Some(d) => crate::dashboard::router(d),
        None => Router::new(),
    };
    base.route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render()) }
        }),
    )
    .fallback(|| async { ApiError::NotFound })
}
