//! State changes of a data source together with everything that must commit with them: the
//! session and schedule rows, the clinic report in the outbox, and the audit entry.

use chrono::{DateTime, Utc};
use model::{Event, ProviderName, Transition, UserId, transition};

use crate::audit::{self, Actor, Entry};
use crate::data_sources::{self, DataSource, StateChange};
use crate::outbox::{Message, PatientMessage, PatientMessageKind, SealedLink};
use crate::{
    Result, Store, connection_requests, datums, link_tokens, oauth_authorizations, outbox, poll_schedule,
    provider_sessions,
};

/// What an erasure removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseScope {
    /// Imported datums only; data sources stay as they are.
    Imported,
    /// Everything of the user's: datums, data sources, tokens, schedules, link tokens, OAuth
    /// attempts, connection requests and undelivered messages. Audit entries stay (they are the
    /// record that the erasure happened).
    Everything,
}

/// What an erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Erased {
    pub datums: u64,
    pub data_sources: u64,
    pub provider_sessions: u64,
    pub connection_requests: u64,
    pub link_tokens: u64,
    pub oauth_authorizations: u64,
    pub messages: u64,
}

/// Carry an erasure to the platform: the erased sources' data sets are deleted there first, and
/// the deliveries still queued for the user give way to that (the delivery that follows sends
/// whatever the user's other sources still hold).
async fn carry_erasure(
    conn: &mut sqlx::PgConnection,
    user: &UserId,
    data_sets: Vec<String>,
    now: DateTime<Utc>,
) -> Result<()> {
    if data_sets.is_empty() {
        return Ok(());
    }
    outbox::delete_platform_rows_for_user(conn, user).await?;
    let message = Message::PlatformData(outbox::PlatformData { erase_data_sets: data_sets, ..Default::default() });
    outbox::enqueue(conn, user, &message, now).await
}

