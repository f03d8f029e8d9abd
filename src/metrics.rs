//! Every metric the worker exports: its name, type, unit and help text, in one place.
//!
//! Invariant: metric names are declared only here, follow Prometheus conventions (the
//! `order_worker_` prefix, base units, `_total` on counters) and carry only low-cardinality
//! labels (a fixed set of reasons and kinds). Handles are registered once in [`Metrics::new`]
//! so the hot path never looks a metric up by name.

use std::sync::Mutex;

use metrics::{Counter, Gauge, Histogram, describe_counter, describe_gauge, describe_histogram};

pub use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::contract::Reason;
use crate::db::FailureKind;
use crate::error::Error;

/// What a metric is: everything Prometheus shows about it, and the label names its series carry.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    /// Histogram bucket bounds; empty for other kinds.
    pub buckets: &'static [f64],
    /// Rendered from the last lag measurement (see `lag::LagView`) rather than through the
    /// `metrics` registry, because a revoked partition's series must disappear.
    pub lag_view: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Metric {
    const fn new(name: &'static str, kind: Kind, unit: Unit, help: &'static str) -> Self {
        Self {
            name,
            kind,
            unit,
            help,
            labels: &[],
            buckets: &[],
            lag_view: false,
        }
    }
    const fn counter(name: &'static str, help: &'static str) -> Self {
        Self::new(name, Kind::Counter, Unit::Count, help)
    }
    const fn gauge(name: &'static str, unit: Unit, help: &'static str) -> Self {
        Self::new(name, Kind::Gauge, unit, help)
    }
    const fn histogram(
        name: &'static str,
        unit: Unit,
        help: &'static str,
        buckets: &'static [f64],
    ) -> Self {
        Self {
            buckets,
            ..Self::new(name, Kind::Histogram, unit, help)
        }
    }
    const fn labels(self, labels: &'static [&'static str]) -> Self {
        Self { labels, ..self }
    }
    const fn rendered_by_lag_view(self) -> Self {
        Self {
            lag_view: true,
            ..self
        }
    }

    /// The series of this metric with `values` for its labels, in declaration order.
    fn series(&self, values: &[&str]) -> Vec<metrics::Label> {
        debug_assert_eq!(values.len(), self.labels.len(), "labels of {}", self.name);
        self.labels
            .iter()
            .zip(values)
            .map(|(k, v)| metrics::Label::new(*k, v.to_string()))
            .collect()
    }
    fn counter_of(&self, values: &[&str]) -> Counter {
        metrics::counter!(self.name, self.series(values))
    }
    fn gauge_of(&self, values: &[&str]) -> Gauge {
        metrics::gauge!(self.name, self.series(values))
    }
    fn histogram_of(&self, values: &[&str]) -> Histogram {
        metrics::histogram!(self.name, self.series(values))
    }
}

