//! The metric catalogue: each metric the worker exports declared once, with its name, type,
//! unit, help text, label names and buckets.
//!
//! Invariant: a name appears here and nowhere else in the code; everything that registers,
//! describes or renders a metric reads it from [`ALL`] or its constant.

use metrics::{Counter, Gauge, Histogram, Unit};

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
    pub(super) fn counter_of(&self, values: &[&str]) -> Counter {
        metrics::counter!(self.name, self.series(values))
    }
    pub(super) fn gauge_of(&self, values: &[&str]) -> Gauge {
        metrics::gauge!(self.name, self.series(values))
    }
    pub(super) fn histogram_of(&self, values: &[&str]) -> Histogram {
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
    OFFSET_RESETS = counter("order_worker_kafka_offset_resets_total",
        "Partitions restarted at auto.offset.reset's end because their offset was not in the log \
         (deleted by retention before it was applied, or the topic recreated).");
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
    DEAD_LETTERS_UNREPLAYED = gauge("order_worker_dead_letters_unreplayed", Unit::Count,
        "Dead letters in the table not replayed yet, by reason (the whole table: every replica reports it).")
        .labels(&["reason"]);
    SCHEMA_REGISTRY_FAILURES = counter("order_worker_schema_registry_failures_total",
        "Schema fetches from the schema registry that failed (retried: the message waits, nothing is dead-lettered).");
    DEAD_LETTERS_CUT = counter("order_worker_dead_letters_cut_total",
        "Dead letters published with their value cut to a size the dead-letter topic takes.");
    PIPELINE_STALL = gauge("order_worker_pipeline_stall_seconds", Unit::Seconds,
        "How long messages have been in flight with nothing becoming durable, or a batch write has gone without a statement ending, while PostgreSQL and Kafka answer; 0 while the pipeline progresses. /healthz fails at STALL_TIMEOUT.");
    CONSUMER_LAG = gauge("order_worker_consumer_lag_messages", Unit::Count,
        "Log end offset minus the group's committed offset, per partition this instance owns.")
        .labels(&["group", "topic", "partition"]).rendered_by_lag_view();
    CONSUMER_LAG_SUM = gauge("order_worker_consumer_lag_sum_messages", Unit::Count,
        "Sum of order_worker_consumer_lag_messages over the partitions this instance owns.")
        .labels(&["group", "topic"]).rendered_by_lag_view();
    CONSUMER_TIME_LAG = gauge("order_worker_consumer_time_lag_seconds", Unit::Seconds,
        "Age of the newest committed message while the partition has lag (before this pod committed it: how long its committed offset has waited); 0 when caught up.")
        .labels(&["group", "topic", "partition"]).rendered_by_lag_view();
    LAG_AGE = gauge("order_worker_lag_measurement_age_seconds", Unit::Seconds,
        "Seconds since consumer lag was last measured from the broker.")
        .labels(&["group", "topic"]).rendered_by_lag_view();
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
