-- Datums partitioned by time (weekly ranges made by tidegate, see crates/store/src/partitions.rs),
-- so that with a platform sink the local table is a bounded buffer: retention drops whole
-- partitions (after moving out what was not delivered), a cost that does not grow with the
-- table. Rows outside every partition wait in the default partition until one covers them.
-- Existing rows land in the default partition; the first upkeep moves them into partitions.

ALTER TABLE datums RENAME TO datums_before_partitioning;
ALTER TABLE datums_before_partitioning RENAME CONSTRAINT datums_pkey TO datums_before_partitioning_pkey;
ALTER INDEX datums_user_time_idx RENAME TO datums_before_partitioning_user_time_idx;
ALTER INDEX datums_source_seq_idx RENAME TO datums_before_partitioning_source_seq_idx;

CREATE TABLE datums (
    user_id             text NOT NULL,
    id                  text NOT NULL CHECK (id ~ '^[0-9a-z]{32}$'),
    time                timestamptz NOT NULL,
    data_source_id      text NOT NULL,
    type                text NOT NULL,
    body                jsonb NOT NULL,
    created_time        timestamptz NOT NULL,
    modified_time       timestamptz NOT NULL,
    seq                 bigint NOT NULL DEFAULT nextval('datums_seq'),
    PRIMARY KEY (user_id, id, time)
) PARTITION BY RANGE (time);
CREATE INDEX datums_user_time_idx ON datums (user_id, time, type);
CREATE INDEX datums_source_seq_idx ON datums (data_source_id, seq);
CREATE TABLE datums_default PARTITION OF datums DEFAULT;

-- The partitions tidegate made (so it never parses pg_catalog's bound expressions).
CREATE TABLE datum_partitions (
    name          text PRIMARY KEY CHECK (name ~ '^datums_p[0-9]{8}$'),
    lo            timestamptz NOT NULL,
    hi            timestamptz NOT NULL CHECK (lo < hi),
    created_time  timestamptz NOT NULL
);

INSERT INTO datums (user_id, id, time, data_source_id, type, body, created_time, modified_time, seq)
    SELECT user_id, id, time, data_source_id, type, body, created_time, modified_time, seq
    FROM datums_before_partitioning;
ALTER SEQUENCE datums_seq OWNED BY datums.seq;
DROP TABLE datums_before_partitioning;
