//! Partner drivers. Each partner is configured, not hard-coded, into the OAuth flow: any RFC 6749
//! authorization server works by configuration alone. What is partner-specific — finding the
//! partner account's stable id, CareLink's discovery, data fetching and mapping — lives in one
//! module per partner.

pub mod carelink;
pub mod clinic;
pub mod config;
pub mod dexcom;
pub mod driver;
pub mod error;
pub mod fetch;
pub mod http;
pub mod oauth;
pub mod platform;
pub mod registry;
pub mod schedule;
mod wire;

pub use config::{ClientAuth, PartnerSettings, RedirectMode, RegionSettings};
pub use driver::{Call, Cursor, Identity, PartnerDriver, PollRequest, Saved};
pub use error::PartnerError;
pub use oauth::{OAuthEndpoints, TokenSet};
pub use registry::{Partner, Registry};
