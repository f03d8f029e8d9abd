//! Cost and freshness of the ways to export per-partition consumer lag (`docs/lag-cost.md`).
//!
//! Run: `cargo run --release -p order-worker-bench --bin lag_cost` (5-6 minutes). Environment:
//! `LAG_COST_ROUNDS` (3), `LAG_COST_WINDOW_SECS` (4), `LAG_COST_INTERVAL_MS` (1000: the refresh
//! interval of every variant), `LAG_COST_PARTITIONS` (`4,32,128`), `LAG_COST_FETCH_WAIT_MS`
//! (the consumers' `fetch.wait.max.ms`; librdkafka's default, 500, when unset).
//!
//! Everything runs in this process against librdkafka's mock cluster (one broker, a real
//! Kafka-protocol server on loopback). For each partition count P and variant, a fresh consumer
//! is assigned all P partitions, consumes everything and keeps polling; the group's committed
//! offset is 50 everywhere. Each variant refreshes the lag of every partition once per interval:
//!
//! * `off`: no lag at all (the baseline the other rows are compared with);
//! * `stats`: `statistics.interval.ms` = interval; `stats_raw` reads each partition's
//!   `hi_offset` and `consumer_lag` with a minimal serde struct;
//! * `per-partition`: the requests `order_worker::lag::measure` made before this measurement:
//!   Metadata, one OffsetFetch for all partitions, then `fetch_watermarks` per partition (two
//!   ListOffsets: low and high);
//! * `batched`: Metadata, OffsetFetch and one `offsets_for_times(Offset::End)`, which is one
//!   ListOffsets per leader broker for all partitions: what `measure` does now, on its own
//!   client (its freshness row calls the worker's `measure`).
//!
//! Queries run on the consuming consumer (`same consumer`, as the worker did) or on a second
//! client of the group that is never assigned anything (`own client`). As in the worker's
//! monitor, the next refresh is due one interval after the previous one ended.
//!
//! CPU is `CLOCK_PROCESS_CPUTIME_ID` minus the mock broker's thread (`rdk:mock`, from
//! `/proc/self/task/*/schedstat`): what the worker itself would spend. The broker's share is
//! shown apart. Each round runs every (P, variant) window, variants in a rotated order; the
//! table shows medians over rounds. Freshness, after each first-round window: the partitions
//! are paused (the worker pauses when it is behind), messages are produced to all of them, and
//! two intervals later the variant is asked.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use order_worker::config::OffsetReset;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;

/// Messages per partition before the first window, and the group's committed offset.
const INITIAL_MSGS: i64 = 100;
const COMMITTED: i64 = 50;
/// Messages per partition produced while the partitions are paused.
const PAUSED_MSGS: i64 = 25;
const TIMEOUT: Duration = Duration::from_secs(5);

/// (CPU of the whole process, CPU of the mock broker thread), in ns.
fn cpu_ns() -> (u64, u64) {
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec, and the clock id exists on Linux.
    let rc = unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    let mut mock = 0;
    for task in fs::read_dir("/proc/self/task").into_iter().flatten() {
        let read = |f: &str| fs::read_to_string(task.as_ref().ok()?.path().join(f)).ok();
        if read("comm").is_some_and(|c| c.trim() == "rdk:mock") {
            let sched = read("schedstat").unwrap_or_default();
            let ns = sched.split_whitespace().next().map(str::parse::<u64>);
            mock += ns.and_then(Result::ok).unwrap_or(0);
        }
    }
    (ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64, mock)
}

// ------------------------------------------------------------ statistics

/// Only what the worker would export; serde skips the rest of the document.
#[derive(Deserialize)]
struct Stats {
    #[serde(default)]
    topics: BTreeMap<String, StatsTopic>,
}

#[derive(Deserialize)]
struct StatsTopic {
    partitions: BTreeMap<String, StatsPartition>,
}

#[derive(Deserialize)]
struct StatsPartition {
    partition: i32,
    hi_offset: i64,
    consumer_lag: i64,
}

