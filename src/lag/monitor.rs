//! The lag monitor: a thread that measures the group's lag every LAG_INTERVAL for `/metrics`
//! and `/lag`, and tells readiness what Kafka said of the topic and the dead-letter topic.
//!
//! Invariant: readiness hears "Kafka answers for the topic" only from a metadata answer that
//! lists the topic, and a problem only from a failed metadata request; a partition whose
//! offsets cannot be read fails the lag figures (the last ones stay), never readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::warn;

use super::{LagView, Quiet, measure_partitions, partitions};
use crate::config::OffsetReset;
use crate::health::{Health, KAFKA_UNREACHABLE};
use crate::metrics::Metrics;
use crate::telemetry::Throttle;

/// How the worker refreshes its lag figures: on a thread of its own, since the broker requests
/// block and the consumer thread must keep polling meanwhile.
pub(crate) struct Monitor {
    pub reader: BaseConsumer<Quiet>,
    pub view: Arc<LagView>,
    pub reset: OffsetReset,
    pub interval: Duration,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    /// Checked for existence with every measurement.
    pub dead_letter_topic: Option<String>,
}

/// Stops the monitor when dropped, without waiting for it: a measurement in progress may take
/// its full timeout against a slow broker, and the graceful stop must not wait for that.
pub(crate) struct MonitorHandle(Arc<AtomicBool>);

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Monitor {
    pub fn spawn(self) -> std::io::Result<MonitorHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("kafka-lag".into())
            .spawn(move || self.run(&flag))?;
        Ok(MonitorHandle(stop))
    }

    /// Measures every `interval` until `stop` is set.
    fn run(&self, stop: &AtomicBool) {
        let throttle = Throttle::new(Duration::from_secs(60));
        let mut due = Instant::now();
        while !stop.load(Ordering::Acquire) {
            if Instant::now() >= due {
                // A failed measurement is retried sooner: readiness waits for the next success.
                let next = if self.refresh(&throttle) {
                    self.interval
                } else {
                    self.interval.min(RETRY_AFTER_FAILURE)
                };
                due = Instant::now() + next;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Measures once and tells readiness what Kafka said; true if Kafka answered.
    fn refresh(&self, throttle: &Throttle) -> bool {
        // Independent of the interval: a slow broker delays the next refresh, it does not make
        // every refresh fail.
        let timeout = Duration::from_secs(5);
        let v = &self.view;
        // The topic's metadata says whether Kafka answers for it; a partition without a leader
        // fails the lag figures only, not readiness.
        let measured = match partitions(&self.reader, v.topic(), timeout) {
            Ok(ids) => {
                self.health.kafka_ok();
                measure_partitions(
                    &self.reader,
                    v.group(),
                    v.topic(),
                    &ids,
                    self.reset,
                    timeout,
                )
            }
            Err(e) => {
                let last = self.reader.context().take_last_error();
                match problem(&e, last, v.topic()) {
                    Problem::Credentials(detail) => self.health.kafka_refused_credentials(&detail),
                    Problem::Other(reason) => self.health.kafka_problem(reason),
                }
                Err(e)
            }
        };
        let answered = match measured {
            Ok(lag) => {
                v.update(lag);
                true
            }
            Err(e) => {
                self.metrics.lag_refresh_failures.increment(1);
                if let Some(held) = throttle.admit(&e.to_string()) {
                    warn!(error = %e, repeated = held, "could not measure consumer lag; the last figures stay");
                }
                false
            }
        };
        if let Some(topic) = &self.dead_letter_topic {
            // Kafka itself being away is what readiness already says; a leader election is not
            // a reason to be unready.
            if let Ok(m) = self.reader.fetch_metadata(Some(topic), timeout) {
                let error = m
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .and_then(|t| t.error());
                let missing = match error.map(RDKafkaErrorCode::from) {
                    Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                        Some(format!("dead-letter topic {topic} does not exist"))
                    }
                    Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
                        Some(format!("not authorized for dead-letter topic {topic}"))
                    }
                    _ => None,
                };
                self.health.dead_letter_topic_exists(missing);
            }
        }
        answered
    }
}

/// How soon a failed measurement is retried (at most LAG_INTERVAL).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// Why a measurement failed, in the words `/readyz` uses.
enum Problem {
    Credentials(String),
    Other(String),
}

fn problem(e: &KafkaError, last: Option<(KafkaError, String)>, topic: &str) -> Problem {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(C::UnknownTopicOrPartition | C::UnknownTopic) => {
            return Problem::Other(format!("topic {topic} does not exist"));
        }
        Some(C::TopicAuthorizationFailed) => {
            return Problem::Other(format!("not authorized to read topic {topic}"));
        }
        _ => {}
    }
    match last {
        Some((last, reason))
            if matches!(
                last.rdkafka_error_code(),
                Some(C::Authentication | C::SaslAuthenticationFailed)
            ) =>
        {
            Problem::Credentials(reason)
        }
        _ => Problem::Other(KAFKA_UNREACHABLE.into()),
    }
}
