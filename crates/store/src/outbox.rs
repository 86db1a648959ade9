//! `outbox`: deliveries written in the same transaction as the change that needs them. What a
//! row asks for is one typed [`Message`], written ([`enqueue`]) and read ([`pending`]) only
//! here; the row's `kind` column is the queue (one destination each), its `payload` the message's
//! body.

use chrono::{DateTime, Utc};
use model::{ClinicId, ProviderName, UserId};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Result;

/// One delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Report the user's data sources to the clinic service. The body is built at delivery
    /// time from the user's current sources, so queuing needs no payload and bursts coalesce.
    ClinicReport,
    /// Tell a patient to connect or reconnect an account.
    Patient(PatientMessage),
    /// Deliver the user's new datums (and deletions) to the platform data service. Like a
    /// clinic report, the datums are read at delivery time, so bursts coalesce; the message
    /// itself only carries what cannot be read then.
    PlatformData(PlatformData),
}

/// What a platform delivery must do besides sending the user's undelivered datums.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PlatformData {
    /// Data sets to delete first (the user's data was erased here).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub erase_data_sets: Vec<String>,
    /// Send the source's datums again from this seq on (a delivery that outlived its lease may
    /// have overwritten newer versions there): (data source id, seq).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resend_from: Vec<(String, i64)>,
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Self::ClinicReport => Kind::ClinicReport,
            Self::Patient(_) => Kind::PatientMessage,
            Self::PlatformData(_) => Kind::PlatformData,
        }
    }
}

/// Why a patient is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatientMessageKind {
    /// A clinician asks the patient to connect an account.
    ConnectionRequest,
    /// A clinician asks the patient to reconnect an account that stopped working.
    ReconnectRequest,
    /// A confirmed failure: the account must be reconnected for data to keep arriving.
    ReconnectNeeded,
}

/// A message to a patient. The link it carries is sealed under the token keys (bound to the user
/// and `request_id`); only [`crate::Store::open_message_link`] opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientMessage {
    pub kind: PatientMessageKind,
    pub request_id: Uuid,
    /// The clinic that knows the patient's address (`None`: no clinic ever asked).
    pub clinic_id: Option<ClinicId>,
    pub provider: ProviderName,
    /// The data-source error code behind a `reconnect_needed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(serialize_with = "model::time::serialize", deserialize_with = "model::time::deserialize")]
    pub expiration_time: DateTime<Utc>,
    pub link: SealedLink,
}

/// A sealed link: the key it is sealed under and the ciphertext, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SealedLink {
    pub key_id: String,
    pub sealed: String,
}

/// Queue a delivery for a user, in the caller's transaction.
pub async fn enqueue(conn: &mut PgConnection, user: &UserId, message: &Message, now: DateTime<Utc>) -> Result<()> {
    let payload = match message {
        Message::ClinicReport => serde_json::Value::Object(Default::default()),
        Message::Patient(m) => serde_json::to_value(m).map_err(|e| crate::StoreError::corrupt("outbox", e))?,
        Message::PlatformData(m) => serde_json::to_value(m).map_err(|e| crate::StoreError::corrupt("outbox", e))?,
    };
    sqlx::query!(
        r#"INSERT INTO outbox (kind, user_id, payload, created_time, available_at)
           VALUES ($1, $2, $3, $4, $4)"#,
        message.kind().as_str(),
        user.as_str(),
        payload,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Queue a clinic report for a user ([`Message::ClinicReport`]).
pub async fn enqueue_clinic_report(conn: &mut PgConnection, user: &UserId, now: DateTime<Utc>) -> Result<()> {
    enqueue(conn, user, &Message::ClinicReport, now).await
}

/// Queue a platform delivery of the user's undelivered datums, in the caller's transaction.
/// (The delivery reads the datums when it runs, so the rows of many polls coalesce into one
/// delivery; a row is still written every time, since one read by a delivery in flight may be
/// settled before this write's datums were seen.)
pub async fn enqueue_platform_delivery(conn: &mut PgConnection, user: &UserId, now: DateTime<Utc>) -> Result<()> {
    enqueue(conn, user, &Message::PlatformData(PlatformData::default()), now).await
}

/// A delivery kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ClinicReport,
    PatientMessage,
    PlatformData,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClinicReport => "clinic_report",
            Self::PatientMessage => "patient_message",
            Self::PlatformData => "platform_data",
        }
    }
}

