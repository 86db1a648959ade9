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
    /// Run the HTTP API (public listener) and /metrics (ops listener), and the background
    /// worker (outbox deliveries) unless --no-worker. Applies migrations at start-up (safe with
    /// several replicas). Stops cleanly on SIGTERM/SIGINT.
    Serve {
        /// Run only the API; background work runs in `tidegate worker` replicas.
        #[arg(long)]
        no_worker: bool,
    },
    /// Run only the background worker (outbox deliveries), any number of replicas.
    Worker,
    /// Re-send clinic reports on demand (e.g. after a clinic restore): queues a fresh report
    /// for one user or for everyone; a running worker delivers it.
    Report {
        /// The user to report.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        user: Option<String>,
        /// Every user with a data source.
        #[arg(long)]
        all: bool,
    },
    /// Check the data-source invariants (DESIGN §2) over the whole database; prints each
    /// violation and exits non-zero when there is any.
    Doctor,
    /// Print a signed JWT (and nothing else) on stdout, for dev, tests and operations.
    Token(TokenArgs),
    /// Run the partner simulator (Dexcom v3, CareLink v13) and the clinic stand-in on one
    /// listener, for development, tests, the demo and benchmarks. Never for production.
    ///
    /// Hosts become path prefixes under --base-url: /dexcom, /dexcom-eu, /dexcom-jp (Dexcom API
    /// v3 per region), /carelink-login (CareLink's Auth0 sign-in), /clcloud (CareLink cloud),
    /// /clinic (clinic service). With --admin, /admin serves: GET|POST /admin/clock (read, set
    /// {"set": time} or {"advanceSecs": n}); GET /admin/people; POST /admin/people/{login}/revoke;
    /// GET /admin/truth/{login}?start&end (Dexcom) or ?at (CareLink); GET|PUT|DELETE
    /// /admin/faults and PUT /admin/faults/{login} (errorRate, errorStatus, rateLimit, latencyMs,
    /// hangMs, malformedJsonRate, schemaDrift, maintenance); GET|PUT /admin/dexcom/budget;
    /// GET|DELETE /admin/requests; GET /admin/secrets; GET /admin/auth/stats;
    /// POST /admin/clinic/patients; GET|DELETE /admin/clinic/requests; PUT /admin/clinic/faults.
    /// OAuth clients and the clinic server token come from tidegate's configuration
    /// (partners.dexcom.client_id/client_secret, partners.carelink.client_id, clinic.server_token).
    Sandbox(SandboxArgs),
    /// Map a saved partner response to Tidepool datums: JSON lines on stdout, a summary of what
    /// was produced and what was skipped (and why) on stderr. Needs no configuration, database
    /// or network. For Dexcom, FILE is one endpoint's response envelope (the endpoint is read
    /// from its recordType unless --endpoint says); for CareLink, a display/message response
    /// (with or without the {metadata, patientData} envelope) or an older-generation payload.
    Map {
        /// The partner the response came from (one with a data driver: dexcom, carelink).
        #[arg(long, value_parser = tidegate::map::partner_name)]
        partner: String,
        /// The endpoint the response came from, when the document does not say (Dexcom: egvs,
        /// events, calibrations, alerts, devices).
        #[arg(long)]
        endpoint: Option<String>,
        /// The user the datum ids are derived for (ids match the stored ones for that user).
        #[arg(long, default_value = "0000000000")]
        user: String,
        /// The saved response; `-` reads stdin.
        file: PathBuf,
    },
    /// Everything in one process for a first look: creates the database if missing, migrates,
    /// starts the partner simulator and clinic stand-in (on --sandbox-listen, where
    /// config/dev.toml expects them), the API and the worker, creates a demo patient and
    /// clinician, and prints what to open and what to click, with ready-made tokens. Ctrl-C
    /// stops it. Uses the dev configuration.
    Demo {
        /// Demo only: poll every 45–75 seconds (not minutes) so polls can be watched.
        #[arg(long)]
        fast: bool,
        #[arg(long, default_value = "127.0.0.1:8090")]
        sandbox_listen: std::net::SocketAddr,
    },
    /// Benchmarks of the real service (docs/PERFORMANCE.md). Creates its own database.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
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

