//! Publishing messages: the synthetic streams of `produce` and `dev`.
//!
//! Invariant: a message counts as published only when the broker acknowledged it (delivery
//! report); the summary's per-partition end offsets are one past the last acknowledged offset,
//! so a test can wait for the consumer group to commit exactly there.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Partitioner, Producer, ProducerContext,
};
use rdkafka::{ClientConfig, ClientContext};
use tracing::info;

use crate::error::Error;
use crate::synth::SynthMessage;

#[derive(Debug, Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    ends: Mutex<BTreeMap<i32, i64>>,
}

impl ClientContext for Deliveries {
    crate::kafka::answer_token_requests!();
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
                let end = ends.entry(m.partition()).or_insert(0);
                *end = (*end).max(m.offset() + 1);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What a publisher did, as acknowledged by the broker.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Per partition, one past the highest acknowledged offset.
    pub ends: BTreeMap<i32, i64>,
    pub elapsed: Duration,
}

/// Sleeps until `due`, then serves the delivery reports that came meanwhile. Within a
/// millisecond of `due` it does not sleep at all: a paced publisher then sends up to 1 ms early,
/// and a high rate costs one sleep per millisecond instead of one per message.
///
/// Not `producer.poll(due - now)`: librdkafka waits in whole milliseconds, and rdkafka 0.39's
/// `BaseProducer::poll` polls again until its deadline, so after any early event the
/// sub-millisecond rest is polled with a timeout of 0 in a loop. A publisher pacing 70k
/// messages/s that way spun for a tenth of a core (`perf`: `clock_gettime`).
pub fn serve_until<C, P>(producer: &BaseProducer<C, P>, due: Instant)
where
    C: ProducerContext<P>,
    P: Partitioner,
{
    let now = Instant::now();
    if due > now + Duration::from_millis(1) {
        std::thread::sleep(due - now);
    }
    producer.poll(Duration::ZERO);
}

pub struct Publisher {
    producer: BaseProducer<Deliveries>,
    topic: String,
    sent: u64,
}

impl Publisher {
    pub fn new(mut config: ClientConfig, topic: &str) -> Result<Self, Error> {
        if config.get("linger.ms").is_none() {
            config.set("linger.ms", "5");
        }
        let producer = config.create_with_context(Deliveries::default())?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            sent: 0,
        })
    }

    /// Enqueues one message, waiting while librdkafka's queue is full.
    pub fn send(&mut self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<(), Error> {
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    serve_until(&self.producer, Instant::now() + Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        self.sent += 1;
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Publishes messages, at `rate` per second (0: as fast as accepted), until `stop` is set.
    pub fn publish(
        &mut self,
        messages: impl IntoIterator<Item = SynthMessage>,
        rate: u64,
        stop: &AtomicBool,
    ) -> Result<u64, Error> {
        let start = Instant::now();
        let mut n = 0u64;
        for m in messages {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if rate > 0 {
                serve_until(
                    &self.producer,
                    start + Duration::from_secs_f64(n as f64 / rate as f64),
                );
            }
            self.send(m.key.as_deref(), m.payload.as_deref())?;
            n += 1;
        }
        Ok(n)
    }

    /// Waits for every enqueued message to be acknowledged (or to fail) and reports.
    pub fn finish(self, timeout: Duration, started: Instant) -> Result<Published, Error> {
        self.producer.flush(timeout)?;
        let ctx = self.producer.context();
        Ok(Published {
            sent: self.sent,
            delivered: ctx.delivered.load(Ordering::Relaxed),
            failed: ctx.failed.load(Ordering::Relaxed),
            ends: ctx.ends.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            elapsed: started.elapsed(),
        })
    }
}

/// Creates the topic unless it exists.
pub async fn ensure_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
) -> Result<(), Error> {
    let admin = crate::kafka::admin(config)?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&new], &opts).await? {
        match result {
            Ok(_) => info!(topic, partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(Error::Kafka(KafkaError::AdminOp(code))),
        }
    }
    Ok(())
}
