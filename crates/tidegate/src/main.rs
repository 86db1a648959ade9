//! `tidegate`: one binary, roles as subcommands ([`tidegate::cli`] defines them,
//! [`tidegate::roles`] runs them).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tidegate::roles::main(tidegate::cli::Cli::parse())
}
