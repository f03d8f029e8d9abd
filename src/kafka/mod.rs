//! Kafka: librdkafka configuration, the consumer's rebalance and commit callbacks, group
//! membership, reading messages back, the dead-letter topic, and the producer used by `produce`
//! and `dev`. It knows nothing of the pipeline: it stores and commits what the offset tracker
//! says is durable.
//!
//! Invariant: librdkafka never stores an offset on its own (its automatic offset store is off and
//! cannot be turned back on through overrides). Only the offset tracker stores offsets, and only
//! durable ones; librdkafka commits what is stored (every COMMIT_INTERVAL, on revoke, on close)
//! and the worker also commits synchronously on revoke and at shutdown, and asynchronously once
//! the pipeline has drained. So whatever path a commit takes, it never covers a message that is
//! not durable.

pub mod aws_msk_iam;
mod commit;
mod context;
pub mod dead_letter_topic;
mod fetched;
mod group;
mod login;
pub mod originals;
mod overcounted;
pub mod producer;

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::config::{ConsumerConfig, KafkaProperty};

pub(crate) use context::{Release, WorkerContext};
pub(crate) use fetched::{Batch, FetchQueue, Fetched};
pub(crate) use group::{leave_group, pause_assignment, positions};
pub(crate) use login::answer_token_requests;
pub use login::{Login, admin, prime};

/// How long a partition waits to be fetched again after the prefetch queue was full.
const FETCH_QUEUE_BACKOFF_MS: &str = "20";
/// Longest a broker holds a Fetch that found no data (librdkafka's default is 500 ms).
const FETCH_WAIT_MAX_MS: &str = "100";

/// Settings shared by every client: where the brokers are, who we are, user overrides last.
pub fn client_config(brokers: &str, properties: &[KafkaProperty]) -> ClientConfig {
    let mut cfg = base_config(brokers);
    for p in properties {
        cfg.set(&p.key, &p.value);
    }
    cfg
}

pub fn consumer_config(
    brokers: &str,
    properties: &[KafkaProperty],
    c: &ConsumerConfig,
    commit_interval: Duration,
) -> ClientConfig {
    let mut cfg = base_config(brokers);
    cfg.set("auto.offset.reset", c.auto_offset_reset.as_str())
        .set("partition.assignment.strategy", &c.assignment_strategy)
        .set("queued.max.messages.kbytes", c.queue_max_kbytes.to_string())
        // librdkafka's 1 s default idles a partition that long whenever the (small) queue bound
        // is reached; its documentation advises lowering it with the bound.
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        // While some partitions back off, a Fetch may name only partitions already drained; the
        // broker then holds it (and every other partition of that broker) for this long.
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
        .set("enable.partition.eof", "false");
    for p in properties {
        cfg.set(&p.key, &p.value);
    }
    // Last, so nothing above can change them. Auto-commit only ever sends offsets the tracker
    // stored, and librdkafka reports its results to the commit callback (it does not for
    // rdkafka 0.39's `commit(Async)`, which passes no reply queue: see `commit_async`).
    let interval_ms = commit_interval.as_millis().max(1).to_string();
    cfg.set("group.id", &c.group_id)
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", interval_ms);
    cfg
}

/// What every client of the worker starts from; `KAFKA_PROPERTIES` may override all of it.
fn base_config(brokers: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("client.id", client_id())
        // KIP-714 client metrics, pushed to brokers that subscribe to them (librdkafka >= 2.5
        // turns it on): the worker exports its own metrics, and librdkafka gives each broker
        // connection of each client a set of histograms for it, ~0.8 MiB in all.
        .set("enable.metrics.push", "false");
    cfg
}

/// `order-worker-<hostname>`: in Kubernetes the pod name, which is what an operator looks for in
/// the group's member list.
fn client_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    format!("order-worker-{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_and_sasl_scram_are_built_in() {
        use rdkafka::consumer::BaseConsumer;
        let props = [
            KafkaProperty::new("security.protocol", "SASL_SSL"),
            KafkaProperty::new("sasl.mechanism", "SCRAM-SHA-512"),
            KafkaProperty::new("sasl.username", "svc"),
            KafkaProperty::new("sasl.password", "secret"),
        ];
        let mut cfg = client_config("127.0.0.1:1", &props);
        cfg.set("group.id", "g");
        let consumer: Result<BaseConsumer, _> = cfg.create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
    }

    #[test]
    fn client_metrics_push_is_off_unless_asked_for() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            consumer: ConsumerConfig,
        }
        let consumer = <Flags as clap::Parser>::parse_from(["test"]).consumer;
        let off = [
            client_config("b:9092", &[]),
            consumer_config("b:9092", &[], &consumer, Duration::from_secs(1)),
        ];
        for cfg in &off {
            assert_eq!(cfg.get("enable.metrics.push"), Some("false"));
        }
        let on = client_config(
            "b:9092",
            &[KafkaProperty::new("enable.metrics.push", "true")],
        );
        assert_eq!(on.get("enable.metrics.push"), Some("true"));
    }
}
