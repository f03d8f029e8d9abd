//! Real Kafka-protocol brokers for tests: librdkafka's mock cluster in-process (fault
//! injection, exact offsets) and a tansu broker process (end to end), plus the probes tests use
//! to read offsets the way lag tools do.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use order_worker::kafka::client_config;
use order_worker::kafka::producer::{Published, Publisher};
use order_worker::synth::{Generator, SynthSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// How long a test waits for a group to commit everything before failing.
pub const CAUGHT_UP: Duration = Duration::from_secs(120);

/// librdkafka's mock cluster with one topic. Not `Send`: it stays in the test's own future.
pub struct Mock {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    pub brokers: String,
}

impl Mock {
    pub fn with_topic(topic: &str, partitions: i32) -> Self {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster
            .create_topic(topic, partitions, 1)
            .expect("create topic");
        let brokers = cluster.bootstrap_servers();
        Self { cluster, brokers }
    }
}

/// Publishes the first `events` messages of a synthetic stream (blocking).
pub fn publish(brokers: &str, topic: &str, spec: &SynthSpec, events: u64) -> Published {
    publish_at(brokers, topic, spec, events, 0)
}

/// Like [`publish`], at `rate` messages per second (0: as fast as possible).
pub fn publish_at(
    brokers: &str,
    topic: &str,
    spec: &SynthSpec,
    events: u64,
    rate: u64,
) -> Published {
    let started = Instant::now();
    let mut p = Publisher::new(client_config(brokers, &[]), topic).expect("producer");
    let stream = Generator::new(spec.clone()).take(events as usize);
    p.publish(stream, rate, &AtomicBool::new(false))
        .expect("publish");
    // Chaos scenarios take the broker away mid-stream, and a 30 s flush once ran out after such
    // an outage (a produce request caught by it may wait out librdkafka's 30 s request timeout
    // before its retry). The scenarios assert what the worker does, not how fast this producer
    // recovers.
    let done = p.finish(CAUGHT_UP, started).expect("flush");
    assert_eq!(done.delivered, events, "every message acknowledged");
    done
}

/// Publishes messages with explicit CreateTime timestamps, and values larger than librdkafka's
/// default producer limit.
#[allow(dead_code)] // used by some tests only
pub fn publish_stamped(brokers: &str, topic: &str, messages: &[(RawMessage, Option<i64>)]) {
    publish_to(brokers, topic, 0, messages);
}

/// Publishes messages to one partition, with optional CreateTime timestamps (blocking).
#[allow(dead_code)] // used by some tests only
pub fn publish_to(
    brokers: &str,
    topic: &str,
    partition: i32,
    messages: &[(RawMessage, Option<i64>)],
) {
    let producer: BaseProducer = client_config(brokers, &[])
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer");
    for ((key, value), timestamp) in messages {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).partition(partition);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(ts) = timestamp {
            record = record.timestamp(*ts);
        }
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// A message as Kafka carries it: an optional key and an optional value.
pub type RawMessage = (Option<Vec<u8>>, Option<Vec<u8>>);

/// An event as its producer publishes it: keyed by its order id.
pub fn message_of(e: &order_worker::contract::OrderEvent) -> RawMessage {
    (Some(e.order_id.to_string().into_bytes()), Some(e.to_json()))
}

/// Publishes at `rate` on a thread of its own; join it to wait for the acknowledgements.
pub fn publish_in_background(
    brokers: &str,
    topic: &str,
    spec: &SynthSpec,
    events: u64,
    rate: u64,
) -> std::thread::JoinHandle<Published> {
    let (brokers, topic, spec) = (brokers.to_owned(), topic.to_owned(), spec.clone());
    std::thread::spawn(move || publish_at(&brokers, &topic, &spec, events, rate))
}

/// Publishes raw (key, value) messages (blocking).
pub fn publish_raw(brokers: &str, topic: &str, messages: &[RawMessage]) {
    let mut p = Publisher::new(client_config(brokers, &[]), topic).expect("producer");
    for (k, v) in messages {
        p.send(k.as_deref(), v.as_deref()).expect("send");
    }
    let done = p
        .finish(Duration::from_secs(30), Instant::now())
        .expect("flush");
    assert_eq!(done.delivered as usize, messages.len());
}

/// How many partitions a topic has; 0 when it does not exist.
#[allow(dead_code)] // used by some tests only
pub fn partition_count(brokers: &str, topic: &str) -> i32 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("metadata client");
    consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()
        .and_then(|m| {
            m.topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len() as i32)
        })
        .unwrap_or(0)
}

