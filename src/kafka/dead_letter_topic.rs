//! The optional dead-letter topic: every dead letter is also published to Kafka, with the
//! original key and bytes and headers saying why and where it came from (the information Kafka
//! Connect puts in its `__connect.errors.*` headers).
//!
//! Invariant: `publish` returns `Ok` only once the broker acknowledged every dead letter given; the
//! processor reports a batch durable (so its offsets become committable) only after that. Delivery
//! is at least once: a message redelivered after a crash is published again, so consumers of the
//! topic de-duplicate on the source coordinates headers.

use std::time::Duration;

use futures_util::future::try_join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::config::KafkaProperty;
use crate::db::DeadLetterRow;
use crate::error::Error;
use crate::kafka::client_config;

/// Header names: `order_worker.errors.<field>`.
pub const HEADER_TOPIC: &str = "order_worker.errors.topic";
pub const HEADER_PARTITION: &str = "order_worker.errors.partition";
pub const HEADER_OFFSET: &str = "order_worker.errors.offset";
pub const HEADER_STAGE: &str = "order_worker.errors.stage";
pub const HEADER_REASON: &str = "order_worker.errors.reason";
pub const HEADER_MESSAGE: &str = "order_worker.errors.message";
pub const HEADER_GROUP: &str = "order_worker.errors.group";

/// How long a dead letter may wait for room in librdkafka's queue before the attempt fails (and
/// is retried by the caller).
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct DeadLetterTopic {
    producer: FutureProducer,
    topic: String,
    source_topic: String,
    group: String,
}

impl DeadLetterTopic {
    pub fn new(
        brokers: &str,
        properties: &[KafkaProperty],
        topic: &str,
        source_topic: &str,
        group: &str,
    ) -> Result<Self, Error> {
        let mut config = client_config(brokers, properties);
        config.set("acks", "all").set("linger.ms", "5");
        Ok(Self {
            producer: config.create()?,
            topic: topic.to_owned(),
            source_topic: source_topic.to_owned(),
            group: group.to_owned(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes the dead letters concurrently and waits for every acknowledgement.
    pub async fn publish(&self, rows: &[DeadLetterRow<'_>]) -> Result<(), KafkaError> {
        let sends = rows.iter().map(|r| {
            let (partition, offset) = (r.partition.to_string(), r.offset.to_string());
            let headers = [
                (HEADER_TOPIC, self.source_topic.as_str()),
                (HEADER_PARTITION, &partition),
                (HEADER_OFFSET, &offset),
                (HEADER_STAGE, r.reason.stage().as_str()),
                (HEADER_REASON, r.reason.as_str()),
                (HEADER_MESSAGE, r.error),
                (HEADER_GROUP, &self.group),
            ]
            .into_iter()
            .fold(OwnedHeaders::new_with_capacity(7), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value),
                })
            });
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
            if let Some(key) = r.key {
                record = record.key(key);
            }
            if let Some(payload) = r.payload {
                record = record.payload(payload);
            }
            async move {
                self.producer
                    .send(record, Timeout::After(QUEUE_TIMEOUT))
                    .await
                    .map_err(|(e, _)| e)
            }
        });
        try_join_all(sends).await.map(|_| ())
    }
}
