//! What librdkafka costs the thread that takes messages from it, one at a time (`poll`, as the
//! worker's consumer thread does) against in batches (`rd_kafka_consume_batch_queue`), and what
//! its own fetch threads cost either way (docs/performance.md, open questions).
//!
//! Run: `cargo run --release -p order-worker-bench --bin consume_cost` (under a minute).
//! Environment: `CONSUME_COST_MESSAGES` (1,000,000), `CONSUME_COST_PARTITIONS` (256),
//! `CONSUME_COST_ROUNDS` (3), `CONSUME_COST_BATCH` (1000: messages per batch call).
//!
//! One mock broker in this process; the messages are the benchmark stream's first N (seed 1), keyed
//! by order, published in large batches (the mock walks every batch of a partition to find a
//! fetched offset); what the mock's retention (5 MiB a partition) drops from the front of the
//! busiest partition (~800 messages) is not counted. Each round creates a fresh consumer with the
//! worker's fetch settings, assigns every partition from the beginning (no group: only the taking
//! is measured) and reads every message's key and payload once, first with `poll`, then in batches
//! from one queue that every partition's queue forwards to (the worker would need this on each
//! assignment: a batch call on the consumer's own queue would answer a rebalance by unassigning).
//! CPU is each thread's `schedstat`: the taking thread, and the consumer's own librdkafka threads
//! (fetching).

use std::fs;
use std::time::{Duration, Instant};

use order_worker::synth::{Generator, SynthSpec};
use rdkafka::bindings as rd;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "orders";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU nanoseconds of this process's threads whose name starts with `prefix`, by thread id.
fn thread_cpu(prefix: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let read = |f: &str| fs::read_to_string(task.path().join(f)).unwrap_or_default();
        if read("comm").trim().starts_with(prefix) {
            let ns = read("schedstat")
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            out.push((task.file_name().to_string_lossy().into_owned(), ns));
        }
    }
    out
}

/// CPU nanoseconds of the calling thread.
fn own_cpu() -> u64 {
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec, and the clock id exists on Linux.
    let rc = unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU of librdkafka's threads that `before` does not hold: those of a client created since.
fn new_librdkafka_cpu(before: &[(String, u64)]) -> u64 {
    thread_cpu("rdk:")
        .iter()
        .filter(|(tid, _)| before.iter().all(|(t, _)| t != tid))
        .map(|(_, ns)| ns)
        .sum()
}

/// A consumer with the worker's fetch settings (`order_worker::kafka`).
fn consumer(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "consume-cost")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "1024")
        .set("fetch.queue.backoff.ms", "20")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer")
}

fn assign_all(consumer: &BaseConsumer, partitions: i32) {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
}

/// Ends the run with a message when nothing arrives for a while, rather than waiting forever.
struct Progress {
    seen: usize,
    at: Instant,
}

impl Progress {
    const STALL: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Self {
            seen: 0,
            at: Instant::now(),
        }
    }

    fn check(&mut self, seen: usize, n: usize) {
        if seen != self.seen {
            (self.seen, self.at) = (seen, Instant::now());
        }
        assert!(
            self.at.elapsed() < Self::STALL,
            "no message for {:?} after {seen} of {n}",
            Self::STALL
        );
    }
}

/// Reads `n` messages with `poll`; returns the bytes seen (so nothing is optimised away).
fn by_poll(consumer: &BaseConsumer, n: usize) -> usize {
    let (mut seen, mut bytes) = (0, 0);
    let mut progress = Progress::new();
    while seen < n {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("message");
            bytes += m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len);
            seen += 1;
        }
        progress.check(seen, n);
    }
    bytes
}

