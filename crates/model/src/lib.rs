//! Tidepool data model types, identifiers, data-source states and the service clock.
//!
//! Nothing in this crate performs I/O: every other crate builds on these types, and they can be
//! tested (and fuzzed) in isolation.

pub mod clock;
pub mod datum;
pub mod ids;
pub mod paths;
pub mod provider;
pub mod state;
pub mod time;

pub use clock::{Clock, ManualClock, OffsetClock, SharedClock, SystemClock};
pub use ids::{ClinicId, DataSourceId, DatumId, InvalidId, LinkTokenId, UserId};
pub use provider::{AccountChoice, ProviderName};
pub use state::{DataSourceState, Event, Transition, UnknownState, transition};
