//! The tidegate service: configuration, telemetry and start-up for every role of the binary.

pub mod assemble;
#[cfg(feature = "dev-tools")]
pub mod bench;
#[cfg(feature = "dev-tools")]
pub mod bench_prune;
pub mod cli;
pub mod clock;
pub mod configuration;
#[cfg(feature = "dev-tools")]
pub mod demo;
pub mod keys;
pub mod map;
pub mod roles;
pub mod startup;
pub mod telemetry;
pub mod token;

pub use configuration::Settings;
pub use startup::Application;

/// Aborts a background task when dropped.
#[derive(Debug)]
pub struct TaskGuard(pub tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