/// Reads `n` messages in batches of up to `batch` from one queue fed by every partition.
fn by_batch(consumer: &BaseConsumer, partitions: i32, n: usize, batch: usize) -> usize {
    let rk = consumer.client().native_ptr();
    let topic = std::ffi::CString::new(TOPIC).expect("topic");
    // SAFETY: every handle below belongs to `consumer`, which outlives this call; each queue
    // handle is destroyed once, each message once, after its bytes were read.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        for p in 0..partitions {
            let pq = rd::rd_kafka_queue_get_partition(rk, topic.as_ptr(), p);
            assert!(!pq.is_null(), "no queue for partition {p}");
            rd::rd_kafka_queue_forward(pq, queue);
            rd::rd_kafka_queue_destroy(pq);
        }
        assign_all(consumer, partitions);
        let mut buf: Vec<*mut rd::rd_kafka_message_t> = vec![std::ptr::null_mut(); batch];
        let (mut seen, mut bytes) = (0, 0);
        let mut progress = Progress::new();
        while seen < n {
            let got = rd::rd_kafka_consume_batch_queue(queue, 100, buf.as_mut_ptr(), batch);
            assert!(got >= 0, "batch consume failed");
            for &m in &buf[..got as usize] {
                assert_eq!(
                    (*m).err,
                    rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                );
                bytes += (*m).key_len + (*m).len;
                rd::rd_kafka_message_destroy(m);
            }
            seen += got as usize;
            progress.check(seen, n);
        }
        consumer.unassign().expect("unassign");
        rd::rd_kafka_queue_destroy(queue);
        bytes
    }
}

struct Taken {
    wall: Duration,
    taker_ns: u64,
    librdkafka_ns: u64,
}

fn take(brokers: &str, partitions: i32, n: usize, batch: Option<usize>) -> Taken {
    let before = thread_cpu("rdk:");
    let (own, started) = (own_cpu(), Instant::now());
    let c = consumer(brokers);
    let bytes = match batch {
        None => {
            assign_all(&c, partitions);
            by_poll(&c, n)
        }
        Some(size) => by_batch(&c, partitions, n, size),
    };
    let taken = Taken {
        wall: started.elapsed(),
        taker_ns: own_cpu() - own,
        librdkafka_ns: new_librdkafka_cpu(&before),
    };
    assert!(bytes > 0);
    taken
}

fn main() {
    let n = env_or("CONSUME_COST_MESSAGES", 1_000_000);
    let partitions = env_or("CONSUME_COST_PARTITIONS", 256) as i32;
    let rounds = env_or("CONSUME_COST_ROUNDS", 3);
    let batch = env_or("CONSUME_COST_BATCH", 1000);

    let producer: BaseProducer = ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .set("linger.ms", "50")
        .set("batch.size", "500000")
        .create()
        .expect("mock cluster");
    let mock = producer.client().mock_cluster().expect("mock cluster");
    mock.create_topic(TOPIC, partitions, 1).expect("topic");
    let brokers = mock.bootstrap_servers();
    for m in Generator::new(SynthSpec::default()).take(n) {
        let mut record = BaseRecord::<[u8], [u8]>::to(TOPIC);
        if let Some(k) = m.key.as_deref() {
            record = record.key(k);
        }
        if let Some(p) = m.payload.as_deref() {
            record = record.payload(p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    producer.poll(Duration::from_millis(5));
                    record = back;
                }
                Err((e, _)) => panic!("produce failed: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    // Count what the broker holds: its retention drops the busiest partition's first batches.
    let reader = consumer(&brokers);
    let n: usize = (0..partitions)
        .map(|p| {
            let (low, high) = reader
                .fetch_watermarks(TOPIC, p, Duration::from_secs(5))
                .expect("watermarks");
            (high - low) as usize
        })
        .sum();
    drop(reader);

    println!("{n} messages, {partitions} partitions, batches of {batch}; µs per message");
    println!("| Round | Way | Taking thread | The consumer's librdkafka threads | Sum | Wall |");
    println!("|---|---|---|---|---|---|");
    let per = |ns: u64| ns as f64 / n as f64 / 1000.0;
    for round in 1..=rounds {
        for (way, size) in [("poll", None), ("batch", Some(batch))] {
            let t = take(&brokers, partitions, n, size);
            println!(
                "| {round} | {way} | {:.3} | {:.3} | {:.3} | {:.2} s |",
                per(t.taker_ns),
                per(t.librdkafka_ns),
                per(t.taker_ns + t.librdkafka_ns),
                t.wall.as_secs_f64()
            );
        }
    }
}
