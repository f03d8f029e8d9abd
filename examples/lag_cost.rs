//! Cost and freshness of two ways to export per-partition consumer lag.
//!
//! Run: `cargo run --release --example lag_cost`
//! (env: `LAG_COST_ROUNDS`, default 3; `LAG_COST_WINDOW_SECS`, default 10).
//!
//! Everything runs in this process against librdkafka's mock cluster (a real
//! Kafka-protocol server on loopback). For P in {4, 32, 128} partitions it
//! measures, over a fixed window, the process CPU time of one consumer that is
//! assigned to all P partitions and polls in a loop:
//!
//! * `off`     statistics disabled, no lag queries (the baseline);
//! * `A 1000`  `statistics.interval.ms=1000`, lag parsed from the stats JSON in
//!   `ClientContext::stats_raw`;
//! * `A 100`   the same with `statistics.interval.ms=100`;
//! * `B`       statistics disabled; every 1 s one `committed_offsets` for all P
//!   partitions plus one `fetch_watermarks` per partition;
//! * `B2`      like B but the end offsets come from one `offsets_for_times`
//!   call with `Offset::End` (one ListOffsets request per broker) instead of P
//!   `fetch_watermarks` calls. Not part of the original question; measured
//!   because it is the obvious batched form of B.
//!
//! CPU is `CLOCK_PROCESS_CPUTIME_ID` (all threads, including the in-process
//! mock broker). The mock broker thread (`rdk:mock`) is also read on its own
//! from `/proc/self/task/*/schedstat`, so the client-side share can be shown:
//! in production the broker-side work runs on the Kafka brokers, not in the
//! worker.
//!
//! Freshness: the partitions are paused, more messages are produced to every
//! partition, and after 3 s each method is asked for end offset and lag. The
//! worker pauses partitions exactly when it is backlogged.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;

const PARTITION_COUNTS: [i32; 3] = [4, 32, 128];
/// Messages per partition produced before the first measurement.
const INITIAL_MSGS: i64 = 100;
/// Offset committed for every partition, so lag = end - COMMITTED.
const COMMITTED: i64 = 50;
/// Messages per partition produced while the partitions are paused.
const PAUSED_MSGS: i64 = 25;
const REFRESH_BENCH_REPS: u32 = 50;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- CPU clocks

