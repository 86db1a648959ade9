//! `tidegate token`: mint a signed JWT for a user, clinician or service (dev, tests, ops).

use std::path::PathBuf;

use anyhow::{Context, bail};
use api::{Claims, Role};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use model::{ClinicId, UserId};
use secrecy::ExposeSecret;

use crate::configuration::Settings;

/// What to put in the token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub sub: String,
    pub role: Role,
    pub clinics: Vec<String>,
    pub ttl_secs: Option<u64>,
    /// Sign with this private key (PEM) instead of the configured HS256 secret.
    pub private_key: Option<PathBuf>,
    pub kid: Option<String>,
}

/// Validate the request against the identifier rules and sign it.
pub fn mint(settings: &Settings, req: &TokenRequest) -> anyhow::Result<String> {
    match req.role {
        Role::Patient | Role::Clinician => {
            UserId::parse(&req.sub).map_err(|e| anyhow::anyhow!("--sub: {e}"))?;
        }
        Role::Service => {
            let ok = (1..=64).contains(&req.sub.len())
                && req.sub.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !ok {
                bail!("--sub: a service name is 1–64 characters of [A-Za-z0-9._-]");
            }
        }
    }
    if req.role != Role::Clinician && !req.clinics.is_empty() {
        bail!("--clinic is only for --role clinician");
    }
    let clinics = req
        .clinics
        .iter()
        .map(|c| ClinicId::parse(c).map_err(|e| anyhow::anyhow!("--clinic {c:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if req.role == Role::Clinician && clinics.is_empty() {
        bail!("--role clinician needs at least one --clinic");
    }
    let now = chrono::Utc::now().timestamp();
    let ttl = req.ttl_secs.unwrap_or(settings.auth.token_ttl_secs);
    let claims = Claims {
        sub: req.sub.clone(),
        role: req.role,
        clinics,
        exp: now + i64::try_from(ttl).context("--ttl too large")?,
        iat: Some(now),
        iss: settings.auth.issuer.clone(),
        aud: settings.auth.audience.clone(),
    };
    let (header, key) = match &req.private_key {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let (alg, key) = match settings.auth.algorithm.as_str() {
                "RS256" => (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem)),
                "ES256" => (Algorithm::ES256, EncodingKey::from_ec_pem(&pem)),
                other => bail!("--private-key needs auth.algorithm RS256 or ES256 (configured: {other})"),
            };
            let mut header = Header::new(alg);
            header.kid = req.kid.clone();
            (header, key.context("--private-key is not a valid PEM private key")?)
        }
        None => {
            let secret = settings
                .auth
                .jwt_secret
                .as_ref()
                .context("no auth.jwt_secret configured: pass --private-key for RS256/ES256 deployments")?;
            (Header::new(Algorithm::HS256), EncodingKey::from_secret(secret.expose_secret().as_bytes()))
        }
    };
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}
