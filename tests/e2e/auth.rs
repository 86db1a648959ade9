//! Authentication and tenant rules at the HTTP edge.

use api::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tidegate_e2e::{TestDb, spawn_app, spawn_app_on};

const ALICE: &str = "0123456789";
const BOB: &str = "abcdef0123";

async fn problem(resp: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].as_str().unwrap().starts_with("urn:tidegate:problem:"));
    assert!(body["title"].is_string());
    body
}

fn sign(claims: &Value, secret: &[u8], alg: Algorithm) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_problems() {
    let app = spawn_app().await;
    let url = app.url(&format!("/v1/users/{ALICE}/data_sources"));
    let secret = secrecy::ExposeSecret::expose_secret(app.settings.auth.jwt_secret.as_ref().unwrap()).to_owned();
    let now = chrono::Utc::now().timestamp();
    let expired =
        sign(&json!({"sub": ALICE, "role": "patient", "exp": now - 3600}), secret.as_bytes(), Algorithm::HS256);
    let other_key = sign(
        &json!({"sub": ALICE, "role": "patient", "exp": now + 3600}),
        b"another-key-another-key-another-key!",
        Algorithm::HS256,
    );
    let wrong_alg =
        sign(&json!({"sub": ALICE, "role": "patient", "exp": now + 3600}), secret.as_bytes(), Algorithm::HS512);
    let no_role = sign(&json!({"sub": ALICE, "exp": now + 3600}), secret.as_bytes(), Algorithm::HS256);
    let bad_role =
        sign(&json!({"sub": ALICE, "role": "admin", "exp": now + 3600}), secret.as_bytes(), Algorithm::HS256);
    let no_exp = sign(&json!({"sub": ALICE, "role": "patient"}), secret.as_bytes(), Algorithm::HS256);
    let patient_bad_sub =
        sign(&json!({"sub": "not-a-user", "role": "patient", "exp": now + 3600}), secret.as_bytes(), Algorithm::HS256);
    // alg "none": header {"alg":"none"}, no signature.
    let none = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(json!({"sub": ALICE, "role": "service", "exp": now + 3600}).to_string())
        )
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("garbage", Some("Bearer not.a.jwt".into())),
        ("empty bearer", Some("Bearer ".into())),
        ("basic auth", Some("Basic dXNlcjpwYXNz".into())),
        ("expired", Some(format!("Bearer {expired}"))),
        ("signed with another key", Some(format!("Bearer {other_key}"))),
        ("wrong algorithm", Some(format!("Bearer {wrong_alg}"))),
        ("alg none", Some(format!("Bearer {none}"))),
        ("no role", Some(format!("Bearer {no_role}"))),
        ("unknown role", Some(format!("Bearer {bad_role}"))),
        ("no exp", Some(format!("Bearer {no_exp}"))),
        ("patient sub not a user id", Some(format!("Bearer {patient_bad_sub}"))),
    ];
    for (name, header) in cases {
        let mut req = app.http.get(&url);
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"), "{name}");
        let body = problem(resp, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["type"], "urn:tidegate:problem:unauthenticated", "{name}");
    }
}

