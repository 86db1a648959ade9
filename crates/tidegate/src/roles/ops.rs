//! The operator's tools: `doctor`, `report`, `token` and `keys`.

use std::process::ExitCode;

use crate::cli::TokenArgs;
use crate::configuration::Settings;
use crate::startup;
use crate::token::TokenRequest;

/// `keys generate`: a new random key entry (`kid:base64`) on stdout; needs no configuration.
pub fn generate_key(kid: &str) -> ExitCode {
    let entry = store::KeyRing::generate_entry(kid);
    match store::KeyRing::parse(&entry) {
        Ok(_) => {
            println!("{}", secrecy::ExposeSecret::expose_secret(&entry));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tidegate: --kid: {e}");
            ExitCode::from(2)
        }
    }
}

/// `keys rotate`: re-encrypt every stored token under the ring's first key.
pub async fn rotate_keys(settings: &Settings) -> anyhow::Result<()> {
    let store = startup::store(settings)?;
    let n = crate::keys::rotate(&store).await?;
    println!("re-encrypted {n} values under key {}", store.primary_key_id());
    Ok(())
}

/// `doctor`: the data-source invariants over the whole database, and platform delivery: one
/// data set per source that has data (checked at the platform when the sink is configured),
/// the backlog and its oldest datum, refused datums, datums kept past retention because they
/// were never delivered.
pub async fn doctor(settings: &Settings) -> anyhow::Result<()> {
    let store = startup::store(settings)?;
    let broken = store::lifecycle::check_invariants(&store).await?;
    for v in &broken {
        println!("data source {}: violates \"{}\"", v.data_source_id, v.rule);
    }
    if broken.is_empty() {
        println!("all data-source invariants hold");
    }
    let problems = broken.len() + delivery_report(settings, &store).await?;
    if problems == 0 { Ok(()) } else { anyhow::bail!("{problems} problem(s)") }
}

/// The delivery part of `doctor`; returns the problems found (refusals and backlog are
/// reported, not counted: they are the data's, and retried or kept as designed).
async fn delivery_report(settings: &Settings, store: &store::Store) -> anyhow::Result<usize> {
    let (clock, _clock_task) = crate::clock::build(&settings.clock).await?;
    let now = clock.now();
    let cutoff = now - chrono::Duration::days(settings.sinks.retention_days);
    let h = store.delivery_health(cutoff).await?;
    let mut problems = h.delivered_without_data_set.len();
    println!(
        "platform delivery ({}): {} sources with data, {} with a data set",
        if settings.sinks.tidepool() { "sink on" } else { "sink off" },
        h.sources_with_data,
        h.with_data_set
    );
    for id in &h.delivered_without_data_set {
        println!("data source {id}: delivered, but names no platform data set");
    }
    let age = h.oldest_undelivered.map(|t| format!(", the oldest written {} min ago", (now - t).num_minutes()));
    println!(
        "backlog: {} datums in {} sources{}; {} deletions to carry",
        h.backlog_datums,
        h.backlog_sources,
        age.unwrap_or_default(),
        h.deletions
    );
    for (kind, n, reason) in &h.rejected {
        println!("rejected by the platform: {n} {kind} datums (e.g. \"{reason}\")");
    }
    println!(
        "kept past the {}-day retention because never delivered: {}",
        settings.sinks.retention_days, h.retained_undelivered
    );
    println!("rows in the default datum partition: {}", store.default_partition_rows().await?);
    if let Some(sink) = settings.platform_sink()? {
        const CHECKED: i64 = 1_000;
        let sets = store.data_sets(CHECKED).await?;
        for (user, provider, source, id) in &sets {
            let there = sink.service.data_sets(user, &partners::platform::client_name(provider.as_str())).await?;
            if there.as_slice() != [id.clone()] {
                problems += 1;
                println!("data source {source}: we name data set {id}, the platform holds {there:?}");
            }
        }
        println!("checked {} data sets at the platform (at most {CHECKED})", sets.len());
    }
    Ok(problems)
}

/// `report`: queue a fresh clinic report for one user or for everyone.
pub async fn report(settings: &Settings, user: Option<&str>) -> anyhow::Result<()> {
    let user = user.map(|u| model::UserId::parse(u).map_err(|e| anyhow::anyhow!("--user: {e}"))).transpose()?;
    let store = startup::store(settings)?;
    // The service clock (which may follow the simulator), like every other writer.
    let (clock, _clock_task) = crate::clock::build(&settings.clock).await?;
    let n = store.requeue_reports(user.as_ref(), clock.now()).await?;
    println!("queued {n} clinic report(s)");
    Ok(())
}

/// `token`: a signed JWT on stdout.
pub fn token(settings: &Settings, args: TokenArgs) -> anyhow::Result<()> {
    let req = TokenRequest {
        sub: args.sub,
        role: args.role.into(),
        clinics: args.clinics,
        ttl_secs: args.ttl,
        private_key: args.private_key,
        kid: args.kid,
    };
    println!("{}", crate::token::mint(settings, &req)?);
    Ok(())
}
