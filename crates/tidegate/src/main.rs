//! `tidegate`: one binary, roles as subcommands.

use std::path::PathBuf;
use std::process::ExitCode;

use api::Role;
use clap::{Parser, Subcommand, ValueEnum};
use tidegate::configuration::Settings;
use tidegate::startup::{self, Application};
use tidegate::token::TokenRequest;
use tidegate::{keys, telemetry};

/// tidegate: cloud-to-cloud data sources (Dexcom, Medtronic CareLink) for the Tidepool platform.
///
/// Configuration: config/default.toml, then config/$TIDEGATE_ENV.toml (dev when unset), then
/// TIDEGATE_* environment variables ("__" for nesting) and DATABASE_URL. See README.md.
#[derive(Debug, Parser)]
#[command(name = "tidegate", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply database migrations, then exit.
    Migrate,
    /// Run the HTTP API (public listener) and /metrics (ops listener). Applies migrations at
    /// start-up (safe with several replicas). Stops cleanly on SIGTERM/SIGINT.
    Serve,
    /// Print a signed JWT (and nothing else) on stdout, for dev, tests and operations.
    Token(TokenArgs),
    /// Token-encryption key operations.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// Subject: a user id for patients and clinicians, a service name for services.
    #[arg(long)]
    sub: String,
    #[arg(long, value_enum)]
    role: RoleArg,
    /// Clinic id (24 hex) the clinician acts for; repeat for several.
    #[arg(long = "clinic")]
    clinics: Vec<String>,
    /// Lifetime in seconds (default: auth.token_ttl_secs).
    #[arg(long)]
    ttl: Option<u64>,
    /// Sign with this PEM private key (RS256/ES256 deployments) instead of auth.jwt_secret.
    #[arg(long)]
    private_key: Option<PathBuf>,
    /// Key id to put in the token header (for JWKS verification).
    #[arg(long, requires = "private_key")]
    kid: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Patient,
    Clinician,
    Service,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Patient => Role::Patient,
            RoleArg::Clinician => Role::Clinician,
            RoleArg::Service => Role::Service,
        }
    }
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Re-encrypt every stored token under the first key of TIDEGATE_TOKEN_KEYS, so an older key
    /// can then be removed from the ring.
    Rotate,
    /// Print a new random key entry (kid:base64) to put first in TIDEGATE_TOKEN_KEYS.
    Generate {
        /// Key id for the new key.
        #[arg(long, default_value_t = format!("k{}", chrono::Utc::now().format("%Y%m%d")))]
        kid: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `keys generate` needs no configuration at all.
    if let Command::Keys { command: KeysCommand::Generate { kid } } = &cli.command {
        let entry = store::KeyRing::generate_entry(kid);
        return match store::KeyRing::parse(&entry) {
            Ok(_) => {
                println!("{}", secrecy::ExposeSecret::expose_secret(&entry));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tidegate: --kid: {e}");
                ExitCode::from(2)
            }
        };
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
        Command::Migrate => {
            let pool = store::connect_lazy(settings.connect_options()?, &settings.db_settings());
            store::MIGRATOR.run(&pool).await?;
            println!("migrations applied ({} known)", store::MIGRATOR.iter().count());
            Ok(())
        }
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until(startup::shutdown_signal()).await
        }
        Command::Token(args) => {
            let req = TokenRequest {
                sub: args.sub,
                role: args.role.into(),
                clinics: args.clinics,
                ttl_secs: args.ttl,
                private_key: args.private_key,
                kid: args.kid,
            };
            println!("{}", tidegate::token::mint(&settings, &req)?);
            Ok(())
        }
        Command::Keys { command: KeysCommand::Rotate } => {
            let store = startup::store(&settings)?;
            let n = keys::rotate(&store).await?;
            println!("re-encrypted {n} values under key {}", store.keys().primary_id());
            Ok(())
        }
        Command::Keys { command: KeysCommand::Generate { .. } } => unreachable!("handled before loading settings"),
    }
}
