//! Phase 4, latency: a fresh worker fed at a steady rate (half the end-to-end rate by default),
//! each message's send time as its Kafka timestamp; latency = the commit time of the transaction
//! that wrote the message's row or dead letter (PostgreSQL's `pg_xact_commit_timestamp`, with
//! `track_commit_timestamp` on) minus that timestamp. Without commit times, the transaction's
//! start (`applied_at`, `created_at`) stands in, and the report says so. The worker's own
//! end-to-end histogram is read too, for comparison.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::bench::{Bench, DB_PREFIX, latency_topic, log};
use crate::cpu::{CpuSnapshot, CpuUse};
use crate::flush::{self, Flush, FlushProbe};
use crate::kafka::{self, Probe};
use crate::metrics::{self, BatchStats};
use crate::pg;
use crate::stream::generate_in_segments;
use crate::timeline::Sampler;

pub struct LatencyRun {
    /// `latency`, or `latency-r<n>` when there are several rounds.
    pub label: String,
    pub args: Vec<String>,
    pub rate: f64,
    pub achieved: f64,
    pub sent: usize,
    /// Latencies to each row's commit (to its transaction's start without commit times), ms,
    /// sorted.
    pub samples: Vec<f64>,
    /// Whether `samples` end at the commit (the server records commit times).
    pub to_commit: bool,
    /// Latencies to each row's transaction start (`applied_at`), ms, sorted.
    pub to_start: Vec<f64>,
    pub truncated: usize,
    pub caught_up: bool,
    pub histogram_p50: Option<f64>,
    pub histogram_p99: Option<f64>,
    pub histogram_count: Option<f64>,
    /// Mean batch, mean batch write and backpressure pauses, after the drain.
    pub batches: BatchStats,
    pub cpu: CpuUse,
    pub peak_rss: u64,
    /// Checkpoints PostgreSQL started while publishing and draining.
    pub checkpoints: Option<i64>,
    /// The disk's longest flush while publishing and draining (ms) and how many took over
    /// [`SLOW_FLUSH_MS`] (`None`: the probe could not run), and whether they were timed on
    /// PostgreSQL's disk (`None`: unknown).
    pub flush_worst: Option<(f64, usize)>,
    pub flush_on_pg_disk: Option<bool>,
}

/// Flushes longer than this are counted: longer than a round's whole p50 here (30-37 ms), one
/// delays every commit waiting behind it into the tail.
pub const SLOW_FLUSH_MS: f64 = 50.0;

impl LatencyRun {
    /// Quantile `q` of the measured latencies, in ms.
    pub fn p(&self, q: f64) -> f64 {
        percentile(&self.samples, q)
    }

    /// The highest measured latency, in ms.
    pub fn max(&self) -> f64 {
        self.samples.last().copied().unwrap_or(f64::NAN)
    }

    /// p99 / p50, what the target bounds.
    pub fn ratio(&self) -> f64 {
        self.p(0.99) / self.p(0.5)
    }

    pub fn passes(&self) -> bool {
        self.caught_up && self.ratio() <= 2.0
    }
}

