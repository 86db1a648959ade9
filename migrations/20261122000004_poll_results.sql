-- What the last successful poll skipped (records that broke a rule), for operators and support:
-- {"time", "total", "reasons": {code: {"count", "example"}}}. Null when nothing was skipped.
ALTER TABLE poll_schedule ADD COLUMN last_skipped jsonb;
