//! Shared helpers for the simulator's HTTP tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use tidegate_sandbox::{OAuthClient, Sandbox, SandboxConfig};

pub const CLIENT_ID: &str = "test-client";
pub const REDIRECT: &str = "https://tidegate.test/v1/oauth/dexcom/redirect";

/// The repository's `testdata/` (fixtures and reference contracts, with their provenance).
pub fn testdata_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

pub fn fixture(path: &str) -> Value {
    let p = testdata_dir().join("fixtures").join(path);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

pub struct Env {
    pub sb: Sandbox,
    pub secret: String,
    pub http: reqwest::Client,
}

pub async fn start(tweak: impl FnOnce(&mut SandboxConfig)) -> Env {
    let secret = format!("secret-{}", rand_hex());
    let mut cfg = SandboxConfig {
        dexcom_clients: vec![OAuthClient {
            client_id: CLIENT_ID.into(),
            client_secret: Some(secret.clone()),
            redirect_uris: vec![REDIRECT.into()],
        }],
        clinic_server_token: format!("clinic-{}", rand_hex()),
        start_time: Some(chrono::DateTime::parse_from_rfc3339("2026-03-02T12:00:00Z").unwrap().to_utc()),
        ..Default::default()
    };
    tweak(&mut cfg);
    let sb = Sandbox::start(cfg).await.unwrap();
    Env { sb, secret, http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap() }
}

pub fn rand_hex() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    format!("{:x}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos())
}

impl Env {
    /// Sign in as `login` on Dexcom's page and approve: returns the code.
    pub async fn dexcom_code(&self, login: &str) -> String {
        let page = self
            .http
            .get(self.sb.url("/dexcom/v3/oauth2/login"))
            .query(&[
                ("client_id", CLIENT_ID),
                ("redirect_uri", REDIRECT),
                ("response_type", "code"),
                ("scope", "offline_access"),
                ("state", "st-1"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains(login));
        let resp = self
            .http
            .post(self.sb.url("/dexcom/v3/oauth2/login"))
            .form(&[
                ("client_id", CLIENT_ID),
                ("redirect_uri", REDIRECT),
                ("state", "st-1"),
                ("scope", "offline_access"),
                ("user", login),
                ("decision", "approve"),
            ])
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_redirection());
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.starts_with(REDIRECT), "{location}");
        let url = reqwest::Url::parse(&location).unwrap();
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "st-1");
        q["code"].clone()
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let mut all = vec![("client_id", CLIENT_ID), ("client_secret", self.secret.as_str())];
        all.extend_from_slice(form);
        let r = self.http.post(self.sb.url("/dexcom/v3/oauth2/token")).form(&all).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    pub async fn dexcom_tokens(&self, login: &str) -> Value {
        let code = self.dexcom_code(login).await;
        let (status, body) =
            self.token(&[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", REDIRECT)]).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn get(&self, path: &str, token: &str, query: &[(&str, &str)]) -> reqwest::Response {
        self.http.get(self.sb.url(path)).bearer_auth(token).query(query).send().await.unwrap()
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, self.sb.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }
}

/// Same field names and JSON types, recursively: `null` matches anything, and a field the
/// simulator adds beyond the fixture must be in `allowed_extra`.
pub fn same_shape(path: &str, ours: &Value, fixture: &Value, allowed_extra: &[&str], problems: &mut Vec<String>) {
    use Value::*;
    match (ours, fixture) {
        (_, Null) | (Null, _) => {}
        (Object(a), Object(b)) => {
            for (k, fv) in b {
                match a.get(k) {
                    Some(av) => same_shape(&format!("{path}.{k}"), av, fv, allowed_extra, problems),
                    None => problems.push(format!("{path}.{k} missing")),
                }
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                if !allowed_extra.contains(&k.as_str()) {
                    problems.push(format!("{path}.{k} not in the fixture"));
                }
            }
        }
        (Array(a), Array(b)) => {
            if let (Some(first), Some(proto)) = (a.first(), b.first()) {
                same_shape(&format!("{path}[0]"), first, proto, allowed_extra, problems);
            }
        }
        (Number(a), Number(b)) => {
            // An integer where the fixture has a float (or vice versa) is the same JSON type.
            let _ = (a, b);
        }
        (a, b) if std::mem::discriminant(a) == std::mem::discriminant(b) => {}
        (a, b) => problems.push(format!("{path}: {} where the fixture has {}", kind(a), kind(b))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
