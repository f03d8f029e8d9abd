//! The worker's metrics: the catalogue that declares them (`catalogue.rs`), the process-wide
//! Prometheus recorder and its upkeep, and the handles the pipeline records through.
//!
//! Invariant: metric names follow Prometheus conventions (the `order_worker_` prefix, base
//! units, `_total` on counters) and carry only low-cardinality labels (a fixed set of reasons
//! and kinds). Handles are registered once in [`Metrics::new`] so the hot path never looks a
//! metric up by name.

use std::sync::Mutex;

use metrics::{Counter, Gauge, Histogram, describe_counter, describe_gauge, describe_histogram};

mod catalogue;

pub use catalogue::*;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::contract::Reason;
use crate::db::FailureKind;
use crate::error::Error;

static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
/// How often recorded histogram samples are folded into buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Installs the process-wide Prometheus recorder once and returns its handle (the same handle on
/// every later call, so several workers in one process share it).
pub fn install() -> Result<PrometheusHandle, Error> {
    let mut slot = HANDLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let build = |e: metrics_exporter_prometheus::BuildError| Error::Config(format!("metrics: {e}"));
    let mut builder = PrometheusBuilder::new();
    for m in ALL.iter().filter(|m| m.kind == Kind::Histogram) {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(m.name.into()), m.buckets)
            .map_err(build)?;
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| Error::Config(format!("metrics recorder: {e}")))?;
    spawn_upkeep(handle.clone())?;
    describe();
    BUILD_INFO
        .gauge_of(&[env!("CARGO_PKG_VERSION"), env!("ORDER_WORKER_REVISION")])
        .set(1.0);
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Histograms keep every recorded sample until they are folded into their buckets, which a
/// scrape does. Without this, a worker nobody scrapes (or a scraper that is down) would grow by
/// 8 bytes per message.
fn spawn_upkeep(handle: PrometheusHandle) -> Result<(), Error> {
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                fold_samples(&handle);
            }
        })?;
    Ok(())
}

/// Folds recorded samples into their buckets and frees the blocks that held them. A histogram
/// keeps its samples in blocks of 64 (thousands a second while a backlog drains: the end-to-end
/// latency is recorded per message), freed through crossbeam's epoch collector, which on its own
/// runs every 128 pins of a thread. Left alone, the last few hundred blocks stay allocated well
/// into an idle period, scattered over the heap, each keeping a page `malloc_trim` could
/// otherwise return (0.3-0.9 MiB of idle RSS after a backlog; docs/performance.md). A deferred
/// free waits for the epoch to advance twice: two flushes do that, unless another thread is
/// recording at that moment. (crossbeam-epoch is the version metrics-util uses, so that both
/// talk to the same collector; the unit test below fails if they ever part.)
fn fold_samples(handle: &PrometheusHandle) {
    handle.run_upkeep();
    for _ in 0..2 {
        crossbeam_epoch::pin().flush();
    }
}

/// [`fold_samples`] now, on the calling thread: for an idle worker about to trim its heap.
pub(crate) fn fold_pending_samples() {
    let handle = HANDLE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(handle) = handle {
        fold_samples(&handle);
    }
}

