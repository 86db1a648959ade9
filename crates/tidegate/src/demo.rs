//! `tidegate demo`: everything in one process on a machine with a local Postgres — the partner
//! simulator and clinic stand-in, the API and the worker — with a demo patient and clinician,
//! and printed steps to follow in a browser.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::{ConnectOptions, Connection};

use crate::configuration::Settings;
use crate::startup::{self, Application};
use crate::token::{self, TokenRequest};

/// The demo's people (fixed, so the printed steps stay true between runs).
pub const PATIENT: &str = "00000000a1";
pub const CLINICIAN: &str = "00000000c1";
pub const CLINIC: &str = "de000000000000000000c11c";

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Demo-only: polls every 45–75 seconds instead of minutes, first polls within 5 s.
    pub fast: bool,
    /// Where the simulator listens (the dev configuration expects 127.0.0.1:8090).
    pub sandbox_listen: SocketAddr,
}

/// Create the configured database if the server does not have it yet.
pub async fn ensure_database(settings: &Settings) -> anyhow::Result<()> {
    let options = settings.connect_options()?;
    let Some(name) = options.get_database().map(str::to_owned) else { return Ok(()) };
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("connecting to Postgres (is it running? DATABASE_URL?)")?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}"))).execute(&mut admin).await?;
        tracing::info!(database = %name, "created the demo database");
    }
    admin.close().await?;
    Ok(())
}

