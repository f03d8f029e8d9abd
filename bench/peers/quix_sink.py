"""Quix Streams with its PostgreSQLSink (upsert on order_id): the stream-processing peer of
order-worker. The benchmark runs it against the same backlog, broker and PostgreSQL as the
worker (bench/src/peers.rs).

The pipeline is what Quix's documentation shows for a sink: a JSON dataframe, a filter for the
events that pass the same validation as the hand-written peer (python_consumer.decode), a row per
event, and `PostgreSQLSink(upsert_on_primary_key=True)`. The sink folds a batch to the last row
per key in read order and overwrites unconditionally (`ON CONFLICT DO UPDATE` without a version
guard), and Quix has no dead-letter route for a sink: invalid events are dropped. The benchmark
reports the final state it leaves beside the oracle's.

Usage: quix_sink.py BROKERS TOPIC GROUP DATABASE_URL
"""

import json
import sys
from urllib.parse import urlparse

from quixstreams import Application
from quixstreams.models.topics import TopicAdmin, TopicConfig
from quixstreams.sinks.community.postgresql import PostgreSQLSink

from python_consumer import Invalid, decode


def row(message):
    """The order's row, or None for an event the contract refuses."""
    key, value = message
    try:
        _, event = decode(key, value)
    except Invalid:
        return None
    return {
        "order_id": event["order_id"],
        "version": event["version"],
        "customer_id": event["customer_id"],
        "status": event["status"],
        "currency": event["currency"],
        "total_minor": event["total_minor"],
        "items": json.dumps(event["items"]),
        "occurred_at": event["occurred_at"],
        "last_event_id": event["event_id"],
        "last_event_type": event["event_type"],
        "source_topic": "",
        "source_partition": 0,
        "source_offset": 0,
    }


def inspect_from_metadata(self, topic_names, timeout=30):
    """Topic configs from metadata alone. Quix asks DescribeConfigs of the controller, which the
    benchmark's broker (tansu) does not name; partitions and replicas are all Quix uses of them
    for a source topic, and the metadata has both."""
    cluster = self.list_topics(timeout=timeout)
    return {
        name: TopicConfig(
            num_partitions=len(cluster[name].partitions),
            replication_factor=len(cluster[name].partitions[0].replicas),
        )
        if name in cluster
        else None
        for name in topic_names
    }


TopicAdmin.inspect_topics = inspect_from_metadata


def main():
    brokers, topic_name, group, url = sys.argv[1:5]
    db = urlparse(url)
    app = Application(
        broker_address=brokers,
        consumer_group=group,
        auto_offset_reset="earliest",
        auto_create_topics=False,
    )
    # Raw bytes in, so that a payload that is not JSON is refused by the same decode as the
    # hand-written peer rather than stopping the application.
    topic = app.topic(topic_name, key_deserializer="bytes", value_deserializer="bytes")
    sink = PostgreSQLSink(
        host=db.hostname,
        port=db.port or 5432,
        dbname=db.path.lstrip("/"),
        user=db.username,
        password=db.password,
        table_name="orders",
        schema_auto_update=False,
        primary_key_columns="order_id",
        upsert_on_primary_key=True,
        include_metadata=False,
    )
    sdf = app.dataframe(topic)
    sdf = sdf.apply(lambda value, key, *_: row((key, value)), metadata=True)
    sdf = sdf.filter(lambda r: r is not None)
    sdf.sink(sink)
    app.run()


if __name__ == "__main__":
    main()
