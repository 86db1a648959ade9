//! The platform data service (`data.v1.yaml`) and its server login (`auth.v1.yaml`): one
//! `continuous` data set per data source, datums uploaded into it, datums and data sets deleted.
//!
//! The session token comes from `POST /auth/serverlogin` (`X-Tidepool-Server-Name`,
//! `X-Tidepool-Server-Secret` → `X-Tidepool-Session-Token`), is cached, and is renewed once when
//! a request answers 401. Neither the secret nor the token is ever logged or put in an error.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use model::UserId;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;

use crate::driver::Devices;
use crate::error::{PartnerError, Problem};
use crate::http::{retry_after, transport};

/// The deduplicator of every data set we create: a datum with an `origin.id` replaces the
/// stored one with the same id (for `bolus` and `food` only when its `origin.time` is newer).
pub const DEDUPLICATOR: &str = "org.tidepool.deduplicator.dataset.delete.origin.older";
pub const DEDUPLICATOR_VERSION: &str = "1.0.0";

/// The platform's own upload batch size: at most this many datums per request.
pub const MAX_BATCH: usize = 2_000;

/// The client name of a partner's data sets (reverse-domain, one per partner): how a data set
/// whose creation answer was lost is found again.
pub fn client_name(provider: &str) -> String {
    format!("org.tidepool.tidegate.{provider}")
}