#[derive(Debug, clap::Args)]
struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    /// Public base URL the simulator is reached at (embedded in discovery documents).
    /// Default: http://{listen}.
    #[arg(long)]
    base_url: Option<String>,
    /// Seed for the synthetic people (same seed, same people and data).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of synthetic Dexcom accounts (logins dexcom-001, …).
    #[arg(long, default_value_t = 6)]
    dexcom_people: usize,
    /// Number of synthetic CareLink accounts (logins carelink-001, …; with three or more, the
    /// last two are care partners following one and two patients).
    #[arg(long, default_value_t = 4)]
    carelink_people: usize,
    /// Days of synthetic history before the start time.
    #[arg(long, default_value_t = 120)]
    history_days: i64,
    /// Serve the admin API at /admin.
    #[arg(long)]
    admin: bool,
    /// Dexcom's per-app hourly call budget; 0 turns it off (throughput benchmarks).
    #[arg(long, default_value_t = 60_000)]
    dexcom_budget_per_hour: u64,
    /// Redirect URI registered for the Dexcom client (exact match).
    #[arg(long, default_value = "http://127.0.0.1:8080/v1/oauth/dexcom/redirect")]
    dexcom_redirect_uri: String,
    /// Simulated time at start (RFC 3339); default: now.
    #[arg(long)]
    start_time: Option<chrono::DateTime<chrono::Utc>>,
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
enum BenchCommand {
    /// Poll throughput, schedule lag, poll duration, CPU per 1,000 polls, worker RSS and rows
    /// written: seeds --sources connected Dexcom sources (tokens sealed as in production) on a
    /// fresh database, runs the partner simulator in this process (its budget off) and
    /// --workers `tidegate worker` processes against it over loopback HTTP. Prints a table
    /// (stderr: progress) and one JSON line on stdout.
    Poll {
        #[arg(long, default_value_t = 5_000)]
        sources: usize,
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Upper bound of each measured phase, in seconds.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Polls per second offered in the lag phase (default: half the saturation rate).
        #[arg(long)]
        offered_load: Option<f64>,
        /// Extra schedule rows, not due, seeded with COPY for the scale check (e.g. 1000000).
        #[arg(long, default_value_t = 0)]
        population: usize,
        /// The poll look-back: 0 makes each poll's payload exactly the new hour; production
        /// uses poll.look_back_minutes (360).
        #[arg(long, default_value_t = 0)]
        look_back_minutes: i64,
        /// The database to (re)create on the configured server. Dropped first if it exists.
        #[arg(long, default_value = "tidegate_bench")]
        database: String,
    },
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
    if let Command::Map { partner, endpoint, user, file } = &cli.command {
        return map_command(partner, endpoint.as_deref(), user, file);
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

/// `tidegate map`: exit 0 when the input was read (skipped records included), 2 when it could
/// not be read at all.
fn map_command(partner: &str, endpoint: Option<&str>, user: &str, file: &std::path::Path) -> ExitCode {
    use std::io::{Read, Write};
    let user = match model::UserId::parse(user) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("tidegate map: --user: {e}");
            return ExitCode::from(2);
        }
    };
    let mut input = String::new();
    let read = if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut input).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|s| input = s)
    };
    if let Err(e) = read {
        eprintln!("tidegate map: {}: {e}", file.display());
        return ExitCode::from(2);
    }
    match tidegate::map::map(partner, endpoint, &input, &user) {
        Ok(m) => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for d in &m.datums {
                if writeln!(out, "{d}").is_err() {
                    return ExitCode::FAILURE;
                }
            }
            if out.flush().is_err() {
                return ExitCode::FAILURE;
            }
            eprint!("{}", tidegate::map::summary(&m));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tidegate map: {}: {e}", file.display());
            ExitCode::from(2)
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
        Command::Serve { no_worker } => {
            let app = Application::build(settings).await?;
            let app = if no_worker { app.without_worker() } else { app };
            app.run_until(startup::shutdown_signal()).await
        }
        Command::Worker => startup::run_worker(settings, startup::shutdown_signal()).await,
        Command::Demo { fast, sandbox_listen } => {
            tidegate::demo::run(
                settings,
                tidegate::demo::DemoOptions { fast, sandbox_listen },
                startup::shutdown_signal(),
            )
            .await
        }
        Command::Doctor => {
            let store = startup::store(&settings)?;
            let broken = store::lifecycle::check_invariants(&store).await?;
            for v in &broken {
                println!("data source {}: violates \"{}\"", v.data_source_id, v.rule);
            }
            if broken.is_empty() {
                println!("all data-source invariants hold");
                Ok(())
            } else {
                anyhow::bail!("{} invariant violation(s)", broken.len())
            }
        }
        Command::Report { user, .. } => {
            let user =
                user.map(|u| model::UserId::parse(&u).map_err(|e| anyhow::anyhow!("--user: {e}"))).transpose()?;
            let store = startup::store(&settings)?;
            // The service clock (which may follow the simulator), like every other writer.
            let (clock, _clock_task) = tidegate::clock::build(&settings.clock).await?;
            let mut conn = store.acquire().await?;
            let n = store::outbox::requeue_reports(&mut conn, user.as_ref(), clock.now()).await?;
            println!("queued {n} clinic report(s)");
            Ok(())
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
        Command::Sandbox(args) => run_sandbox(args, &settings).await,
        Command::Bench {
            command:
                BenchCommand::Poll { sources, workers, duration, offered_load, population, look_back_minutes, database },
        } => {
            let opts = tidegate::bench::PollBench {
                sources,
                workers,
                duration: std::time::Duration::from_secs(duration),
                offered_load,
                population,
                look_back_minutes,
                database,
            };
            let report = tidegate::bench::run(settings, opts).await?;
            eprint!("{}", tidegate::bench::table(&report));
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Keys { command: KeysCommand::Rotate } => {
            let store = startup::store(&settings)?;
            let n = keys::rotate(&store).await?;
            println!("re-encrypted {n} values under key {}", store.primary_key_id());
            Ok(())
        }
        Command::Keys { command: KeysCommand::Generate { .. } } | Command::Map { .. } => {
            unreachable!("handled before loading settings")
        }
    }
}

async fn run_sandbox(args: SandboxArgs, settings: &Settings) -> anyhow::Result<()> {
    let cfg = sandbox::SandboxConfig {
        listen: args.listen,
        public_base_url: args.base_url,
        seed: args.seed,
        dexcom_people: args.dexcom_people,
        carelink_people: args.carelink_people,
        admin: args.admin,
        dexcom_budget_per_hour: (args.dexcom_budget_per_hour > 0).then_some(args.dexcom_budget_per_hour),
        start_time: args.start_time,
        history_days: args.history_days,
        ..tidegate::demo::simulator_config(settings, &args.dexcom_redirect_uri)
    };
    let sb = sandbox::Sandbox::start(cfg).await?;
    tracing::info!(listen = %sb.addr, base_url = %sb.base_url, admin = args.admin, "sandbox serving");
    sb.wait(startup::shutdown_signal()).await;
    Ok(())
}
