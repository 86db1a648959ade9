//! Bearer-JWT authentication and the typed extractors that say who may call a handler.
//!
//! Tokens carry `sub`, `role` (patient | clinician | service), `clinics` (clinicians) and `exp`.
//! Keys come from configuration: an HS256 secret (dev/test), an RS256/ES256 public key (PEM), or a
//! JWKS URL fetched and cached with rotation (a token with an unknown `kid` triggers a refetch,
//! rate-limited).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use model::{ClinicId, UserId};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::error::ApiError;

/// What a caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Patient,
    Clinician,
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::Clinician => "clinician",
            Self::Service => "service",
        }
    }
}

/// The claims tidegate reads from a token (others are ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clinics: Vec<ClinicId>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub sub: String,
    pub role: Role,
    /// Clinics a clinician acts for (empty for other roles).
    pub clinics: Vec<ClinicId>,
}

impl Caller {
    /// The caller's own user id, when the caller is a patient.
    pub fn patient_id(&self) -> Option<UserId> {
        (self.role == Role::Patient).then(|| UserId::parse(&self.sub).ok()).flatten()
    }

    pub fn actor(&self) -> store::audit::Actor {
        store::audit::Actor { sub: self.sub.clone(), role: self.role.as_str().to_owned() }
    }
}

/// Where verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Shared HS256 secret (dev and test).
    Hs256(SecretString),
    /// A public key in PEM (RS256 or ES256).
    PublicPem { algorithm: Algorithm, pem: String },
    /// A JWKS document at a URL; keys are cached for `ttl`. A token with an unknown key id
    /// triggers a refetch, at most once per `min_refetch`.
    Jwks { url: String, ttl: Duration, min_refetch: Duration },
}

/// Token-verification settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub keys: KeySource,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
}

/// Why the verifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("auth.public_key_pem is not a valid {0:?} public key")]
    BadPem(Algorithm),
    #[error("auth.algorithm {0:?} is not supported with a PEM key (use RS256 or ES256)")]
    UnsupportedAlgorithm(Algorithm),
    #[error("auth.jwt_secret must be at least 32 bytes")]
    WeakSecret,
}

struct JwksCache {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
}

enum Keys {
    Static { algorithm: Algorithm, key: DecodingKey },
    Jwks { url: String, ttl: Duration, min_refetch: Duration, http: reqwest::Client, cache: RwLock<JwksCache> },
}

/// Verifies bearer tokens. Shared by every request.
pub struct Authenticator {
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.keys {
            Keys::Static { algorithm, .. } => format!("{algorithm:?}"),
            Keys::Jwks { url, .. } => format!("JWKS {url}"),
        };
        f.debug_struct("Authenticator").field("keys", &kind).finish()
    }
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthConfigError> {
        let keys = match &settings.keys {
            KeySource::Hs256(secret) => {
                if secret.expose_secret().len() < 32 {
                    return Err(AuthConfigError::WeakSecret);
                }
                Keys::Static {
                    algorithm: Algorithm::HS256,
                    key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
                }
            }
            KeySource::PublicPem { algorithm, pem } => {
                let key = match algorithm {
                    Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
                    Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                    other => return Err(AuthConfigError::UnsupportedAlgorithm(*other)),
                }
                .map_err(|_| AuthConfigError::BadPem(*algorithm))?;
                Keys::Static { algorithm: *algorithm, key }
            }
            KeySource::Jwks { url, ttl, min_refetch } => Keys::Jwks {
                url: url.clone(),
                ttl: *ttl,
                min_refetch: *min_refetch,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .expect("building an HTTP client with static settings"),
                cache: RwLock::new(JwksCache { keys: HashMap::new(), fetched: None, last_attempt: None }),
            },
        };
        Ok(Self {
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway.as_secs(),
        })
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut v = Validation::new(algorithm);
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
        }
        match &self.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        v
    }

    /// Verify a bearer token and return the caller.
    pub async fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let (algorithm, key) = match &self.keys {
            Keys::Static { algorithm, key } => (*algorithm, key.clone()),
            Keys::Jwks { url, ttl, min_refetch, http, cache } => {
                jwks_key(token, url, *ttl, *min_refetch, http, cache).await?
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation(algorithm)).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::Unauthenticated("The token has expired."),
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    ApiError::Unauthenticated("The token's signature is not valid.")
                }
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    ApiError::Unauthenticated("The token was not issued for this service.")
                }
                _ => ApiError::Unauthenticated("The token is malformed or lacks required claims."),
            }
        })?;
        let claims = data.claims;
        // A patient's subject is their user id; refuse anything else up front.
        if claims.role == Role::Patient && UserId::parse(&claims.sub).is_err() {
            return Err(ApiError::Unauthenticated("A patient token's subject must be a user id."));
        }
        if claims.sub.is_empty() || claims.sub.len() > 128 {
            return Err(ApiError::Unauthenticated("The token's subject is not valid."));
        }
        let clinics = if claims.role == Role::Clinician { claims.clinics } else { Vec::new() };
        Ok(Caller { sub: claims.sub, role: claims.role, clinics })
    }
}