fn clock_ns(clock: nix::libc::clockid_t) -> u64 {
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids used are
    // always supported on Linux.
    let rc = unsafe { nix::libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time of the whole process (all threads, live and exited).
fn process_cpu_ns() -> u64 {
    clock_ns(nix::libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time of the calling thread.
fn thread_cpu_ns() -> u64 {
    clock_ns(nix::libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the mock cluster's broker thread(s), in ns.
fn mock_broker_cpu_ns() -> u64 {
    let mut sum = 0;
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let comm = fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() != "rdk:mock" {
            continue;
        }
        let sched = fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        sum += sched
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    sum
}

#[derive(Clone, Copy, Default, Debug)]
struct CpuSample {
    process_ns: u64,
    mock_ns: u64,
}

impl CpuSample {
    fn now() -> Self {
        Self {
            process_ns: process_cpu_ns(),
            mock_ns: mock_broker_cpu_ns(),
        }
    }

    fn since(self, start: Self) -> Self {
        Self {
            process_ns: self.process_ns.saturating_sub(start.process_ns),
            mock_ns: self.mock_ns.saturating_sub(start.mock_ns),
        }
    }
}

// ------------------------------------------------------- method A: statistics

/// Only the fields the worker would need; serde skips the rest of the document.
#[derive(Deserialize)]
struct MiniStats {
    #[serde(default)]
    topics: BTreeMap<String, MiniTopic>,
}

#[derive(Deserialize)]
struct MiniTopic {
    partitions: BTreeMap<String, MiniPartition>,
}

#[derive(Deserialize, Clone, Debug)]
struct MiniPartition {
    partition: i32,
    hi_offset: i64,
    #[allow(dead_code)]
    ls_offset: i64,
    committed_offset: i64,
    consumer_lag: i64,
    fetch_state: String,
}

#[derive(Default)]
struct StatsLog {
    docs: u64,
    bytes_total: u64,
    bytes_max: usize,
    /// Wall time spent in `serde_json::from_slice` for `MiniStats`.
    parse_ns: u64,
    /// CPU time of the whole `stats_raw` callback (parse + bookkeeping).
    callback_cpu_ns: u64,
    last_doc: Vec<u8>,
    /// When the latest document arrived, and its partitions of our topic.
    last: Option<(Instant, BTreeMap<i32, MiniPartition>)>,
}

struct LagContext {
    topic: String,
    log: Mutex<StatsLog>,
    errors: AtomicU64,
}

impl LagContext {
    fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            log: Mutex::new(StatsLog::default()),
            errors: AtomicU64::new(0),
        }
    }

    fn reset(&self) {
        let mut log = self.log.lock().unwrap();
        log.docs = 0;
        log.bytes_total = 0;
        log.bytes_max = 0;
        log.parse_ns = 0;
        log.callback_cpu_ns = 0;
    }

    fn latest(&self) -> Option<(Instant, BTreeMap<i32, MiniPartition>)> {
        self.log.lock().unwrap().last.clone()
    }
}

impl ClientContext for LagContext {
    fn stats_raw(&self, raw: &[u8]) {
        let cpu0 = thread_cpu_ns();
        let t0 = Instant::now();
        let parsed: Result<MiniStats, _> = serde_json::from_slice(raw);
        let parse_ns = t0.elapsed().as_nanos() as u64;
        let parts = match parsed {
            Ok(mut stats) => stats.topics.remove(&self.topic).map(|t| {
                t.partitions
                    .into_values()
                    .filter(|p| p.partition >= 0)
                    .map(|p| (p.partition, p))
                    .collect::<BTreeMap<_, _>>()
            }),
            Err(e) => {
                eprintln!("stats parse error: {e}");
                None
            }
        };
        let mut log = self.log.lock().unwrap();
        log.docs += 1;
        log.bytes_total += raw.len() as u64;
        log.bytes_max = log.bytes_max.max(raw.len());
        log.parse_ns += parse_ns;
        log.last_doc.clear();
        log.last_doc.extend_from_slice(raw);
        if let Some(parts) = parts {
            log.last = Some((Instant::now(), parts));
        }
        log.callback_cpu_ns += thread_cpu_ns().saturating_sub(cpu0);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("librdkafka error: {error}: {reason}");
    }
}

impl ConsumerContext for LagContext {}

type LagConsumer = BaseConsumer<LagContext>;

// ------------------------------------------------------ method B: queries

/// Per partition: (end offset, committed offset).
type Snapshot = BTreeMap<i32, (i64, i64)>;

fn all_partitions(topic: &str, p: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(p as usize);
    for i in 0..p {
        tpl.add_partition(topic, i);
    }
    tpl
}

fn committed(c: &LagConsumer, topic: &str, p: i32) -> KafkaResult<BTreeMap<i32, i64>> {
    let tpl = c.committed_offsets(all_partitions(topic, p), CALL_TIMEOUT)?;
    Ok((0..p)
        .map(|i| {
            let off = match tpl.find_partition(topic, i).map(|e| e.offset()) {
                Some(Offset::Offset(n)) => n,
                _ => -1,
            };
            (i, off)
        })
        .collect())
}

/// Method B: one OffsetFetch plus `fetch_watermarks` per partition.
fn refresh_b(c: &LagConsumer, topic: &str, p: i32) -> KafkaResult<Snapshot> {
    let comm = committed(c, topic, p)?;
    let mut out = Snapshot::new();
    for i in 0..p {
        let (_lo, hi) = c.fetch_watermarks(topic, i, CALL_TIMEOUT)?;
        out.insert(i, (hi, comm[&i]));
    }
    Ok(out)
}

/// Method B2: one OffsetFetch plus one `offsets_for_times(Offset::End)`.
fn refresh_b2(c: &LagConsumer, topic: &str, p: i32) -> KafkaResult<Snapshot> {
    let comm = committed(c, topic, p)?;
    let mut q = TopicPartitionList::with_capacity(p as usize);
    for i in 0..p {
        q.add_partition_offset(topic, i, Offset::End)?;
    }
    let ends = c.offsets_for_times(q, CALL_TIMEOUT)?;
    let mut out = Snapshot::new();
    for i in 0..p {
        let end = match ends.find_partition(topic, i).map(|e| e.offset()) {
            Some(Offset::Offset(n)) => n,
            _ => -1,
        };
        out.insert(i, (end, comm[&i]));
    }
    Ok(out)
}

// ------------------------------------------------------------------ harness

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Off,
    A1000,
    A100,
    B,
    B2,
}

impl Method {
    const ALL: [Method; 5] = [
        Method::Off,
        Method::A1000,
        Method::A100,
        Method::B,
        Method::B2,
    ];

    fn label(self) -> &'static str {
        match self {
            Method::Off => "off (no lag)",
            Method::A1000 => "A stats 1000ms",
            Method::A100 => "A stats 100ms",
            Method::B => "B watermarks 1s",
            Method::B2 => "B2 batched 1s",
        }
    }

    fn stats_interval_ms(self) -> u32 {
        match self {
            Method::A1000 => 1000,
            Method::A100 => 100,
            _ => 0,
        }
    }
}

#[derive(Clone, Default, Debug)]
struct Run {
    window: CpuSample,
    window_secs: f64,
    stats_docs: u64,
    stats_bytes_avg: f64,
    stats_bytes_max: usize,
    stats_parse_us: f64,
    stats_callback_cpu_ms: f64,
    refreshes: u32,
    refresh_wall_ms: f64,
    refresh_cpu_ms: f64,
    fresh: Option<String>,
}

struct Topic {
    name: String,
    p: i32,
    group: String,
    /// Current end offset of every partition (all partitions get the same count).
    end: i64,
}

struct Env {
    bootstrap: String,
    producer: BaseProducer,
    window: Duration,
}

fn produce(env: &Env, topic: &Topic, per_partition: i64) {
    let payload = vec![b'x'; 200];
    for i in 0..topic.p {
        for n in 0..per_partition {
            let key = format!("{i}-{n}");
            let mut rec = BaseRecord::to(&topic.name)
                .partition(i)
                .key(&key)
                .payload(&payload);
            loop {
                match env.producer.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        env.producer.poll(Duration::from_millis(10));
                        rec = r;
                    }
                }
            }
        }
        env.producer.poll(Duration::ZERO);
    }
    env.producer
        .flush(Duration::from_secs(30))
        .expect("flush produced messages");
}

