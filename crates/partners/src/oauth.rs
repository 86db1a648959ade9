//! OAuth 2.0 client side (RFC 6749, PKCE RFC 7636, revocation RFC 7009) written against the RFCs:
//! any compliant authorization server works by configuration alone.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use reqwest::{StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::ClientAuth;
use crate::error::PartnerError;
use crate::http::{retry_after, transport};

/// Everything needed to run the OAuth flow against one authorization server.
#[derive(Debug, Clone)]
pub struct OAuthEndpoints {
    pub authorize_url: String,
    pub token_url: String,
    pub revocation_url: Option<String>,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub client_auth: ClientAuth,
    pub scopes: Vec<String>,
    pub pkce: bool,
    pub redirect_uri: String,
    pub authorize_params: BTreeMap<String, String>,
    pub expected_issuer: Option<String>,
}

/// Tokens from a token response. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<Duration>,
    pub scope: Option<String>,
}

/// A random URL-safe secret of `bytes` bytes of entropy (state, PKCE verifier, nonces).
pub fn random_token(bytes: usize) -> SecretString {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    SecretString::from(URL_SAFE_NO_PAD.encode(buf))
}

/// RFC 7636 S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &SecretString) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose_secret().as_bytes()))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize)]
struct RawTokens {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct RawError {
    error: String,
}

impl OAuthEndpoints {
    /// The URL to send the browser to.
    pub fn authorize_url(&self, state: &str, code_challenge: Option<&str>) -> String {
        let mut params: Vec<(String, String)> = vec![
            ("response_type".into(), "code".into()),
            ("client_id".into(), self.client_id.clone()),
            ("redirect_uri".into(), self.redirect_uri.clone()),
            ("state".into(), state.into()),
        ];
        if !self.scopes.is_empty() {
            params.push(("scope".into(), self.scopes.join(" ")));
        }
        if let Some(c) = code_challenge {
            params.push(("code_challenge".into(), c.into()));
            params.push(("code_challenge_method".into(), "S256".into()));
        }
        for (k, v) in &self.authorize_params {
            params.push((k.clone(), v.clone()));
        }
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
        let sep = if self.authorize_url.contains('?') { '&' } else { '?' };
        format!("{}{sep}{}", self.authorize_url, query.join("&"))
    }