#[tokio::test]
async fn tenant_rules_at_the_edge() {
    let app = spawn_app().await;
    let alice = app.patient_token(ALICE);
    let service = app.service_token();
    // (who, method, path, expected status)
    let cases: Vec<(&str, &str, reqwest::Method, String, StatusCode)> = vec![
        (
            "alice reads her sources",
            "alice",
            reqwest::Method::GET,
            format!("/v1/users/{ALICE}/data_sources"),
            StatusCode::OK,
        ),
        (
            "alice reads bob's sources",
            "alice",
            reqwest::Method::GET,
            format!("/v1/users/{BOB}/data_sources"),
            StatusCode::FORBIDDEN,
        ),
        (
            "alice disconnects her own",
            "alice",
            reqwest::Method::DELETE,
            "/v1/oauth/dexcom/authorize".into(),
            StatusCode::NO_CONTENT,
        ),
        (
            "alice uses the service disconnect on bob",
            "alice",
            reqwest::Method::DELETE,
            format!("/v1/users/{BOB}/oauth/dexcom/authorize"),
            StatusCode::FORBIDDEN,
        ),
        (
            "alice uses the service disconnect on herself",
            "alice",
            reqwest::Method::DELETE,
            format!("/v1/users/{ALICE}/oauth/dexcom/authorize"),
            StatusCode::FORBIDDEN,
        ),
        (
            "service reads bob's sources",
            "service",
            reqwest::Method::GET,
            format!("/v1/users/{BOB}/data_sources"),
            StatusCode::OK,
        ),
        (
            "service disconnects bob",
            "service",
            reqwest::Method::DELETE,
            format!("/v1/users/{BOB}/oauth/dexcom/authorize"),
            StatusCode::NO_CONTENT,
        ),
        (
            "service uses the patient disconnect",
            "service",
            reqwest::Method::DELETE,
            "/v1/oauth/dexcom/authorize".into(),
            StatusCode::FORBIDDEN,
        ),
        (
            "unknown provider",
            "service",
            reqwest::Method::DELETE,
            format!("/v1/users/{BOB}/oauth/nosuch/authorize"),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (name, who, method, path, want) in cases {
        let token = if who == "alice" { &alice } else { &service };
        let resp = app.http.request(method, app.url(&path)).bearer_auth(token).send().await.unwrap();
        if want.is_success() {
            assert_eq!(resp.status(), want, "{name}");
        } else {
            problem(resp, want).await;
        }
    }
}

#[tokio::test]
async fn a_clinician_without_a_clinic_service_is_refused() {
    let app = spawn_app().await;
    let token = app.token(Role::Clinician, BOB, &["5f1e8a0b9c7d6e5f4a3b2c1d"]);
    let resp =
        app.http.get(app.url(&format!("/v1/users/{ALICE}/data_sources"))).bearer_auth(token).send().await.unwrap();
    problem(resp, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn malformed_ids_are_400_naming_the_field() {
    let app = spawn_app().await;
    let service = app.service_token();
    for (path, field) in [
        ("/v1/users/NOT-A-USER/data_sources", "userId"),
        ("/v1/users/01234/data_sources", "userId"),
        ("/v1/data_sources/xyz", "id"),
        ("/v1/data_sources/5F1E8A0B9C7D6E5F4A3B2C1D", "id"),
        ("/v1/users/0123456789/oauth/Dexcom/authorize", "provider"),
    ] {
        let method = if path.contains("oauth") { reqwest::Method::DELETE } else { reqwest::Method::GET };
        let resp = app.http.request(method, app.url(path)).bearer_auth(&service).send().await.unwrap();
        let body = problem(resp, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["invalidParams"][0]["name"], field, "{path}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/nope")).send().await.unwrap();
    problem(resp, StatusCode::NOT_FOUND).await;
    let resp = app.http.post(app.url("/healthz")).send().await.unwrap();
    problem(resp, StatusCode::METHOD_NOT_ALLOWED).await;
}

/// Production verifies RS256/ES256 tokens against a JWKS URL; here the JWKS is served on
/// loopback by the test, and a key rotation (new `kid`) is picked up without a restart.
#[tokio::test]
async fn jwks_verification_with_rotation() {
    use p256::pkcs8::EncodePrivateKey;
    use std::sync::{Arc, Mutex};

    fn new_key() -> p256::SecretKey {
        use rand::Rng;
        loop {
            let bytes: [u8; 32] = rand::rng().random();
            if let Ok(k) = p256::SecretKey::from_slice(&bytes) {
                return k;
            }
        }
    }
    fn jwk(key: &p256::SecretKey, kid: &str) -> Value {
        let mut v: Value = serde_json::from_str(&key.public_key().to_jwk_string()).unwrap();
        v["kid"] = json!(kid);
        v["alg"] = json!("ES256");
        v["use"] = json!("sig");
        v
    }
    let k1 = new_key();
    let k2 = new_key();
    let jwks = Arc::new(Mutex::new(json!({ "keys": [jwk(&k1, "k1")] })));
    let served = jwks.clone();
    let router = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let served = served.clone();
            async move { axum::Json(served.lock().unwrap().clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let db = TestDb::create().await;
    let app = spawn_app_on(
        db,
        &[
            ("TIDEGATE_AUTH__ALGORITHM", "ES256"),
            ("TIDEGATE_AUTH__JWKS_URL", &jwks_url),
            ("TIDEGATE_AUTH__JWKS_MIN_REFETCH_SECS", "0"),
        ],
    )
    .await;
    let sign_es = |key: &p256::SecretKey, kid: &str, role: &str, sub: &str| {
        let pem = key.to_pkcs8_pem(Default::default()).unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        let exp = chrono::Utc::now().timestamp() + 600;
        jsonwebtoken::encode(
            &header,
            &json!({"sub": sub, "role": role, "exp": exp}),
            &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let url = app.url(&format!("/v1/users/{ALICE}/data_sources"));
    let ok = app.http.get(&url).bearer_auth(sign_es(&k1, "k1", "patient", ALICE)).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // Right kid, wrong key.
    let forged = app.http.get(&url).bearer_auth(sign_es(&k2, "k1", "patient", ALICE)).send().await.unwrap();
    problem(forged, StatusCode::UNAUTHORIZED).await;
    // An HS256 token is refused outright in a JWKS deployment.
    let hs = sign(
        &json!({"sub": ALICE, "role": "patient", "exp": chrono::Utc::now().timestamp() + 600}),
        b"0123456789abcdef0123456789abcdef",
        Algorithm::HS256,
    );
    problem(app.http.get(&url).bearer_auth(hs).send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    // Rotation: the issuer publishes k2; a token with kid k2 triggers a refetch and is accepted.
    jwks.lock().unwrap()["keys"].as_array_mut().unwrap().push(jwk(&k2, "k2"));
    let rotated = app.http.get(&url).bearer_auth(sign_es(&k2, "k2", "patient", ALICE)).send().await.unwrap();
    assert_eq!(rotated.status(), StatusCode::OK);
    // Tenant rules hold with JWKS tokens too.
    let other = app
        .http
        .get(app.url(&format!("/v1/users/{BOB}/data_sources")))
        .bearer_auth(sign_es(&k2, "k2", "patient", ALICE))
        .send()
        .await
        .unwrap();
    problem(other, StatusCode::FORBIDDEN).await;
    // Unknown kid.
    let unknown = app.http.get(&url).bearer_auth(sign_es(&k2, "k3", "patient", ALICE)).send().await.unwrap();
    problem(unknown, StatusCode::UNAUTHORIZED).await;
}