/// Declares each metric once and collects them all in [`ALL`].
macro_rules! catalogue {
    ($($(#[$doc:meta])* $id:ident = $ctor:ident($($arg:expr),*) $(.$with:ident($($warg:expr),*))*;)*) => {
        $($(#[$doc])* pub const $id: Metric = Metric::$ctor($($arg),*) $(.$with($($warg),*))*;)*
        /// Every metric the worker exports.
        pub const ALL: &[Metric] = &[$($id),*];
    };
}

catalogue! {
    MESSAGES_CONSUMED = counter("order_worker_messages_consumed_total", "Messages received from Kafka.");
    EVENTS_APPLIED = counter("order_worker_events_applied_total", "Events that inserted or updated an order row.");
    EVENTS_DUPLICATE = counter("order_worker_events_duplicate_total",
        "Valid events ignored because the order already had that version or a newer one.");
    DEAD_LETTERS = counter("order_worker_dead_letters_total", "Messages dead-lettered, by reason.")
        .labels(&["reason"]);
    DB_ERRORS = counter("order_worker_db_errors_total", "PostgreSQL errors, by kind.").labels(&["kind"]);
    DB_RETRIES = counter("order_worker_db_retries_total", "Retries of PostgreSQL operations after transient errors.");
    COMMITS = counter("order_worker_kafka_commits_total", "Successful Kafka offset commits.");
    COMMIT_FAILURES = counter("order_worker_kafka_commit_failures_total",
        "Failed Kafka offset commits (retried at the next interval).");
    CONSUMER_ERRORS = counter("order_worker_kafka_consumer_errors_total", "Errors reported by the Kafka consumer.");
    REBALANCES = counter("order_worker_rebalances_total", "Consumer group rebalances, by kind (assign, revoke, error).")
        .labels(&["kind"]);
    PARTITIONS_ASSIGNED = gauge("order_worker_partitions_assigned", Unit::Count,
        "Partitions currently assigned to this instance.");
    PARTITIONS_PAUSED = gauge("order_worker_partitions_paused", Unit::Count,
        "Partitions paused because the pipeline is full.");
    BACKPRESSURE_PAUSES = counter("order_worker_backpressure_pauses_total",
        "Times the consumer paused its partitions for backpressure.");
    IN_FLIGHT_MESSAGES = gauge("order_worker_in_flight_messages", Unit::Count,
        "Messages taken from Kafka and not yet durable.");
    IN_FLIGHT_BYTES = gauge("order_worker_in_flight_bytes", Unit::Bytes,
        "Bytes of messages taken from Kafka and not yet durable.");
    /// Batch writes take milliseconds at 1,000 rows; retries stretch to seconds.
    BATCH_DURATION = histogram("order_worker_batch_write_duration_seconds", Unit::Seconds,
        "Time to write one batch durably, retries included.",
        &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
    BATCH_SIZE = histogram("order_worker_batch_size_messages", Unit::Count, "Messages per written batch.",
        &[1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0]);
    /// Tens of milliseconds when caught up (batch linger plus one write), minutes while a backlog
    /// drains.
    END_TO_END_LATENCY = histogram("order_worker_end_to_end_latency_seconds", Unit::Seconds,
        "Kafka message timestamp to its row or dead letter being durable.",
        &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0]);
    CHANNEL_DEPTH = gauge("order_worker_channel_depth_messages", Unit::Count, "Messages waiting in a processor lane.")
        .labels(&["lane"]);
    CHANNEL_CAPACITY = gauge("order_worker_channel_capacity_messages", Unit::Count, "Capacity of a processor lane.")
        .labels(&["lane"]);
    DB_POOL_CONNECTIONS = gauge("order_worker_db_pool_connections", Unit::Count,
        "PostgreSQL pool connections, by state (in_use, idle).")
        .labels(&["state"]);
    READY = gauge("order_worker_ready", Unit::Count, "1 when /readyz reports ready, else 0.");
    BUILD_INFO = gauge("order_worker_build_info", Unit::Count, "Always 1; the labels name the version and git revision.")
        .labels(&["version", "revision"]);
    LAG_REFRESH_FAILURES = counter("order_worker_lag_refresh_failures_total",
        "Consumer lag measurements that failed (the previous figures stay).");
    DEAD_LETTER_PUBLISH_FAILURES = counter("order_worker_dead_letter_publish_failures_total",
        "Failed attempts to publish dead letters to the dead-letter topic (retried).");
    DEAD_LETTER_TOPIC_REFUSALS = counter("order_worker_dead_letter_topic_refusals_total",
        "Dead letters the dead-letter topic refused for good (kept in the dead_letters table only).");
    DEAD_LETTERS_CUT = counter("order_worker_dead_letters_cut_total",
        "Dead letters published with their value cut to a size the dead-letter topic takes.");
    PIPELINE_STALL = gauge("order_worker_pipeline_stall_seconds", Unit::Seconds,
        "How long messages have been in flight with nothing becoming durable while PostgreSQL and Kafka answer; 0 while the pipeline progresses. /healthz fails at STALL_TIMEOUT.");
    CONSUMER_LAG = gauge("order_worker_consumer_lag_messages", Unit::Count,
        "Log end offset minus the group's committed offset, per partition this instance owns.")
        .labels(&["group", "topic", "partition"]).rendered_by_lag_view();
    CONSUMER_LAG_SUM = gauge("order_worker_consumer_lag_sum_messages", Unit::Count,
        "Sum of order_worker_consumer_lag_messages over the partitions this instance owns.")
        .labels(&["group", "topic"]).rendered_by_lag_view();
    CONSUMER_TIME_LAG = gauge("order_worker_consumer_time_lag_seconds", Unit::Seconds,
        "Age of the newest committed message while the partition has lag; 0 when caught up.")
        .labels(&["group", "topic", "partition"]).rendered_by_lag_view();
    LAG_AGE = gauge("order_worker_lag_measurement_age_seconds", Unit::Seconds,
        "Seconds since consumer lag was last measured from the broker.")
        .labels(&["group", "topic"]).rendered_by_lag_view();
}

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

#[cfg(test)]
mod catalogue_tests {
    use super::{ALL, Kind};

    #[test]
    fn every_metric_follows_the_naming_conventions_once() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a metric name is declared twice");
        for m in ALL {
            assert!(m.name.starts_with("order_worker_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Histogram,
                !m.buckets.is_empty(),
                "{}",
                m.name
            );
            assert!(m.buckets.windows(2).all(|w| w[0] < w[1]), "{}", m.name);
            assert!(!m.help.is_empty() && !m.help.contains('\n'), "{}", m.name);
        }
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
