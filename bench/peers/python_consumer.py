"""A competent hand-written Python consumer of the order topic: the peer a team would write
instead of running order-worker. The benchmark runs it against the same backlog, broker and
PostgreSQL as the worker (bench/src/peers.rs).

Per batch: confluent-kafka's `consume(500)`, decode and validate each message (the rules of
docs/contract.md that the benchmark's stream exercises), fold the batch to one row per order
(the highest version), one multi-row upsert that only moves an order forward (`WHERE
orders.version < EXCLUDED.version`) plus one multi-row insert of the batch's dead letters, in one
transaction; then a synchronous offset commit. Idempotent under redelivery, as the worker is.

Usage: python_consumer.py BROKERS TOPIC GROUP DATABASE_URL
"""

import json
import sys
import uuid

import psycopg
from confluent_kafka import Consumer, KafkaError

BATCH = 500
# The currencies the peer accepts: a real consumer would load all of ISO 4217; these are the
# common ones (the benchmark's stream uses four, and ZZZ as its invalid code).
CURRENCIES = {
    "EUR", "USD", "GBP", "JPY", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF", "CAD", "AUD",
    "NZD", "CNY", "HKD", "SGD", "INR", "BRL", "MXN", "ZAR", "TRY", "KRW",
}
STATUSES = {"pending", "confirmed", "paid", "shipped", "delivered", "cancelled"}
REQUIRED = ("event_id", "event_type", "order_id", "version", "occurred_at", "customer_id",
            "status", "currency", "items", "total_minor")

UPSERT = """
INSERT INTO orders (order_id, version, customer_id, status, currency, total_minor, items,
                    occurred_at, last_event_id, last_event_type, source_topic, source_partition,
                    source_offset)
SELECT * FROM unnest(%s::uuid[], %s::int8[], %s::text[], %s::text[], %s::text[], %s::int8[],
                     %s::jsonb[], %s::timestamptz[], %s::uuid[], %s::text[], %s::text[],
                     %s::int4[], %s::int8[])
ON CONFLICT (order_id) DO UPDATE SET
    version = EXCLUDED.version, customer_id = EXCLUDED.customer_id, status = EXCLUDED.status,
    currency = EXCLUDED.currency, total_minor = EXCLUDED.total_minor, items = EXCLUDED.items,
    occurred_at = EXCLUDED.occurred_at, last_event_id = EXCLUDED.last_event_id,
    last_event_type = EXCLUDED.last_event_type, source_topic = EXCLUDED.source_topic,
    source_partition = EXCLUDED.source_partition, source_offset = EXCLUDED.source_offset,
    applied_at = now()
WHERE orders.version < EXCLUDED.version
"""

DEAD_LETTERS = """
INSERT INTO dead_letters (source_topic, source_partition, source_offset, message_key, payload,
                          payload_size, stage, reason, error)
SELECT t, p, o, k, v, s, 'decode', r, e
FROM unnest(%s::text[], %s::int4[], %s::int8[], %s::bytea[], %s::bytea[], %s::int4[],
            %s::text[], %s::text[]) AS x(t, p, o, k, v, s, r, e)
ON CONFLICT ON CONSTRAINT dead_letters_source_key DO NOTHING
"""


class Invalid(Exception):
    def __init__(self, reason, error):
        super().__init__(error)
        self.reason = reason


def decode(key, value):
    if value is None:
        raise Invalid("tombstone", "no value")
    try:
        event = json.loads(value)
    except (UnicodeDecodeError, ValueError) as e:
        raise Invalid("invalid_json", str(e))
    if not isinstance(event, dict) or any(f not in event for f in REQUIRED):
        raise Invalid("schema_violation", "a required field is missing")
    if event.get("schema_version", 1) not in (1, 2):
        raise Invalid("unsupported_schema_version", str(event.get("schema_version")))
    try:
        order_id = uuid.UUID(event["order_id"])
        items = event["items"]
        total = sum(int(i["quantity"]) * int(i["unit_price_minor"]) for i in items)
    except (ValueError, KeyError, TypeError) as e:
        raise Invalid("schema_violation", str(e))
    if event["currency"] not in CURRENCIES:
        raise Invalid("invalid_value", "unknown currency")
    if event["status"] not in STATUSES or not items or int(event["version"]) < 1:
        raise Invalid("invalid_value", "status, items or version")
    if total - int(event.get("discount_minor") or 0) != int(event["total_minor"]):
        raise Invalid("invalid_value", "total_minor is not the sum of the items")
    if key is None or key.decode("utf-8", "replace") != str(order_id):
        raise Invalid("key_mismatch", "the key is not the order id")
    return order_id, event


def write(conn, topic, messages):
    newest = {}
    dead = []
    for m in messages:
        try:
            order_id, event = decode(m.key(), m.value())
        except Invalid as e:
            v = m.value()
            dead.append((topic, m.partition(), m.offset(), m.key(), v,
                         len(v) if v is not None else 0, e.reason, str(e)))
            continue
        held = newest.get(order_id)
        if held is None or held[0]["version"] < event["version"]:
            newest[order_id] = (event, m.partition(), m.offset())
    with conn.transaction():
        if newest:
            rows = list(newest.values())
            cols = [
                [str(e["order_id"]) for e, _, _ in rows],
                [e["version"] for e, _, _ in rows],
                [e["customer_id"] for e, _, _ in rows],
                [e["status"] for e, _, _ in rows],
                [e["currency"] for e, _, _ in rows],
                [e["total_minor"] for e, _, _ in rows],
                [json.dumps(e["items"]) for e, _, _ in rows],
                [e["occurred_at"] for e, _, _ in rows],
                [e["event_id"] for e, _, _ in rows],
                [e["event_type"] for e, _, _ in rows],
                [topic] * len(rows),
                [p for _, p, _ in rows],
                [o for _, _, o in rows],
            ]
            conn.execute(UPSERT, cols)
        if dead:
            conn.execute(DEAD_LETTERS, [list(c) for c in zip(*dead)])


def main():
    brokers, topic, group, url = sys.argv[1:5]
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            messages = consumer.consume(BATCH, timeout=1.0)
            batch = [m for m in messages if m.error() is None]
            for m in messages:
                if m.error() is not None and m.error().code() != KafkaError._PARTITION_EOF:
                    print(f"consume error: {m.error()}", file=sys.stderr)
            if not batch:
                continue
            write(conn, topic, batch)
            consumer.commit(asynchronous=False)


if __name__ == "__main__":
    main()
