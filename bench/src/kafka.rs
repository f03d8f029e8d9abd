//! The broker side: publishing the generated messages (all at once, or paced with their send time
//! as the Kafka timestamp), and reading a group's progress with the worker's own lag reader.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use order_worker::config::OffsetReset;
use order_worker::kafka::producer::serve_until;
use order_worker::lag::{self, Quiet};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

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

/// How a publisher sends: the whole backlog as fast as the broker takes it, or paced.
#[derive(Clone, Copy)]
pub enum Pace {
    Backlog,
    /// `rate` messages a second, queued `burst` at a time and stamped with the burst's send time.
    /// A burst is queued well within the producer's `linger.ms`, so each partition gets one batch
    /// per burst, of a size that does not shrink with the rate: the mock broker finds a fetched
    /// offset by walking every batch a partition retains, and it retains 5 MiB a partition
    /// whatever their size, so batches closed by the linger timer alone would get smaller and more
    /// numerous as the rate falls, and a search over rates would measure the broker.
    Paced {
        rate: f64,
        burst: usize,
    },
}

/// Publishes `messages` to `topic` as `pace` says, each with its send time as Kafka timestamp.
/// Blocks until every message is acknowledged.
pub fn publish(brokers: &str, topic: &str, messages: &[Msg], pace: Pace) -> Placement {
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
    let burst = match pace {
        Pace::Backlog => messages.len().max(1),
        Pace::Paced { burst, .. } => burst.max(1),
    };
    for (b, chunk) in messages.chunks(burst).enumerate() {
        let first = b * burst;
        if let Pace::Paced { rate, .. } = pace {
            serve_until(
                &producer,
                started + Duration::from_secs_f64(first as f64 / rate),
            );
        }
        let burst_ms = now_ms();
        for (j, m) in chunk.iter().enumerate() {
            let ts = match pace {
                Pace::Backlog => now_ms(),
                Pace::Paced { .. } => burst_ms,
            };
            sent_ms.push(ts);
            send(&producer, topic, first + j, m, ts);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("flush the producer");
    let elapsed = started.elapsed();
    let ctx = producer.context();
    let coords = std::mem::take(&mut *ctx.coords.lock().unwrap_or_else(|p| p.into_inner()));
    Placement {
        coords,
        sent_ms,
        failed: ctx.failed.load(Ordering::Relaxed),
        elapsed,
    }
}

/// Queues message `index`, waiting for room while the producer's queue is full.
fn send(producer: &BaseProducer<Deliveries>, topic: &str, index: usize, m: &Msg, ts: i64) {
    let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, index).timestamp(ts);
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
                serve_until(producer, Instant::now() + Duration::from_millis(2));
            }
            Err((e, _)) => panic!("produce failed: {e}"),
        }
    }
    producer.poll(Duration::ZERO);
}

/// librdkafka's mock cluster, owned by a producer client created for it (librdkafka's
/// `test.mock.num.brokers`), so that the harness can also set what `MockCluster` does not expose.
pub struct Broker {
    client: BaseProducer,
}

impl Broker {
    /// One mock broker. `group_delay_ms` is its `group.initial.rebalance.delay.ms`: how long the
    /// first member of an empty group waits for others before it is assigned (3000 on the mock,
    /// as on a Kafka broker by default; Kafka's shipped `server.properties` sets 0 for
    /// development and testing).
    pub fn start(group_delay_ms: i32) -> Self {
        let client: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .expect("mock cluster");
        let broker = Self { client };
        broker.set_group_delay(group_delay_ms);
        broker
    }

    /// Sets `group.initial.rebalance.delay.ms` for groups that form from now on.
    pub fn set_group_delay(&self, ms: i32) {
        // SAFETY: the handle belongs to `self.client`, which outlives this call.
        unsafe {
            let mock =
                rdkafka::bindings::rd_kafka_handle_mock_cluster(self.client.client().native_ptr());
            assert!(
                !mock.is_null(),
                "test.mock.num.brokers made no mock cluster"
            );
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(mock, ms);
        }
    }

    fn mock(&self) -> rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext> {
        self.client
            .client()
            .mock_cluster()
            .expect("the mock cluster")
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.mock()
            .create_topic(topic, partitions, 1)
            .expect("create topic");
    }

    pub fn bootstrap_servers(&self) -> String {
        self.mock().bootstrap_servers()
    }
}

/// Reads a group's progress and the partitions' watermarks without joining the group: the
/// worker's own lag reader (`order_worker::lag`), which is tested against an independent admin
/// view in tests/it.
pub struct Probe {
    consumer: BaseConsumer<Quiet>,
    group: String,
    topic: String,
    partitions: i32,
}

impl Probe {
    pub fn new(brokers: &str, group: &str, topic: &str, partitions: i32) -> Self {
        Self {
            consumer: lag::reader(brokers, &[], group).expect("probe consumer"),
            group: group.into(),
            topic: topic.into(),
            partitions,
        }
    }

    /// Whether the group committed the end of every partition (an empty one counts as done).
    pub fn caught_up(&self) -> bool {
        self.lag() == Some(0)
    }

    /// Messages published and not yet committed by the group, over all partitions.
    pub fn lag(&self) -> Option<i64> {
        lag::measure(
            &self.consumer,
            &self.group,
            &self.topic,
            OffsetReset::Earliest,
            Duration::from_secs(5),
        )
        .ok()
        .map(|l| l.total())
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
