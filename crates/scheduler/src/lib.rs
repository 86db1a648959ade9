//! Background work coordinated through Postgres leases (no leader, any number of replicas).

pub mod breaker;
pub mod mail;
pub mod outbox;
pub mod poll;
pub mod upkeep;
pub mod worker;

pub use mail::{MailSettings, Mailer};
pub use outbox::{OutboxSettings, OutboxWorker};
pub use poll::{PollError, PollOutcome, PollSettings, Poller};
pub use upkeep::{Upkeep, UpkeepSettings};
pub use worker::{PollWorker, WorkerSettings};
