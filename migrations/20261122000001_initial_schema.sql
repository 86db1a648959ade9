-- tidegate: first schema. Every timestamp is timestamptz and written from the service clock
-- (bound parameters), never from now(), so simulated time works end to end.
-- Every user-owned table carries user_id and every query is keyed by it (or by a data-source id
-- that implies it), so the tables can later be distributed by user_id without a rewrite.

-- One user's link to one partner.
CREATE TABLE data_sources (
    id                  text PRIMARY KEY CHECK (id ~ '^[a-f0-9]{24}$'),
    user_id             text NOT NULL,
    provider            text NOT NULL CHECK (provider ~ '^[a-z][a-z0-9-]{0,31}$'),
    state               text NOT NULL
        CHECK (state IN ('pending', 'pendingReconnect', 'connected', 'disconnected', 'error')),
    -- Partner region (Dexcom us/eu/jp, CareLink us/eu) when the partner has regions.
    region              text,
    -- The confirmed problem behind state 'error': {code, message, time}. Transient trouble is
    -- recorded on the poll schedule, never here.
    error               jsonb,
    -- Whether this source was connected at some point (decides pending vs pendingReconnect).
    ever_connected      boolean NOT NULL DEFAULT false,
    -- Expiry of the outstanding connection request (pending states only).
    expiration_time     timestamptz,
    earliest_data_time  timestamptz,
    latest_data_time    timestamptz,
    last_import_time    timestamptz,
    created_time        timestamptz NOT NULL,
    modified_time       timestamptz NOT NULL,
    revision            bigint NOT NULL DEFAULT 1,
    CONSTRAINT data_sources_user_provider_key UNIQUE (user_id, provider),
    CONSTRAINT data_sources_error_only_in_error CHECK ((state = 'error') = (error IS NOT NULL)),
    CONSTRAINT data_sources_expiry_only_pending
        CHECK (expiration_time IS NULL OR state IN ('pending', 'pendingReconnect'))
);
CREATE INDEX data_sources_state_idx ON data_sources (provider, state);

-- The partner's tokens for one data source, encrypted with AES-256-GCM (key id stored beside
-- the ciphertexts; the associated data binds each ciphertext to this row and column).
CREATE TABLE provider_sessions (
    data_source_id      text PRIMARY KEY REFERENCES data_sources (id) ON DELETE CASCADE,
    user_id             text NOT NULL,
    provider            text NOT NULL,
    region              text,
    -- The partner account's stable id (Dexcom userId; CareLink username/role/patient): one
    -- partner account is linked to at most one of our users.
    partner_account_id  text NOT NULL,
    key_id              text NOT NULL,
    access_token        bytea NOT NULL,
    refresh_token       bytea,
    access_expires_at   timestamptz,
    scope               text,
    created_time        timestamptz NOT NULL,
    modified_time       timestamptz NOT NULL,
    CONSTRAINT provider_sessions_partner_account_key UNIQUE (provider, partner_account_id)
);
CREATE INDEX provider_sessions_user_idx ON provider_sessions (user_id);

-- One in-flight OAuth attempt. Single use, short-lived; secrets stored hashed or encrypted.
CREATE TABLE oauth_authorizations (
    id                  uuid PRIMARY KEY,
    -- SHA-256 of the state parameter (the state itself is never stored).
    state_hash          bytea NOT NULL UNIQUE,
    -- SHA-256 of the browser-binding nonce carried in the HttpOnly cookie.
    browser_binding_hash bytea NOT NULL,
    user_id             text NOT NULL,
    provider            text NOT NULL,
    region              text,
    -- SHA-256 of the link token that started this attempt (consumed on success).
    link_token_hash     bytea,
    -- PKCE verifier, encrypted like provider tokens (NULL when the partner has no PKCE).
    key_id              text,
    pkce_verifier       bytea,
    created_time        timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    used_at             timestamptz
);
CREATE INDEX oauth_authorizations_expiry_idx ON oauth_authorizations (expires_at);
CREATE INDEX oauth_authorizations_user_idx ON oauth_authorizations (user_id);

