//! Phase 2, end to end: the backlog drained by the release binary (`order-worker run`, a
//! subprocess) from process start until the group has committed every partition's end offset;
//! the worker's memory, CPU, batching and drain timeline on the way, its idle memory and
//! graceful stop after, and the final state checked against the oracle and the ceiling's.

use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::bench::{Bench, DB_PREFIX, TOPIC, log};
use crate::cpu::{CpuSnapshot, CpuUse, Party};
use crate::kafka::Probe;
use crate::metrics::{self, BatchStats, http_get};
use crate::numbers::per_second;
use crate::pg;
use crate::timeline::Sampler;
use crate::worker::mib;

pub struct E2eResult {
    pub label: String,
    pub args: Vec<String>,
    pub committed: Option<Duration>,
    pub ready: Option<Duration>,
    pub first_write: Option<f64>,
    pub last_write: Option<f64>,
    pub peak_rss: u64,
    pub end_rss: u64,
    pub idle_rss: u64,
    pub cpu: CpuUse,
    pub state: Result<(), String>,
    /// Mean batch, mean batch write and backpressure pauses, at the end of the drain.
    pub batches: BatchStats,
    /// Messages polled more than once (dropped from librdkafka's prefetch by a pause, fetched
    /// again after the resume).
    pub refetched: f64,
    /// Share of the timeline samples (every 250 ms) with partitions paused.
    pub paused_share: f64,
    pub stop: String,
    /// SIGTERM to exit, when it exited by itself.
    pub stop_ms: Option<u128>,
}

impl E2eResult {
    pub fn rate(&self, events: usize) -> Option<f64> {
        self.committed.map(|d| per_second(events, d))
    }

    /// From the first durable write to the last commit: the drain without startup and group join.
    pub fn drain_rate(&self, events: usize) -> Option<f64> {
        let span = self.committed?.as_secs_f64() - self.first_write?;
        (span > 0.0).then(|| events as f64 / span)
    }

    /// Events per CPU-second of the worker and PostgreSQL (the broker not counted).
    pub fn events_per_cpu_second(&self, events: usize) -> f64 {
        let cpu =
            self.cpu.of(Party::Worker) + self.cpu.of(Party::PgBench) + self.cpu.of(Party::PgShared);
        events as f64 / cpu.max(1e-9)
    }
}

pub fn end_to_end(b: &mut Bench, label: &str, args: &[String], digest: Option<&str>) -> E2eResult {
    let db = format!("e2e_{label}");
    let url = b.fresh_db(&db);
    b.checkpoint();
    let group = format!("bench-e2e-{label}-{}", b.run_id);
    let probe = Probe::new(&b.brokers, &group, TOPIC, b.s.partitions);
    let before = CpuSnapshot::take(None, DB_PREFIX);
    let mut worker = b.worker(TOPIC, &group, &url, args, &format!("e2e-{label}"));
    let t0 = worker.started_wall;
    let sampler = Sampler::start(&worker);
    let deadline = Duration::from_secs(600);
    let mut ready = None;
    let mut committed = None;
    let mut last_probe = Instant::now() - Duration::from_secs(1);
    while worker.started.elapsed() < deadline && !worker.exited() {
        if ready.is_none()
            && let Some((200, _)) = http_get(worker.http, "/readyz", Duration::from_millis(200))
        {
            ready = Some(worker.started.elapsed());
        }
        if last_probe.elapsed() >= Duration::from_millis(100) {
            last_probe = Instant::now();
            if probe.caught_up() {
                committed = Some(worker.started.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(if ready.is_none() { 2 } else { 20 }));
    }
    let cpu = CpuSnapshot::take(Some(worker.pid), DB_PREFIX).since(&before);
    let mem = worker.memory();
    let metrics = worker.metrics();
    let timeline = sampler.finish(&b.log_file(&format!("e2e-{label}.tsv")));
    let consumed_total = metrics::metric_sum(&metrics, "order_worker_messages_consumed_total");
    let paused_share = if timeline.is_empty() {
        0.0
    } else {
        timeline.iter().filter(|x| x.paused > 0.0).count() as f64 / timeline.len() as f64
    };
    std::thread::sleep(Duration::from_secs(b.s.idle_secs));
    let idle = worker.memory();
    let (status, took) = worker.stop(Duration::from_secs(40));
    let stop = match status {
        Some(s) if s.success() => format!("exit 0 after SIGTERM in {} ms", took.as_millis()),
        Some(s) => format!("{s} after SIGTERM in {} ms", took.as_millis()),
        None => "killed: no exit within 40 s of SIGTERM".into(),
    };
    let stop_ms = status.map(|_| took.as_millis());
    let state = b.rt.block_on(pg::final_state(&url));
    let mut ok = b.check_state(&state);
    if ok.is_ok() && digest.is_some_and(|d| d != state.digest) {
        ok = Err("final rows differ from the ceiling's (digest)".into());
    }
    if ok.is_ok() && state.dead_letters as u64 != b.expected.mix.invalid_total() {
        ok = Err(format!(
            "{} dead letters, expected {}",
            state.dead_letters,
            b.expected.mix.invalid_total()
        ));
    }
    let t0_epoch = t0
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let window = b.rt.block_on(pg::write_window(&url));
    b.drop_db(&db);
    let r = E2eResult {
        label: label.to_owned(),
        args: args.to_vec(),
        committed,
        ready,
        first_write: window.map(|(a, _)| a - t0_epoch),
        last_write: window.map(|(_, z)| z - t0_epoch),
        peak_rss: mem.peak,
        end_rss: mem.rss,
        idle_rss: idle.rss,
        cpu,
        state: ok,
        batches: BatchStats::of(&metrics),
        refetched: (consumed_total - b.s.events as f64).max(0.0),
        paused_share,
        stop,
        stop_ms,
    };
    log(format!(
        "e2e {label}: committed at {:?}, {:.0} events/s (drain {:.0}), peak RSS {:.1} MiB, idle {:.1} MiB, {}",
        r.committed,
        r.rate(b.s.events).unwrap_or(0.0),
        r.drain_rate(b.s.events).unwrap_or(0.0),
        mib(r.peak_rss),
        mib(r.idle_rss),
        r.state
            .as_ref()
            .err()
            .map_or("state verified", |e| e.as_str())
    ));
    r
}