/// Users with due deliveries of a kind whose delivery lease is free, oldest first. (A user
/// whose lease another deliverer holds, or a crashed one held, waits for it to be released or
/// to expire; left in, such users would fill the batch and starve everyone behind them.)
pub async fn due_users(conn: &mut PgConnection, kind: Kind, now: DateTime<Utc>, limit: i64) -> Result<Vec<UserId>> {
    let rows = sqlx::query_scalar!(
        r#"SELECT o.user_id AS "user_id!" FROM outbox o
           WHERE o.kind = $1 AND o.delivered_time IS NULL AND o.parked_time IS NULL AND o.available_at <= $2
             AND NOT EXISTS (SELECT 1 FROM outbox_leases l
                             WHERE l.user_id = o.user_id AND l.kind = o.kind AND l.lease_until > $2)
           GROUP BY o.user_id ORDER BY min(o.available_at) LIMIT $3"#,
        kind.as_str(),
        now,
        limit
    )
    .fetch_all(conn)
    .await?;
    rows.iter().map(|u| UserId::parse(u).map_err(|e| crate::StoreError::corrupt("outbox", e))).collect()
}

/// Take the (user, kind) delivery lease when free or expired.
pub async fn acquire_lease(
    conn: &mut PgConnection,
    user: &UserId,
    kind: Kind,
    owner: Uuid,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let got = sqlx::query_scalar!(
        r#"INSERT INTO outbox_leases (user_id, kind, lease_owner, lease_until) VALUES ($1, $2, $3, $4)
           ON CONFLICT (user_id, kind) DO UPDATE SET lease_owner = EXCLUDED.lease_owner, lease_until = EXCLUDED.lease_until
           WHERE outbox_leases.lease_until <= $5 OR outbox_leases.lease_owner = $3
           RETURNING user_id"#,
        user.as_str(),
        kind.as_str(),
        owner,
        until,
        now
    )
    .fetch_optional(conn)
    .await?;
    Ok(got.is_some())
}

pub async fn release_lease(conn: &mut PgConnection, user: &UserId, kind: Kind, owner: Uuid) -> Result<()> {
    sqlx::query!(
        "DELETE FROM outbox_leases WHERE user_id = $1 AND kind = $2 AND lease_owner = $3",
        user.as_str(),
        kind.as_str(),
        owner
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An undelivered row.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    /// The message, or why its payload cannot be read (the deliverer parks such a row).
    pub message: std::result::Result<Message, String>,
    pub attempts: i32,
}

fn read(kind: Kind, payload: serde_json::Value) -> std::result::Result<Message, String> {
    match kind {
        Kind::ClinicReport => Ok(Message::ClinicReport),
        Kind::PatientMessage => serde_json::from_value(payload)
            .map(Message::Patient)
            .map_err(|e| format!("unreadable patient message: {e}")),
        Kind::PlatformData => serde_json::from_value(payload)
            .map(Message::PlatformData)
            .map_err(|e| format!("unreadable platform delivery: {e}")),
    }
}

/// The user's undelivered, unparked rows of a kind (due or not: a report covers them all).
pub async fn pending(conn: &mut PgConnection, user: &UserId, kind: Kind) -> Result<Vec<Row>> {
    let rows = sqlx::query!(
        r#"SELECT id, payload, attempts FROM outbox
           WHERE user_id = $1 AND kind = $2 AND delivered_time IS NULL AND parked_time IS NULL ORDER BY id"#,
        user.as_str(),
        kind.as_str()
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| Row { id: r.id, message: read(kind, r.payload), attempts: r.attempts }).collect())
}

/// What happened to a delivery of rows `ids`.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered,
    /// Try again at `next`.
    Retry {
        next: DateTime<Utc>,
        error: String,
    },
    /// Refused for good (kept for `tidegate report` / operators).
    Parked {
        error: String,
    },
}

