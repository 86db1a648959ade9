//! Background work coordinated through Postgres leases (no leader, any number of replicas).

pub mod mail;
pub mod outbox;
pub mod poll;

pub use mail::{MailSettings, Mailer};
pub use outbox::{OutboxSettings, OutboxWorker};
pub use poll::{PollError, PollOutcome, PollSettings, Poller};