fn consumer_config(env: &Env, topic: &Topic, stats_ms: u32) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &env.bootstrap)
        .set("group.id", &topic.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    if stats_ms > 0 {
        cfg.set("statistics.interval.ms", stats_ms.to_string());
    }
    cfg
}

fn setup_topic(
    env: &Env,
    mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    p: i32,
) -> Topic {
    let mut topic = Topic {
        name: format!("orders-p{p}"),
        p,
        group: format!("lag-cost-p{p}"),
        end: 0,
    };
    mock.create_topic(&topic.name, p, 1).expect("create topic");
    produce(env, &topic, INITIAL_MSGS);
    topic.end = INITIAL_MSGS;
    // Commit explicit offsets for the group, as the worker does after a batch.
    let committer: LagConsumer = consumer_config(env, &topic, 0)
        .create_with_context(LagContext::new(&topic.name))
        .expect("committer");
    let mut tpl = TopicPartitionList::with_capacity(p as usize);
    for i in 0..p {
        tpl.add_partition_offset(&topic.name, i, Offset::Offset(COMMITTED))
            .unwrap();
    }
    committer.assign(&tpl).expect("assign committer");
    committer
        .commit(&tpl, CommitMode::Sync)
        .expect("commit offsets");
    topic
}

/// A consumer assigned to all partitions from the committed offsets, with a
/// thread polling it (messages and stats callbacks are served by `poll`).
struct Polling {
    consumer: Arc<LagConsumer>,
    stop: Arc<AtomicBool>,
    consumed: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Polling {
    fn start(env: &Env, topic: &Topic, stats_ms: u32) -> Self {
        let consumer: Arc<LagConsumer> = Arc::new(
            consumer_config(env, topic, stats_ms)
                .create_with_context(LagContext::new(&topic.name))
                .expect("consumer"),
        );
        consumer
            .assign(&all_partitions(&topic.name, topic.p))
            .expect("assign");
        let stop = Arc::new(AtomicBool::new(false));
        let consumed = Arc::new(AtomicU64::new(0));
        let thread = {
            let (consumer, stop, consumed) = (consumer.clone(), stop.clone(), consumed.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(_msg)) => {
                            consumed.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Err(e)) => eprintln!("consumer error: {e}"),
                        None => {}
                    }
                }
            })
        };
        Self {
            consumer,
            stop,
            consumed,
            thread: Some(thread),
        }
    }

    /// Waits until the backlog after the committed offsets is consumed, then settles.
    fn warm_up(&self, expect: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.consumed.load(Ordering::Relaxed) < expect && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let got = self.consumed.load(Ordering::Relaxed);
        if got < expect {
            eprintln!("warning: consumed {got} of {expect} backlog messages before the window");
        }
        thread::sleep(Duration::from_secs(2));
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn check_snapshot(snap: &Snapshot, end: i64) -> (bool, String) {
    let want_lag = end - COMMITTED;
    let bad: Vec<_> = snap
        .iter()
        .filter(|(_, (hi, c))| *hi != end || *c != COMMITTED)
        .collect();
    let (hi, c) = snap.values().next().copied().unwrap_or((-1, -1));
    if bad.is_empty() {
        (true, format!("yes (end {hi}, lag {})", hi - c))
    } else {
        (
            false,
            format!(
                "no ({} of {} partitions wrong; e.g. end {hi} lag {} want {end}/{want_lag})",
                bad.len(),
                snap.len(),
                hi - c
            ),
        )
    }
}

fn check_stats(parts: &BTreeMap<i32, MiniPartition>, p: i32, end: i64) -> (bool, String) {
    let want_lag = end - COMMITTED;
    let ok = parts.len() == p as usize
        && parts
            .values()
            .all(|x| x.hi_offset == end && x.consumer_lag == want_lag);
    let stale = parts
        .values()
        .filter(|x| x.hi_offset != end || x.consumer_lag != want_lag)
        .count();
    let sample = parts.values().next();
    let desc = match sample {
        Some(x) => format!(
            "hi {} lag {} committed {} state {}",
            x.hi_offset, x.consumer_lag, x.committed_offset, x.fetch_state
        ),
        None => "no partitions in stats".to_owned(),
    };
    if ok {
        (true, format!("yes ({desc})"))
    } else {
        (
            false,
            format!("no ({stale} of {p} stale; {desc}; want hi {end} lag {want_lag})"),
        )
    }
}

/// Pause, produce, wait 3 s, ask the method. Resume afterwards and (for A)
/// report how long it takes to become correct again.
fn freshness(env: &Env, topic: &mut Topic, method: Method, pol: &Polling) -> String {
    let c = &pol.consumer;
    let tpl = all_partitions(&topic.name, topic.p);
    c.pause(&tpl).expect("pause");
    thread::sleep(Duration::from_millis(500));
    let before = pol.consumed.load(Ordering::Relaxed);
    produce(env, topic, PAUSED_MSGS);
    topic.end += PAUSED_MSGS;
    let produced_at = Instant::now();
    thread::sleep(Duration::from_secs(3));
    let consumed_while_paused = pol.consumed.load(Ordering::Relaxed) - before;
    let mut verdict = match method {
        Method::A1000 | Method::A100 => match c.context().latest() {
            Some((at, parts)) if at > produced_at => check_stats(&parts, topic.p, topic.end).1,
            Some(_) => "no (no stats document since the produce)".to_owned(),
            None => "no (no stats document at all)".to_owned(),
        },
        Method::B => match refresh_b(c, &topic.name, topic.p) {
            Ok(s) => check_snapshot(&s, topic.end).1,
            Err(e) => format!("error: {e}"),
        },
        Method::B2 => match refresh_b2(c, &topic.name, topic.p) {
            Ok(s) => check_snapshot(&s, topic.end).1,
            Err(e) => format!("error: {e}"),
        },
        Method::Off => String::new(),
    };
    if consumed_while_paused > 0 {
        verdict.push_str(&format!(
            " [{consumed_while_paused} msgs consumed while paused]"
        ));
    }
    c.resume(&tpl).expect("resume");
    if matches!(method, Method::A1000 | Method::A100) {
        let resumed = Instant::now();
        let deadline = resumed + Duration::from_secs(10);
        let mut fixed = None;
        while Instant::now() < deadline {
            if let Some((at, parts)) = c.context().latest()
                && at > resumed
                && check_stats(&parts, topic.p, topic.end).0
            {
                fixed = Some(at - resumed);
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        match fixed {
            Some(d) => {
                verdict.push_str(&format!("; correct {:.1} s after resume", d.as_secs_f64()))
            }
            None => verdict.push_str("; still wrong 10 s after resume"),
        }
    }
    // Let the consumer drain what was produced while paused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = before + (PAUSED_MSGS * topic.p as i64) as u64;
    while pol.consumed.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    verdict
}

fn measure(env: &Env, topic: &mut Topic, method: Method, check_fresh: bool) -> Run {
    let pol = Polling::start(env, topic, method.stats_interval_ms());
    pol.warm_up(((topic.end - COMMITTED) * topic.p as i64) as u64);
    let c = &pol.consumer;
    let ctx = c.context();
    ctx.reset();

    let mut run = Run::default();
    let t0 = Instant::now();
    let cpu0 = CpuSample::now();
    match method {
        Method::B | Method::B2 => {
            let mut next = t0;
            while next < t0 + env.window {
                let r = if method == Method::B {
                    refresh_b(c, &topic.name, topic.p)
                } else {
                    refresh_b2(c, &topic.name, topic.p)
                };
                if let Err(e) = r {
                    eprintln!("refresh failed: {e}");
                }
                run.refreshes += 1;
                next += Duration::from_secs(1);
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    thread::sleep(d);
                }
            }
            if let Some(d) = (t0 + env.window).checked_duration_since(Instant::now()) {
                thread::sleep(d);
            }
        }
        _ => thread::sleep(env.window),
    }
    run.window = CpuSample::now().since(cpu0);
    run.window_secs = t0.elapsed().as_secs_f64();

    {
        let log = ctx.log.lock().unwrap();
        run.stats_docs = log.docs;
        if log.docs > 0 {
            run.stats_bytes_avg = log.bytes_total as f64 / log.docs as f64;
            run.stats_parse_us = log.parse_ns as f64 / log.docs as f64 / 1e3;
        }
        run.stats_bytes_max = log.bytes_max;
        run.stats_callback_cpu_ms = log.callback_cpu_ns as f64 / 1e6;
    }

    // Back-to-back refreshes: wall and process CPU per refresh.
    if matches!(method, Method::B | Method::B2) {
        let w0 = Instant::now();
        let c0 = process_cpu_ns();
        for _ in 0..REFRESH_BENCH_REPS {
            let r = if method == Method::B {
                refresh_b(c, &topic.name, topic.p)
            } else {
                refresh_b2(c, &topic.name, topic.p)
            };
            r.expect("refresh");
        }
        let n = f64::from(REFRESH_BENCH_REPS);
        run.refresh_wall_ms = w0.elapsed().as_secs_f64() * 1e3 / n;
        run.refresh_cpu_ms = (process_cpu_ns() - c0) as f64 / 1e6 / n;
    }

    if check_fresh && method != Method::Off {
        run.fresh = Some(freshness(env, topic, method, &pol));
    }
    run
}

/// Time parsing one stats document with the minimal struct and with the
/// crate's full `Statistics` (what the default `stats_raw` does).
fn parse_costs(doc: &[u8]) -> (f64, f64) {
    let reps = 50;
    let t = Instant::now();
    for _ in 0..reps {
        let s: MiniStats = serde_json::from_slice(doc).unwrap();
        std::hint::black_box(s);
    }
    let mini = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
    let t = Instant::now();
    for _ in 0..reps {
        let s: Statistics = serde_json::from_slice(doc).unwrap();
        std::hint::black_box(s);
    }
    let full = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
    (mini, full)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rounds = env_num("LAG_COST_ROUNDS", 3).max(1) as usize;
    let window = Duration::from_secs(env_num("LAG_COST_WINDOW_SECS", 10).max(1));

    let mock = MockCluster::new(1).expect("mock cluster");
    let bootstrap = mock.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let env = Env {
        bootstrap,
        producer,
        window,
    };

    let mut topics: Vec<Topic> = PARTITION_COUNTS
        .iter()
        .map(|&p| setup_topic(&env, &mock, p))
        .collect();
    eprintln!(
        "mock cluster at {}; {} rounds of {} s windows; topics ready",
        env.bootstrap,
        rounds,
        window.as_secs()
    );

    // results[topic][method] = one Run per round
    let mut results: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); Method::ALL.len()]; topics.len()];
    let mut sample_docs: Vec<Vec<u8>> = vec![Vec::new(); topics.len()];
    for round in 0..rounds {
        for (ti, topic) in topics.iter_mut().enumerate() {
            let mut order: Vec<usize> = (0..Method::ALL.len()).collect();
            order.rotate_left(round % Method::ALL.len());
            for mi in order {
                let method = Method::ALL[mi];
                let run = measure(&env, topic, method, round == 0);
                eprintln!(
                    "round {} P={:>3} {:<16} cpu {:>7.1} ms (mock broker {:>6.1}) docs {} refreshes {}{}",
                    round + 1,
                    topic.p,
                    method.label(),
                    run.window.process_ns as f64 / 1e6,
                    run.window.mock_ns as f64 / 1e6,
                    run.stats_docs,
                    run.refreshes,
                    run.fresh
                        .as_deref()
                        .map(|f| format!(" fresh: {f}"))
                        .unwrap_or_default()
                );
                results[ti][mi].push(run);
            }
        }
        // Keep one stats document per P (from an A 1000 consumer) for the parse timing.
        if round == 0 {
            for (ti, topic) in topics.iter().enumerate() {
                let pol = Polling::start(&env, topic, 1000);
                thread::sleep(Duration::from_millis(2500));
                sample_docs[ti] = pol.consumer.context().log.lock().unwrap().last_doc.clone();
            }
        }
    }

    print_table(&topics, &results, &sample_docs, rounds, window);
}

