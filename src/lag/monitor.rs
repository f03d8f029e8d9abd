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
use crate::health::{Health, KAFKA_CREDENTIALS_REFUSED, KAFKA_UNREACHABLE};
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
            // Serves the reader's queue, which carries librdkafka's requests for a new login
            // token (MSK IAM); its errors stay recorded by the context for `Problem::of`.
            for _ in 0..16 {
                let _ = self.reader.poll(Duration::ZERO);
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
                match Problem::of(&e, &self.reader) {
                    Problem::Credentials(detail) => self.health.kafka_refused_credentials(&detail),
                    other => self.health.kafka_problem(other.reason(v.topic())),
                }
                Err(e)
            }
        };
        let answered = match measured {
            Ok(lag) => {
                v.update(lag);
                self.health.owned_lag(v.owned_behind());
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

/// Why reading a topic's metadata failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The brokers refused the credentials, in librdkafka's words.
    Credentials(String),
    Unreachable,
    TopicMissing,
    TopicNotAuthorized,
}

impl Problem {
    /// Classifies `e`, a failed metadata read by `reader`, with the last client-level error the
    /// reader saw (a request that merely timed out does not say the credentials were refused).
    pub(crate) fn of(e: &KafkaError, reader: &BaseConsumer<Quiet>) -> Self {
        use RDKafkaErrorCode as C;
        match e.rdkafka_error_code() {
            Some(C::UnknownTopicOrPartition | C::UnknownTopic) => return Self::TopicMissing,
            Some(C::TopicAuthorizationFailed) => return Self::TopicNotAuthorized,
            _ => {}
        }
        // A consumer's client-level errors and librdkafka's log lines come out of its poll,
        // one event per call (an event served inside, a log line, also returns None); this
        // client never subscribes, so nothing else does. Bounded: polling produces no events.
        let mut refused = None;
        for _ in 0..256 {
            if let Some(Err(e)) = reader.poll(Duration::ZERO)
                && super::is_refused_login(&e)
            {
                refused = Some(e.to_string());
            }
        }
        let context = reader.context();
        if let Some((last, reason)) = context.take_last_error()
            && super::is_refused_login(&last)
        {
            refused = Some(reason);
        }
        match refused {
            Some(fallback) => Self::Credentials(context.take_last_failure().unwrap_or(fallback)),
            None => Self::Unreachable,
        }
    }

    /// The problem in the words `/readyz` uses.
    pub(crate) fn reason(&self, topic: &str) -> String {
        match self {
            Self::Credentials(detail) => format!("{KAFKA_CREDENTIALS_REFUSED}: {detail}"),
            Self::Unreachable => KAFKA_UNREACHABLE.into(),
            Self::TopicMissing => format!("topic {topic} does not exist"),
            Self::TopicNotAuthorized => format!("not authorized to read topic {topic}"),
        }
    }
}
