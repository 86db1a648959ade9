-- Delivery leases live in outbox_leases, one per (user, kind), since 20261122000003; the per-row
-- lease owner has not been written since. The comment on available_at no longer holds either.
ALTER TABLE outbox DROP COLUMN lease_owner;
COMMENT ON COLUMN outbox.available_at IS 'Due time of the next delivery attempt.';
