-- Platform delivery (the `tidepool` sink): every datum write gets a sequence number, and each data
-- source remembers how far its delivery has gone. A source's backlog is its datums with
-- seq > delivered_seq; polls of one source are serialised by the schedule row's lock, so per
-- source the sequence grows in commit order and a delivery mark never skips an uncommitted write.

CREATE SEQUENCE datums_seq AS bigint;
-- Set on insert and again on every change of a datum's body (the version).
ALTER TABLE datums ADD COLUMN seq bigint NOT NULL DEFAULT nextval('datums_seq');
ALTER SEQUENCE datums_seq OWNED BY datums.seq;
-- Replaces (data_source_id, time): the delivery reads a source's datums in seq order, and every
-- other per-source query only needs the leading column.
DROP INDEX datums_source_idx;
CREATE INDEX datums_source_seq_idx ON datums (data_source_id, seq);

ALTER TABLE data_sources
    -- The seq of the source's latest datum write (0: none).
    ADD COLUMN datum_seq bigint NOT NULL DEFAULT 0,
    -- Delivered to the platform up to and including this seq.
    ADD COLUMN delivered_seq bigint NOT NULL DEFAULT 0,
    -- The platform data set (type upload, dataSetType continuous) holding this source's data.
    ADD COLUMN data_set_id text,
    -- The timezoneOffset last written to that data set.
    ADD COLUMN data_set_timezone_offset integer,
    -- When a delivery last completed for this source.
    ADD COLUMN delivered_time timestamptz;
UPDATE data_sources s SET datum_seq = COALESCE((SELECT max(seq) FROM datums d WHERE d.data_source_id = s.id), 0);
-- Sources with something to deliver (the backfill sweep and the dashboard read it).
CREATE INDEX data_sources_undelivered_idx ON data_sources (user_id) WHERE datum_seq > delivered_seq;

-- Datums removed locally (deleted or moved at the partner, or erased with their source) that
-- must be removed from the platform data set too. Only written for sources that have a data set.
CREATE TABLE platform_deletions (
    id              bigserial PRIMARY KEY,
    data_source_id  text NOT NULL REFERENCES data_sources (id) ON DELETE CASCADE,
    user_id         text NOT NULL,
    -- Our datum id: a datum with this id stored again later (a record that came back) is
    -- uploaded instead, and the deletion is dropped.
    datum_id        text NOT NULL,
    origin_id       text NOT NULL,
    created_time    timestamptz NOT NULL
);
CREATE INDEX platform_deletions_source_idx ON platform_deletions (data_source_id, id);

-- Datum versions the platform refused (HTTP 400 naming them): kept with the reason, never
-- retried until the datum changes.
CREATE TABLE datum_rejections (
    data_source_id  text NOT NULL REFERENCES data_sources (id) ON DELETE CASCADE,
    user_id         text NOT NULL,
    datum_id        text NOT NULL,
    -- The version refused.
    seq             bigint NOT NULL,
    type            text NOT NULL,
    reason          text NOT NULL,
    rejected_time   timestamptz NOT NULL,
    PRIMARY KEY (data_source_id, datum_id)
);

ALTER TABLE outbox DROP CONSTRAINT outbox_kind_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_kind_check
    CHECK (kind IN ('clinic_report', 'patient_message', 'platform_data'));
-- Delivered platform rows are pruned (one is written per poll that changed datums).
CREATE INDEX outbox_delivered_idx ON outbox (kind, delivered_time) WHERE delivered_time IS NOT NULL;
