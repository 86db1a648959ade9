use std::time::Duration;

/// What can go wrong talking to a partner. Never carries a token or a response body that could
/// hold one: only the status, the OAuth `error` code and our own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartnerError {
    /// `invalid_grant`: the code or refresh token is dead (expired, used, revoked).
    #[error("the partner refused the grant (invalid_grant)")]
    InvalidGrant,
    /// The partner does not accept our client credentials.
    #[error("the partner refused our client credentials ({0})")]
    InvalidClient(String),
    /// The request was refused for another OAuth reason (`invalid_request`, …).
    #[error("the partner refused the request ({0})")]
    Refused(String),
    /// 401 on a data call: the access token is not accepted.
    #[error("the partner did not accept the access token")]
    Unauthorized,
    /// 429: slow down.
    #[error("the partner is rate limiting us")]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, timeout, connection failure: try again later.
    #[error("the partner is unavailable: {0}")]
    Transient(String),
    /// The partner answered something we cannot use (malformed JSON, missing fields).
    #[error("unexpected answer from the partner: {0}")]
    Protocol(String),
    /// The partner will not serve this data source until the person acts (reconnect, choose a
    /// patient): a confirmed data-source error. `message` is written for the person.
    #[error("{message}")]
    Permanent { code: String, message: String },
    /// Our own configuration is wrong (missing URL or client id).
    #[error("partner configuration: {0}")]
    Config(String),
    /// 400 from a platform service: what it named as invalid (a datum's index in the request,
    /// when it said so) — never the body we sent.
    #[error("the service refused the request as invalid ({} problems)", .0.len())]
    Invalid(Vec<Problem>),
    /// 404 from a platform service (e.g. a data set that no longer exists).
    #[error("not found at the service: {0}")]
    NotFound(String),
}

/// One problem a platform service named in a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The request element it is about (from `source.pointer` `/<index>/…`), when it said.
    pub index: Option<usize>,
    /// `source.pointer` as sent, when present.
    pub pointer: Option<String>,
    pub detail: String,
}

impl PartnerError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::RateLimited { .. })
    }
}
