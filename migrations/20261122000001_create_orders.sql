-- Current state of every order: one row per order, the highest version seen wins.
-- Each row also says where its state came from (the event and the Kafka coordinates),
-- which is how an operator traces a row back to the message that set it.
CREATE TABLE orders (
    order_id         uuid        PRIMARY KEY,
    version          bigint      NOT NULL CHECK (version >= 1),
    customer_id      text        NOT NULL,
    status           text        NOT NULL CHECK (status IN
                         ('pending', 'confirmed', 'paid', 'shipped', 'delivered', 'cancelled')),
    currency         char(3)     NOT NULL,
    total_minor      bigint      NOT NULL CHECK (total_minor >= 0),
    items            jsonb       NOT NULL,
    occurred_at      timestamptz NOT NULL,
    last_event_id    uuid        NOT NULL,
    last_event_type  text        NOT NULL,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    first_applied_at timestamptz NOT NULL DEFAULT now(),
    applied_at       timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE orders IS
    'Current state of each order, applied idempotently from Kafka order events (contract v1).';
COMMENT ON COLUMN orders.version IS
    'Version of the event that set this state; an event with a lower or equal version is ignored.';
