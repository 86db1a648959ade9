//! Development roles (feature `dev-tools`): the partner simulator, the demo and the benchmarks.
//! Never in the release image.

use crate::cli::{BenchCommand, SandboxArgs};
use crate::configuration::Settings;
use crate::startup;

/// `sandbox`: the partner simulator and the clinic stand-in on one listener.
pub async fn sandbox(args: SandboxArgs, settings: &Settings) -> anyhow::Result<()> {
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
        ..crate::demo::simulator_config(settings, &args.dexcom_redirect_uri)
    };
    let sb = sandbox::Sandbox::start(cfg).await?;
    tracing::info!(listen = %sb.addr, base_url = %sb.base_url, admin = args.admin, "sandbox serving");
    sb.wait(startup::shutdown_signal()).await;
    Ok(())
}

/// `demo`: everything in one process for a first look.
pub async fn demo(settings: Settings, fast: bool, sandbox_listen: std::net::SocketAddr) -> anyhow::Result<()> {
    crate::demo::run(settings, crate::demo::DemoOptions { fast, sandbox_listen }, startup::shutdown_signal()).await
}

/// `bench poll`: the poll benchmarks; a table on stderr, one JSON line on stdout.
pub async fn bench(settings: Settings, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Prune { rows, sources, weeks, writers, database } => {
            let opts = crate::bench_prune::PruneBench { rows, sources, weeks, writers, database };
            let report = crate::bench_prune::run(settings, opts).await?;
            eprint!("{}", crate::bench_prune::table(&report));
            println!("{}", serde_json::to_string(&report)?);
        }
        BenchCommand::Poll {
            sources,
            workers,
            duration,
            offered_load,
            population,
            look_back_minutes,
            database,
            with_delivery,
            prune_rows,
        } => {
            let opts = crate::bench::PollBench {
                sources,
                workers,
                duration: std::time::Duration::from_secs(duration),
                offered_load,
                population,
                look_back_minutes,
                database,
                with_delivery,
                prune_rows,
            };
            let report = crate::bench::run(settings, opts).await?;
            eprint!("{}", crate::bench::table(&report));
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}
