-- One in-flight delivery per (user, kind) across every replica: a lease row, taken only when
-- free or expired. Bodies are built under the lease from the current state, so a newer snapshot
-- can never be overtaken by an older one.
CREATE TABLE outbox_leases (
    user_id      text NOT NULL,
    kind         text NOT NULL,
    lease_owner  uuid NOT NULL,
    lease_until  timestamptz NOT NULL,
    PRIMARY KEY (user_id, kind)
);
