//! Connections and transactions handed out by [`Store`], and the gate that bounds how many a
//! group of callers (a poll worker's polls) holds at once.
//!
//! The pool's own acquire timeout cannot tell "every connection is busy" from "the database
//! cannot be reached": both end in `PoolTimedOut`. Here they are told apart — a timeout while
//! every connection of the pool is open and lent out is [`StoreError::PoolBusy`]; anything else
//! is [`StoreError::Unavailable`] — and a gated caller waits for its turn for as long as the gate
//! allows (its poll's budget), not the pool's few seconds: a burst of work queues instead of
//! failing.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::{Result, Store, StoreError};

/// At most `slots` connections at once for the callers sharing this gate; each waits for one at
/// most `wait`. Cloning shares the slots.
#[derive(Debug, Clone)]
pub struct Gate {
    permits: Arc<Semaphore>,
    slots: usize,
    wait: Duration,
}

impl Gate {
    pub fn new(slots: usize, wait: Duration) -> Self {
        let slots = slots.max(1);
        Self { permits: Arc::new(Semaphore::new(slots)), slots, wait }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }
}

/// A pooled connection (and, from a gated store, its slot). Derefs to the connection.
#[derive(Debug)]
pub struct Conn {
    conn: PoolConnection<Postgres>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Deref for Conn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

/// An open transaction (and, from a gated store, its slot). Derefs to the connection; dropped
/// without [`Tx::commit`], it rolls back.
#[derive(Debug)]
pub struct Tx {
    tx: Transaction<'static, Postgres>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Tx {
    pub async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }

    pub async fn rollback(self) -> Result<()> {
        Ok(self.tx.rollback().await?)
    }
}

impl Deref for Tx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

impl Store {
    /// This store with its connections taken through `gate` (the poll worker's polls): at most
    /// `gate.slots()` at once, each waiting its turn up to the gate's wait.
    pub fn gated(&self, gate: Gate) -> Store {
        Store { gate: Some(gate), ..self.clone() }
    }

    /// The gate this store's connections go through, if any.
    pub fn gate(&self) -> Option<&Gate> {
        self.gate.as_ref()
    }

    /// A connection. Fails with [`StoreError::PoolBusy`] when none came free in time, and with
    /// [`StoreError::Unavailable`] only when the database could not be reached.
    pub async fn acquire(&self) -> Result<Conn> {
        let (slot, deadline) = self.slot().await?;
        let conn = self.retry_busy(deadline, || self.pool.acquire()).await?;
        Ok(Conn { conn, _slot: slot })
    }

    /// Begin a transaction (same failures as [`Store::acquire`]).
    pub async fn begin(&self) -> Result<Tx> {
        let (slot, deadline) = self.slot().await?;
        let tx = self.retry_busy(deadline, || self.pool.begin()).await?;
        Ok(Tx { tx, _slot: slot })
    }

    /// Begin a transaction without queueing at the gate, for the one write that must not wait
    /// behind other polls: tokens a partner has just rotated (a crash while queued would lose
    /// them, and with single-use refresh tokens, the grant). The pool keeps connections beyond
    /// the gate, so this waits for the pool only.
    pub(crate) async fn begin_urgent(&self) -> Result<Tx> {
        let deadline = Instant::now() + self.gate.as_ref().map(|g| g.wait).unwrap_or_default();
        let tx = self.retry_busy(deadline, || self.pool.begin()).await?;
        Ok(Tx { tx, _slot: None })
    }

    /// Wait for a slot of the gate (none needed without one). Returns it and the deadline the
    /// caller may keep waiting for a connection until.
    async fn slot(&self) -> Result<(Option<OwnedSemaphorePermit>, Instant)> {
        let Some(gate) = &self.gate else {
            // Ungated: one try, as long as the pool's acquire timeout.
            return Ok((None, Instant::now()));
        };
        let started = Instant::now();
        let deadline = started + gate.wait;
        let permit = match gate.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match tokio::time::timeout_at(deadline, gate.permits.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                // Closed never happens (the semaphore is never closed); treat as busy all the same.
                Ok(Err(_)) | Err(_) => {
                    metrics::counter!("tidegate_db_pool_busy_total", "at" => "gate").increment(1);
                    return Err(StoreError::PoolBusy);
                }
            },
        };
        metrics::histogram!("tidegate_db_gate_wait_seconds").record(started.elapsed().as_secs_f64());
        Ok((Some(permit), deadline))
    }

    /// Run a pool acquisition; a `PoolTimedOut` while every connection is lent out is the pool
    /// being busy — tried again until `deadline`, then [`StoreError::PoolBusy`]. A timeout with
    /// connections missing from the pool means they could not be opened: unavailable.
    async fn retry_busy<T, F, Fut>(&self, deadline: Instant, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, sqlx::Error>>,
    {
        loop {
            match attempt().await {
                Ok(t) => return Ok(t),
                Err(sqlx::Error::PoolTimedOut) if self.pool_is_full() => {
                    if Instant::now() >= deadline {
                        metrics::counter!("tidegate_db_pool_busy_total", "at" => "pool").increment(1);
                        return Err(StoreError::PoolBusy);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Every connection the pool may hold is open (and, after a timeout, all of them in use).
    fn pool_is_full(&self) -> bool {
        !self.pool.is_closed() && self.pool.size() >= self.pool.options().get_max_connections()
    }
}
