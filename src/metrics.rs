//! Every metric the worker exports: its name, type, unit and help text, in one place.
//!
//! Invariant: metric names are declared only here, follow Prometheus conventions (the
//! `order_worker_` prefix, base units, `_total` on counters) and carry only low-cardinality
//! labels (a fixed set of reasons and kinds). Handles are registered once in [`Metrics::new`]
//! so the hot path never looks a metric up by name.

use std::sync::Mutex;

use metrics::{
    Counter, Gauge, Histogram, Unit, describe_counter, describe_gauge, describe_histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::contract::Reason;
use crate::db::FailureKind;
use crate::error::Error;

pub const MESSAGES_CONSUMED: &str = "order_worker_messages_consumed_total";
pub const EVENTS_APPLIED: &str = "order_worker_events_applied_total";
pub const EVENTS_DUPLICATE: &str = "order_worker_events_duplicate_total";
pub const DEAD_LETTERS: &str = "order_worker_dead_letters_total";
pub const DB_ERRORS: &str = "order_worker_db_errors_total";
pub const DB_RETRIES: &str = "order_worker_db_retries_total";
pub const COMMITS: &str = "order_worker_kafka_commits_total";
pub const COMMIT_FAILURES: &str = "order_worker_kafka_commit_failures_total";
pub const CONSUMER_ERRORS: &str = "order_worker_kafka_consumer_errors_total";
pub const REBALANCES: &str = "order_worker_rebalances_total";
pub const PARTITIONS_ASSIGNED: &str = "order_worker_partitions_assigned";
pub const PARTITIONS_PAUSED: &str = "order_worker_partitions_paused";
pub const BACKPRESSURE_PAUSES: &str = "order_worker_backpressure_pauses_total";
pub const IN_FLIGHT_MESSAGES: &str = "order_worker_in_flight_messages";
pub const IN_FLIGHT_BYTES: &str = "order_worker_in_flight_bytes";
pub const BATCH_DURATION: &str = "order_worker_batch_write_duration_seconds";
pub const BATCH_SIZE: &str = "order_worker_batch_size_messages";
pub const END_TO_END_LATENCY: &str = "order_worker_end_to_end_latency_seconds";
pub const CHANNEL_DEPTH: &str = "order_worker_channel_depth_messages";
pub const CHANNEL_CAPACITY: &str = "order_worker_channel_capacity_messages";
pub const DB_POOL_CONNECTIONS: &str = "order_worker_db_pool_connections";
pub const READY: &str = "order_worker_ready";
pub const BUILD_INFO: &str = "order_worker_build_info";
pub const LAG_REFRESH_FAILURES: &str = "order_worker_lag_refresh_failures_total";
pub const DEAD_LETTER_PUBLISH_FAILURES: &str = "order_worker_dead_letter_publish_failures_total";
pub const DEAD_LETTER_TOPIC_REFUSALS: &str = "order_worker_dead_letter_topic_refusals_total";
pub const DEAD_LETTERS_CUT: &str = "order_worker_dead_letters_cut_total";
pub const PIPELINE_STALL: &str = "order_worker_pipeline_stall_seconds";

/// Lag families are rendered from the last measurement (see `lag::LagView`), not through the
/// `metrics` registry, because a revoked partition's series must disappear; their names and help
/// text live here with the others.
pub const CONSUMER_LAG: (&str, &str) = (
    "order_worker_consumer_lag_messages",
    "Log end offset minus the group's committed offset, per partition this instance owns.",
);
pub const CONSUMER_LAG_SUM: (&str, &str) = (
    "order_worker_consumer_lag_sum_messages",
    "Sum of order_worker_consumer_lag_messages over the partitions this instance owns.",
);
pub const CONSUMER_TIME_LAG: (&str, &str) = (
    "order_worker_consumer_time_lag_seconds",
    "Age of the newest committed message while the partition has lag; 0 when caught up.",
);
pub const LAG_AGE: (&str, &str) = (
    "order_worker_lag_measurement_age_seconds",
    "Seconds since consumer lag was last measured from the broker.",
);

/// Batch writes took 2-40 ms at 1,000 rows on the reference machine; retries stretch to seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SIZE_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];
/// Kafka timestamp to durable row: tens of milliseconds when caught up (batch linger plus one
/// write), minutes while a backlog drains.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

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
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(BATCH_DURATION.into()), DURATION_BUCKETS)
        .map_err(build)?
        .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), SIZE_BUCKETS)
        .map_err(build)?
        .set_buckets_for_metric(Matcher::Full(END_TO_END_LATENCY.into()), LATENCY_BUCKETS)
        .map_err(build)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| Error::Config(format!("metrics recorder: {e}")))?;
    spawn_upkeep(handle.clone())?;
    describe();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "revision" => env!("ORDER_WORKER_REVISION")).set(1.0);
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
    describe_counter!(
        MESSAGES_CONSUMED,
        Unit::Count,
        "Messages received from Kafka."
    );
    describe_counter!(
        EVENTS_APPLIED,
        Unit::Count,
        "Events that inserted or updated an order row."
    );
    describe_counter!(
        EVENTS_DUPLICATE,
        Unit::Count,
        "Valid events ignored because the order already had that version or a newer one."
    );
    describe_counter!(
        DEAD_LETTERS,
        Unit::Count,
        "Messages dead-lettered, by reason."
    );
    describe_counter!(DB_ERRORS, Unit::Count, "PostgreSQL errors, by kind.");
    describe_counter!(
        DB_RETRIES,
        Unit::Count,
        "Retries of PostgreSQL operations after transient errors."
    );
    describe_counter!(COMMITS, Unit::Count, "Successful Kafka offset commits.");
    describe_counter!(
        COMMIT_FAILURES,
        Unit::Count,
        "Failed Kafka offset commits (retried at the next interval)."
    );
    describe_counter!(
        CONSUMER_ERRORS,
        Unit::Count,
        "Errors reported by the Kafka consumer."
    );
    describe_counter!(
        REBALANCES,
        Unit::Count,
        "Consumer group rebalances, by kind (assign, revoke, error)."
    );
    describe_gauge!(
        PARTITIONS_ASSIGNED,
        Unit::Count,
        "Partitions currently assigned to this instance."
    );
    describe_gauge!(
        PARTITIONS_PAUSED,
        Unit::Count,
        "Partitions paused because the pipeline is full."
    );
    describe_counter!(
        BACKPRESSURE_PAUSES,
        Unit::Count,
        "Times the consumer paused its partitions for backpressure."
    );
    describe_gauge!(
        IN_FLIGHT_MESSAGES,
        Unit::Count,
        "Messages taken from Kafka and not yet durable."
    );
    describe_gauge!(
        IN_FLIGHT_BYTES,
        Unit::Bytes,
        "Bytes of messages taken from Kafka and not yet durable."
    );
    describe_histogram!(
        BATCH_DURATION,
        Unit::Seconds,
        "Time to write one batch durably, retries included."
    );
    describe_histogram!(BATCH_SIZE, Unit::Count, "Messages per written batch.");
    describe_histogram!(
        END_TO_END_LATENCY,
        Unit::Seconds,
        "Kafka message timestamp to its row or dead letter being durable."
    );
    describe_gauge!(
        CHANNEL_DEPTH,
        Unit::Count,
        "Messages waiting in a processor lane."
    );
    describe_gauge!(
        CHANNEL_CAPACITY,
        Unit::Count,
        "Capacity of a processor lane."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        Unit::Count,
        "PostgreSQL pool connections, by state (in_use, idle)."
    );
    describe_gauge!(READY, Unit::Count, "1 when /readyz reports ready, else 0.");
    describe_gauge!(
        BUILD_INFO,
        Unit::Count,
        "Always 1; the labels name the version and git revision."
    );
    describe_counter!(
        LAG_REFRESH_FAILURES,
        Unit::Count,
        "Consumer lag measurements that failed (the previous figures stay)."
    );
    describe_counter!(
        DEAD_LETTER_PUBLISH_FAILURES,
        Unit::Count,
        "Failed attempts to publish dead letters to the dead-letter topic (retried)."
    );
    describe_counter!(
        DEAD_LETTER_TOPIC_REFUSALS,
        Unit::Count,
        "Dead letters the dead-letter topic refused for good (kept in the dead_letters table only)."
    );
    describe_counter!(
        DEAD_LETTERS_CUT,
        Unit::Count,
        "Dead letters published with their value cut to a size the dead-letter topic takes."
    );
    describe_gauge!(
        PIPELINE_STALL,
        Unit::Seconds,
        "How long messages have been in flight with nothing becoming durable while PostgreSQL and Kafka answer; 0 while the pipeline progresses. /healthz fails at STALL_TIMEOUT."
    );
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
    pub pipeline_stall: Gauge,
}

