//! Dexcom API v3: the account's stable id (the envelope's `userId`), fetching and mapping.

use chrono::{DateTime, Utc};
use model::UserId;

use crate::driver::{BoxFuture, Call, Cursor, Identity, PartnerDriver, PollRequest, Saved};
use crate::error::PartnerError;
use crate::fetch::Batch;
use crate::http::get_json;

/// The Dexcom driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dexcom;

/// The v3 data endpoints, as a saved response's `recordType` names them and as their path does.
const ENDPOINTS: [(&str, &str); 5] =
    [("egv", "egvs"), ("event", "events"), ("calibration", "calibrations"), ("alert", "alerts"), ("device", "devices")];

impl PartnerDriver for Dexcom {
    /// A CGM (the receiver app also records meter readings as calibrations and events).
    fn devices(&self) -> crate::driver::Devices {
        crate::driver::Devices { manufacturers: &["Dexcom"], tags: &["cgm"] }
    }

    /// `dataRange` counts against Dexcom's hourly budget like every data call.
    fn identity_calls(&self) -> u32 {
        1
    }

    fn identify<'a>(&'a self, call: Call<'a>, _user: &'a UserId) -> BoxFuture<'a, Result<Identity, PartnerError>> {
        Box::pin(async move {
            account_id(call.http, &call.region.api_base_url, call.access_token).await.map(Identity::Account)
        })
    }

    fn poll<'a>(
        &'a self,
        call: Call<'a>,
        req: PollRequest<'a>,
    ) -> BoxFuture<'a, Result<(Batch, Cursor), PartnerError>> {
        Box::pin(async move {
            let cursor: fetch::Cursor = req.cursor.read();
            let (batch, next) = fetch::poll(
                call.http,
                &call.region.api_base_url,
                call.access_token,
                req.user,
                &cursor,
                req.now,
                req.settings,
            )
            .await?;
            Ok((batch, Cursor::write(&next)))
        })
    }

    fn cursor_as_of(&self, at: DateTime<Utc>) -> Cursor {
        let caught_up = fetch::Cursor {
            fetched_until: Some(at),
            last_sync: Some(at),
            devices_at: Some(at),
            settings: Default::default(),
        };
        Cursor::write(&caught_up)
    }

    /// A v3 envelope of one endpoint (named by `endpoint` — `egvs` or `egv` — or by the
    /// envelope's `recordType`).
    fn map_saved(&self, user: &UserId, saved: Saved<'_>, batch: &mut Batch) -> Result<String, PartnerError> {
        let head: wire::EnvelopeHead = crate::wire::read(saved.document);
        let named = saved.endpoint.or(head.record_type.as_deref());
        let Some(name) = named else {
            return Err(PartnerError::Protocol(
                "the response has no recordType: say which Dexcom endpoint it came from (egvs, events, calibrations, alerts, devices)".into(),
            ));
        };
        let endpoint = ENDPOINTS
            .iter()
            .find(|(record, path)| name == *record || name == *path)
            .map(|(_, path)| *path)
            .ok_or_else(|| PartnerError::Protocol(format!("{name:?} is not a Dexcom v3 data endpoint")))?;
        if wire::records(saved.document).is_none() {
            return Err(PartnerError::Protocol("not a Dexcom envelope (no records list)".into()));
        }
        let (from, to) = saved.window.unwrap_or((DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC));
        fetch::map_records(user, endpoint, saved.document, from, to, batch);
        Ok(format!("dexcom {endpoint}"))
    }
}

/// The Dexcom account behind an access token: `userId` of the `dataRange` envelope (stable per
/// account and client application). One call, which the first poll needs anyway.
pub async fn account_id(
    http: &reqwest::Client,
    api_base_url: &str,
    access_token: &str,
) -> Result<String, PartnerError> {
    let url = format!("{}/v3/users/self/dataRange", api_base_url.trim_end_matches('/'));
    let range: wire::DataRange = crate::wire::read(&get_json(http, &url, Some(access_token)).await?);
    range.user_id.filter(|s| !s.is_empty()).ok_or_else(|| PartnerError::Protocol("dataRange has no userId".into()))
}

pub mod fetch;
pub mod map;
mod wire;
