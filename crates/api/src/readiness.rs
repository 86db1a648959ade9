//! `/readyz`: the database answers and every migration is applied. Changes are logged once, when
//! they happen, so an operator sees "database unreachable" and "database reachable again".

use std::sync::Mutex;
use std::time::Duration;

use store::{Readiness, Store};

#[derive(Debug, Default)]
pub struct ReadinessProbe {
    last: Mutex<Option<Readiness>>,
}

impl ReadinessProbe {
    pub fn new() -> Self {
        Self::default()
    }

    /// Check now (bounded by a 3-second timeout) and log if the answer changed.
    pub async fn check(&self, store: &Store) -> Readiness {
        let now =
            tokio::time::timeout(Duration::from_secs(3), store.readiness()).await.unwrap_or(Readiness::Unreachable);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref() != Some(&now) {
            match &now {
                Readiness::Ready => tracing::info!("database reachable and migrated: ready"),
                Readiness::Unreachable => {
                    tracing::error!("database unreachable: not ready (answering 503 on /readyz until it returns)")
                }
                Readiness::NotMigrated { missing } => {
                    tracing::warn!(?missing, "database reachable but migrations are not applied: not ready")
                }
            }
            *last = Some(now.clone());
        }
        now
    }
}
