//! What the simulator saw: per-endpoint request counts, a bounded request log, and every secret
//! it issued or received (codes, tokens, PKCE values) so tests can scan tidegate's database and
//! logs for leaks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Shared;

const LOG_CAPACITY: usize = 200_000;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggedRequest {
    #[serde(serialize_with = "crate::ser_time")]
    pub time: DateTime<Utc>,
    pub method: String,
    /// The route template (e.g. `/dexcom/v3/users/self/egvs`); never the query string.
    pub route: String,
    pub path: String,
    pub status: u16,
}

#[derive(Debug, Default)]
pub struct Observability {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counts: BTreeMap<String, u64>,
    log: VecDeque<LoggedRequest>,
    secrets: Vec<String>,
}

impl Observability {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, entry: LoggedRequest) {
        let mut g = self.lock();
        *g.counts.entry(format!("{} {}", entry.method, entry.route)).or_default() += 1;
        if g.log.len() == LOG_CAPACITY {
            g.log.pop_front();
        }
        g.log.push_back(entry);
    }

    /// Remember a secret value (a code, token or PKCE value) for leak scans.
    pub fn secret(&self, value: &str) {
        self.lock().secrets.push(value.to_owned());
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.lock().counts.clone()
    }

    /// Requests counted for `"METHOD /route"`.
    pub fn count(&self, key: &str) -> u64 {
        self.lock().counts.get(key).copied().unwrap_or(0)
    }

    pub fn log(&self) -> Vec<LoggedRequest> {
        self.lock().log.iter().cloned().collect()
    }

    pub fn secrets(&self) -> Vec<String> {
        self.lock().secrets.clone()
    }

    pub fn reset(&self) {
        let mut g = self.lock();
        g.counts.clear();
        g.log.clear();
    }
}

/// Middleware: count and log every request.
pub async fn observe(State(sim): State<Shared>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    sim.obs.record(LoggedRequest { time: sim.clock.now(), method, route, path, status: resp.status().as_u16() });
    resp
}
