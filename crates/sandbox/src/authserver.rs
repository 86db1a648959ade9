//! A small OAuth 2.0 authorization server with each partner's rules: single-use short-lived
//! codes bound to client and redirect URI, optional PKCE S256, rotating single-use refresh
//! tokens (reuse kills the whole grant, like Dexcom and Auth0), revocation (RFC 7009) and
//! introspection (RFC 7662).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{OAuthClient, random_secret};

/// A partner's token rules.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    pub code_lifetime: Duration,
    pub access_lifetime: Duration,
    pub pkce_required: bool,
    /// HTTP status of `invalid_grant` answers (Dexcom 400, Auth0/CareLink 403).
    pub invalid_grant_status: u16,
}

impl AuthPolicy {
    pub fn dexcom() -> Self {
        Self {
            code_lifetime: Duration::minutes(1),
            access_lifetime: Duration::seconds(7200),
            pkce_required: false,
            invalid_grant_status: 400,
        }
    }

    pub fn carelink() -> Self {
        Self {
            code_lifetime: Duration::minutes(1),
            access_lifetime: Duration::hours(3),
            pkce_required: true,
            invalid_grant_status: 403,
        }
    }
}

#[derive(Debug)]
struct Code {
    client_id: String,
    redirect_uri: String,
    person: usize,
    scope: String,
    challenge: Option<String>,
    expires_at: DateTime<Utc>,
    used: bool,
    /// The grant its tokens belong to, once exchanged (a replay revokes it).
    grant: Option<u64>,
}

#[derive(Debug, Clone)]
struct Access {
    grant: u64,
    expires_at: DateTime<Utc>,
    issued_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Refresh {
    grant: u64,
    used: bool,
    issued_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Grant {
    client_id: String,
    person: usize,
    scope: String,
    revoked: bool,
}

#[derive(Debug, Default)]
struct State {
    codes: HashMap<String, Code>,
    access: HashMap<String, Access>,
    refresh: HashMap<String, Refresh>,
    grants: HashMap<u64, Grant>,
    next_grant: u64,
    refreshes: u64,
    /// People whose grant was revoked because a used refresh token came back.
    reused: Vec<usize>,
}

#[derive(Debug)]
pub struct AuthServer {
    pub policy: AuthPolicy,
    clients: Mutex<Vec<OAuthClient>>,
    state: Mutex<State>,
}

/// Why a token request failed: the OAuth `error` code and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub error: &'static str,
    pub description: &'static str,
}

fn err(error: &'static str, description: &'static str) -> TokenError {
    TokenError { error, description }
}

/// A token response (RFC 6749 §5.1).
#[derive(Debug, Clone, Serialize)]
pub struct Tokens {
    pub access_token: String,
    pub expires_in: i64,
    pub token_type: &'static str,
    pub refresh_token: String,
    #[serde(skip)]
    pub scope: String,
}

/// Who a valid access token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub person: usize,
    pub client_id: String,
}

/// RFC 7662 introspection answer.
#[derive(Debug, Clone, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
}

pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl AuthServer {
    pub fn new(policy: AuthPolicy, clients: Vec<OAuthClient>) -> Self {
        Self { policy, clients: Mutex::new(clients), state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn client(&self, client_id: &str) -> Option<OAuthClient> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|c| c.client_id == client_id).cloned()
    }

    /// Register (or replace) a client at run time.
    pub fn register(&self, client: OAuthClient) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain(|c| c.client_id != client.client_id);
        clients.push(client);
    }

    /// Check a client and an exact redirect URI (before showing a sign-in page).
    pub fn check_client(&self, client_id: &str, redirect_uri: &str) -> Result<(), &'static str> {
        let client = self.client(client_id).ok_or("unknown client_id")?;
        if client.redirect_uris.iter().any(|u| u == redirect_uri) {
            Ok(())
        } else {
            Err("redirect_uri is not registered for this client")
        }
    }

    /// Authenticate a client at the token endpoint. Confidential clients must send their secret.
    pub fn authenticate_client(&self, client_id: &str, secret: Option<&str>) -> Result<(), TokenError> {
        let client = self.client(client_id).ok_or(err("invalid_client", "unknown client"))?;
        match (&client.client_secret, secret) {
            (None, _) => Ok(()),
            (Some(want), Some(got)) if want == got => Ok(()),
            _ => Err(err("invalid_client", "client authentication failed")),
        }
    }

    /// Issue a code after the person approved.
    pub fn issue_code(
        &self,
        client_id: &str,
        redirect_uri: &str,
        person: usize,
        scope: &str,
        challenge: Option<String>,
        now: DateTime<Utc>,
    ) -> String {
        let code = random_secret();
        self.lock().codes.insert(
            code.clone(),
            Code {
                client_id: client_id.into(),
                redirect_uri: redirect_uri.into(),
                person,
                scope: scope.into(),
                challenge,
                expires_at: now + self.policy.code_lifetime,
                used: false,
                grant: None,
            },
        );
        code
    }

    fn mint(&self, s: &mut State, grant: u64, now: DateTime<Utc>) -> Tokens {
        let access = random_secret();
        let refresh = random_secret();
        s.access
            .insert(access.clone(), Access { grant, expires_at: now + self.policy.access_lifetime, issued_at: now });
        s.refresh.insert(refresh.clone(), Refresh { grant, used: false, issued_at: now });
        Tokens {
            access_token: access,
            expires_in: self.policy.access_lifetime.num_seconds(),
            token_type: "Bearer",
            refresh_token: refresh,
            scope: s.grants[&grant].scope.clone(),
        }
    }

    fn revoke_grant(s: &mut State, grant: u64) {
        if let Some(g) = s.grants.get_mut(&grant) {
            g.revoked = true;
        }
    }

    /// `grant_type=authorization_code`.
    pub fn exchange_code(
        &self,
        client_id: &str,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Tokens, TokenError> {
        let mut s = self.lock();
        let c = s.codes.get_mut(code).ok_or(err("invalid_grant", "unknown authorization code"))?;
        if c.used {
            // RFC 6749 §4.1.2: a replayed code revokes what it granted.
            let grant = c.grant;
            if let Some(g) = grant {
                Self::revoke_grant(&mut s, g);
            }
            return Err(err("invalid_grant", "authorization code already used"));
        }
        if c.expires_at <= now {
            return Err(err("invalid_grant", "authorization code expired"));
        }
        if c.client_id != client_id || c.redirect_uri != redirect_uri {
            return Err(err("invalid_grant", "code was issued to another client or redirect_uri"));
        }
        match (&c.challenge, verifier) {
            (Some(challenge), Some(v)) if s256(v) == *challenge => {}
            (Some(_), Some(_)) => return Err(err("invalid_grant", "PKCE verification failed")),
            (Some(_), None) => return Err(err("invalid_request", "code_verifier required")),
            (None, _) if self.policy.pkce_required => return Err(err("invalid_request", "PKCE required")),
            (None, _) => {}
        }
        c.used = true;
        let (person, scope) = (c.person, c.scope.clone());
        let grant = s.next_grant;
        s.next_grant += 1;
        s.grants.insert(grant, Grant { client_id: client_id.into(), person, scope, revoked: false });
        if let Some(c) = s.codes.get_mut(code) {
            c.grant = Some(grant);
        }
        Ok(self.mint(&mut s, grant, now))
    }

    /// `grant_type=refresh_token`: rotates; reusing a used refresh token revokes the grant.
    pub fn refresh(&self, client_id: &str, refresh_token: &str, now: DateTime<Utc>) -> Result<Tokens, TokenError> {
        let mut s = self.lock();
        let r = s.refresh.get(refresh_token).cloned().ok_or(err("invalid_grant", "unknown refresh token"))?;
        let grant = s.grants.get(&r.grant).cloned().ok_or(err("invalid_grant", "unknown grant"))?;
        if grant.client_id != client_id {
            return Err(err("invalid_grant", "refresh token was issued to another client"));
        }
        if grant.revoked {
            return Err(err("invalid_grant", "grant revoked"));
        }
        if r.used {
            Self::revoke_grant(&mut s, r.grant);
            s.reused.push(grant.person);
            return Err(err("invalid_grant", "refresh token reused; grant revoked"));
        }
        if let Some(x) = s.refresh.get_mut(refresh_token) {
            x.used = true;
        }
        s.refreshes += 1;
        let _ = r.issued_at;
        Ok(self.mint(&mut s, r.grant, now))
    }

    /// How many successful refreshes this server performed.
    pub fn refresh_count(&self) -> u64 {
        self.lock().refreshes
    }

    /// People (by index) whose grant this server revoked because a used refresh token was
    /// presented again — what a client that lost a rotated refresh token looks like.
    pub fn reuse_revocations(&self) -> Vec<usize> {
        self.lock().reused.clone()
    }

    /// The owner of a live access token.
    pub fn owner(&self, access_token: &str, now: DateTime<Utc>) -> Option<TokenOwner> {
        let s = self.lock();
        let a = s.access.get(access_token)?;
        let g = s.grants.get(&a.grant)?;
        (!g.revoked && a.expires_at > now).then(|| TokenOwner { person: g.person, client_id: g.client_id.clone() })
    }

    /// RFC 7009: revoke the grant a token (access or refresh) belongs to. Unknown tokens are fine.
    pub fn revoke_token(&self, token: &str) {
        let mut s = self.lock();
        let grant = s.access.get(token).map(|a| a.grant).or_else(|| s.refresh.get(token).map(|r| r.grant));
        if let Some(g) = grant {
            Self::revoke_grant(&mut s, g);
        }
    }

    /// Revoke every grant of a person (the person revoked our access at the partner).
    pub fn revoke_person(&self, person: usize) -> usize {
        let mut s = self.lock();
        let mut n = 0;
        for g in s.grants.values_mut().filter(|g| g.person == person && !g.revoked) {
            g.revoked = true;
            n += 1;
        }
        n
    }

    /// RFC 7662.
    pub fn introspect(&self, token: &str, login: impl Fn(usize) -> String, now: DateTime<Utc>) -> Introspection {
        let s = self.lock();
        let inactive = Introspection {
            active: false,
            scope: None,
            client_id: None,
            sub: None,
            exp: None,
            iat: None,
            token_type: None,
        };
        if let Some(a) = s.access.get(token) {
            let Some(g) = s.grants.get(&a.grant) else { return inactive };
            if g.revoked || a.expires_at <= now {
                return inactive;
            }
            return Introspection {
                active: true,
                scope: Some(g.scope.clone()),
                client_id: Some(g.client_id.clone()),
                sub: Some(login(g.person)),
                exp: Some(a.expires_at.timestamp()),
                iat: Some(a.issued_at.timestamp()),
                token_type: Some("access_token"),
            };
        }
        if let Some(r) = s.refresh.get(token) {
            let Some(g) = s.grants.get(&r.grant) else { return inactive };
            if g.revoked || r.used {
                return inactive;
            }
            return Introspection {
                active: true,
                scope: Some(g.scope.clone()),
                client_id: Some(g.client_id.clone()),
                sub: Some(login(g.person)),
                exp: None,
                iat: Some(r.issued_at.timestamp()),
                token_type: Some("refresh_token"),
            };
        }
        inactive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(pkce: bool) -> AuthServer {
        let mut p = AuthPolicy::dexcom();
        p.pkce_required = pkce;
        AuthServer::new(
            p,
            vec![OAuthClient {
                client_id: "c".into(),
                client_secret: Some("s".into()),
                redirect_uris: vec!["https://app/cb".into()],
            }],
        )
    }

    #[test]
    fn refresh_reuse_kills_the_rotated_token_too() {
        let a = server(false);
        let now = Utc::now();
        let code = a.issue_code("c", "https://app/cb", 0, "offline_access", None, now);
        let t1 = a.exchange_code("c", &code, "https://app/cb", None, now).unwrap();
        assert_eq!(a.exchange_code("c", &code, "https://app/cb", None, now).unwrap_err().error, "invalid_grant");
        // The replay revoked the first grant.
        assert!(a.owner(&t1.access_token, now).is_none());
        let code = a.issue_code("c", "https://app/cb", 0, "offline_access", None, now);
        let t1 = a.exchange_code("c", &code, "https://app/cb", None, now).unwrap();
        let t2 = a.refresh("c", &t1.refresh_token, now).unwrap();
        assert!(a.owner(&t2.access_token, now).is_some());
        assert_eq!(a.refresh("c", &t1.refresh_token, now).unwrap_err().error, "invalid_grant");
        assert_eq!(a.refresh("c", &t2.refresh_token, now).unwrap_err().error, "invalid_grant");
        assert!(a.owner(&t2.access_token, now).is_none());
    }

    #[test]
    fn pkce_s256() {
        let a = server(true);
        let now = Utc::now();
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(s256(verifier), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"); // RFC 7636 appendix B
        let code = a.issue_code("c", "https://app/cb", 0, "s", Some(s256(verifier)), now);
        assert_eq!(
            a.exchange_code("c", &code, "https://app/cb", Some("wrong"), now).unwrap_err().error,
            "invalid_grant"
        );
        let code = a.issue_code("c", "https://app/cb", 0, "s", Some(s256(verifier)), now);
        assert_eq!(a.exchange_code("c", &code, "https://app/cb", None, now).unwrap_err().error, "invalid_request");
        let code = a.issue_code("c", "https://app/cb", 0, "s", Some(s256(verifier)), now);
        assert!(a.exchange_code("c", &code, "https://app/cb", Some(verifier), now).is_ok());
    }
}