/// Per partition: (end offset, lag).
type Snapshot = BTreeMap<i32, (i64, i64)>;

#[derive(Default)]
struct Seen {
    /// Documents, their bytes, and the wall time spent parsing them.
    docs: u64,
    bytes: u64,
    parse_ns: u64,
    /// When the latest document arrived, and what it said about our topic.
    latest: Option<(Instant, Snapshot)>,
}

struct Ctx {
    topic: String,
    seen: Mutex<Seen>,
}

impl ClientContext for Ctx {
    fn stats_raw(&self, raw: &[u8]) {
        let t0 = Instant::now();
        let topic = match serde_json::from_slice::<Stats>(raw) {
            Ok(mut s) => s.topics.remove(&self.topic),
            Err(e) => return eprintln!("stats parse error: {e}"),
        };
        let entry = |p: StatsPartition| (p.partition, (p.hi_offset, p.consumer_lag));
        let snap = topic.map(|t| t.partitions.into_values().map(entry).collect());
        let mut seen = self.seen.lock().unwrap();
        seen.parse_ns += t0.elapsed().as_nanos() as u64;
        seen.docs += 1;
        seen.bytes += raw.len() as u64;
        if let Some(snap) = snap {
            seen.latest = Some((Instant::now(), snap));
        }
    }
}

impl ConsumerContext for Ctx {}

type Client = BaseConsumer<Ctx>;

fn seen(c: &Client) -> MutexGuard<'_, Seen> {
    c.context().seen.lock().unwrap()
}

// --------------------------------------------------------------- queries

fn ok<T>(what: &str, r: KafkaResult<T>) -> Option<T> {
    r.map_err(|e| eprintln!("{what} failed: {e}")).ok()
}

/// Lets a refresh be cut short between requests (on the consuming consumer one request can
/// wait a whole `fetch.wait.max.ms`), and counts the requests that finished.
#[derive(Default)]
struct Progress {
    stop: AtomicBool,
    requests: AtomicU64,
}

impl Progress {
    /// Counts a finished request; `None` once stopped.
    fn done<T>(&self, r: T) -> Option<T> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        (!self.stop.load(Ordering::Relaxed)).then_some(r)
    }
}

/// One refresh from the broker: Metadata, OffsetFetch, then ListOffsets.
fn refresh(c: &Client, t: &Topic, batched: bool, progress: &Progress) -> Option<Snapshot> {
    let md = ok("metadata", c.fetch_metadata(Some(&t.name), TIMEOUT));
    let md = progress.done(md?)?;
    let topic = md.topics().first()?;
    let ids: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    let tpl = partitions(&t.name, &ids, Offset::End);
    let committed = ok("committed", c.committed_offsets(tpl.clone(), TIMEOUT));
    let committed = progress.done(committed?)?;
    let mut ends = Vec::new();
    if batched {
        let got = ok("offsets_for_times", c.offsets_for_times(tpl, TIMEOUT));
        for e in progress.done(got?)?.elements() {
            ends.push((e.partition(), e.offset().to_raw().unwrap_or(-1)));
        }
    } else {
        for p in ids {
            let wm = ok("watermarks", c.fetch_watermarks(&t.name, p, TIMEOUT));
            ends.push((p, progress.done(wm?)?.1));
        }
    }
    let committed = |p| committed.find_partition(&t.name, p)?.offset().to_raw();
    let lag = |(p, end)| (p, (end, end - committed(p).unwrap_or(0)));
    Some(ends.into_iter().map(lag).collect())
}

/// "yes", or how far `snap` is from the truth.
fn verdict(snap: &Snapshot, t: &Topic) -> String {
    let truth = (t.end, t.end - COMMITTED);
    let stale = (0..t.p).filter(|i| snap.get(i) != Some(&truth)).count();
    let (end, lag) = snap.get(&0).copied().unwrap_or((-1, -1));
    let (p, (true_end, true_lag)) = (t.p, truth);
    match stale {
        0 => format!("yes (end {end}, lag {lag})"),
        n => format!("NO: {n}/{p} stale (end {end}, lag {lag}; true {true_end}, {true_lag})"),
    }
}

