//! The connect flow's URL scheme, in one place: every `/v1/oauth/{provider}/…` path the API
//! routes, the pages link to, link tokens are scoped to, the browser-binding cookie is set on,
//! and a partner redirects back to.

/// Route patterns (axum syntax).
pub const AUTHORIZE_ROUTE: &str = "/v1/oauth/{provider}/authorize";
pub const REDIRECT_ROUTE: &str = "/v1/oauth/{provider}/redirect";
pub const CHOOSE_ROUTE: &str = "/v1/oauth/{provider}/choose";
/// A service disconnecting a user's source.
pub const USER_AUTHORIZE_ROUTE: &str = "/v1/users/{userId}/oauth/{provider}/authorize";

/// The prefix of every connect path: a link token scoped to it opens every partner.
pub const OAUTH_PREFIX: &str = "/v1/oauth";

/// `/v1/oauth/{provider}`: a link token for one partner is scoped to it; the browser-binding
/// cookie is set on it.
pub fn oauth_prefix(provider: &impl std::fmt::Display) -> String {
    format!("{OAUTH_PREFIX}/{provider}")
}

/// `/v1/oauth/{provider}/authorize`: where a connection starts (and, with DELETE, ends).
pub fn authorize(provider: &impl std::fmt::Display) -> String {
    format!("{OAUTH_PREFIX}/{provider}/authorize")
}

/// `/v1/oauth/{provider}/redirect`: where the partner sends the browser back (or the pasted
/// address is posted).
pub fn redirect(provider: &impl std::fmt::Display) -> String {
    format!("{OAUTH_PREFIX}/{provider}/redirect")
}

/// `/v1/oauth/{provider}/choose`: where a care partner's choice of patient is posted.
pub fn choose(provider: &impl std::fmt::Display) -> String {
    format!("{OAUTH_PREFIX}/{provider}/choose")
}

/// `{public_url}/v1/oauth/{provider}/authorize?restricted_token=`: a link to send, the link token
/// follows.
pub fn link_base(public_url: &str, provider: &impl std::fmt::Display) -> String {
    format!("{}{}?restricted_token=", public_url.trim_end_matches('/'), authorize(provider))
}

/// Our callback as the partner must have it registered.
pub fn callback_url(public_url: &str, provider: &impl std::fmt::Display) -> String {
    format!("{}{}", public_url.trim_end_matches('/'), redirect(provider))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paths_are_the_routes() {
        let p = crate::ProviderName::parse("dexcom").unwrap();
        assert_eq!(AUTHORIZE_ROUTE.replace("{provider}", "dexcom"), authorize(&p));
        assert_eq!(REDIRECT_ROUTE.replace("{provider}", "dexcom"), redirect(&p));
        assert_eq!(CHOOSE_ROUTE.replace("{provider}", "dexcom"), choose(&p));
        assert!(authorize(&p).starts_with(&oauth_prefix(&p)) && oauth_prefix(&p).starts_with(OAUTH_PREFIX));
        assert_eq!(
            link_base("https://t.example/", &p),
            "https://t.example/v1/oauth/dexcom/authorize?restricted_token="
        );
        assert_eq!(callback_url("https://t.example", &p), "https://t.example/v1/oauth/dexcom/redirect");
    }
}
