-- A token refresh in flight: who is refreshing and until when (the database's own clock). The
-- partner call runs with no transaction open; others wait for this lease instead of a row lock.
ALTER TABLE provider_sessions
    ADD COLUMN refresh_owner uuid,
    ADD COLUMN refresh_until timestamptz;
