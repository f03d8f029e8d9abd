//! The naive baseline: what a hand-written consumer typically does. Per message: decode, one
//! `INSERT ... ON CONFLICT DO UPDATE ... WHERE version < EXCLUDED.version` in its own transaction
//! (autocommit: one commit, one WAL flush), then a synchronous Kafka offset commit. Phase 3 runs
//! it in this process, on a thread of its own, for `BENCH_NAIVE_SECS` after its first message.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use sqlx::{Connection, PgConnection};

use crate::bench::{Bench, DB_PREFIX, TOPIC, log};
use crate::cpu::{CpuSnapshot, CpuUse};

const INSERT_ONE: &str = r#"
INSERT INTO orders (order_id, version, customer_id, status, currency, total_minor, items,
                    occurred_at, last_event_id, last_event_type,
                    source_topic, source_partition, source_offset)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12, $13)
ON CONFLICT (order_id) DO UPDATE SET
    version = EXCLUDED.version, customer_id = EXCLUDED.customer_id, status = EXCLUDED.status,
    currency = EXCLUDED.currency, total_minor = EXCLUDED.total_minor, items = EXCLUDED.items,
    occurred_at = EXCLUDED.occurred_at, last_event_id = EXCLUDED.last_event_id,
    last_event_type = EXCLUDED.last_event_type, source_topic = EXCLUDED.source_topic,
    source_partition = EXCLUDED.source_partition, source_offset = EXCLUDED.source_offset,
    applied_at = now()
WHERE orders.version < EXCLUDED.version
"#;

pub struct NaiveResult {
    /// Messages handled (row written or skipped as invalid) and committed.
    pub processed: u64,
    /// Time from start to the first message (group join).
    pub join: Duration,
    /// Time from the first message to the last commit.
    pub elapsed: Duration,
}

impl NaiveResult {
    pub fn rate(&self) -> f64 {
        self.processed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Consumes `topic` as group `group` for `window` after its first message, writing to `url`.
/// `at_end` runs before the connection closes (to read its backend's CPU time).
pub fn run<T>(
    brokers: &str,
    topic: &str,
    group: &str,
    url: &str,
    window: Duration,
    at_end: impl FnOnce() -> T,
) -> (NaiveResult, T) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut db = rt
        .block_on(PgConnection::connect(url))
        .expect("naive: connect");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("naive consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let mut processed = 0u64;
    loop {
        if let Some(f) = first
            && f.elapsed() >= window
        {
            break;
        }
        if first.is_none() && started.elapsed() > Duration::from_secs(60) {
            panic!("naive consumer received nothing in 60 s");
        }
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = polled.expect("naive: consume");
        first.get_or_insert_with(Instant::now);
        let payload = m.payload();
        let decoded = order_worker::contract::decode(
            m.key(),
            payload,
            payload.map_or(0, <[u8]>::len),
            1 << 20,
        );
        // Invalid messages: logged and skipped, as such consumers usually do.
        if let Ok(e) = decoded {
            rt.block_on(
                sqlx::query(INSERT_ONE)
                    .bind(e.order_id)
                    .bind(e.version)
                    .bind(e.customer_id.as_str())
                    .bind(e.status.as_str())
                    .bind(e.currency.as_str())
                    .bind(e.total_minor)
                    .bind(e.items_json())
                    .bind(e.occurred_at)
                    .bind(e.event_id)
                    .bind(e.event_type.as_str())
                    .bind(topic)
                    .bind(m.partition())
                    .bind(m.offset())
                    .execute(&mut db),
            )
            .expect("naive: insert");
        }
        consumer
            .commit_message(&m, CommitMode::Sync)
            .expect("naive: commit");
        processed += 1;
    }
    let first = first.expect("started");
    let result = NaiveResult {
        processed,
        join: first.duration_since(started),
        elapsed: first.elapsed(),
    };
    let end = at_end();
    drop(consumer);
    let _ = rt.block_on(db.close());
    (result, end)
}

/// Phase 3: the naive consumer's result, and the CPU everyone used meanwhile.
pub struct NaiveRun {
    pub result: NaiveResult,
    pub cpu: CpuUse,
}

pub fn naive_baseline(b: &mut Bench) -> NaiveRun {
    let url = b.fresh_db("naive");
    b.checkpoint();
    let group = format!("bench-naive-{}", b.run_id);
    let before = CpuSnapshot::take(None, DB_PREFIX);
    let brokers = b.brokers.clone();
    let window = Duration::from_secs(b.s.naive_secs);
    let (result, after) = std::thread::spawn(move || {
        run(&brokers, TOPIC, &group, &url, window, || {
            CpuSnapshot::take(None, DB_PREFIX)
        })
    })
    .join()
    .expect("naive consumer thread");
    let cpu = after.since(&before);
    b.drop_db("naive");
    log(format!(
        "naive: {} messages in {:.1}s = {:.0}/s (join {:.1}s)",
        result.processed,
        result.elapsed.as_secs_f64(),
        result.rate(),
        result.join.as_secs_f64()
    ));
    NaiveRun { result, cpu }
}
