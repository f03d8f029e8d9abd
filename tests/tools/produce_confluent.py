#!/usr/bin/env python3
"""Publishes order events with Confluent's own serializers, as a producer team would.

Reads events in the JSON contract's form (JSON Lines, one event per line) and publishes each,
keyed by its order_id, through confluent-kafka's AvroSerializer (schema/order_event.avsc) or
ProtobufSerializer (schema/order_event.proto), which register their schema with the schema
registry and frame each value in Confluent's wire format. The Protobuf message type is built
at run time from the compiled descriptors the worker's build emits (--descriptors), so no
protoc is needed.

Prints "N acknowledged, M failed"; exits 1 if any failed.
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

ROOT = Path(__file__).resolve().parents[2]


def timestamp(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def avro_record(event):
    shipping = event.get("shipping")
    return {
        "schema_version": event.get("schema_version", 1),
        "event_id": event["event_id"],
        "event_type": event["event_type"],
        "order_id": event["order_id"],
        "version": event["version"],
        "occurred_at": timestamp(event["occurred_at"]),
        "customer_id": event["customer_id"],
        "status": event["status"],
        "currency": event["currency"],
        "items": event["items"],
        "total_minor": event["total_minor"],
        "discount_minor": event.get("discount_minor"),
        "shipping": None
        if shipping is None
        else {
            "method": shipping["method"],
            "country": shipping["country"],
            "postal_code": shipping.get("postal_code"),
            "city": shipping.get("city"),
        },
    }


def protobuf_type(descriptors):
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from google.protobuf import timestamp_pb2  # noqa: F401 (registers timestamp.proto)

    pool = descriptor_pool.Default()
    files = descriptor_pb2.FileDescriptorSet.FromString(Path(descriptors).read_bytes())
    for f in files.file:
        try:
            pool.FindFileByName(f.name)
        except KeyError:
            pool.AddSerializedFile(f.SerializeToString())
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("order_worker.contract.OrderEvent")
    )


def protobuf_message(cls, event):
    m = cls()
    m.schema_version = event.get("schema_version", 1)
    m.event_id = event["event_id"]
    m.event_type = cls.DESCRIPTOR.fields_by_name["event_type"].enum_type.values_by_name[
        "EVENT_TYPE_" + event["event_type"].upper()
    ].number
    m.order_id = event["order_id"]
    m.version = event["version"]
    m.occurred_at.FromDatetime(timestamp(event["occurred_at"]))
    m.customer_id = event["customer_id"]
    m.status = cls.DESCRIPTOR.fields_by_name["status"].enum_type.values_by_name[
        "ORDER_STATUS_" + event["status"].upper()
    ].number
    m.currency = event["currency"]
    for item in event["items"]:
        line = m.items.add()
        line.sku = item["sku"]
        line.quantity = item["quantity"]
        line.unit_price_minor = item["unit_price_minor"]
    m.total_minor = event["total_minor"]
    if event.get("discount_minor") is not None:
        m.discount_minor = event["discount_minor"]
    shipping = event.get("shipping")
    if shipping is not None:
        method = m.DESCRIPTOR.fields_by_name["shipping"].message_type.fields_by_name["method"]
        m.shipping.method = method.enum_type.values_by_name[
            "SHIPPING_METHOD_" + shipping["method"].upper()
        ].number
        m.shipping.country = shipping["country"]
        for field in ("postal_code", "city"):
            if shipping.get(field) is not None:
                setattr(m.shipping, field, shipping[field])
    return m


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--format", choices=["avro", "protobuf"], required=True)
    parser.add_argument("--events", help="JSON Lines file (default: standard input)")
    parser.add_argument("--descriptors", help="order_event.proto compiled (FileDescriptorSet)")
    args = parser.parse_args()

    registry = SchemaRegistryClient({"url": args.registry})
    if args.format == "avro":
        schema = (ROOT / "schema" / "order_event.avsc").read_text()
        serializer = AvroSerializer(registry, schema, lambda e, _ctx: avro_record(e))
        encode = lambda event: event  # noqa: E731
    else:
        cls = protobuf_type(args.descriptors)
        serializer = ProtobufSerializer(cls, registry, {"use.deprecated.format": False})
        encode = lambda event: protobuf_message(cls, event)  # noqa: E731

    lines = Path(args.events).read_text().splitlines() if args.events else sys.stdin
    producer = Producer({"bootstrap.servers": args.brokers, "acks": "all"})
    outcome = {"acked": 0, "failed": 0}

    def delivered(err, _msg):
        outcome["failed" if err else "acked"] += 1
        if err:
            print(f"delivery failed: {err}", file=sys.stderr)

    for line in lines:
        if not line.strip():
            continue
        event = json.loads(line)
        ctx = SerializationContext(args.topic, MessageField.VALUE)
        value = serializer(encode(event), ctx)
        producer.produce(args.topic, key=event["order_id"], value=value, on_delivery=delivered)
        producer.poll(0)
    producer.flush(30)
    print(f"{outcome['acked']} acknowledged, {outcome['failed']} failed")
    sys.exit(1 if outcome["failed"] else 0)


if __name__ == "__main__":
    main()
