//! `data_sources`: one user's link to one partner.

use chrono::{DateTime, Utc};
use model::{DataSourceId, DataSourceState, ProviderName, UserId};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::{Result, Store, StoreError};

/// The confirmed problem behind state `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceError {
    /// Stable machine-readable code, e.g. `authorization_revoked`.
    pub code: String,
    /// A sentence for the patient or clinician (no token, no partner internals).
    pub message: String,
    pub time: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DataSource {
    pub id: DataSourceId,
    pub user_id: UserId,
    pub provider: ProviderName,
    pub state: DataSourceState,
    pub region: Option<String>,
    pub error: Option<SourceError>,
    pub ever_connected: bool,
    pub expiration_time: Option<DateTime<Utc>>,
    pub earliest_data_time: Option<DateTime<Utc>>,
    pub latest_data_time: Option<DateTime<Utc>>,
    pub last_import_time: Option<DateTime<Utc>>,
    pub created_time: DateTime<Utc>,
    pub modified_time: DateTime<Utc>,
    pub revision: i64,
    /// The platform data set holding this source's data (the `tidepool` sink), once created.
    pub data_set_id: Option<String>,
}

struct Row {
    id: String,
    user_id: String,
    provider: String,
    state: String,
    region: Option<String>,
    error: Option<serde_json::Value>,
    ever_connected: bool,
    expiration_time: Option<DateTime<Utc>>,
    earliest_data_time: Option<DateTime<Utc>>,
    latest_data_time: Option<DateTime<Utc>>,
    last_import_time: Option<DateTime<Utc>>,
    created_time: DateTime<Utc>,
    modified_time: DateTime<Utc>,
    revision: i64,
    data_set_id: Option<String>,
}

impl TryFrom<Row> for DataSource {
    type Error = StoreError;
    fn try_from(r: Row) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| StoreError::corrupt("data_sources", e);
        Ok(Self {
            id: DataSourceId::parse(&r.id).map_err(|e| bad(&e))?,
            user_id: UserId::parse(&r.user_id).map_err(|e| bad(&e))?,
            provider: ProviderName::parse(&r.provider).map_err(|e| bad(&e))?,
            state: r.state.parse().map_err(|e| bad(&e))?,
            region: r.region,
            error: r.error.map(serde_json::from_value).transpose().map_err(|e| bad(&e))?,
            ever_connected: r.ever_connected,
            expiration_time: r.expiration_time,
            earliest_data_time: r.earliest_data_time,
            latest_data_time: r.latest_data_time,
            last_import_time: r.last_import_time,
            created_time: r.created_time,
            modified_time: r.modified_time,
            revision: r.revision,
            data_set_id: r.data_set_id,
        })
    }
}

/// The new values of a state change (everything else on the row is kept).
#[derive(Debug, Clone)]
pub struct StateChange {
    pub state: DataSourceState,
    pub error: Option<SourceError>,
    pub expiration_time: Option<DateTime<Utc>>,
    pub region: Option<String>,
    pub now: DateTime<Utc>,
}

impl Store {
    /// Every data source of a user, ordered by provider.
    pub async fn list_data_sources(&self, user: &UserId) -> Result<Vec<DataSource>> {
        let mut conn = self.acquire().await?;
        list_for_user(&mut conn, user).await
    }

    /// One data source by id.
    pub async fn get_data_source(&self, id: &DataSourceId) -> Result<Option<DataSource>> {
        let row = sqlx::query_as!(
            Row,
            r#"SELECT id, user_id, provider, state, region, error, ever_connected, expiration_time,
                      earliest_data_time, latest_data_time, last_import_time, created_time,
                      modified_time, revision, data_set_id
               FROM data_sources WHERE id = $1"#,
            id.as_str()
        )
        .fetch_optional(&mut *self.acquire().await?)
        .await?;
        row.map(DataSource::try_from).transpose()
    }
}

pub async fn list_for_user(conn: &mut PgConnection, user: &UserId) -> Result<Vec<DataSource>> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT id, user_id, provider, state, region, error, ever_connected, expiration_time,
                  earliest_data_time, latest_data_time, last_import_time, created_time,
                  modified_time, revision, data_set_id
           FROM data_sources WHERE user_id = $1 ORDER BY provider"#,
        user.as_str()
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(DataSource::try_from).collect()
}