fn print_table(
    topics: &[Topic],
    results: &[Vec<Vec<Run>>],
    sample_docs: &[Vec<u8>],
    rounds: usize,
    window: Duration,
) {
    let scale = 10.0 / window.as_secs_f64();
    println!();
    println!(
        "CPU = process CPU ms per 10 s window, median of {rounds} round(s) [min-max]; \
         delta = minus the `off` consumer; client = excluding the in-process mock broker thread."
    );
    println!();
    println!(
        "| P | method | CPU ms/10 s [min-max] | delta all | delta client | bytes/stats doc | stats_raw: parse us/doc / CPU ms per 10 s | wall ms/refresh | CPU ms/refresh | A/B delta CPU all / client | fresh when paused |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (ti, topic) in topics.iter().enumerate() {
        let cpu = |mi: usize| -> (f64, f64, f64, f64) {
            let runs = &results[ti][mi];
            let all: Vec<f64> = runs
                .iter()
                .map(|r| r.window.process_ns as f64 / 1e6 * scale)
                .collect();
            let client: Vec<f64> = runs
                .iter()
                .map(|r| (r.window.process_ns - r.window.mock_ns) as f64 / 1e6 * scale)
                .collect();
            let min = all.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = all.iter().cloned().fold(0.0, f64::max);
            (median(all), median(client), min, max)
        };
        let (off_all, off_client, _, _) = cpu(0);
        let (b_all, b_client, _, _) = cpu(3);
        let (d_b_all, d_b_client) = (b_all - off_all, b_client - off_client);
        for (mi, method) in Method::ALL.iter().enumerate() {
            let runs = &results[ti][mi];
            let (all, client, min, max) = cpu(mi);
            let (d_all, d_client) = (all - off_all, client - off_client);
            let first = &runs[0];
            let is_a = matches!(method, Method::A1000 | Method::A100);
            let is_b = matches!(method, Method::B | Method::B2);
            let bytes = if is_a {
                let avg = median(runs.iter().map(|r| r.stats_bytes_avg).collect());
                format!("{avg:.0} ({} docs)", first.stats_docs)
            } else {
                "-".into()
            };
            let parse = if is_a {
                format!(
                    "{:.0} / {:.1}",
                    median(runs.iter().map(|r| r.stats_parse_us).collect()),
                    median(
                        runs.iter()
                            .map(|r| r.stats_callback_cpu_ms * scale)
                            .collect()
                    )
                )
            } else {
                "-".into()
            };
            let (wall, rcpu) = if is_b {
                (
                    format!(
                        "{:.2}",
                        median(runs.iter().map(|r| r.refresh_wall_ms).collect())
                    ),
                    format!(
                        "{:.2}",
                        median(runs.iter().map(|r| r.refresh_cpu_ms).collect())
                    ),
                )
            } else {
                ("-".into(), "-".into())
            };
            let ratio = if is_a {
                format!("{:.1} / {:.1}", d_all / d_b_all, d_client / d_b_client)
            } else {
                "-".into()
            };
            let (dall, dclient) = if *method == Method::Off {
                ("-".to_owned(), "-".to_owned())
            } else {
                (format!("{d_all:+.0}"), format!("{d_client:+.0}"))
            };
            println!(
                "| {} | {} | {:.0} [{:.0}-{:.0}] | {} | {} | {} | {} | {} | {} | {} | {} |",
                topic.p,
                method.label(),
                all,
                min,
                max,
                dall,
                dclient,
                bytes,
                parse,
                wall,
                rcpu,
                ratio,
                first.fresh.as_deref().unwrap_or("-")
            );
        }
    }
    println!();
    println!("Parse time of one stats document (50 reps, this thread, wall):");
    println!("| P | bytes | minimal struct us | rdkafka::statistics::Statistics us |");
    println!("|---|---|---|---|");
    for (ti, topic) in topics.iter().enumerate() {
        let doc = &sample_docs[ti];
        if doc.is_empty() {
            println!("| {} | - | - | - |", topic.p);
            continue;
        }
        let (mini, full) = parse_costs(doc);
        println!("| {} | {} | {mini:.0} | {full:.0} |", topic.p, doc.len());
    }
}
