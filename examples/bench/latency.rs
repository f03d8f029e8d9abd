//! Phase 4, latency: a fresh worker fed at a steady rate (half the end-to-end rate by default),
//! each message's send time as its Kafka timestamp; latency = the commit time of the row the
//! message wrote (`applied_at`, `created_at` for dead letters) minus that timestamp. The worker's
//! own end-to-end histogram is read too, for comparison.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use order_worker::synth::SynthSpec;

use crate::bench::{Bench, DB_PREFIX, LATENCY_TOPIC, log};
use crate::cpu::{CpuSnapshot, CpuUse};
use crate::kafka::{self, Probe};
use crate::metrics::{self, BatchStats};
use crate::pg;
use crate::stream::generate;
use crate::timeline::Sampler;

pub struct LatencyRun {
    pub args: Vec<String>,
    pub rate: f64,
    pub achieved: f64,
    pub sent: usize,
    pub samples: Vec<f64>,
    pub truncated: usize,
    pub caught_up: bool,
    pub histogram_p50: Option<f64>,
    pub histogram_p99: Option<f64>,
    pub histogram_count: Option<f64>,
    /// Mean batch, mean batch write and backpressure pauses, after the drain.
    pub batches: BatchStats,
    pub cpu: CpuUse,
    pub peak_rss: u64,
}

impl LatencyRun {
    /// Quantile `q` of the measured latencies, in ms.
    pub fn p(&self, q: f64) -> f64 {
        percentile(&self.samples, q)
    }

    /// The highest measured latency, in ms.
    pub fn max(&self) -> f64 {
        self.samples.last().copied().unwrap_or(f64::NAN)
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn latency(b: &mut Bench, rate: f64) -> LatencyRun {
    let count = (rate * b.s.latency_secs).ceil() as usize;
    let url = b.fresh_db("latency");
    // The same generator and seed, but over 20 times more order ids than messages: almost every
    // message then writes a row of its own, whose `applied_at` is its commit time. (With several
    // versions per order only each order's last message stays observable, and those cluster at
    // the end of the run, where a worker that falls behind is furthest behind.)
    let spec = SynthSpec {
        orders: (count as u64 * 20).clamp(1, 50_000_000),
        ..b.s.spec.clone()
    };
    log(format!(
        "generating {count} messages over {} orders for the latency phase",
        spec.orders
    ));
    let messages = generate(&spec, count).0;
    b.checkpoint();
    let group = format!("bench-latency-{}", b.run_id);
    let args = b.s.worker_args_with(&b.s.latency_args);
    let mut worker = b.worker(LATENCY_TOPIC, &group, &url, &args, "latency");
    worker
        .wait_ready(Duration::from_secs(30), Duration::from_millis(5))
        .expect("worker ready for the latency phase");
    worker
        .wait_assigned(b.s.latency_partitions as usize, Duration::from_secs(60))
        .expect("worker owns the latency topic's partitions");
    let sampler = Sampler::start(&worker);
    let before = CpuSnapshot::take(Some(worker.pid), DB_PREFIX);
    log(format!(
        "latency: publishing {count} messages at {rate:.0}/s ({:.0}s)",
        b.s.latency_secs
    ));
    let placement = kafka::publish(&b.brokers, LATENCY_TOPIC, &messages, rate);
    let achieved = count as f64 / placement.elapsed.as_secs_f64().max(1e-9);
    let probe = Probe::new(&b.brokers, &group, LATENCY_TOPIC, b.s.latency_partitions);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut caught_up = false;
    while Instant::now() < deadline {
        if probe.caught_up() {
            caught_up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = CpuSnapshot::take(Some(worker.pid), DB_PREFIX).since(&before);
    let metrics = worker.metrics();
    let peak_rss = worker.memory().peak;
    sampler.finish(&b.log_file("latency.tsv"));
    let buckets = metrics::histogram(&metrics, "order_worker_end_to_end_latency_seconds");
    let truncated = probe
        .watermarks()
        .values()
        .filter(|(low, _)| *low > 0)
        .count();
    let _ = worker.stop(Duration::from_secs(40));

    let index: HashMap<(i32, i64), usize> = placement
        .coords
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, i))
        .collect();
    let first_ms = placement.sent_ms.first().copied().unwrap_or(0);
    let warmup_ms = (b.s.latency_warmup_secs * 1000.0) as i64;
    let mut samples: Vec<f64> =
        b.rt.block_on(pg::write_times(&url))
            .into_iter()
            .filter_map(|(p, o, at)| {
                let sent = placement.sent_ms[*index.get(&(p, o))?];
                (sent >= first_ms + warmup_ms).then_some(at * 1000.0 - sent as f64)
            })
            .collect();
    samples.sort_by(f64::total_cmp);
    let r = LatencyRun {
        args,
        rate,
        achieved,
        sent: count,
        samples,
        truncated,
        caught_up,
        histogram_p50: metrics::bucket_quantile(&buckets, 0.5),
        histogram_p99: metrics::bucket_quantile(&buckets, 0.99),
        histogram_count: buckets.last().map(|(_, c)| *c),
        batches: BatchStats::of(&metrics),
        cpu,
        peak_rss,
    };
    log(format!(
        "latency: {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.samples.len(),
        r.p(0.5),
        r.p(0.99),
        r.max()
    ));
    r
}