/// The key for a token's `kid`, from the cached JWKS (refetched when stale, or when the kid is
/// unknown and the last fetch is older than `min_refetch`).
async fn jwks_key(
    token: &str,
    url: &str,
    ttl: Duration,
    min_refetch: Duration,
    http: &reqwest::Client,
    cache: &RwLock<JwksCache>,
) -> Result<(Algorithm, DecodingKey), ApiError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|_| ApiError::Unauthenticated("The token is malformed."))?;
    let kid = header.kid.ok_or(ApiError::Unauthenticated("The token has no key id (kid)."))?;
    {
        let c = cache.read().await;
        let fresh = c.fetched.is_some_and(|t| t.elapsed() < ttl);
        if let Some((alg, key)) = c.keys.get(&kid).filter(|_| fresh) {
            return Ok((*alg, key.clone()));
        }
    }
    let mut c = cache.write().await;
    let stale = c.fetched.is_none_or(|t| t.elapsed() >= ttl);
    let may_refetch = c.last_attempt.is_none_or(|t| t.elapsed() >= min_refetch);
    if stale || (!c.keys.contains_key(&kid) && may_refetch) {
        c.last_attempt = Some(Instant::now());
        match fetch_jwks(http, url).await {
            Ok(keys) => {
                c.keys = keys;
                c.fetched = Some(Instant::now());
            }
            // Keep serving cached keys while the JWKS endpoint is down.
            Err(e) => tracing::warn!(error = %e, "fetching the JWKS failed; keeping cached keys"),
        }
    }
    c.keys
        .get(&kid)
        .map(|(alg, key)| (*alg, key.clone()))
        .ok_or(ApiError::Unauthenticated("The token's key id is not known."))
}

async fn fetch_jwks(http: &reqwest::Client, url: &str) -> Result<HashMap<String, (Algorithm, DecodingKey)>, String> {
    let resp = http.get(url).send().await.map_err(|e| format!("request failed: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let set: JwkSet = resp.json().await.map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else { continue };
        let algorithm = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
            _ => continue,
        };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid, (algorithm, key));
        }
    }
    Ok(keys)
}

/// Extract the bearer token from the Authorization header.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthenticated("Send a bearer token in the Authorization header."))?;
    let value = value.to_str().map_err(|_| ApiError::Unauthenticated("The Authorization header is malformed."))?;
    let (scheme, token) =
        value.split_once(' ').ok_or(ApiError::Unauthenticated("The Authorization header is malformed."))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthenticated("Only bearer tokens are accepted."));
    }
    Ok(token.trim())
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let auth = Arc::<Authenticator>::from_ref(state);
        let caller = auth.verify(bearer(parts)?).await?;
        tracing::Span::current().record("caller_role", caller.role.as_str());
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// A caller with the `service` role (internal endpoints).
#[derive(Debug, Clone)]
pub struct Service(pub Caller);

impl<S> FromRequestParts<S> for Service
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.role != Role::Service {
            return Err(ApiError::Forbidden("This endpoint is for internal services only."));
        }
        Ok(Self(caller))
    }
}

/// A caller with the `patient` role, and their user id.
#[derive(Debug, Clone)]
pub struct Patient {
    pub caller: Caller,
    pub user_id: UserId,
}

impl<S> FromRequestParts<S> for Patient
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let user_id = caller.patient_id().ok_or(ApiError::Forbidden("This endpoint is for patients only."))?;
        Ok(Self { caller, user_id })
    }
}
