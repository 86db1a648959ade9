//! The service clock: the system clock, or one following an external clock (the simulator's
//! admin clock at `clock.external_url`, which answers `{"now": "<RFC 3339>"}`).

use std::sync::Arc;
use std::time::Duration;

use crate::TaskGuard;
use chrono::{DateTime, Utc};
use model::{OffsetClock, SharedClock, SystemClock};
use serde::Deserialize;

use crate::configuration::{ClockConfig, ClockSource};

#[derive(Deserialize)]
struct ExternalNow {
    now: DateTime<Utc>,
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<DateTime<Utc>, String> {
    let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    Ok(resp.json::<ExternalNow>().await.map_err(|e| e.to_string())?.now)
}

/// Build the configured clock. An external clock is synced once before this returns (so nothing
/// runs on the wrong time) and then kept in step by a background task, stopped when the returned
/// guard is dropped.
pub async fn build(cfg: &ClockConfig) -> anyhow::Result<(SharedClock, Option<TaskGuard>)> {
    match cfg.source {
        ClockSource::System => Ok((Arc::new(SystemClock), None)),
        ClockSource::External => {
            let url = cfg.external_url.clone().ok_or_else(|| anyhow::anyhow!("clock.external_url missing"))?;
            let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
            let clock = Arc::new(OffsetClock::new());
            let mut last_err = String::new();
            let mut synced = false;
            for _ in 0..60 {
                let observed = Utc::now();
                match fetch(&http, &url).await {
                    Ok(now) => {
                        clock.sync_to(now, observed);
                        synced = true;
                        break;
                    }
                    Err(e) => last_err = e,
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if !synced {
                anyhow::bail!("clock.external_url {url} did not answer within 30 s: {last_err}");
            }
            let follower = clock.clone();
            let interval = Duration::from_millis(cfg.sync_interval_ms.max(10));
            let task = tokio::spawn(async move {
                let mut failing = false;
                loop {
                    tokio::time::sleep(interval).await;
                    let observed = Utc::now();
                    match fetch(&http, &url).await {
                        Ok(now) => {
                            follower.sync_to(now, observed);
                            if failing {
                                tracing::info!("external clock reachable again");
                                failing = false;
                            }
                        }
                        Err(e) if !failing => {
                            tracing::warn!(error = %e, "external clock unreachable; running on the last offset");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                }
            });
            Ok((clock, Some(TaskGuard(task))))
        }
    }
}
