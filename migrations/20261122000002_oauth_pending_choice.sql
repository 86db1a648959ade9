-- A CareLink care partner who follows several patients chooses one after the code exchange:
-- the tokens wait, encrypted, on the authorization row until the choice (or its expiry).
ALTER TABLE oauth_authorizations
    ADD COLUMN pending_access_token  bytea,
    ADD COLUMN pending_refresh_token bytea,
    ADD COLUMN pending_expires_at    timestamptz,
    ADD COLUMN pending_account       jsonb,
    ADD COLUMN completed_at          timestamptz;
