//! `GET /v1/users/{userId}/data_sources`, `GET /v1/data_sources/{id}`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use model::{DataSourceId, DataSourceState, ProviderName, UserId};
use serde::Serialize;
use store::audit::Entry;
use store::data_sources::{DataSource, SourceError};

use crate::access::authorize_user;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/{userId}/data_sources", get(list_for_user))
        .route("/v1/data_sources/{id}", get(get_one))
}

/// A data source as the API shows it: Tidepool's field names where they exist. Never tokens.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceView {
    id: DataSourceId,
    user_id: UserId,
    provider_type: &'static str,
    provider_name: ProviderName,
    state: DataSourceState,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorView>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "model::time::serialize_opt")]
    earliest_data_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "model::time::serialize_opt")]
    latest_data_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "model::time::serialize_opt")]
    last_import_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "model::time::serialize_opt")]
    expiration_time: Option<DateTime<Utc>>,
    /// Records the last import skipped because they broke a data-model rule (not an error of
    /// the source: the rest of the batch was stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_import_skipped: Option<serde_json::Value>,
    /// The platform data set holding this source's data (`tidepool` sink), once created.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    data_set_ids: Vec<String>,
    #[serde(serialize_with = "model::time::serialize")]
    created_time: DateTime<Utc>,
    #[serde(serialize_with = "model::time::serialize")]
    modified_time: DateTime<Utc>,
    revision: i64,
}

#[derive(Debug, Serialize)]
struct ErrorView {
    code: String,
    message: String,
    #[serde(serialize_with = "model::time::serialize")]
    time: DateTime<Utc>,
}

impl From<DataSource> for DataSourceView {
    fn from(s: DataSource) -> Self {
        Self {
            id: s.id,
            user_id: s.user_id,
            provider_type: "oauth",
            provider_name: s.provider,
            state: s.state,
            error: s.error.map(|SourceError { code, message, time }| ErrorView { code, message, time }),
            earliest_data_time: s.earliest_data_time,
            latest_data_time: s.latest_data_time,
            last_import_time: s.last_import_time,
            expiration_time: s.expiration_time,
            last_import_skipped: None,
            data_set_ids: s.data_set_id.into_iter().collect(),
            created_time: s.created_time,
            modified_time: s.modified_time,
            revision: s.revision,
        }
    }
}

async fn audit_read(
    state: &AppState,
    caller: &Caller,
    user: &UserId,
    source: Option<&DataSourceId>,
) -> Result<(), ApiError> {
    let actor = caller.actor();
    state
        .store
        .audit(&Entry {
            actor: &actor,
            action: "read_data_sources",
            user_id: Some(user),
            data_source_id: source,
            detail: serde_json::Value::Null,
            time: state.clock.now(),
        })
        .await?;
    Ok(())
}

async fn list_for_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<Vec<DataSourceView>>, ApiError> {
    let user = UserId::parse(&user)?;
    authorize_user(&state, &caller, &user).await?;
    let sources = state.store.list_data_sources(&user).await?;
    let mut skipped = state.store.last_skipped(&user).await?;
    audit_read(&state, &caller, &user, None).await?;
    Ok(Json(
        sources
            .into_iter()
            .map(|s| {
                let found = skipped.remove(s.id.as_str());
                DataSourceView { last_import_skipped: found, ..s.into() }
            })
            .collect(),
    ))
}

async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DataSourceView>, ApiError> {
    let id =
        DataSourceId::parse(&id).map_err(|e| ApiError::invalid_param("id", format!("must match {}", e.pattern)))?;
    let source = state.store.get_data_source(&id).await?.ok_or(ApiError::NotFound)?;
    // Someone else's source is "not found": ids must not be probeable.
    authorize_user(&state, &caller, &source.user_id).await.map_err(|e| match e {
        ApiError::Forbidden(_) => ApiError::NotFound,
        other => other,
    })?;
    let found = state.store.last_skipped(&source.user_id).await?.remove(source.id.as_str());
    audit_read(&state, &caller, &source.user_id, Some(&source.id)).await?;
    Ok(Json(DataSourceView { last_import_skipped: found, ..source.into() }))
}
