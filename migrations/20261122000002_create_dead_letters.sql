-- Messages that could not be applied, with their raw bytes and the reason.
-- Unique on the source coordinates: a redelivered message never adds a second row.
CREATE TABLE dead_letters (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    message_key      bytea,
    -- NULL for a tombstone; cut to MAX_PAYLOAD_BYTES when larger (payload_size has the real size).
    payload          bytea,
    payload_size     integer     NOT NULL,
    stage            text        NOT NULL,
    reason           text        NOT NULL,
    error            text        NOT NULL,
    kafka_timestamp  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    replayed_at      timestamptz,
    CONSTRAINT dead_letters_source_key UNIQUE (source_topic, source_partition, source_offset)
);

CREATE INDEX dead_letters_reason_created_at_idx ON dead_letters (reason, created_at);

COMMENT ON TABLE dead_letters IS
    'Kafka messages that were not applied to orders: invalid input or rows PostgreSQL refused.';