/// Every source of a user, locked for the rest of the transaction.
pub async fn lock_all_for_user(conn: &mut PgConnection, user: &UserId) -> Result<Vec<DataSource>> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT id, user_id, provider, state, region, error, ever_connected, expiration_time,
                  earliest_data_time, latest_data_time, last_import_time, created_time,
                  modified_time, revision, data_set_id
           FROM data_sources WHERE user_id = $1 ORDER BY provider FOR UPDATE"#,
        user.as_str()
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(DataSource::try_from).collect()
}

/// The user's source for a provider, locked for the rest of the transaction.
pub async fn lock(conn: &mut PgConnection, user: &UserId, provider: &ProviderName) -> Result<Option<DataSource>> {
    let row = sqlx::query_as!(
        Row,
        r#"SELECT id, user_id, provider, state, region, error, ever_connected, expiration_time,
                  earliest_data_time, latest_data_time, last_import_time, created_time,
                  modified_time, revision, data_set_id
           FROM data_sources WHERE user_id = $1 AND provider = $2 FOR UPDATE"#,
        user.as_str(),
        provider.as_str()
    )
    .fetch_optional(conn)
    .await?;
    row.map(DataSource::try_from).transpose()
}

/// A source by id, locked for the rest of the transaction.
pub async fn lock_by_id(conn: &mut PgConnection, id: &DataSourceId) -> Result<Option<DataSource>> {
    let row = sqlx::query_as!(
        Row,
        r#"SELECT id, user_id, provider, state, region, error, ever_connected, expiration_time,
                  earliest_data_time, latest_data_time, last_import_time, created_time,
                  modified_time, revision, data_set_id
           FROM data_sources WHERE id = $1 FOR UPDATE"#,
        id.as_str()
    )
    .fetch_optional(conn)
    .await?;
    row.map(DataSource::try_from).transpose()
}

/// Create the user's source for a provider (callers hold the decision from [`model::transition`]).
pub async fn insert(
    conn: &mut PgConnection,
    user: &UserId,
    provider: &ProviderName,
    change: &StateChange,
) -> Result<DataSource> {
    let id = DataSourceId::generate();
    let error = change
        .error
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| StoreError::corrupt("data_sources", e))?;
    let row = sqlx::query_as!(
        Row,
        r#"INSERT INTO data_sources (id, user_id, provider, state, region, error, ever_connected,
                                     expiration_time, created_time, modified_time)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
           RETURNING id, user_id, provider, state, region, error, ever_connected, expiration_time,
                     earliest_data_time, latest_data_time, last_import_time, created_time,
                     modified_time, revision, data_set_id"#,
        id.as_str(),
        user.as_str(),
        provider.as_str(),
        change.state.as_str(),
        change.region,
        error,
        change.state == DataSourceState::Connected,
        change.expiration_time,
        change.now
    )
    .fetch_one(conn)
    .await?;
    DataSource::try_from(row)
}

/// Apply a state change to an existing source; bumps `revision` and `modifiedTime`.
pub async fn update_state(conn: &mut PgConnection, id: &DataSourceId, change: &StateChange) -> Result<DataSource> {
    let error = change
        .error
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| StoreError::corrupt("data_sources", e))?;
    let row = sqlx::query_as!(
        Row,
        r#"UPDATE data_sources
           SET state = $2, error = $3, expiration_time = $4, region = COALESCE($5, region),
               ever_connected = ever_connected OR $2 = 'connected',
               modified_time = $6, revision = revision + 1
           WHERE id = $1
           RETURNING id, user_id, provider, state, region, error, ever_connected, expiration_time,
                     earliest_data_time, latest_data_time, last_import_time, created_time,
                     modified_time, revision, data_set_id"#,
        id.as_str(),
        change.state.as_str(),
        error,
        change.expiration_time,
        change.region,
        change.now
    )
    .fetch_one(conn)
    .await?;
    DataSource::try_from(row)
}

/// Erasure: delete every `data_sources` row of a user. Returns how many went.
pub async fn delete_for_user(conn: &mut PgConnection, user: &model::UserId) -> Result<u64> {
    let done = sqlx::query!("DELETE FROM data_sources WHERE user_id = $1", user.as_str()).execute(conn).await?;
    Ok(done.rows_affected())
}

/// Data sources per (provider, state), for the `sources by state` gauge and the dashboard.
pub async fn count_by_state(conn: &mut PgConnection) -> Result<Vec<(String, String, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT provider, state, count(*) AS "n!" FROM data_sources GROUP BY provider, state ORDER BY provider, state"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.provider, r.state, r.n)).collect())
}