/// A simulator configuration that knows this configuration's partner clients (the Dexcom
/// client with `dexcom_redirect` as its one redirect URI, the CareLink client id) and clinic
/// server token; everything else is the simulator's default.
pub fn simulator_config(settings: &Settings, dexcom_redirect: &str) -> sandbox::SandboxConfig {
    let dexcom = settings
        .partners
        .get("dexcom")
        .and_then(|p| Some((p.client_id.clone()?, p.client_secret.as_ref()?.expose_secret().to_owned())));
    sandbox::SandboxConfig {
        dexcom_clients: dexcom
            .map(|(client_id, secret)| sandbox::OAuthClient {
                client_id,
                client_secret: Some(secret),
                redirect_uris: vec![dexcom_redirect.to_owned()],
            })
            .into_iter()
            .collect(),
        carelink_client_id: settings
            .partners
            .get("carelink")
            .and_then(|p| p.client_id.clone())
            .unwrap_or_else(|| "carelink-sim-app".into()),
        clinic_server_token: settings
            .clinic
            .server_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned())
            .unwrap_or_default(),
        platform_server_secret: settings
            .sinks
            .tidepool
            .server_secret
            .as_ref()
            .map(|t| t.expose_secret().to_owned())
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// Point every partner and the clinic service at the demo's own simulator (wherever it listens).
pub fn wire_to_simulator(settings: &mut Settings, base: &str) {
    let base = base.trim_end_matches('/');
    if let Some(d) = settings.partners.get_mut("dexcom") {
        for (region, prefix) in sandbox::DEXCOM_REGIONS {
            if let Some(r) = d.regions.get_mut(region) {
                r.authorize_url = Some(format!("{base}{prefix}/v3/oauth2/login"));
                r.token_url = Some(format!("{base}{prefix}/v3/oauth2/token"));
                r.api_base_url = Some(format!("{base}{prefix}"));
            }
        }
    }
    if let Some(c) = settings.partners.get_mut("carelink") {
        for r in c.regions.values_mut() {
            r.discovery_url = Some(format!("{base}/clcloud/connect/carepartner/v13/discover/android/3.6"));
        }
    }
    settings.clinic.url = Some(format!("{base}/clinic"));
    settings.sinks.tidepool.url = Some(format!("{base}/tidepool"));
}

/// The demo delivers to the simulator's data-service stand-in too (`sinks = local,tidepool`).
pub fn deliver_to_platform(settings: &mut Settings) {
    if !settings.sinks.tidepool() {
        settings.sinks.enabled.push("tidepool".into());
    }
    if settings.sinks.tidepool.server_secret.is_none() {
        settings.sinks.tidepool.server_secret = Some(sandbox::random_secret().into());
    }
}

/// Demo-only scheduling: seconds instead of minutes, so a person can watch polls happen.
pub fn make_fast(settings: &mut Settings) {
    for p in settings.partners.values_mut() {
        let s = &mut p.schedule;
        s.interval_min_secs = 45;
        s.interval_max_secs = 75;
        s.first_poll_within_secs = 5;
        s.backoff_base_secs = 5;
        s.auth_backoff_base_secs = 60;
        s.blackouts.clear();
    }
}

pub async fn run(
    mut settings: Settings,
    opts: DemoOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if opts.fast {
        make_fast(&mut settings);
    }
    deliver_to_platform(&mut settings);
    ensure_database(&settings).await?;
    let store = startup::store(&settings)?;
    store.migrate().await.context("migrating the demo database")?;
    // The API listener first: with port 0 the public URL (and so the OAuth redirect) follows it.
    let public = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {} (is something else running there?)", settings.listen))?;
    if settings.listen.port() == 0 {
        settings.public_url = format!("http://{}", public.local_addr()?);
    }

    // The simulator, wired to this configuration's OAuth clients and clinic token.
    let redirect = format!("{}/v1/oauth/dexcom/redirect", settings.public_url.trim_end_matches('/'));
    let sb = sandbox::Sandbox::start(sandbox::SandboxConfig {
        listen: opts.sandbox_listen,
        admin: true,
        ..simulator_config(&settings, &redirect)
    })
    .await
    .with_context(|| format!("starting the simulator on {}", opts.sandbox_listen))?;

    wire_to_simulator(&mut settings, &sb.base_url);

    // The demo patient belongs to the demo clinic (so the clinician may act for them).
    let http = reqwest::Client::new();
    http.post(sb.url("/admin/clinic/patients"))
        .json(&serde_json::json!({"clinicId": CLINIC, "userId": PATIENT, "email": "patient@demo.tidegate.test"}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .context("registering the demo patient with the clinic stand-in")?;

    let app =
        Application::build_on(public, settings.clone(), store.clone(), std::sync::Arc::new(model::SystemClock), None)
            .await?;
    let now = chrono::Utc::now();
    let link = model::LinkTokenId::generate();
    {
        let mut conn = store.acquire().await?;
        store::link_tokens::insert(
            &mut conn,
            &link,
            &model::UserId::parse(PATIENT)?,
            &[model::paths::OAUTH_PREFIX.to_owned()],
            now + chrono::Duration::days(1),
            store::link_tokens::Purpose::Api,
            now,
        )
        .await?;
    }
    let mint = |sub: &str, role: api::Role, clinics: &[&str]| {
        token::mint(
            &settings,
            &TokenRequest {
                sub: sub.into(),
                role,
                clinics: clinics.iter().map(|c| (*c).to_owned()).collect(),
                ttl_secs: Some(24 * 3600),
                private_key: None,
                kid: None,
            },
        )
    };
    let patient = mint(PATIENT, api::Role::Patient, &[])?;
    let clinician = mint(CLINICIAN, api::Role::Clinician, &[CLINIC])?;
    let service = mint("demo-platform", api::Role::Service, &[])?;
    let api_url = format!("http://{}", app.public_addr());
    println!(
        "{}",
        instructions(
            &api_url,
            &format!("http://{}", app.ops_addr()),
            &sb.base_url,
            link.as_str(),
            &patient,
            &clinician,
            &service,
            opts.fast
        )
    );
    let sim = tokio::spawn(sb.wait(std::future::pending()));
    let result = app.run_until(shutdown).await;
    sim.abort();
    result
}

#[allow(clippy::too_many_arguments)]
fn instructions(
    api: &str,
    ops: &str,
    sim: &str,
    link: &str,
    patient: &str,
    clinician: &str,
    service: &str,
    fast: bool,
) -> String {
    let pace = if fast {
        "DEMO SETTING (--fast): polls every 45–75 SECONDS and no maintenance blackouts. Never use this in production."
    } else {
        "Polls every 45–75 minutes, as in production (add --fast to watch polls happen)."
    };
    format!(
        r#"
tidegate demo is running.  {pace}

  API          {api}   (OpenAPI: {api}/openapi.yaml)
  metrics      {ops}/metrics
  dashboard    {ops}/admin   (the demo patient's glucose chart: {ops}/admin/users/{PATIENT})
  simulator    {sim}   (Dexcom, CareLink and the clinic service; admin at {sim}/admin/people)

1. Connect the demo patient's Dexcom account. Open in a browser:
     {api}/v1/oauth/dexcom/authorize?restricted_token={link}
   choose "United States", pick dexcom-001 and press Authorize. You land on a "connected" page.

2. Watch the data arrive: the first poll runs within seconds. Open the patient's chart (reload it):
     {ops}/admin/users/{PATIENT}
   or ask the API as the patient:
     curl -s -H "Authorization: Bearer $PATIENT" '{api}/v1/users/{PATIENT}/data_sources'
     curl -s -H "Authorization: Bearer $PATIENT" '{api}/v1/users/{PATIENT}/data?type=cbg&limit=5'

3. See what the clinic service was told (PUT /v1/patients/{PATIENT}/data_sources); open:
     {sim}/admin/clinic/requests
   and what reached the platform's data service (one data set per source, deduplicated by origin):
     {sim}/admin/platform

4. As the clinician, ask the patient to connect CareLink too (the message and its link are logged):
     curl -s -X POST -H "Authorization: Bearer $CLINICIAN" {api}/v1/clinics/{CLINIC}/patients/{PATIENT}/connect/carelink

Tokens for the commands above (valid 24 hours):
  export PATIENT={patient}
  export CLINICIAN={clinician}
  export SERVICE={service}

Ctrl-C stops everything.
"#
    )
}
