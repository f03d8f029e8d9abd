//! The broker side: publishing the generated messages (all at once, or paced with their send time
//! as the Kafka timestamp), and reading a group's committed offsets the way lag tools do.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

/// A message as generated: key and value.
pub struct Msg {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// Where each published message landed (by its index in the published slice), and when it was
/// sent (its Kafka timestamp, in ms since the Unix epoch).
pub struct Placement {
    pub coords: Vec<(i32, i64)>,
    pub sent_ms: Vec<i64>,
    pub failed: u64,
    pub elapsed: Duration,
    /// Per partition, one past the highest acknowledged offset.
    pub ends: BTreeMap<i32, i64>,
}

struct Deliveries {
    coords: Mutex<Vec<(i32, i64)>>,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        match result {
            Ok(m) => {
                let mut coords = self.coords.lock().unwrap_or_else(|p| p.into_inner());
                coords[index] = (m.partition(), m.offset());
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Publishes `messages` to `topic`, at `rate` per second (0: as fast as the broker takes them),
/// each with its send time as Kafka timestamp. Blocks until every message is acknowledged.
pub fn publish(brokers: &str, topic: &str, messages: &[Msg], rate: f64) -> Placement {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // What the project's own publisher uses: a realistic producer batches a little.
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Deliveries {
            coords: Mutex::new(vec![(-1, -1); messages.len()]),
            failed: AtomicU64::new(0),
        })
        .expect("producer");
    let started = Instant::now();
    let mut sent_ms = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            // Sleep (in the producer's poll, serving delivery reports) only for a whole
            // millisecond or more: a message due sooner is sent now, so pacing never spins.
            if due > now + Duration::from_millis(1) {
                producer.poll(due - now);
            }
        }
        let ts = now_ms();
        sent_ms.push(ts);
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, i).timestamp(ts);
        if let Some(k) = &m.key {
            record = record.key(k);
        }
        if let Some(p) = &m.payload {
            record = record.payload(p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(2));
                }
                Err((e, _)) => panic!("produce failed: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("flush the producer");
    let elapsed = started.elapsed();
    let ctx = producer.context();
    let coords = std::mem::take(&mut *ctx.coords.lock().unwrap_or_else(|p| p.into_inner()));
    let mut ends = BTreeMap::new();
    for &(p, o) in &coords {
        if p >= 0 {
            let e = ends.entry(p).or_insert(0);
            *e = (*e).max(o + 1);
        }
    }
    Placement {
        coords,
        sent_ms,
        failed: ctx.failed.load(Ordering::Relaxed),
        elapsed,
        ends,
    }
}

/// Reads a group's committed offsets and the partitions' watermarks without joining the group.
pub struct Probe {
    consumer: BaseConsumer,
    topic: String,
    partitions: i32,
}

impl Probe {
    pub fn new(brokers: &str, group: &str, topic: &str, partitions: i32) -> Self {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("probe consumer");
        Self {
            consumer,
            topic: topic.into(),
            partitions,
        }
    }

    pub fn committed(&self) -> BTreeMap<i32, i64> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let Ok(committed) = self.consumer.committed_offsets(tpl, Duration::from_secs(5)) else {
            return BTreeMap::new();
        };
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    }

    /// Whether the group committed the end of every non-empty partition of `ends`.
    pub fn caught_up(&self, ends: &BTreeMap<i32, i64>) -> bool {
        let committed = self.committed();
        ends.iter()
            .all(|(p, end)| *end == 0 || committed.get(p).is_some_and(|c| c >= end))
    }

    /// (low, high) watermarks per partition.
    pub fn watermarks(&self) -> BTreeMap<i32, (i64, i64)> {
        (0..self.partitions)
            .map(|p| {
                let marks = self
                    .consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(5))
                    .expect("watermarks");
                (p, marks)
            })
            .collect()
    }
}
