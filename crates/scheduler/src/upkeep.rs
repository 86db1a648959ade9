//! Table upkeep beside the workers: `datums` partitions made ahead of the data and, with a
//! platform sink, delivered datums older than the retention window pruned (see
//! `store::partitions`). Any number of replicas may run it: each step is done once under an
//! advisory lock, and a step whose locks are busy is left to the next round.

use std::time::Duration;

use model::SharedClock;
use store::Store;

#[derive(Debug, Clone)]
pub struct UpkeepSettings {
    /// Between rounds.
    pub every: Duration,
    /// Partitions are made this far back (first imports reach back this far) …
    pub behind: chrono::Duration,
    /// … and this far ahead.
    pub ahead: chrono::Duration,
    /// With a platform sink: delivered datums older than this are pruned. `None`: the local
    /// table is the archive.
    pub retention: Option<chrono::Duration>,
}

#[derive(Debug, Clone)]
pub struct Upkeep {
    store: Store,
    clock: SharedClock,
    settings: UpkeepSettings,
}

impl Upkeep {
    pub fn new(store: Store, clock: SharedClock, settings: UpkeepSettings) -> Self {
        Self { store, clock, settings }
    }

    /// One round: make partitions, prune.
    pub async fn round(&self) -> store::Result<()> {
        let now = self.clock.now();
        let mut from = now - self.settings.behind;
        if let Some(retention) = self.settings.retention {
            // Never make a partition the next prune would drop.
            from = from.max(now - retention);
        }
        let made = self.store.ensure_partitions(from, now + self.settings.ahead, now).await?;
        if made > 0 {
            metrics::counter!("tidegate_datum_partitions_made_total").increment(made);
        }
        if let Some(retention) = self.settings.retention {
            let began = std::time::Instant::now();
            let p = self.store.prune_datums(now - retention).await?;
            metrics::counter!("tidegate_datums_pruned_total").increment(p.rows + p.default_rows);
            if p.partitions + p.default_rows + p.deferred > 0 {
                tracing::info!(
                    partitions = p.partitions,
                    rows = p.rows,
                    kept_undelivered = p.kept,
                    default_rows = p.default_rows,
                    deferred = p.deferred,
                    ms = began.elapsed().as_millis() as u64,
                    "datums past retention pruned"
                );
            }
        }
        metrics::gauge!("tidegate_datum_partitions").set(self.store.datum_partitions().await?.len() as f64);
        Ok(())
    }

    /// Rounds until `stop` turns true.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "table upkeep failed; retrying next round");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.every) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
        }
    }
}
