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

/// `doctor`: the data-source invariants over the whole database.
pub async fn doctor(settings: &Settings) -> anyhow::Result<()> {
    let store = startup::store(settings)?;
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
