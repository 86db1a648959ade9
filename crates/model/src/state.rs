//! Data-source states (the clinic's enum) and the one function that moves between them
//! (DESIGN §2). Every state change in the service goes through [`transition`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The state of one user's link to one partner, exactly as the clinic service spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DataSourceState {
    /// A clinician asked; the patient has not connected yet.
    Pending,
    /// A clinician asked again for a source that was connected at some point.
    PendingReconnect,
    /// Tokens held, polling.
    Connected,
    /// Disconnected here: tokens deleted, polling stopped.
    Disconnected,
    /// Authorization confirmed dead, or a permanent partner error: polling paused.
    Error,
}

impl DataSourceState {
    pub const ALL: [DataSourceState; 5] =
        [Self::Pending, Self::PendingReconnect, Self::Connected, Self::Disconnected, Self::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::PendingReconnect => "pendingReconnect",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Error => "error",
        }
    }

    /// Pending states carry an expiration time (the connection request's link).
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Pending | Self::PendingReconnect)
    }
}

impl fmt::Display for DataSourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown data source state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for DataSourceState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// Something that happened to a data source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A clinician asked the patient to connect (or reconnect).
    ConnectionRequested,
    /// The code exchange succeeded and the tokens are stored.
    Connected,
    /// The user or a service disconnected here.
    Disconnected,
    /// An authorization failure was confirmed, or the partner answered a permanent error.
    Failed,
}

/// What an event does to a data source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Move to this state (it may equal the current one, e.g. a repeated request refreshes the
    /// request's expiry; the caller writes the row and its clinic report either way).
    To(DataSourceState),
    /// Nothing to do: the event does not apply (e.g. a poll failure arriving after a disconnect,
    /// a clinician request for a source that is connected, disconnecting what never existed).
    Unchanged,
}

/// The data-source state machine: a pure function of the current state (`None` when the user has
/// no source for this partner yet), whether the source was ever connected, and the event.
pub fn transition(current: Option<DataSourceState>, ever_connected: bool, event: Event) -> Transition {
    use DataSourceState as S;
    match (event, current) {
        (Event::Connected, _) => Transition::To(S::Connected),
        // A connected source needs no request; a broken or disconnected one gets one.
        (Event::ConnectionRequested, Some(S::Connected)) => Transition::Unchanged,
        (Event::ConnectionRequested, _) if ever_connected => Transition::To(S::PendingReconnect),
        (Event::ConnectionRequested, _) => Transition::To(S::Pending),
        (Event::Disconnected, None | Some(S::Disconnected)) => Transition::Unchanged,
        (Event::Disconnected, Some(_)) => Transition::To(S::Disconnected),
        (Event::Failed, Some(S::Connected)) => Transition::To(S::Error),
        (Event::Failed, _) => Transition::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataSourceState as S;

    #[test]
    fn states_round_trip_with_clinic_spelling() {
        for st in S::ALL {
            assert_eq!(st.as_str().parse::<S>(), Ok(st));
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{}\"", st.as_str()));
        }
        assert!("Connected".parse::<S>().is_err());
    }

    #[test]
    fn the_whole_table() {
        let states = [
            None,
            Some(S::Pending),
            Some(S::PendingReconnect),
            Some(S::Connected),
            Some(S::Disconnected),
            Some(S::Error),
        ];
        for current in states {
            for ever in [false, true] {
                assert_eq!(transition(current, ever, Event::Connected), Transition::To(S::Connected));
                let requested = transition(current, ever, Event::ConnectionRequested);
                match current {
                    Some(S::Connected) => assert_eq!(requested, Transition::Unchanged),
                    _ if ever => assert_eq!(requested, Transition::To(S::PendingReconnect)),
                    _ => assert_eq!(requested, Transition::To(S::Pending)),
                }
                let disconnected = transition(current, ever, Event::Disconnected);
                match current {
                    None | Some(S::Disconnected) => assert_eq!(disconnected, Transition::Unchanged),
                    _ => assert_eq!(disconnected, Transition::To(S::Disconnected)),
                }
                let failed = transition(current, ever, Event::Failed);
                match current {
                    Some(S::Connected) => assert_eq!(failed, Transition::To(S::Error)),
                    _ => assert_eq!(failed, Transition::Unchanged),
                }
            }
        }
    }
}
