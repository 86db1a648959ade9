//! The partner seam: what the rest of tidegate may ask of a partner, whichever it is. One
//! [`PartnerDriver`] per partner module (`dexcom`, `carelink`, and [`OAuthOnly`] for a configured
//! partner we connect but do not read); the [`Registry`](crate::Registry) picks one per configured
//! name. Nothing outside this crate names a partner module or matches on a partner.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use model::{AccountChoice, UserId};
use serde_json::Value;

use crate::error::PartnerError;
use crate::fetch::{Batch, FetchSettings};
use crate::registry::ResolvedRegion;

/// A driver's future (boxed so that drivers can sit behind `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the next poll of one data source starts, as the driver wrote it. Opaque outside the
/// driver: stored on the poll schedule as JSON and handed back on the next poll unread. A cursor
/// a driver cannot read (an older format) starts that driver over; idempotent writes make that
/// safe.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cursor(Option<Value>);

impl Cursor {
    /// The cursor stored on the schedule (`None`: the source was never polled).
    pub fn stored(v: Option<Value>) -> Self {
        Self(v)
    }

    /// What to store.
    pub fn to_stored(&self) -> Value {
        self.0.clone().unwrap_or(Value::Null)
    }

    /// A driver reading its own cursor type (the default when absent or unreadable).
    pub(crate) fn read<T: serde::de::DeserializeOwned + Default>(&self) -> T {
        self.0.as_ref().and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
    }

    /// A driver writing its own cursor type.
    pub(crate) fn write<T: serde::Serialize>(value: &T) -> Self {
        Self(serde_json::to_value(value).ok())
    }
}

/// One partner call's context: the HTTP client, the region's endpoints and the access token.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub http: &'a reqwest::Client,
    pub region: &'a ResolvedRegion,
    pub access_token: &'a str,
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call").field("region", &self.region.region).finish_non_exhaustive()
    }
}

/// What one poll of one data source needs besides the call.
#[derive(Debug, Clone, Copy)]
pub struct PollRequest<'a> {
    /// Our user (seeds the datum ids).
    pub user: &'a UserId,
    /// The partner account the source follows, as [`PartnerDriver::identify`] named it.
    pub account_id: &'a str,
    pub cursor: &'a Cursor,
    pub now: DateTime<Utc>,
    pub settings: &'a FetchSettings,
}

/// Who signed in at the partner, after the code exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The stable id of the partner account the data source follows.
    Account(String),
    /// The sign-in can reach several accounts; the person chooses one (never guessed).
    Choose(Vec<AccountChoice>),
    /// The sign-in reaches no account we could import from: why, and what the person can do.
    Unusable { title: String, detail: String, remedy: String },
}

/// A saved partner response to map by hand (`tidegate map`, ground truths in tests).
#[derive(Debug, Clone, Copy)]
pub struct Saved<'a> {
    pub document: &'a Value,
    /// Which of the partner's endpoints answered, when the document does not say.
    pub endpoint: Option<&'a str>,
    /// Only records inside this window are kept (Dexcom windows); `None`: all of them.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// What a partner is to tidegate.
pub trait PartnerDriver: Send + Sync + fmt::Debug {
    /// Whether data sources of this partner are polled (false: OAuth only).
    fn polls(&self) -> bool {
        true
    }

    /// The data-API calls [`identify`](Self::identify) makes against the partner's hourly call
    /// budget (`schedule.calls_per_hour`), if it has one.
    fn identity_calls(&self) -> u32 {
        0
    }

    /// After the code exchange: the partner account behind the new tokens.
    fn identify<'a>(&'a self, call: Call<'a>, user: &'a UserId) -> BoxFuture<'a, Result<Identity, PartnerError>>;

    /// One poll: the records since the cursor, mapped, and the cursor to store.
    fn poll<'a>(&'a self, call: Call<'a>, req: PollRequest<'a>)
    -> BoxFuture<'a, Result<(Batch, Cursor), PartnerError>>;

    /// The cursor of a source whose last poll, at `at`, fetched everything up to then
    /// (benchmarks and synthetic populations start their sources from it).
    fn cursor_as_of(&self, _at: DateTime<Utc>) -> Cursor {
        Cursor::default()
    }

    /// Map a saved response into `batch`; returns what it was read as (e.g. `dexcom egvs`).
    fn map_saved(&self, user: &UserId, saved: Saved<'_>, batch: &mut Batch) -> Result<String, PartnerError>;

    /// What the platform data set of a source of this partner says about its devices.
    fn devices(&self) -> Devices {
        Devices::default()
    }
}

/// A partner's devices as a platform data set names them (`deviceManufacturers`, `deviceTags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Devices {
    /// The data model's exact manufacturer names (e.g. `Dexcom`, `Medtronic`).
    pub manufacturers: &'static [&'static str],
    /// `bgm`, `cgm`, `insulin-pump`, …
    pub tags: &'static [&'static str],
}

/// A configured partner without a data driver: connected through OAuth, never polled. Its
/// account id is our user (the partner tells us nothing more).
#[derive(Debug, Clone, Copy, Default)]
pub struct OAuthOnly;

impl PartnerDriver for OAuthOnly {
    fn polls(&self) -> bool {
        false
    }

    fn identify<'a>(&'a self, _call: Call<'a>, user: &'a UserId) -> BoxFuture<'a, Result<Identity, PartnerError>> {
        Box::pin(async move { Ok(Identity::Account(format!("user:{user}"))) })
    }

    fn poll<'a>(
        &'a self,
        _call: Call<'a>,
        _req: PollRequest<'a>,
    ) -> BoxFuture<'a, Result<(Batch, Cursor), PartnerError>> {
        Box::pin(async { Err(PartnerError::Config("partner has no data driver".into())) })
    }

    fn map_saved(&self, _user: &UserId, _saved: Saved<'_>, _batch: &mut Batch) -> Result<String, PartnerError> {
        Err(PartnerError::Config("partner has no data driver".into()))
    }
}