impl Metrics {
    /// Registers every series (so each appears at zero before its first event).
    pub fn new() -> Self {
        let rebalance = |kind: &'static str| metrics::counter!(REBALANCES, "kind" => kind);
        Self {
            consumed: metrics::counter!(MESSAGES_CONSUMED),
            applied: metrics::counter!(EVENTS_APPLIED),
            duplicates: metrics::counter!(EVENTS_DUPLICATE),
            dead_letters: Reason::ALL
                .iter()
                .map(|r| metrics::counter!(DEAD_LETTERS, "reason" => r.as_str()))
                .collect(),
            db_errors: FailureKind::ALL
                .iter()
                .map(|k| metrics::counter!(DB_ERRORS, "kind" => k.as_str()))
                .collect(),
            db_retries: metrics::counter!(DB_RETRIES),
            commits: metrics::counter!(COMMITS),
            commit_failures: metrics::counter!(COMMIT_FAILURES),
            consumer_errors: metrics::counter!(CONSUMER_ERRORS),
            rebalance_assign: rebalance("assign"),
            rebalance_revoke: rebalance("revoke"),
            rebalance_error: rebalance("error"),
            partitions_assigned: metrics::gauge!(PARTITIONS_ASSIGNED),
            partitions_paused: metrics::gauge!(PARTITIONS_PAUSED),
            backpressure_pauses: metrics::counter!(BACKPRESSURE_PAUSES),
            in_flight_messages: metrics::gauge!(IN_FLIGHT_MESSAGES),
            in_flight_bytes: metrics::gauge!(IN_FLIGHT_BYTES),
            batch_duration: metrics::histogram!(BATCH_DURATION),
            batch_size: metrics::histogram!(BATCH_SIZE),
            end_to_end_latency: metrics::histogram!(END_TO_END_LATENCY),
            db_pool_in_use: metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "in_use"),
            db_pool_idle: metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "idle"),
            ready: metrics::gauge!(READY),
            lag_refresh_failures: metrics::counter!(LAG_REFRESH_FAILURES),
            dead_letter_publish_failures: metrics::counter!(DEAD_LETTER_PUBLISH_FAILURES),
            dead_letter_topic_refusals: metrics::counter!(DEAD_LETTER_TOPIC_REFUSALS),
            dead_letters_cut: metrics::counter!(DEAD_LETTERS_CUT),
            pipeline_stall: metrics::gauge!(PIPELINE_STALL),
        }
    }

    /// Depth gauges of `lanes` processor lanes, with their capacity recorded once.
    pub fn lanes(&self, lanes: usize, capacity: usize) -> Vec<Gauge> {
        (0..lanes)
            .map(|lane| {
                let lane = lane.to_string();
                metrics::gauge!(CHANNEL_CAPACITY, "lane" => lane.clone()).set(capacity as f64);
                metrics::gauge!(CHANNEL_DEPTH, "lane" => lane)
            })
            .collect()
    }

    pub fn dead_lettered(&self, reason: Reason) -> &Counter {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        &self.dead_letters[i]
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