// --------------------------------------------------------------- harness

/// A way to refresh lag: statistics, or broker queries (`query: Some(batched)`), these on the
/// consuming consumer or on a client of their own (`own`).
#[derive(Clone, Copy)]
struct Variant {
    label: &'static str,
    stats: bool,
    query: Option<bool>,
    own: bool,
}

const fn variant(label: &'static str, stats: bool, query: Option<bool>, own: bool) -> Variant {
    Variant {
        label,
        stats,
        query,
        own,
    }
}

const VARIANTS: [Variant; 6] = [
    variant("off (no lag)", false, None, false),
    variant("stats (statistics.interval.ms)", true, None, false),
    variant(
        "per-partition, same consumer (before)",
        false,
        Some(false),
        false,
    ),
    variant("per-partition, own client", false, Some(false), true),
    variant("batched, same consumer", false, Some(true), false),
    variant("batched, own client (now)", false, Some(true), true),
];

impl Variant {
    fn is_off(self) -> bool {
        !self.stats && self.query.is_none()
    }

    /// Requests of one refresh (the two ListOffsets of a `fetch_watermarks` count as one).
    fn requests(self, p: i32) -> f64 {
        let per_partition = self.query == Some(false);
        if per_partition {
            f64::from(p) + 2.0
        } else {
            3.0
        }
    }
}

struct Topic {
    name: String,
    group: String,
    p: i32,
    /// End offset of every partition (all get the same number of messages).
    end: i64,
}

struct Env {
    bootstrap: String,
    producer: BaseProducer,
    window: Duration,
    interval: Duration,
}

/// One window of one variant.
#[derive(Default)]
struct Sample {
    worker_ms_s: f64,
    broker_ms_s: f64,
    /// Statistics documents, or refreshes (one cut short by the window's end counts pro rata).
    refreshes: f64,
    /// Wall ms of each refresh that finished in the window.
    walls: Vec<f64>,
    /// Wall ms per request, for an estimate when no refresh finished.
    ms_per_request: f64,
    /// Statistics: mean document size, and mean time to parse one.
    doc_kib: f64,
    parse_us: f64,
    fresh: Option<String>,
}

fn produce(env: &Env, t: &mut Topic, per_partition: i64) {
    let payload = [b'x'; 200];
    for p in 0..t.p {
        for n in 0..per_partition {
            let key = format!("{p}-{n}");
            let rec = BaseRecord::to(&t.name).partition(p).key(&key);
            let mut rec = rec.payload(&payload[..]);
            while let Err((_, r)) = env.producer.send(rec) {
                env.producer.poll(Duration::from_millis(10));
                rec = r;
            }
        }
    }
    env.producer.flush(TIMEOUT * 6).expect("flush");
    t.end += per_partition;
}

fn client(env: &Env, t: &Topic, stats: bool) -> Client {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &env.bootstrap)
        .set("group.id", &t.group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    if stats {
        let ms = env.interval.as_millis().to_string();
        cfg.set("statistics.interval.ms", ms);
    }
    if let Ok(ms) = std::env::var("LAG_COST_FETCH_WAIT_MS") {
        cfg.set("fetch.wait.max.ms", ms);
    }
    let (topic, seen) = (t.name.clone(), Mutex::default());
    let ctx = Ctx { topic, seen };
    cfg.create_with_context(ctx).expect("client")
}

fn partitions(topic: &str, ids: &[i32], offset: Offset) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for &p in ids {
        tpl.add_partition_offset(topic, p, offset).unwrap();
    }
    tpl
}

fn all_partitions(t: &Topic, offset: Offset) -> TopicPartitionList {
    partitions(&t.name, &(0..t.p).collect::<Vec<_>>(), offset)
}