/// `newdataset.v1.yaml`, with the `required` list of `ERRATA.md`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewDataSet {
    pub client: Client,
    pub data_set_type: &'static str,
    pub deduplicator: Deduplicator,
    pub device_manufacturers: Vec<&'static str>,
    pub device_tags: Vec<&'static str>,
    #[serde(serialize_with = "model::time::serialize")]
    pub time: DateTime<Utc>,
    pub time_processing: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Client {
    pub name: String,
    pub version: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deduplicator {
    pub name: &'static str,
    pub version: &'static str,
}

impl NewDataSet {
    /// The data set of a source of `provider` (its devices as the driver names them).
    pub fn for_partner(provider: &str, devices: Devices, now: DateTime<Utc>) -> Self {
        Self {
            client: Client { name: client_name(provider), version: env!("CARGO_PKG_VERSION") },
            data_set_type: "continuous",
            deduplicator: Deduplicator { name: DEDUPLICATOR, version: DEDUPLICATOR_VERSION },
            device_manufacturers: devices.manufacturers.to_vec(),
            device_tags: devices.tags.to_vec(),
            time: now,
            time_processing: "none",
        }
    }
}

/// How to reach the data service.
#[derive(Debug, Clone)]
pub struct DataServiceSettings {
    /// Base URL of the platform (auth and data share it, as on `api.tidepool.org`).
    pub base_url: String,
    pub server_name: String,
    pub server_secret: SecretString,
    pub timeout: Duration,
}

/// The data-service client. Cheap to clone; clones share the session.
#[derive(Debug, Clone)]
pub struct DataService {
    base_url: String,
    server_name: String,
    server_secret: SecretString,
    http: reqwest::Client,
    session: Arc<tokio::sync::Mutex<Option<SecretString>>>,
}

impl DataService {
    pub fn new(s: DataServiceSettings) -> Self {
        Self {
            base_url: s.base_url.trim_end_matches('/').to_owned(),
            server_name: s.server_name,
            server_secret: s.server_secret,
            http: crate::http::client(None, s.timeout),
            session: Arc::default(),
        }
    }

    /// The cached session token, logging in when there is none (one login at a time).
    async fn session(&self) -> Result<SecretString, PartnerError> {
        let mut held = self.session.lock().await;
        if let Some(t) = held.as_ref() {
            return Ok(t.clone());
        }
        let resp = self
            .http
            .post(format!("{}/auth/serverlogin", self.base_url))
            .header("x-tidepool-server-name", &self.server_name)
            .header("x-tidepool-server-secret", self.server_secret.expose_secret())
            .send()
            .await
            .map_err(transport)?;
        match resp.status() {
            s if s.is_success() => {
                let token = resp
                    .headers()
                    .get("x-tidepool-session-token")
                    .and_then(|v| v.to_str().ok())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| PartnerError::Protocol("server login answered without a session token".into()))?;
                let token = SecretString::from(token.to_owned());
                *held = Some(token.clone());
                Ok(token)
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(PartnerError::InvalidClient("the platform refused our server login".into()))
            }
            _ => Err(failure(resp).await),
        }
    }

    /// Forget a session the service no longer accepts (only if it is still the cached one).
    async fn drop_session(&self, stale: &SecretString) {
        let mut held = self.session.lock().await;
        if held.as_ref().is_some_and(|t| t.expose_secret() == stale.expose_secret()) {
            *held = None;
        }
    }

    /// One request with the session token; on 401 a fresh login and one more try.
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<reqwest::Response, PartnerError> {
        let url = format!("{}{path}", self.base_url);
        for attempt in 0..2 {
            let token = self.session().await?;
            let mut req =
                self.http.request(method.clone(), &url).header("x-tidepool-session-token", token.expose_secret());
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(transport)?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                self.drop_session(&token).await;
                if attempt == 0 {
                    tracing::info!("platform session expired; logging in again");
                    continue;
                }
                return Err(PartnerError::Unauthorized);
            }
            return Ok(resp);
        }
        Err(PartnerError::Unauthorized)
    }

    /// The user's (not deleted) data set with this client name, if any.
    pub async fn find_data_set(&self, user: &UserId, client_name: &str) -> Result<Option<String>, PartnerError> {
        Ok(self.data_sets(user, client_name).await?.into_iter().next())
    }

    /// Every (not deleted) data set of the user with this client name (`tidegate doctor`: there
    /// must be one per source).
    pub async fn data_sets(&self, user: &UserId, client_name: &str) -> Result<Vec<String>, PartnerError> {
        let query: String =
            form_urlencoded::Serializer::new(String::new()).append_pair("client.name", client_name).finish();
        let resp = self.send(Method::GET, &format!("/v1/users/{user}/data_sets?{query}"), None).await?;
        if !resp.status().is_success() {
            return Err(failure(resp).await);
        }
        let body: Value = resp.json().await.map_err(|_| PartnerError::Protocol("data set list is not JSON".into()))?;
        // `{"data": [...]}` as published; a bare array as some deployments answer.
        let sets = body.get("data").unwrap_or(&body).as_array().cloned().unwrap_or_default();
        Ok(sets
            .iter()
            .filter(|s| s["client"]["name"] == client_name && s["deletedTime"].is_null())
            .filter_map(|s| s["id"].as_str().or(s["uploadId"].as_str()).map(str::to_owned))
            .collect())
    }

    /// Create a data set for the user: its id.
    pub async fn create_data_set(&self, user: &UserId, set: &NewDataSet) -> Result<String, PartnerError> {
        let body = serde_json::to_value(set).map_err(|e| PartnerError::Protocol(e.to_string()))?;
        let resp = self.send(Method::POST, &format!("/v1/users/{user}/data_sets"), Some(&body)).await?;
        if !resp.status().is_success() {
            return Err(failure(resp).await);
        }
        let body: Value = resp.json().await.map_err(|_| PartnerError::Protocol("data set is not JSON".into()))?;
        let set = body.get("data").filter(|d| d.is_object()).unwrap_or(&body);
        set["id"]
            .as_str()
            .or(set["uploadId"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| PartnerError::Protocol("created data set has no id".into()))
    }

    /// `PUT /v1/data_sets/{id}` with a partial update (`updatedataset.v1.yaml`).
    pub async fn set_timezone_offset(&self, data_set: &str, minutes: i32) -> Result<(), PartnerError> {
        let body = serde_json::json!({ "timezoneOffset": minutes });
        let resp = self.send(Method::PUT, &format!("/v1/data_sets/{}", seg(data_set)), Some(&body)).await?;
        ok(resp).await
    }

    /// Delete a data set and its data (already gone is done).
    pub async fn delete_data_set(&self, data_set: &str) -> Result<(), PartnerError> {
        let resp = self.send(Method::DELETE, &format!("/v1/data_sets/{}", seg(data_set)), None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        ok(resp).await
    }

    /// Upload at most [`MAX_BATCH`] datums. A 400 is [`PartnerError::Invalid`] with what it named.
    pub async fn upload(&self, data_set: &str, datums: &[&Value]) -> Result<(), PartnerError> {
        let body = Value::Array(datums.iter().map(|d| (*d).clone()).collect());
        let resp = self.send(Method::POST, &format!("/v1/data_sets/{}/data", seg(data_set)), Some(&body)).await?;
        ok(resp).await
    }

    /// Delete datums by origin id (the platform's selector body, `[{"origin": {"id": …}}]`).
    pub async fn delete_data(&self, data_set: &str, origin_ids: &[&str]) -> Result<(), PartnerError> {
        let body = Value::Array(origin_ids.iter().map(|id| serde_json::json!({ "origin": { "id": id } })).collect());
        let resp = self.send(Method::DELETE, &format!("/v1/data_sets/{}/data", seg(data_set)), Some(&body)).await?;
        ok(resp).await
    }
}

/// A data-set id as a path segment: the platform's ids are hex (optionally `upid_`); anything
/// else is percent-encoded so it cannot change the path.
fn seg(id: &str) -> String {
    if id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        id.to_owned()
    } else {
        form_urlencoded::byte_serialize(id.as_bytes()).collect()
    }
}

