-- Scheduling (DESIGN §5): auth failures are confirmed only after several, over time.
ALTER TABLE poll_schedule ADD COLUMN first_auth_failure_time timestamptz;
-- Why the current next_run_at was chosen: first, regular, stretched, blackout, backoff,
-- auth_backoff, retry_after, budget, breaker, released.
ALTER TABLE poll_schedule ADD COLUMN next_kind text NOT NULL DEFAULT 'first';
CREATE INDEX poll_schedule_provider_due_idx ON poll_schedule (provider, next_run_at) WHERE NOT paused;

-- A partner's call budget, shared by every replica: calls reserved per fixed clock hour.
CREATE TABLE partner_budget (
    provider      text NOT NULL,
    window_start  timestamptz NOT NULL,
    calls         bigint NOT NULL DEFAULT 0 CHECK (calls >= 0),
    PRIMARY KEY (provider, window_start)
);

-- Recent polls, for operators (dashboard) and for tests that check every due poll ran once.
-- Pruned by the workers (worker.history_hours).
CREATE TABLE poll_runs (
    id              bigserial PRIMARY KEY,
    data_source_id  text NOT NULL,
    provider        text NOT NULL,
    owner           uuid NOT NULL,
    due_at          timestamptz NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    -- success, transient, auth, confirmed, permanent, lease_lost, not_pollable, released
    outcome         text NOT NULL,
    calls           integer NOT NULL DEFAULT 0,
    datums_written  integer NOT NULL DEFAULT 0,
    next_run_at     timestamptz,
    next_kind       text,
    error           text
);
CREATE INDEX poll_runs_started_idx ON poll_runs (started_at);
CREATE INDEX poll_runs_source_idx ON poll_runs (data_source_id, started_at);
CREATE INDEX poll_runs_provider_idx ON poll_runs (provider, started_at);