-- Restricted link tokens (Tidepool's restricted_tokens): path-scoped, expiring, stored hashed.
CREATE TABLE link_tokens (
    token_hash          bytea PRIMARY KEY,
    user_id             text NOT NULL,
    paths               text[] NOT NULL CHECK (cardinality(paths) BETWEEN 1 AND 10),
    expiration_time     timestamptz NOT NULL,
    created_time        timestamptz NOT NULL,
    modified_time       timestamptz NOT NULL,
    consumed_time       timestamptz,
    -- Who minted it: 'api' (owner or service), 'connection_request' (clinician message).
    purpose             text NOT NULL CHECK (purpose IN ('api', 'connection_request'))
);
CREATE INDEX link_tokens_user_idx ON link_tokens (user_id);

-- A clinician's request that a patient connect a partner.
CREATE TABLE connection_requests (
    id                  uuid PRIMARY KEY,
    clinic_id           text NOT NULL CHECK (clinic_id ~ '^[a-f0-9]{24}$'),
    user_id             text NOT NULL,
    provider            text NOT NULL,
    requested_by        text NOT NULL,
    link_token_hash     bytea REFERENCES link_tokens (token_hash) ON DELETE SET NULL,
    created_time        timestamptz NOT NULL,
    expiration_time     timestamptz NOT NULL
);
CREATE INDEX connection_requests_patient_idx ON connection_requests (user_id, provider);
CREATE INDEX connection_requests_clinic_idx ON connection_requests (clinic_id, user_id);

-- One row per polled data source (DESIGN §5): next_run_at is the due time and, while claimed,
-- the lease expiry.
CREATE TABLE poll_schedule (
    data_source_id      text PRIMARY KEY REFERENCES data_sources (id) ON DELETE CASCADE,
    user_id             text NOT NULL,
    provider            text NOT NULL,
    next_run_at         timestamptz NOT NULL,
    lease_owner         uuid,
    paused              boolean NOT NULL DEFAULT false,
    -- Consecutive failures (transient or auth) since the last success.
    attempts            integer NOT NULL DEFAULT 0,
    auth_failures       integer NOT NULL DEFAULT 0,
    last_error          text,
    last_error_time     timestamptz,
    last_success_time   timestamptz,
    -- Where the next incremental window starts (per-partner cursor, e.g. Dexcom endDate).
    cursor              jsonb,
    created_time        timestamptz NOT NULL,
    modified_time       timestamptz NOT NULL
);
CREATE INDEX poll_schedule_due_idx ON poll_schedule (next_run_at) WHERE NOT paused;

-- Datums in the Tidepool device data model. The key holds the time column so the table can be
-- partitioned by time later; user_id leads so it can be distributed by user.
CREATE TABLE datums (
    user_id             text NOT NULL,
    id                  text NOT NULL CHECK (id ~ '^[0-9a-z]{32}$'),
    time                timestamptz NOT NULL,
    data_source_id      text NOT NULL,
    type                text NOT NULL,
    body                jsonb NOT NULL,
    created_time        timestamptz NOT NULL,
    modified_time       timestamptz NOT NULL,
    PRIMARY KEY (user_id, id, time)
);
CREATE INDEX datums_user_time_idx ON datums (user_id, time, type);
CREATE INDEX datums_source_idx ON datums (data_source_id, time);

-- Deliveries that must not be lost: clinic reports and patient messages, written in the same
-- transaction as the change that needs them.
CREATE TABLE outbox (
    id                  bigserial PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('clinic_report', 'patient_message')),
    user_id             text NOT NULL,
    payload             jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_time        timestamptz NOT NULL,
    -- Due time for the next attempt (doubles as lease expiry while claimed).
    available_at        timestamptz NOT NULL,
    lease_owner         uuid,
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    delivered_time      timestamptz,
    parked_time         timestamptz
);
CREATE INDEX outbox_due_idx ON outbox (available_at)
    WHERE delivered_time IS NULL AND parked_time IS NULL;
CREATE INDEX outbox_user_idx ON outbox (user_id, kind);

-- Append-only audit log: who connected, disconnected, requested, read.
CREATE TABLE audit_log (
    id                  bigserial PRIMARY KEY,
    time                timestamptz NOT NULL,
    actor_sub           text NOT NULL,
    actor_role          text NOT NULL,
    action              text NOT NULL,
    user_id             text,
    data_source_id      text,
    detail              jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_user_idx ON audit_log (user_id, time);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