async fn ok(resp: reqwest::Response) -> Result<(), PartnerError> {
    if resp.status().is_success() { Ok(()) } else { Err(failure(resp).await) }
}

/// A non-success answer as an error: 400 with the problems it named, 404, 429 with its wait,
/// 5xx/408 transient, anything else a protocol error. Only our own words and the service's
/// problem details (about our datums, never secrets) are kept.
async fn failure(resp: reqwest::Response) -> PartnerError {
    let status = resp.status();
    match status {
        StatusCode::BAD_REQUEST => {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            PartnerError::Invalid(problems(&body))
        }
        StatusCode::NOT_FOUND => PartnerError::NotFound(format!("status {status}")),
        StatusCode::UNAUTHORIZED => PartnerError::Unauthorized,
        StatusCode::TOO_MANY_REQUESTS => PartnerError::RateLimited { retry_after: retry_after(&resp) },
        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => PartnerError::Transient(format!("status {s}")),
        s => PartnerError::Protocol(format!("status {s}")),
    }
}

/// The problems of a platform 400: `{"errors": [...]}` or a single error object, each maybe
/// with `source.pointer` = `/<index>/<field>…`.
pub fn problems(body: &Value) -> Vec<Problem> {
    let items: Vec<&Value> = match body.get("errors").and_then(Value::as_array) {
        Some(list) => list.iter().collect(),
        None if body.is_object() => vec![body],
        None => Vec::new(),
    };
    let detail = |e: &Value| {
        ["detail", "message", "title", "code"]
            .iter()
            .find_map(|k| e[*k].as_str().map(str::to_owned))
            .unwrap_or_else(|| "invalid".to_owned())
            .chars()
            .take(300)
            .collect::<String>()
    };
    let mut out: Vec<Problem> = items
        .into_iter()
        .map(|e| {
            let pointer = e["source"]["pointer"].as_str().map(str::to_owned);
            let index = pointer.as_deref().and_then(|p| p.strip_prefix('/')?.split('/').next()?.parse().ok());
            Problem { index, pointer, detail: detail(e) }
        })
        .collect();
    if out.is_empty() {
        out.push(Problem { index: None, pointer: None, detail: "invalid request".into() });
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::problems;

    #[test]
    fn problems_name_the_datums_by_pointer() {
        let p = problems(&json!({"errors": [
            {"code": "value-not-valid", "detail": "bad units", "source": {"pointer": "/3/units"}},
            {"code": "value-not-valid", "title": "value is not valid", "source": {"pointer": "/12"}},
            {"code": "value-not-valid", "detail": "no pointer"}
        ]}));
        assert_eq!(p.iter().map(|p| p.index).collect::<Vec<_>>(), [Some(3), Some(12), None]);
        assert_eq!(p[0].detail, "bad units");
        assert_eq!(p[1].detail, "value is not valid");
        let single = problems(&json!({"code": 400, "message": "data is not valid"}));
        assert_eq!((single[0].index, single[0].detail.as_str()), (None, "data is not valid"));
        assert_eq!(problems(&json!(null)).len(), 1);
    }
}