impl Store {
    /// Erase a user's data (see [`EraseScope`]) in one transaction, audited. Partner-side
    /// revocation is the caller's, before this. With `Everything`, a clinic report is queued so
    /// the clinic learns the sources are gone.
    pub async fn erase_user(
        &self,
        actor: &Actor,
        user: &UserId,
        scope: EraseScope,
        now: DateTime<Utc>,
    ) -> Result<Erased> {
        let mut tx = self.begin().await?;
        // Lock the user's sources first: a concurrent connect or poll waits for us.
        let sources = data_sources::lock_all_for_user(&mut tx, user).await?;
        let erasure = datums::erase(&mut tx, user, None).await?;
        let mut e = Erased { datums: erasure.datums, ..Erased::default() };
        carry_erasure(&mut tx, user, erasure.data_sets, now).await?;
        if scope == EraseScope::Everything {
            e.provider_sessions = provider_sessions::delete_for_user(&mut tx, user).await?;
            poll_schedule::delete_for_user(&mut tx, user).await?;
            e.data_sources = data_sources::delete_for_user(&mut tx, user).await?;
            e.connection_requests = connection_requests::delete_for_user(&mut tx, user).await?;
            e.link_tokens = link_tokens::delete_for_user(&mut tx, user).await?;
            e.oauth_authorizations = oauth_authorizations::delete_for_user(&mut tx, user).await?;
            e.messages = outbox::delete_messages_for_user(&mut tx, user).await?;
            if !sources.is_empty() {
                outbox::enqueue_clinic_report(&mut tx, user, now).await?;
            }
        }
        audit::record(
            &mut tx,
            &Entry {
                actor,
                action: if scope == EraseScope::Everything { "erase_user" } else { "erase_data" },
                user_id: Some(user),
                data_source_id: None,
                detail: serde_json::to_value(e).unwrap_or_default(),
                time: now,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(e)
    }
}

impl Store {
    /// Disconnect a user's source for a provider: delete its tokens and schedule, set
    /// `disconnected`, queue a clinic report, audit. Idempotent: disconnecting what is already
    /// disconnected (or never existed) changes nothing and returns the current source, if any.
    ///
    /// With `delete_data`, the source's imported datums go in the same transaction (also when it
    /// was already disconnected).
    ///
    /// Revocation at the partner (where it has an endpoint) is the caller's, before this.
    pub async fn disconnect(
        &self,
        actor: &Actor,
        user: &UserId,
        provider: &ProviderName,
        delete_data: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<DataSource>> {
        let mut tx = self.begin().await?;
        // Dropping `tx` without commit rolls back (nothing was written).
        let Some(source) = data_sources::lock(&mut tx, user, provider).await? else {
            return Ok(None);
        };
        let erased = if delete_data {
            let erasure = datums::erase(&mut tx, user, Some(&source.id)).await?;
            carry_erasure(&mut tx, user, erasure.data_sets, now).await?;
            Some(erasure.datums)
        } else {
            None
        };
        let Transition::To(state) = transition(Some(source.state), source.ever_connected, Event::Disconnected) else {
            if let Some(n) = erased {
                audit::record(
                    &mut tx,
                    &Entry {
                        actor,
                        action: "erase_data",
                        user_id: Some(user),
                        data_source_id: Some(&source.id),
                        detail: serde_json::json!({ "datums": n }),
                        time: now,
                    },
                )
                .await?;
                let current = data_sources::lock_by_id(&mut tx, &source.id).await?;
                tx.commit().await?;
                return Ok(current);
            }
            return Ok(Some(source));
        };
        provider_sessions::delete(&mut tx, &source.id).await?;
        poll_schedule::delete(&mut tx, &source.id).await?;
        let change = StateChange { state, error: None, expiration_time: None, region: None, now };
        let updated = data_sources::update_state(&mut tx, &source.id, &change).await?;
        outbox::enqueue_clinic_report(&mut tx, user, now).await?;
        audit::record(
            &mut tx,
            &Entry {
                actor,
                action: "disconnect",
                user_id: Some(user),
                data_source_id: Some(&source.id),
                detail: serde_json::json!({ "provider": provider.as_str(), "from": source.state, "erasedDatums": erased }),
                time: now,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Some(updated))
    }
}

/// Why a connection was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The partner account is already linked to another of our users.
    #[error("the partner account is already linked to another user")]
    AccountLinkedElsewhere,
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

/// A successful code exchange, ready to store.
#[derive(Debug, Clone)]
pub struct Connection {
    pub user: UserId,
    pub provider: ProviderName,
    pub region: Option<String>,
    pub partner_account_id: String,
    pub access_token: secrecy::SecretString,
    pub refresh_token: Option<secrecy::SecretString>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub scope: Option<String>,
    /// The link token the flow started from (consumed now).
    pub link_token_hash: Option<Vec<u8>>,
    /// When the first poll should run (within a minute, jittered).
    pub first_poll_at: DateTime<Utc>,
}

impl Store {
    /// Store a new connection, replacing any older session of the same source — only now, after
    /// the code exchange succeeded — in one transaction with the schedule, the clinic report, the
    /// audit entry and the link token's consumption.
    pub async fn connect(&self, actor: &Actor, c: &Connection, now: DateTime<Utc>) -> Result<DataSource, ConnectError> {
        let mut tx = self.begin().await?;
        let current = data_sources::lock(&mut tx, &c.user, &c.provider).await?;
        let ever = current.as_ref().is_some_and(|s| s.ever_connected);
        let state = match transition(current.as_ref().map(|s| s.state), ever, Event::Connected) {
            Transition::To(s) => s,
            Transition::Unchanged => model::DataSourceState::Connected,
        };
        let change = StateChange { state, error: None, expiration_time: None, region: c.region.clone(), now };
        let source = match &current {
            Some(s) => data_sources::update_state(&mut tx, &s.id, &change).await?,
            None => data_sources::insert(&mut tx, &c.user, &c.provider, &change).await?,
        };
        let session = provider_sessions::NewSession {
            data_source_id: source.id.clone(),
            user_id: c.user.clone(),
            provider: c.provider.clone(),
            region: c.region.clone(),
            partner_account_id: c.partner_account_id.clone(),
            access_token: c.access_token.clone(),
            refresh_token: c.refresh_token.clone(),
            access_expires_at: c.access_expires_at,
            scope: c.scope.clone(),
        };
        match provider_sessions::upsert(&mut tx, &self.keys, &session, now).await {
            Ok(()) => {}
            Err(crate::StoreError::Conflict { constraint })
                if constraint == "provider_sessions_partner_account_key" =>
            {
                return Err(ConnectError::AccountLinkedElsewhere);
            }
            Err(e) => return Err(e.into()),
        }
        poll_schedule::start(&mut tx, &source.id, &c.user, &c.provider, c.first_poll_at, now).await?;
        outbox::enqueue_clinic_report(&mut tx, &c.user, now).await?;
        if let Some(h) = &c.link_token_hash {
            crate::link_tokens::consume(&mut tx, h, now).await?;
        }
        audit::record(
            &mut tx,
            &Entry {
                actor,
                action: "connect",
                user_id: Some(&c.user),
                data_source_id: Some(&source.id),
                detail: serde_json::json!({ "provider": c.provider.as_str(), "region": c.region, "from": current.map(|s| s.state) }),
                time: now,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(source)
    }
}

/// One broken invariant (DESIGN §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub data_source_id: String,
    pub rule: &'static str,
}

/// Check the data-source invariants over the whole database (used by tests after every
/// scenario, and shipped as `tidegate doctor`).
pub async fn check_invariants(store: &Store) -> crate::Result<Vec<Violation>> {
    let rules: [(&'static str, &'static str); 8] = [
        (
            "connected ⇒ provider session exists",
            "SELECT d.id FROM data_sources d LEFT JOIN provider_sessions s ON s.data_source_id = d.id
             WHERE d.state = 'connected' AND s.data_source_id IS NULL",
        ),
        (
            "connected ⇒ active poll schedule exists",
            "SELECT d.id FROM data_sources d LEFT JOIN poll_schedule p ON p.data_source_id = d.id
             WHERE d.state = 'connected' AND (p.data_source_id IS NULL OR p.paused)",
        ),
        (
            "disconnected ⇒ no provider session",
            "SELECT d.id FROM data_sources d JOIN provider_sessions s ON s.data_source_id = d.id WHERE d.state = 'disconnected'",
        ),
        (
            "disconnected ⇒ no poll schedule",
            "SELECT d.id FROM data_sources d JOIN poll_schedule p ON p.data_source_id = d.id WHERE d.state = 'disconnected'",
        ),
        (
            "error ⇒ error recorded",
            "SELECT id FROM data_sources WHERE (state = 'error') <> (error IS NOT NULL)",
        ),
        (
            "error ⇒ poll schedule paused",
            "SELECT d.id FROM data_sources d JOIN poll_schedule p ON p.data_source_id = d.id WHERE d.state = 'error' AND NOT p.paused",
        ),
        (
            "pending ⇒ expiration time set, not polled",
            "SELECT d.id FROM data_sources d LEFT JOIN poll_schedule p ON p.data_source_id = d.id AND NOT p.paused
             WHERE d.state IN ('pending', 'pendingReconnect') AND (d.expiration_time IS NULL OR p.data_source_id IS NOT NULL)",
        ),
        (
            "imported data ⇒ earliest/latest/last import times set",
            "SELECT d.id FROM data_sources d WHERE EXISTS (SELECT 1 FROM datums x WHERE x.data_source_id = d.id)
             AND (d.earliest_data_time IS NULL OR d.latest_data_time IS NULL OR d.last_import_time IS NULL)",
        ),
    ];
    let mut out = Vec::new();
    for (rule, sql) in rules {
        let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(store.pool()).await?;
        out.extend(ids.into_iter().map(|data_source_id| Violation { data_source_id, rule }));
    }
    Ok(out)
}

/// A clinician's request, ready to store.
#[derive(Debug, Clone)]
pub struct RequestConnection {
    pub clinic_id: model::ClinicId,
    pub user: UserId,
    pub provider: ProviderName,
    /// The link the patient receives (a fresh link token), as `{public_url}/v1/oauth/{provider}/authorize?restricted_token=`.
    pub link_base: String,
    pub ttl: chrono::Duration,
}

/// What a connection request did.
#[derive(Debug, Clone)]
pub enum RequestOutcome {
    /// The source is now pending (or pendingReconnect); a message with a link is queued.
    Requested(Box<DataSource>),
    /// The source is connected: nothing to ask.
    AlreadyConnected,
}

impl Store {
    /// Record a clinician's request: source `pending`/`pendingReconnect` with the request's
    /// expiry, a 30-day link token, the request row, the patient's message (link sealed), the
    /// clinic report and the audit entry — one transaction.
    pub async fn request_connection(
        &self,
        actor: &Actor,
        r: &RequestConnection,
        now: DateTime<Utc>,
    ) -> crate::Result<RequestOutcome> {
        let mut tx = self.begin().await?;
        let current = data_sources::lock(&mut tx, &r.user, &r.provider).await?;
        let ever = current.as_ref().is_some_and(|s| s.ever_connected);
        let Transition::To(state) = transition(current.as_ref().map(|s| s.state), ever, Event::ConnectionRequested)
        else {
            return Ok(RequestOutcome::AlreadyConnected);
        };
        let expires = now + r.ttl;
        let change = StateChange { state, error: None, expiration_time: Some(expires), region: None, now };
        let source = match &current {
            Some(s) => {
                // A source in `error` keeps its (dead) tokens until the patient reconnects; its
                // paused schedule goes, so the pending invariant holds.
                poll_schedule::delete(&mut tx, &s.id).await?;
                data_sources::update_state(&mut tx, &s.id, &change).await?
            }
            None => data_sources::insert(&mut tx, &r.user, &r.provider, &change).await?,
        };
        let link = model::LinkTokenId::generate();
        let paths = vec![model::paths::oauth_prefix(&r.provider)];
        let token = crate::link_tokens::insert(
            &mut tx,
            &link,
            &r.user,
            &paths,
            expires,
            crate::link_tokens::Purpose::ConnectionRequest,
            now,
        )
        .await?;
        let request = crate::connection_requests::ConnectionRequest {
            id: uuid::Uuid::new_v4(),
            clinic_id: r.clinic_id.clone(),
            user_id: r.user.clone(),
            provider: r.provider.clone(),
            requested_by: actor.sub.clone(),
            created_time: now,
            expiration_time: expires,
        };
        crate::connection_requests::insert(&mut tx, &request, &token.token_hash).await?;
        let url = secrecy::SecretString::from(format!("{}{}", r.link_base, link.as_str()));
        let sealed = self.keys.seal_secret(&url, &message_link_aad(&r.user, &request.id));
        let message = PatientMessage {
            kind: if state == model::DataSourceState::PendingReconnect {
                PatientMessageKind::ReconnectRequest
            } else {
                PatientMessageKind::ConnectionRequest
            },
            request_id: request.id,
            clinic_id: Some(r.clinic_id.clone()),
            provider: r.provider.clone(),
            reason: None,
            expiration_time: expires,
            link: SealedLink { key_id: sealed.key_id, sealed: hex::encode(sealed.bytes) },
        };
        outbox::enqueue(&mut tx, &r.user, &Message::Patient(message), now).await?;
        outbox::enqueue_clinic_report(&mut tx, &r.user, now).await?;
        audit::record(
            &mut tx,
            &Entry {
                actor,
                action: "request_connection",
                user_id: Some(&r.user),
                data_source_id: Some(&source.id),
                detail: serde_json::json!({ "provider": r.provider.as_str(), "clinicId": r.clinic_id, "state": state }),
                time: now,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(RequestOutcome::Requested(Box::new(source)))
    }

    /// Open the sealed link of a queued patient message (for its delivery).
    pub fn open_message_link(&self, user: &UserId, message: &PatientMessage) -> crate::Result<secrecy::SecretString> {
        let bytes = hex::decode(&message.link.sealed).map_err(|e| crate::StoreError::corrupt("outbox", e))?;
        Ok(self.keys.open_secret(&message.link.key_id, &bytes, &message_link_aad(user, &message.request_id))?)
    }
}

fn message_link_aad(user: &UserId, request: &uuid::Uuid) -> Vec<u8> {
    crate::crypto::aad("outbox", &format!("{user}/{request}"), "link")
}

/// The "reconnect your account" message a confirmed failure sends the patient.
#[derive(Debug, Clone)]
pub struct ReconnectNotice {
    /// `{public_url}/v1/oauth/{provider}/authorize?restricted_token=` (the link token follows).
    pub link_base: String,
    /// Lifetime of the link (30 days).
    pub ttl: chrono::Duration,
}

impl Store {
    /// A confirmed authorization failure or a permanent partner error: state `error` with the
    /// reason, polling paused, clinic report and audit entry — and, with `notice`, a message
    /// to the patient with a fresh link to reconnect — one transaction. A source that is no
    /// longer connected (disconnected meanwhile) is left alone.
    pub async fn fail(
        &self,
        actor: &Actor,
        id: &model::DataSourceId,
        error: &data_sources::SourceError,
        notice: Option<&ReconnectNotice>,
        now: DateTime<Utc>,
    ) -> crate::Result<Option<DataSource>> {
        let mut tx = self.begin().await?;
        let Some(source) = data_sources::lock_by_id(&mut tx, id).await? else { return Ok(None) };
        let Transition::To(state) = transition(Some(source.state), source.ever_connected, Event::Failed) else {
            return Ok(Some(source));
        };
        let change = StateChange { state, error: Some(error.clone()), expiration_time: None, region: None, now };
        let updated = data_sources::update_state(&mut tx, id, &change).await?;
        poll_schedule::pause(&mut tx, id, now).await?;
        outbox::enqueue_clinic_report(&mut tx, &source.user_id, now).await?;
        if let Some(n) = notice {
            let expires = now + n.ttl;
            let link = model::LinkTokenId::generate();
            let paths = vec![model::paths::oauth_prefix(&source.provider)];
            crate::link_tokens::insert(
                &mut tx,
                &link,
                &source.user_id,
                &paths,
                expires,
                crate::link_tokens::Purpose::ConnectionRequest,
                now,
            )
            .await?;
            // The clinic that last asked for this source knows the patient's address.
            let clinic = connection_requests::latest_clinic(&mut tx, &source.user_id, &source.provider).await?;
            let message_id = uuid::Uuid::new_v4();
            let url = secrecy::SecretString::from(format!("{}{}", n.link_base, link.as_str()));
            let sealed = self.keys.seal_secret(&url, &message_link_aad(&source.user_id, &message_id));
            let message = PatientMessage {
                kind: PatientMessageKind::ReconnectNeeded,
                request_id: message_id,
                clinic_id: clinic.and_then(|c| model::ClinicId::parse(&c).ok()),
                provider: source.provider.clone(),
                reason: Some(error.code.clone()),
                expiration_time: expires,
                link: SealedLink { key_id: sealed.key_id, sealed: hex::encode(sealed.bytes) },
            };
            outbox::enqueue(&mut tx, &source.user_id, &Message::Patient(message), now).await?;
        }
        audit::record(
            &mut tx,
            &Entry {
                actor,
                action: "fail",
                user_id: Some(&source.user_id),
                data_source_id: Some(id),
                detail: serde_json::json!({ "code": error.code, "notified": notice.is_some() }),
                time: now,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Some(updated))
    }
}