fn setup_topic(env: &Env, mock: &MockCluster<'static, DefaultProducerContext>, p: i32) -> Topic {
    let (name, group) = (format!("orders-p{p}"), format!("lag-cost-p{p}"));
    let mut t = Topic {
        name,
        group,
        p,
        end: 0,
    };
    mock.create_topic(&t.name, p, 1).expect("create topic");
    produce(env, &mut t, INITIAL_MSGS);
    let tpl = all_partitions(&t, Offset::Offset(COMMITTED));
    let committer = client(env, &t, false);
    committer.commit(&tpl, CommitMode::Sync).expect("commit");
    t
}

/// One window of `v`: a fresh consumer assigned to every partition (from the committed offsets)
/// is polled on a thread until it has consumed everything; then CPU is measured while `v`
/// refreshes and, with `fresh`, freshness is checked.
fn window(env: &Env, t: &mut Topic, v: Variant, fresh: bool) -> Sample {
    let c = client(env, t, v.stats);
    let own = v.own.then(|| client(env, t, false));
    if let Some(q) = &own {
        refresh(q, t, false, &Progress::default()); // connect before the window
    }
    let q = own.as_ref().unwrap_or(&c);
    let tpl = all_partitions(t, Offset::Stored);
    c.assign(&tpl).expect("assign");
    let (stop_poll, consumed) = (AtomicBool::new(false), AtomicU64::new(0));
    let caught_up = |t: &Topic| {
        let deadline = Instant::now() + TIMEOUT * 4;
        let backlog = ((t.end - COMMITTED) * i64::from(t.p)) as u64;
        while consumed.load(Ordering::Relaxed) < backlog && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    };
    thread::scope(|s| {
        s.spawn(|| {
            while !stop_poll.load(Ordering::Relaxed) {
                match c.poll(Duration::from_millis(100)) {
                    Some(Ok(_)) => _ = consumed.fetch_add(1, Ordering::Relaxed),
                    Some(Err(e)) => eprintln!("consumer error: {e}"),
                    None => {}
                }
            }
        });
        caught_up(t);
        thread::sleep(Duration::from_millis(500));
        let mut sample = measure_cpu(env, t, v, &c, q);
        if fresh && !v.is_off() {
            sample.fresh = Some(freshness(env, t, v, &c, q));
            caught_up(t);
        }
        stop_poll.store(true, Ordering::Relaxed);
        sample
    })
}

/// CPU over one window while `v` refreshes (on `q`) every interval.
fn measure_cpu(env: &Env, t: &Topic, v: Variant, c: &Client, q: &Client) -> Sample {
    let (progress, (tx, rx)) = (Progress::default(), mpsc::channel::<()>());
    let seen0 = {
        let s = seen(c); // one guard: a second `seen(c)` in the same statement would deadlock
        (s.docs, s.bytes, s.parse_ns)
    };
    let (cpu0, t0) = (cpu_ns(), Instant::now());
    let (cpu1, secs, (walls, busy)) = thread::scope(|s| {
        let refresher = s.spawn(|| {
            let (mut walls, mut busy, rx) = (Vec::new(), 0.0, rx);
            let Some(batched) = v.query else {
                return (walls, busy);
            };
            loop {
                let r0 = Instant::now();
                let done = refresh(q, t, batched, &progress).is_some();
                let ms = r0.elapsed().as_secs_f64() * 1e3;
                busy += ms;
                walls.extend(done.then_some(ms));
                // Dropping the sender at the window's end ends this wait at once.
                if rx.recv_timeout(env.interval) != Err(mpsc::RecvTimeoutError::Timeout) {
                    return (walls, busy);
                }
            }
        });
        thread::sleep(env.window);
        progress.stop.store(true, Ordering::Relaxed);
        drop(tx);
        let (cpu1, secs) = (cpu_ns(), t0.elapsed().as_secs_f64());
        (cpu1, secs, refresher.join().unwrap())
    });
    let seen = seen(c);
    let docs = (seen.docs - seen0.0) as f64;
    let requests = progress.requests.load(Ordering::Relaxed) as f64;
    let broker = cpu1.1 - cpu0.1;
    Sample {
        worker_ms_s: (cpu1.0 - cpu0.0 - broker) as f64 / 1e6 / secs,
        broker_ms_s: broker as f64 / 1e6 / secs,
        refreshes: if v.stats {
            docs
        } else {
            requests / v.requests(t.p)
        },
        walls,
        ms_per_request: busy / requests,
        doc_kib: (seen.bytes - seen0.1) as f64 / docs / 1024.0,
        parse_us: (seen.parse_ns - seen0.2) as f64 / docs / 1e3,
        fresh: None,
    }
}