/// Record an outcome for `ids`, fenced by the lease: a deliverer whose lease was taken over
/// records nothing. Returns the rows changed.
pub async fn settle(
    conn: &mut PgConnection,
    user: &UserId,
    kind: Kind,
    owner: Uuid,
    ids: &[i64],
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> Result<u64> {
    let (delivered, parked, next, error) = match outcome {
        Outcome::Delivered => (Some(now), None, None, None),
        Outcome::Retry { next, error } => (None, None, Some(*next), Some(error.as_str())),
        Outcome::Parked { error } => (None, Some(now), None, Some(error.as_str())),
    };
    let done = sqlx::query!(
        r#"UPDATE outbox SET delivered_time = $4, parked_time = $5, available_at = COALESCE($6, available_at),
               attempts = attempts + CASE WHEN $4::timestamptz IS NULL THEN 1 ELSE 0 END,
               last_error = COALESCE($7, last_error)
           WHERE user_id = $1 AND kind = $2 AND id = ANY($3)
             AND EXISTS (SELECT 1 FROM outbox_leases l WHERE l.user_id = $1 AND l.kind = $2 AND l.lease_owner = $8)"#,
        user.as_str(),
        kind.as_str(),
        ids,
        delivered,
        parked,
        next,
        error,
        owner
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Queue a fresh clinic report for one user or for every user with a data source
/// (`tidegate report`). Returns how many were queued.
pub async fn requeue_reports(conn: &mut PgConnection, user: Option<&UserId>, now: DateTime<Utc>) -> Result<u64> {
    let done = sqlx::query!(
        r#"INSERT INTO outbox (kind, user_id, created_time, available_at)
           SELECT DISTINCT 'clinic_report', user_id, $2::timestamptz, $2::timestamptz FROM data_sources
           WHERE $1::text IS NULL OR user_id = $1"#,
        user.map(UserId::as_str),
        now
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

impl crate::Store {
    /// Queue a fresh clinic report for one user or for every user with a data source
    /// (`tidegate report`). Returns how many were queued.
    pub async fn requeue_reports(&self, user: Option<&UserId>, now: DateTime<Utc>) -> Result<u64> {
        let mut conn = self.acquire().await?;
        requeue_reports(&mut conn, user, now).await
    }
}

/// Depth and the oldest undelivered row's creation time, per kind (for metrics).
pub async fn stats(conn: &mut PgConnection) -> Result<Vec<(String, i64, Option<DateTime<Utc>>, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT kind AS "kind!",
                  count(*) FILTER (WHERE delivered_time IS NULL AND parked_time IS NULL) AS "depth!",
                  min(created_time) FILTER (WHERE delivered_time IS NULL AND parked_time IS NULL) AS oldest,
                  count(*) FILTER (WHERE parked_time IS NOT NULL) AS "parked!"
           FROM outbox GROUP BY kind"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.kind, r.depth, r.oldest, r.parked)).collect())
}

/// Erasure: delete a user's undelivered patient messages (they hold links and addresses).
/// Clinic reports stay: the clinic must learn that the sources are gone.
pub async fn delete_messages_for_user(conn: &mut PgConnection, user: &UserId) -> Result<u64> {
    let done = sqlx::query!("DELETE FROM outbox WHERE user_id = $1 AND kind = 'patient_message'", user.as_str())
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// Erasure: drop a user's undelivered platform deliveries (the data they would send is gone);
/// the caller queues the data-set deletions in their place.
pub async fn delete_platform_rows_for_user(conn: &mut PgConnection, user: &UserId) -> Result<u64> {
    let done = sqlx::query!(
        "DELETE FROM outbox WHERE user_id = $1 AND kind = 'platform_data' AND delivered_time IS NULL",
        user.as_str()
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Queue a platform delivery for every user with a source whose datums are not all delivered
/// (or with deletions to carry) and no delivery pending: the sink was switched on, or a
/// delivery was lost. Returns how many were queued. Reads only the sources with a backlog.
pub async fn requeue_platform_backlog(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<u64> {
    let done = sqlx::query!(
        r#"INSERT INTO outbox (kind, user_id, created_time, available_at)
           SELECT 'platform_data', u.user_id, $1::timestamptz, $1::timestamptz
           FROM (SELECT user_id FROM data_sources WHERE datum_seq > delivered_seq
                 UNION SELECT user_id FROM platform_deletions) u
           WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.user_id = u.user_id AND o.kind = 'platform_data'
                               AND o.delivered_time IS NULL AND o.parked_time IS NULL)"#,
        now
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Delete delivered rows of a kind older than `before` (at most `limit`): platform deliveries
/// write a row per changing poll, and a delivered one says nothing the data does not.
pub async fn prune_delivered(conn: &mut PgConnection, kind: Kind, before: DateTime<Utc>, limit: i64) -> Result<u64> {
    let done = sqlx::query!(
        r#"DELETE FROM outbox WHERE id IN (
               SELECT id FROM outbox WHERE kind = $1 AND delivered_time < $2 ORDER BY delivered_time LIMIT $3)"#,
        kind.as_str(),
        before,
        limit
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Extend a held (user, kind) lease (long deliveries renew it between requests). False when
/// another deliverer has taken it.
pub async fn renew_lease(
    conn: &mut PgConnection,
    user: &UserId,
    kind: Kind,
    owner: Uuid,
    until: DateTime<Utc>,
) -> Result<bool> {
    let done = sqlx::query!(
        "UPDATE outbox_leases SET lease_until = GREATEST(lease_until, $4) WHERE user_id = $1 AND kind = $2 AND lease_owner = $3",
        user.as_str(),
        kind.as_str(),
        owner,
        until
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