/// Every message of a topic, read from the beginning without a group (blocking).
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "order-worker-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .expect("watermarks");
        ends.insert(p, high);
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let total: i64 = ends.values().sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (out.len() as i64) < total && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(m.detach());
        }
    }
    out
}

/// Reads a group's committed offsets from the coordinator and the log end offsets, the two
/// numbers every lag tool (KEDA's Kafka scaler included) subtracts.
pub struct OffsetProbe {
    consumer: BaseConsumer,
    topic: String,
    partitions: i32,
}

impl OffsetProbe {
    pub fn new(brokers: &str, group: &str, topic: &str, partitions: i32) -> Self {
        // Same group id, but never subscribes: reading offsets does not join the group.
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

    pub fn ends(&self) -> BTreeMap<i32, i64> {
        self.watermarks()
            .into_iter()
            .map(|(p, (_, high))| (p, high))
            .collect()
    }

    /// Partitions whose log no longer starts at offset 0: the broker dropped messages (the mock
    /// cluster keeps at most 5 MiB or 100k messages per partition), so a "lost" count there
    /// would measure the broker, not the worker.
    pub fn truncated(&self) -> Vec<i32> {
        self.watermarks()
            .into_iter()
            .filter(|(_, (low, _))| *low > 0)
            .map(|(p, _)| p)
            .collect()
    }

    fn watermarks(&self) -> BTreeMap<i32, (i64, i64)> {
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

    /// Waits until the group has committed the end of every partition, which proves nothing
    /// if the broker dropped the head of a partition, so that must not have happened.
    pub async fn wait_caught_up(&self, what: &str) {
        self.wait_caught_up_within(what, CAUGHT_UP).await;
    }

    /// [`wait_caught_up`](Self::wait_caught_up) with a timeout of the test's own.
    pub async fn wait_caught_up_within(&self, what: &str, timeout: Duration) {
        super::eventually(what, timeout, || async { self.caught_up() }).await;
        let truncated = self.truncated();
        assert!(
            truncated.is_empty(),
            "{what}: the broker dropped the head of partitions {truncated:?}"
        );
    }

    /// Whether the group has committed exactly the end of every partition.
    pub fn caught_up(&self) -> bool {
        let ends = self.ends();
        let committed = self.committed();
        ends.iter()
            .all(|(p, end)| *end == 0 || committed.get(p) == Some(end))
    }
}

/// A tansu broker process with its own SQLite storage (it survives a restart of the broker).
pub struct Tansu {
    child: Child,
    #[allow(dead_code)] // read by `restart`, which the chaos suite uses
    dir: tempfile::TempDir,
    #[allow(dead_code)]
    port: u16,
    /// Extra `tansu broker` flags, kept for a restart.
    flags: Vec<String>,
    pub brokers: String,
}

impl Tansu {
    pub fn start() -> Self {
        Self::start_on(super::free_port(), &[])
    }

    /// A broker on `port` (a worker may already be trying to reach it), with extra flags (e.g.
    /// `--authentication`: every client must log in with SASL).
    pub fn start_on(port: u16, flags: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ow-tansu-")
            .tempdir()
            .expect("tempdir");
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let child = Self::spawn(dir.path(), port, &flags);
        Self {
            child,
            dir,
            port,
            flags,
            brokers: format!("127.0.0.1:{port}"),
        }
    }

    fn spawn(dir: &std::path::Path, port: u16, flags: &[String]) -> Child {
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .expect("log file");
        let mut command = Command::new(tansu_bin());
        command.args(["broker", "--listener-url", &url]);
        // A broker behind a proxy advertises the proxy (its flags say so).
        if !flags.iter().any(|f| f == "--advertised-listener-url") {
            command.args(["--advertised-listener-url", &url]);
        }
        let child = command
            .args(["--storage-engine", "sqlite://tansu.db"])
            .args(flags)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu (run ./scripts/test.sh, which installs it, or set TANSU_BIN)");
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&address).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// Kills the broker (SIGKILL) and starts it again on the same port and storage.
    #[allow(dead_code)] // used by the chaos suite
    /// A broker that requires SASL/SCRAM-SHA-512, knowing one user and one topic. tansu refuses
    /// its admin calls without a login, and its CLI has none, so the user and the topic are
    /// created first and the broker is restarted on the same storage with `--authentication`.
    pub fn with_scram_user(user: &str, password: &str, topic: &str, partitions: i32) -> Self {
        Self::with_scram_user_on(super::free_port(), user, password, topic, partitions, None)
    }

    /// The same on `port`; with `advertised`, it tells clients to connect to that port instead
    /// (a proxy in front of it).
    pub fn with_scram_user_on(
        port: u16,
        user: &str,
        password: &str,
        topic: &str,
        partitions: i32,
        advertised: Option<u16>,
    ) -> Self {
        let mut tansu = Self::start_on(port, &[]);
        tansu.admin(&["user", "create", user, password]);
        tansu.create_topic(topic, partitions);
        tansu.flags = vec!["--authentication".into()];
        if let Some(port) = advertised {
            let url = format!("tcp://127.0.0.1:{port}");
            tansu
                .flags
                .extend(["--advertised-listener-url".into(), url]);
        }
        tansu.restart(Duration::ZERO);
        tansu
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let partitions = partitions.to_string();
        self.admin(&["topic", "create", "--partitions", &partitions, topic]);
    }

    /// Runs tansu's CLI against this broker.
    fn admin(&self, args: &[&str]) {
        let url = format!("tcp://{}", self.brokers);
        let out = Command::new(tansu_bin())
            .args(args)
            .args(["--broker", &url])
            .output()
            .expect("run tansu's CLI");
        assert!(
            out.status.success(),
            "tansu {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        self.child = Self::spawn(self.dir.path(), self.port, &self.flags);
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return p.into();
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let installed = home.join("bin/tansu");
    if installed.exists() {
        installed
    } else {
        "tansu".into()
    }
}

/// Another member of a consumer group: a plain consumer (cooperative-sticky, like the worker)
/// polling on a thread of its own. It never commits. Dropping it closes the consumer, so it
/// leaves the group and its partitions are assigned to the others again.
pub struct Member {
    stop: std::sync::Arc<AtomicBool>,
    assigned: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    pub fn join(brokers: &str, group: &str, topic: &str) -> Self {
        Self::join_with(brokers, group, topic, "cooperative-sticky")
    }

    /// A member with another assignment strategy (the group's members must share it).
    pub fn join_with(brokers: &str, group: &str, topic: &str, strategy: &str) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("partition.assignment.strategy", strategy)
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("enable.auto.commit", "false")
            .create()
            .expect("second member");
        consumer.subscribe(&[topic]).expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let assigned = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), assigned.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(100));
                let n = consumer.assignment().map_or(0, |a| a.count());
                count.store(n, Ordering::Relaxed);
            }
        });
        Self {
            stop,
            assigned,
            thread: Some(thread),
        }
    }

    /// Partitions this member holds now.
    pub fn assigned(&self) -> usize {
        self.assigned.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
