#!/usr/bin/env python3
"""A Kafka-protocol broker whose partition 0 holds committed transactions, for as long as its
standard input stays open.

The broker is librdkafka's mock cluster, started inside this process by the librdkafka that
confluent-kafka bundles: unlike the librdkafka the worker links, its mock writes a transaction's
commit marker into the log, and tansu does not serve EndTxn. Each line of --transactions is a
JSON array of events (the JSON contract's form), published keyed by order_id in one transaction
of a transactional producer and committed.

Prints "bootstrap HOST:PORT" and then "end N" (partition 0's high watermark) once published.
"""

import argparse
import json
import logging
import re
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition


class Bootstrap(logging.Handler):
    """librdkafka names the mock cluster's address only in the log line that enables it."""

    address = None

    def emit(self, record):
        found = re.search(r"replaced with (\S+?),?$", record.getMessage())
        if found:
            Bootstrap.address = found.group(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True)
    parser.add_argument("--transactions", required=True)
    args = parser.parse_args()

    log = logging.getLogger("mock")
    log.addHandler(Bootstrap())
    log.setLevel(logging.DEBUG)
    host = Producer({"test.mock.num.brokers": 1, "bootstrap.servers": "mock", "logger": log})
    deadline = time.monotonic() + 10
    while Bootstrap.address is None and time.monotonic() < deadline:
        host.poll(0.1)
    if Bootstrap.address is None:
        sys.exit("the mock cluster did not say its address")
    print("bootstrap", Bootstrap.address, flush=True)

    producer = Producer({"bootstrap.servers": Bootstrap.address, "transactional.id": "orders"})
    producer.init_transactions(30)
    with open(args.transactions) as lines:
        for line in lines:
            producer.begin_transaction()
            for event in json.loads(line):
                value = json.dumps(event).encode()
                producer.produce(args.topic, key=event["order_id"], value=value, partition=0)
            producer.commit_transaction(30)

    watcher = Consumer({"bootstrap.servers": Bootstrap.address, "group.id": "watermarks"})
    _, end = watcher.get_watermark_offsets(TopicPartition(args.topic, 0), timeout=10)
    watcher.close()
    print("end", end, flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
