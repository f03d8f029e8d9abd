//! Reading a message's original bytes back from Kafka by its coordinates.
//!
//! Invariant: [`Originals::fetch`] returns, for each coordinate asked for, either exactly the key
//! and value Kafka holds at that offset or [`Original::Gone`] when Kafka no longer has (or never
//! had) a message there; never the bytes of another offset. It only assigns partitions
//! (no group membership) and never commits, so it cannot move the worker's offsets.
//!
//! Why: a valid message's raw bytes are dropped once it is decoded (they were ~30% of the memory a
//! row holds while a backlog drains, docs/performance.md). The only later use of them is the
//! dead letter of a row PostgreSQL refuses at write time, which is rare; its offset is not
//! committed yet, so Kafka still has the message, and reading it back keeps the dead letter
//! byte-exact.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::config::KafkaProperty;
use crate::kafka::client_config;

/// A message read back, or the news that Kafka has nothing at that offset any more (retention,
/// compaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Original {
    Found {
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
    },
    Gone,
}

/// Reads messages of one topic back by partition and offset.
#[derive(Clone)]
pub struct Originals {
    config: ClientConfig,
    topic: String,
}

// Not derived: the client configuration may hold credentials (`sasl.password` and the like).
impl std::fmt::Debug for Originals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Originals")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Originals {
    /// `group` is only a name librdkafka requires to assign partitions: the worker's own, which
    /// the brokers' ACLs already allow. Nothing joins it and nothing is committed for it.
    pub fn new(brokers: &str, properties: &[KafkaProperty], topic: &str, group: &str) -> Self {
        let mut config = client_config(brokers, properties);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // An offset Kafka no longer holds must be reported, not silently replaced by another.
            .set("auto.offset.reset", "error")
            // One message is all that is wanted from each fetch.
            .set("fetch.max.bytes", "1048576")
            .set("queued.min.messages", "1");
        Self {
            config,
            topic: topic.to_owned(),
        }
    }

    /// The messages at `coordinates` (partition, offset), in the same order. Blocking: a new
    /// client is made for each call (the path is rare). Fails with a Kafka error if the brokers
    /// do not answer within `timeout`; the caller retries.
    pub fn fetch(
        &self,
        coordinates: &[(i32, i64)],
        timeout: Duration,
    ) -> Result<Vec<Original>, KafkaError> {
        let consumer: BaseConsumer = self.config.create()?;
        let deadline = Instant::now() + timeout;
        coordinates
            .iter()
            .map(|&(partition, offset)| self.fetch_one(&consumer, partition, offset, deadline))
            .collect()
    }

    fn fetch_one(
        &self,
        consumer: &BaseConsumer,
        partition: i32,
        offset: i64,
        deadline: Instant,
    ) -> Result<Original, KafkaError> {
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, partition, Offset::Offset(offset))?;
        consumer.assign(&assignment)?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::OperationTimedOut,
                ));
            }
            match consumer.poll(left.min(Duration::from_millis(100))) {
                None => continue,
                Some(Ok(m)) if m.partition() == partition && m.offset() == offset => {
                    return Ok(Original::Found {
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                    });
                }
                // A compacted partition skips deleted offsets: the first message after ours.
                Some(Ok(m)) if m.partition() == partition && m.offset() > offset => {
                    return Ok(Original::Gone);
                }
                Some(Ok(_)) => continue,
                Some(Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange,
                ))) => return Ok(Original::Gone),
                Some(Err(e)) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    #[test]
    fn reads_back_exactly_the_messages_asked_for_and_reports_missing_offsets_as_gone() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("t", 2, 1).expect("topic");
        let brokers = mock.bootstrap_servers();
        let producer: BaseProducer = client_config(&brokers, &[]).create().expect("producer");
        for i in 0..5 {
            let (key, value) = (format!("k{i}"), format!("v{i}"));
            let record = BaseRecord::to("t").partition(1).key(&key).payload(&value);
            producer.send(record).map_err(|(e, _)| e).expect("send");
        }
        let tombstone: BaseRecord<'_, str, str> = BaseRecord::to("t").partition(1).key("dead");
        producer.send(tombstone).map_err(|(e, _)| e).expect("send");
        producer.flush(Duration::from_secs(5)).expect("flush");

        let got = Originals::new(&brokers, &[], "t", "g")
            .fetch(&[(1, 3), (1, 0), (1, 5), (1, 99)], Duration::from_secs(10))
            .expect("fetched");
        let found = |k: &str, v: Option<&str>| Original::Found {
            key: Some(k.as_bytes().to_vec()),
            payload: v.map(|v| v.as_bytes().to_vec()),
        };
        assert_eq!(
            got,
            [
                found("k3", Some("v3")),
                found("k0", Some("v0")),
                found("dead", None),
                Original::Gone
            ]
        );
    }
}
