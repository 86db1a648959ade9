//! Dexcom API v3: the account's stable id (the envelope's `userId`), fetching and mapping.

use crate::error::PartnerError;
use crate::http::get_json;

/// The Dexcom account behind an access token: `userId` of the `dataRange` envelope (stable per
/// account and client application). One call, which the first poll needs anyway.
pub async fn account_id(
    http: &reqwest::Client,
    api_base_url: &str,
    access_token: &str,
) -> Result<String, PartnerError> {
    let url = format!("{}/v3/users/self/dataRange", api_base_url.trim_end_matches('/'));
    let body = get_json(http, &url, Some(access_token)).await?;
    body["userId"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| PartnerError::Protocol("dataRange has no userId".into()))
}

pub mod fetch;
pub mod map;