/// Pauses the partitions, produces to all of them, and asks `v` two intervals later; for
/// `stats`, also how long after the resume it is right again.
fn freshness(env: &Env, t: &mut Topic, v: Variant, c: &Client, q: &Client) -> String {
    let tpl = all_partitions(t, Offset::Stored);
    c.pause(&tpl).expect("pause");
    thread::sleep(Duration::from_millis(500));
    produce(env, t, PAUSED_MSGS);
    let produced = Instant::now();
    thread::sleep(env.interval * 2 + Duration::from_millis(500));
    let r0 = Instant::now();
    let snap = match v.query {
        // The worker's own code answers for the row of the form it uses.
        Some(true) if v.own => {
            let reset = OffsetReset::Earliest;
            let lag = order_worker::lag::measure(q, &t.group, &t.name, reset, TIMEOUT);
            let parts = ok("measure", lag).map(|g| g.partitions);
            parts.map(|ps| ps.iter().map(|p| (p.partition, (p.end, p.lag))).collect())
        }
        Some(batched) => refresh(q, t, batched, &Progress::default()),
        None => {
            let latest = seen(c).latest.clone();
            latest.filter(|(at, _)| *at > produced).map(|l| l.1)
        }
    };
    let took = r0.elapsed().as_secs_f64() * 1e3;
    let answer = match snap {
        Some(snap) if v.stats => verdict(&snap, t),
        None if v.stats => "NO: no statistics since the messages were produced".into(),
        Some(snap) => format!("{}, {took:.0} ms", verdict(&snap, t)),
        None => "error".into(),
    };
    c.resume(&tpl).expect("resume");
    let resumed = Instant::now();
    if !v.stats {
        return answer;
    }
    loop {
        let latest = seen(c).latest.clone();
        match latest {
            Some((at, snap)) if at > resumed && verdict(&snap, t).starts_with("yes") => {
                let secs = (at - resumed).as_secs_f64();
                return answer + &format!("; right {secs:.1} s after resume");
            }
            _ if resumed.elapsed() > Duration::from_secs(10) => {
                return answer + "; still wrong 10 s after resume";
            }
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    let value = std::env::var(name).ok();
    value.and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let rounds = env_or("LAG_COST_ROUNDS", 3usize).max(1);
    let mock = MockCluster::new(1).expect("mock cluster");
    let mut producer = ClientConfig::new();
    producer.set("bootstrap.servers", mock.bootstrap_servers());
    let env = Env {
        bootstrap: mock.bootstrap_servers(),
        producer: producer.set("linger.ms", "5").create().expect("producer"),
        window: Duration::from_secs(env_or("LAG_COST_WINDOW_SECS", 4u64).max(1)),
        interval: Duration::from_millis(env_or("LAG_COST_INTERVAL_MS", 1000u64).max(10)),
    };
    let counts = env_or("LAG_COST_PARTITIONS", "4,32,128".to_owned());
    let counts = counts.split(',').filter_map(|x| x.trim().parse().ok());
    let mut topics: Vec<Topic> = counts.map(|p| setup_topic(&env, &mock, p)).collect();
    let (win, interval) = (env.window, env.interval);
    eprintln!("{rounds} rounds of {win:?} windows, refresh interval {interval:?}");

    let started = Instant::now();
    // samples[topic][variant]: one per round.
    let mut samples: Vec<Vec<Vec<Sample>>> = topics.iter().map(|_| vec![]).collect();
    for round in 0..rounds {
        for (t, by_variant) in topics.iter_mut().zip(&mut samples) {
            by_variant.resize_with(VARIANTS.len(), Vec::new);
            for k in 0..VARIANTS.len() {
                let vi = (k + round) % VARIANTS.len();
                let s = window(&env, t, VARIANTS[vi], round == 0);
                let (secs, label, p) = (started.elapsed().as_secs_f64(), VARIANTS[vi].label, t.p);
                let (worker, broker, n) = (s.worker_ms_s, s.broker_ms_s, s.refreshes);
                eprintln!(
                    "[{secs:>3.0} s] round {} P={p:<3} {label:<37} worker {worker:>5.2} ms/s, \
                     broker {broker:>5.2} ms/s, {n:.1} refreshes",
                    round + 1
                );
                by_variant[vi].push(s);
            }
        }
    }
    let asked = interval * 2 + Duration::from_millis(500);
    println!(
        "\nCPU in ms per second of wall time, median of {rounds} rounds of {win:?} windows \
         [min-max]; refresh interval {interval:?}; worker = the process minus the mock broker's \
         thread; delta = minus `off` in the same round. `fresh while paused`: asked {asked:?} \
         after new messages reached paused partitions.\n"
    );
    println!(
        "| P | variant | worker CPU ms/s | delta worker ms/s | worker ms per refresh \
         | delta broker ms/s | refresh wall ms | fresh while paused |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for (t, by_variant) in topics.iter().zip(&samples) {
        for (v, ss) in VARIANTS.iter().zip(by_variant) {
            let cells = row(*v, t, ss, &by_variant[0], win);
            println!("| {} | {} | {cells} |", t.p, v.label);
        }
    }
}

/// The table cells of one (P, variant) after the first two, from its samples and `off`'s.
fn row(v: Variant, t: &Topic, ss: &[Sample], off: &[Sample], window: Duration) -> String {
    let col = |f: &dyn Fn(&Sample) -> f64| median(ss.iter().map(f).collect());
    let pairs = || ss.iter().zip(off);
    let delta =
        |f: &dyn Fn(&Sample, &Sample) -> f64| median(pairs().map(|(s, o)| f(s, o)).collect());
    let worker: Vec<f64> = ss.iter().map(|s| s.worker_ms_s).collect();
    let lo = worker.iter().copied().fold(f64::MAX, f64::min);
    let hi = worker.iter().copied().fold(0.0, f64::max);
    let deltas = if v.is_off() {
        "- | - | -".to_owned()
    } else {
        let dw = |s: &Sample, o: &Sample| s.worker_ms_s - o.worker_ms_s;
        let per_refresh = delta(&|s, o| dw(s, o) * window.as_secs_f64() / s.refreshes);
        let broker = delta(&|s, o| s.broker_ms_s - o.broker_ms_s);
        format!("{:+.2} | {per_refresh:.2} | {broker:+.2}", delta(&dw))
    };
    let walls: Vec<f64> = ss.iter().flat_map(|s| s.walls.iter().copied()).collect();
    let per_request = col(&|s| s.ms_per_request);
    let wall = match v.query {
        None if v.stats => {
            let (kib, us) = (col(&|s| s.doc_kib), col(&|s| s.parse_us));
            format!("- (document {kib:.0} KiB, parsed in {us:.0} us)")
        }
        None => "-".into(),
        Some(_) if walls.is_empty() => {
            let est = per_request * v.requests(t.p);
            format!("~{est:.0} (estimate: none finished in a window; {per_request:.0} ms/request)")
        }
        Some(_) => format!("{:.0} (n={})", median(walls.clone()), walls.len()),
    };
    let fresh = ss.iter().find_map(|s| s.fresh.as_deref()).unwrap_or("-");
    format!(
        "{:.2} [{lo:.2}-{hi:.2}] | {deltas} | {wall} | {fresh}",
        median(worker)
    )
}