    /// Client authentication (RFC 6749 §2.3): a Basic header, or the credentials in the form;
    /// public clients send only their id.
    fn authenticate(&self, req: reqwest::RequestBuilder, form: &mut Vec<(&str, String)>) -> reqwest::RequestBuilder {
        match (self.client_auth, &self.client_secret) {
            (ClientAuth::Basic, Some(secret)) => {
                let creds = format!("{}:{}", enc(&self.client_id), enc(secret.expose_secret()));
                req.header(
                    header::AUTHORIZATION,
                    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(creds)),
                )
            }
            (ClientAuth::Body, Some(secret)) => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", secret.expose_secret().to_owned()));
                req
            }
            (ClientAuth::None, _) | (_, None) => {
                form.push(("client_id", self.client_id.clone()));
                req
            }
        }
    }

    async fn token_request(
        &self,
        http: &reqwest::Client,
        mut form: Vec<(&str, String)>,
    ) -> Result<TokenSet, PartnerError> {
        let req = self.authenticate(http.post(&self.token_url).header(header::ACCEPT, "application/json"), &mut form);
        let resp = req.form(&form).send().await.map_err(transport)?;
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(PartnerError::RateLimited { retry_after: retry_after(&resp) });
        }
        if status.is_server_error() {
            return Err(PartnerError::Transient(format!("token endpoint status {status}")));
        }
        let body = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let error = serde_json::from_slice::<RawError>(&body).map(|e| e.error).unwrap_or_default();
            return Err(match error.as_str() {
                "invalid_grant" => PartnerError::InvalidGrant,
                "invalid_client" | "unauthorized_client" => PartnerError::InvalidClient(error),
                "" => PartnerError::Protocol(format!("token endpoint status {status}")),
                "temporarily_unavailable" | "server_error" => PartnerError::Transient(error),
                _ => PartnerError::Refused(error),
            });
        }
        let raw: RawTokens = serde_json::from_slice(&body)
            .map_err(|_| PartnerError::Protocol("token response is not the expected JSON".into()))?;
        if let Some(t) = &raw.token_type
            && !t.eq_ignore_ascii_case("bearer")
        {
            return Err(PartnerError::Protocol(format!("token_type {t:?} is not Bearer")));
        }
        // Some partners send expires_in as a string.
        let expires_in = match raw.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .map(Duration::from_secs);
        if raw.access_token.is_empty() {
            return Err(PartnerError::Protocol("empty access_token".into()));
        }
        Ok(TokenSet {
            access_token: SecretString::from(raw.access_token),
            refresh_token: raw.refresh_token.filter(|r| !r.is_empty()).map(SecretString::from),
            expires_in,
            scope: raw.scope,
        })
    }

    /// `grant_type=authorization_code`.
    pub async fn exchange_code(
        &self,
        http: &reqwest::Client,
        code: &str,
        verifier: Option<&SecretString>,
    ) -> Result<TokenSet, PartnerError> {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", self.redirect_uri.clone()),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v.expose_secret().to_owned()));
        }
        self.token_request(http, form).await
    }

    /// `grant_type=refresh_token`.
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        refresh_token: &SecretString,
    ) -> Result<TokenSet, PartnerError> {
        let form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose_secret().to_owned()),
        ];
        self.token_request(http, form).await
    }

    /// RFC 7009 revocation (a no-op when the partner has no endpoint). `allow_http` permits a
    /// plain-http endpoint (dev and test only).
    pub async fn revoke(
        &self,
        http: &reqwest::Client,
        token: &SecretString,
        hint: &str,
        allow_http: bool,
    ) -> Result<bool, PartnerError> {
        let Some(url) = &self.revocation_url else { return Ok(false) };
        if !url.starts_with("https://") && !allow_http {
            return Err(PartnerError::Config("revocation_url must be https".into()));
        }
        let mut form = vec![("token", token.expose_secret().to_owned()), ("token_type_hint", hint.to_owned())];
        let req = self.authenticate(http.post(url), &mut form);
        let resp = req.form(&form).send().await.map_err(transport)?;
        if resp.status().is_success() {
            Ok(true)
        } else if resp.status().is_server_error() {
            Err(PartnerError::Transient(format!("revocation status {}", resp.status())))
        } else {
            Err(PartnerError::Refused(format!("revocation status {}", resp.status())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorize_url_carries_everything_encoded() {
        let e = OAuthEndpoints {
            authorize_url: "https://as.example/authorize".into(),
            token_url: "https://as.example/token".into(),
            revocation_url: None,
            client_id: "client 1".into(),
            client_secret: None,
            client_auth: ClientAuth::None,
            scopes: vec!["openid".into(), "offline_access".into()],
            pkce: true,
            redirect_uri: "com.example.app:/cb".into(),
            authorize_params: [("audience".to_owned(), "https://api.example/".to_owned())].into(),
            expected_issuer: None,
        };
        let url = e.authorize_url("st&ate", Some("chal"));
        assert!(url.starts_with("https://as.example/authorize?response_type=code&client_id=client%201&redirect_uri=com.example.app%3A%2Fcb&state=st%26ate"));
        assert!(url.contains("scope=openid%20offline_access"));
        assert!(url.contains("code_challenge=chal&code_challenge_method=S256"));
        assert!(url.contains("audience=https%3A%2F%2Fapi.example%2F"));
    }

    #[test]
    fn pkce_matches_rfc7636() {
        let v = SecretString::from("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".to_owned());
        assert_eq!(pkce_challenge(&v), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(random_token(32).expose_secret().len() >= 43);
    }
}
