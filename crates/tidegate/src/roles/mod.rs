//! What each role of the binary does ([`crate::cli`] defines them): the service roles
//! ([`service`]), the operator's tools ([`ops`]) and, with the `dev-tools` feature, the simulator,
//! the demo and the benchmarks ([`dev`]). Configuration is loaded once here; `keys generate` and
//! `map` need none.

use std::process::ExitCode;

use crate::cli::{Cli, Command, KeysCommand};
use crate::configuration::Settings;
use crate::telemetry;

#[cfg(feature = "dev-tools")]
pub mod dev;
pub mod ops;
pub mod service;

/// Run the command line: exit 0 on success, 2 when the configuration (or an argument) is
/// refused, 1 when the role failed.
pub fn main(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::Keys { command: KeysCommand::Generate { kid } } => return ops::generate_key(kid),
        Command::Map { partner, endpoint, user, file } => {
            return crate::map::command(partner, endpoint.as_deref(), user, file);
        }
        _ => {}
    }
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tidegate: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log, std::io::stderr);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidegate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "tidegate failed");
            eprintln!("tidegate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Migrate => service::migrate(&settings).await,
        Command::Serve { no_worker } => service::serve(settings, no_worker).await,
        Command::Worker => service::worker(settings).await,
        Command::Doctor => ops::doctor(&settings).await,
        Command::Report { user, .. } => ops::report(&settings, user.as_deref()).await,
        Command::Token(args) => ops::token(&settings, args),
        Command::Keys { command: KeysCommand::Rotate } => ops::rotate_keys(&settings).await,
        #[cfg(feature = "dev-tools")]
        Command::Sandbox(args) => dev::sandbox(args, &settings).await,
        #[cfg(feature = "dev-tools")]
        Command::Demo { fast, sandbox_listen } => dev::demo(settings, fast, sandbox_listen).await,
        #[cfg(feature = "dev-tools")]
        Command::Bench { command } => dev::bench(settings, command).await,
        Command::Keys { command: KeysCommand::Generate { .. } } | Command::Map { .. } => {
            unreachable!("handled before loading settings")
        }
    }
}
