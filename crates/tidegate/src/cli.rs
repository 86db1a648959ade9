//! The command line: every role of the one binary, as clap definitions. What each role does is
//! in [`crate::roles`]. The simulator, the demo and the benchmarks exist only in builds with the
//! `dev-tools` feature (the default for development; the release image is built without it).

use std::path::PathBuf;

use api::Role;
use clap::{Parser, Subcommand, ValueEnum};

/// tidegate: cloud-to-cloud data sources (Dexcom, Medtronic CareLink) for the Tidepool platform.
///
/// Configuration: config/default.toml, then config/$TIDEGATE_ENV.toml (dev when unset), then
/// TIDEGATE_* environment variables ("__" for nesting) and DATABASE_URL. See README.md.
#[derive(Debug, Parser)]
#[command(name = "tidegate", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    #[cfg(feature = "dev-tools")]
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
        #[arg(long, value_parser = crate::map::partner_name)]
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
    #[cfg(feature = "dev-tools")]
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
    #[cfg(feature = "dev-tools")]
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
pub struct TokenArgs {
    /// Subject: a user id for patients and clinicians, a service name for services.
    #[arg(long)]
    pub sub: String,
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// Clinic id (24 hex) the clinician acts for; repeat for several.
    #[arg(long = "clinic")]
    pub clinics: Vec<String>,
    /// Lifetime in seconds (default: auth.token_ttl_secs).
    #[arg(long)]
    pub ttl: Option<u64>,
    /// Sign with this PEM private key (RS256/ES256 deployments) instead of auth.jwt_secret.
    #[arg(long)]
    pub private_key: Option<PathBuf>,
    /// Key id to put in the token header (for JWKS verification).
    #[arg(long, requires = "private_key")]
    pub kid: Option<String>,
}

#[cfg(feature = "dev-tools")]
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: std::net::SocketAddr,
    /// Public base URL the simulator is reached at (embedded in discovery documents).
    /// Default: http://{listen}.
    #[arg(long)]
    pub base_url: Option<String>,
    /// Seed for the synthetic people (same seed, same people and data).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of synthetic Dexcom accounts (logins dexcom-001, …).
    #[arg(long, default_value_t = 6)]
    pub dexcom_people: usize,
    /// Number of synthetic CareLink accounts (logins carelink-001, …; with three or more, the
    /// last two are care partners following one and two patients).
    #[arg(long, default_value_t = 4)]
    pub carelink_people: usize,
    /// Days of synthetic history before the start time.
    #[arg(long, default_value_t = 120)]
    pub history_days: i64,
    /// Serve the admin API at /admin.
    #[arg(long)]
    pub admin: bool,
    /// Dexcom's per-app hourly call budget; 0 turns it off (throughput benchmarks).
    #[arg(long, default_value_t = 60_000)]
    pub dexcom_budget_per_hour: u64,
    /// Redirect URI registered for the Dexcom client (exact match).
    #[arg(long, default_value = "http://127.0.0.1:8080/v1/oauth/dexcom/redirect")]
    pub dexcom_redirect_uri: String,
    /// Simulated time at start (RFC 3339); default: now.
    #[arg(long)]
    pub start_time: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
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

#[cfg(feature = "dev-tools")]
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
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
        /// Also measure platform delivery: the backlog delivered to the simulator's data-service
        /// stand-in (datums/s), and the saturation phase again with the `tidepool` sink on.
        #[arg(long)]
        with_delivery: bool,
        /// With --with-delivery: seed this many delivered datums in old weekly partitions and
        /// prune them while the saturation phase runs (e.g. 10000000; 0 skips it).
        #[arg(long, default_value_t = 0, requires = "with_delivery")]
        prune_rows: u64,
    },
    /// Retention pruning with writes running: seeds --rows datums over --weeks weekly
    /// partitions on a fresh database, then prunes the older half while --writers tasks upsert
    /// poll-sized batches; prints the prune's cost and the writers' latency before and during.
    Prune {
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 20_000)]
        sources: u64,
        #[arg(long, default_value_t = 8)]
        weeks: i64,
        #[arg(long, default_value_t = 4)]
        writers: usize,
        /// The database to (re)create on the configured server. Dropped first if it exists.
        #[arg(long, default_value = "tidegate_bench_prune")]
        database: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
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