fn describe() {
    for m in ALL.iter().filter(|m| !m.lag_view) {
        match m.kind {
            Kind::Counter => describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

/// Handles of every metric, registered once.
#[derive(Clone)]
pub struct Metrics {
    pub consumed: Counter,
    pub applied: Counter,
    pub duplicates: Counter,
    dead_letters: Vec<Counter>,
    db_errors: Vec<Counter>,
    pub db_retries: Counter,
    pub commits: Counter,
    pub commit_failures: Counter,
    pub consumer_errors: Counter,
    pub offset_resets: Counter,
    pub rebalance_assign: Counter,
    pub rebalance_revoke: Counter,
    pub rebalance_error: Counter,
    pub partitions_assigned: Gauge,
    pub partitions_paused: Gauge,
    pub backpressure_pauses: Counter,
    pub in_flight_messages: Gauge,
    pub in_flight_bytes: Gauge,
    pub batch_duration: Histogram,
    pub batch_size: Histogram,
    pub end_to_end_latency: Histogram,
    pub db_pool_in_use: Gauge,
    pub db_pool_idle: Gauge,
    pub ready: Gauge,
    pub lag_refresh_failures: Counter,
    pub dead_letter_publish_failures: Counter,
    pub dead_letter_topic_refusals: Counter,
    pub dead_letters_cut: Counter,
    pub schema_registry_failures: Counter,
    dead_letters_unreplayed: Vec<Gauge>,
    pub pipeline_stall: Gauge,
}

impl Metrics {
    /// Registers every series (so each appears at zero before its first event).
    pub fn new() -> Self {
        let rebalance = |kind: &str| REBALANCES.counter_of(&[kind]);
        Self {
            consumed: MESSAGES_CONSUMED.counter_of(&[]),
            applied: EVENTS_APPLIED.counter_of(&[]),
            duplicates: EVENTS_DUPLICATE.counter_of(&[]),
            dead_letters: Reason::ALL
                .iter()
                .map(|r| DEAD_LETTERS.counter_of(&[r.as_str()]))
                .collect(),
            db_errors: FailureKind::ALL
                .iter()
                .map(|k| DB_ERRORS.counter_of(&[k.as_str()]))
                .collect(),
            db_retries: DB_RETRIES.counter_of(&[]),
            commits: COMMITS.counter_of(&[]),
            commit_failures: COMMIT_FAILURES.counter_of(&[]),
            consumer_errors: CONSUMER_ERRORS.counter_of(&[]),
            offset_resets: OFFSET_RESETS.counter_of(&[]),
            rebalance_assign: rebalance("assign"),
            rebalance_revoke: rebalance("revoke"),
            rebalance_error: rebalance("error"),
            partitions_assigned: PARTITIONS_ASSIGNED.gauge_of(&[]),
            partitions_paused: PARTITIONS_PAUSED.gauge_of(&[]),
            backpressure_pauses: BACKPRESSURE_PAUSES.counter_of(&[]),
            in_flight_messages: IN_FLIGHT_MESSAGES.gauge_of(&[]),
            in_flight_bytes: IN_FLIGHT_BYTES.gauge_of(&[]),
            batch_duration: BATCH_DURATION.histogram_of(&[]),
            batch_size: BATCH_SIZE.histogram_of(&[]),
            end_to_end_latency: END_TO_END_LATENCY.histogram_of(&[]),
            db_pool_in_use: DB_POOL_CONNECTIONS.gauge_of(&["in_use"]),
            db_pool_idle: DB_POOL_CONNECTIONS.gauge_of(&["idle"]),
            ready: READY.gauge_of(&[]),
            lag_refresh_failures: LAG_REFRESH_FAILURES.counter_of(&[]),
            dead_letter_publish_failures: DEAD_LETTER_PUBLISH_FAILURES.counter_of(&[]),
            dead_letter_topic_refusals: DEAD_LETTER_TOPIC_REFUSALS.counter_of(&[]),
            dead_letters_cut: DEAD_LETTERS_CUT.counter_of(&[]),
            schema_registry_failures: SCHEMA_REGISTRY_FAILURES.counter_of(&[]),
            dead_letters_unreplayed: Reason::ALL
                .iter()
                .map(|r| DEAD_LETTERS_UNREPLAYED.gauge_of(&[r.as_str()]))
                .collect(),
            pipeline_stall: PIPELINE_STALL.gauge_of(&[]),
        }
    }

    /// Depth gauges of `lanes` processor lanes, with their capacity recorded once.
    pub fn lanes(&self, lanes: usize, capacity: usize) -> Vec<Gauge> {
        (0..lanes)
            .map(|lane| {
                let lane = lane.to_string();
                CHANNEL_CAPACITY.gauge_of(&[&lane]).set(capacity as f64);
                CHANNEL_DEPTH.gauge_of(&[&lane])
            })
            .collect()
    }

    pub fn dead_lettered(&self, reason: Reason) -> &Counter {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        &self.dead_letters[i]
    }

    /// Sets the unreplayed dead letters of every reason: `counts` by reason name, the others 0.
    pub fn set_unreplayed(&self, counts: &[(String, i64)]) {
        for (reason, gauge) in Reason::ALL.iter().zip(&self.dead_letters_unreplayed) {
            let n = counts
                .iter()
                .find(|(r, _)| r == reason.as_str())
                .map_or(0, |(_, n)| *n);
            gauge.set(n as f64);
        }
    }

    pub fn db_error(&self, kind: FailureKind) -> &Counter {
        let i = FailureKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        &self.db_errors[i]
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// Bytes the process holds in malloc's arenas (all of them).
    fn arena_bytes() -> usize {
        // SAFETY: mallinfo2 takes no arguments and only reads glibc's own counters.
        unsafe { libc::mallinfo2() }.uordblks
    }

    #[test]
    fn folding_samples_frees_the_blocks_that_held_them_at_once() {
        // Fixed buckets, so that folding itself allocates nothing per distinct value.
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[1.0])
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        let histogram = metrics::with_local_recorder(&recorder, || metrics::histogram!("t"));
        // 4,000 blocks of 64 samples: about 2 MiB.
        for _ in 0..256_000 {
            histogram.record(0.5);
        }
        let recorded = arena_bytes();
        super::fold_samples(&handle);
        let freed = recorded.saturating_sub(arena_bytes());
        assert!(freed > 1_500_000, "freed only {freed} bytes");
        assert!(handle.render().contains("t_count 256000"));
    }
}