/// The round with the median p99 / p50 (of an even count, the worse of the middle two).
pub fn median_round(runs: &[LatencyRun]) -> Option<&LatencyRun> {
    let mut by_ratio: Vec<&LatencyRun> = runs.iter().collect();
    by_ratio.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    by_ratio.get(by_ratio.len() / 2).copied()
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Round `round` (from 0) of the latency phase.
pub fn latency(b: &mut Bench, rate: f64, round: usize) -> LatencyRun {
    let label = if b.s.latency_rounds > 1 {
        format!("latency-r{}", round + 1)
    } else {
        "latency".to_owned()
    };
    let topic = latency_topic(round);
    let count = (rate * b.s.latency_secs).ceil() as usize;
    let url = b.fresh_db(&label);
    // The backlog's kind of traffic (same mix, same versions per order), so that "half the
    // end-to-end rate" is half of what the worker drains of it; in short segments of orders
    // (see `generate_in_segments`), so that the messages a row keeps observable are spread over
    // the run.
    let events_per_order = b.s.events as f64 / b.s.spec.orders as f64;
    log(format!(
        "generating {count} messages for the latency phase, {events_per_order:.1} per order"
    ));
    let messages = generate_in_segments(&b.s.spec, events_per_order, count);
    b.checkpoint();
    let (worker, group) = b.paced_worker(&topic, &url, &label);
    let checkpoints_before = b.rt.block_on(b.server.checkpoints());
    let sampler = Sampler::start(&worker);
    let flushes = FlushProbe::start(b.log_file(&format!("{label}-flush-probe")));
    let before = CpuSnapshot::take(Some(worker.pid), DB_PREFIX);
    log(format!(
        "{label}: publishing {count} messages at {rate:.0}/s ({:.0}s)",
        b.s.latency_secs
    ));
    let placement = kafka::publish(&b.brokers, &topic, &messages, b.s.paced(rate));
    let achieved = count as f64 / placement.elapsed.as_secs_f64().max(1e-9);
    let probe = Probe::new(&b.brokers, &group, &topic, b.s.latency_partitions);
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
    let flushes = flushes.finish();
    let data_dir = b.rt.block_on(b.server.data_directory());
    let flush_on_pg_disk = data_dir.and_then(|d| flush::same_device(&d, &b.s.log_dir));
    let checkpoints = checkpoints_before
        .zip(b.rt.block_on(b.server.checkpoints()))
        .map(|(before, after)| after - before);
    let metrics = worker.metrics();
    let peak_rss = worker.memory().peak;
    sampler.finish(&b.log_file(&format!("{label}.tsv")));
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
    let times = b.rt.block_on(pg::write_times(&url));
    b.drop_db(&label);
    let to_commit = times.iter().all(|t| t.3.is_some());
    let mut by_partition: std::collections::BTreeMap<i32, Vec<f64>> = Default::default();
    let timed: Vec<Timed> = times
        .into_iter()
        .filter_map(|(p, o, start, commit)| {
            let sent = placement.sent_ms[*index.get(&(p, o))?];
            let ms = |at: f64| at * 1000.0 - sent as f64;
            let end = ms(commit.unwrap_or(start));
            (sent >= first_ms + warmup_ms).then(|| {
                by_partition.entry(p).or_default().push(end);
                (sent, end, ms(start))
            })
        })
        .collect();
    write_slices(
        &b.log_file(&format!("{label}-seconds.tsv")),
        first_ms,
        b.s.latency_slice_ms,
        &timed,
        &flushes,
    );
    write_partitions(
        &b.log_file(&format!("{label}-partitions.tsv")),
        by_partition,
    );
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let flush_worst = flush::worst(&flushes, SLOW_FLUSH_MS);
    let samples = sorted(timed.iter().map(|t| t.1).collect());
    let to_start = sorted(timed.iter().map(|t| t.2).collect());
    let r = LatencyRun {
        label,
        args: b.s.worker_args_with(&b.s.latency_args),
        rate,
        achieved,
        sent: count,
        samples,
        to_commit,
        to_start,
        truncated,
        caught_up,
        histogram_p50: metrics::bucket_quantile(&buckets, 0.5),
        histogram_p99: metrics::bucket_quantile(&buckets, 0.99),
        histogram_count: buckets.last().map(|(_, c)| *c),
        batches: BatchStats::of(&metrics),
        cpu,
        peak_rss,
        checkpoints,
        flush_worst,
        flush_on_pg_disk,
    };
    log(format!(
        "{}: {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.label,
        r.samples.len(),
        r.p(0.5),
        r.p(0.99),
        r.max()
    ));
    r
}

/// Writes the latencies by source partition: count, p50, p99 and max to the commit (else the
/// transaction start). It shows whether a tail is spread over the partitions or is one
/// partition's messages arriving late.
fn write_partitions(path: &std::path::Path, partitions: std::collections::BTreeMap<i32, Vec<f64>>) {
    let mut out = String::from("partition\tcount\tp50_ms\tp99_ms\tmax_ms\n");
    for (partition, mut ms) in partitions {
        ms.sort_by(f64::total_cmp);
        out.push_str(&format!("{partition}\t{}\n", spread(&ms)));
    }
    write_tsv(path, out);
}

/// Writes the latencies by the slice of `slice_ms` they were sent in: count, p50, p99 and max to
/// the commit (else the transaction start), p50 and p99 to the transaction start, the longest a
/// transaction took from its start to its commit record (PostgreSQL stamps the commit time
/// before it flushes the WAL, so a slow flush does not show there), the disk's longest flush in
/// the slice, and the slice's start as Unix ms (to line it up with PostgreSQL's log). It shows
/// whether a tail is spread over the run or comes from one slow stretch, and whether that
/// stretch was spent in a transaction or waiting for a flush before the next could start.
fn write_slices(
    path: &std::path::Path,
    first_ms: i64,
    slice_ms: i64,
    timed: &[Timed],
    flushes: &[Flush],
) {
    #[derive(Default)]
    struct Slice {
        to_end: Vec<f64>,
        to_start: Vec<f64>,
        in_db: f64,
        flush: f64,
    }
    let mut slices: std::collections::BTreeMap<i64, Slice> = Default::default();
    for (sent, ms, start) in timed {
        let slice = slices.entry((sent - first_ms) / slice_ms).or_default();
        slice.to_end.push(*ms);
        slice.to_start.push(*start);
        slice.in_db = slice.in_db.max(ms - start);
    }
    for (at, ms) in flushes {
        if let Some(slice) = slices.get_mut(&((at - first_ms).div_euclid(slice_ms))) {
            slice.flush = slice.flush.max(*ms);
        }
    }
    let mut out = String::from(
        "second\tcount\tp50_ms\tp99_ms\tmax_ms\tstart_p50_ms\tstart_p99_ms\tin_db_max_ms\tflush_max_ms\tunix_ms\n",
    );
    for (n, mut slice) in slices {
        let (to_end, to_start) = (&mut slice.to_end, &mut slice.to_start);
        to_end.sort_by(f64::total_cmp);
        to_start.sort_by(f64::total_cmp);
        let at_ms = n * slice_ms;
        let (in_db, flush) = (slice.in_db, slice.flush);
        out.push_str(&format!(
            "{:.1}\t{}\t{:.1}\t{:.1}\t{in_db:.1}\t{flush:.1}\t{}\n",
            at_ms as f64 / 1000.0,
            spread(to_end),
            percentile(to_start, 0.5),
            percentile(to_start, 0.99),
            first_ms + at_ms
        ));
    }
    write_tsv(path, out);
}

/// A row's send time (Unix ms) and its latencies (ms) to its transaction's commit (else start)
/// and to its transaction's start.
type Timed = (i64, f64, f64);

/// `count, p50, p99, max` of sorted latencies (ms), tab-separated.
fn spread(sorted: &[f64]) -> String {
    format!(
        "{}\t{:.1}\t{:.1}\t{:.1}",
        sorted.len(),
        percentile(sorted, 0.5),
        percentile(sorted, 0.99),
        sorted.last().copied().unwrap_or(f64::NAN),
    )
}

/// A diagnostic file: failing to write it is logged, never fatal to the run.
fn write_tsv(path: &std::path::Path, out: String) {
    if let Err(e) = std::fs::write(path, out) {
        log(format!("latency: cannot write {}: {e}", path.display()));
    }
}
