//! Consumer lag as KEDA and operators see it: per partition, the log end offset minus the offset
//! the group coordinator holds as committed.
//!
//! Invariant: every figure is read from the broker when it is measured (end offsets by ListOffsets,
//! committed offsets from the group coordinator), never taken from librdkafka's fetch statistics:
//! those only learn the end offset from fetch responses, so they go stale for a paused partition,
//! and the worker pauses exactly when it is behind (measured in docs/lag-cost.md). Each
//! measurement also tells readiness whether Kafka answered for the topic, and why not.

mod describe;
mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;
use time::OffsetDateTime;
use tracing::{debug, warn};

use crate::config::{KafkaProperty, OffsetReset};
use crate::health::{Health, KAFKA_UNREACHABLE};
use crate::metrics::Metrics;
use crate::telemetry::Throttle;

pub use describe::{describe, print_table};
pub use view::LagView;

/// One partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    pub partition: i32,
    /// The group's committed offset; `None` when the group never committed this partition.
    pub committed: Option<i64>,
    /// Log end offset (high watermark).
    pub end: i64,
    /// `end - committed`, never negative; without a commit, what the reset policy would consume.
    pub lag: i64,
}

/// The lag of a whole group on one topic, at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupLag {
    pub group: String,
    pub topic: String,
    #[serde(with = "time::serde::rfc3339")]
    pub measured_at: OffsetDateTime,
    pub partitions: Vec<PartitionLag>,
}

impl GroupLag {
    pub fn total(&self) -> i64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

/// Reads the group's lag on every partition of `topic`. `consumer` must carry the group's
/// `group.id` and should not be the consuming client: it never needs to be a member (reading
/// offsets does not join the group), and a consuming client would queue these requests behind
/// its own fetch long-polls (measured in docs/lag-cost.md).
///
/// Three round trips whatever the partition count: Metadata, OffsetFetch to the coordinator, and
/// one batched ListOffsets per broker (plus one for log starts when a partition has no commit).
pub fn measure<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    group: &str,
    topic: &str,
    reset: OffsetReset,
    timeout: Duration,
) -> KafkaResult<GroupLag> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopic,
        ));
    };
    if let Some(e) = t.error() {
        return Err(KafkaError::MetadataFetch(e.into()));
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    let committed = offsets(
        &ids,
        |tpl| consumer.committed_offsets(tpl, timeout),
        topic,
        None,
    )?;
    let ends = offsets(
        &ids,
        |tpl| consumer.offsets_for_times(tpl, timeout),
        topic,
        Some(Offset::End),
    )?;
    let uncommitted: Vec<i32> = ids
        .iter()
        .copied()
        .filter(|p| committed[p].is_none())
        .collect();
    let starts = match reset {
        OffsetReset::Earliest if !uncommitted.is_empty() => offsets(
            &uncommitted,
            |tpl| consumer.offsets_for_times(tpl, timeout),
            topic,
            Some(Offset::Beginning),
        )?,
        _ => HashMap::new(),
    };
    let mut partitions = Vec::with_capacity(ids.len());
    for p in ids {
        let Some(end) = ends[&p] else {
            return Err(KafkaError::OffsetFetch(
                rdkafka::types::RDKafkaErrorCode::OffsetNotAvailable,
            ));
        };
        let committed = committed[&p];
        let lag = match (committed, reset) {
            (Some(c), _) => end - c,
            (None, OffsetReset::Earliest) => end - starts.get(&p).copied().flatten().unwrap_or(0),
            (None, OffsetReset::Latest) => 0,
        };
        partitions.push(PartitionLag {
            partition: p,
            committed,
            end,
            lag: lag.max(0),
        });
    }
    Ok(GroupLag {
        group: group.to_owned(),
        topic: topic.to_owned(),
        measured_at: OffsetDateTime::now_utc(),
        partitions,
    })
}

/// One batched request for `partitions` (each asking for `ask`, or unset), answered as
/// partition -> offset; `None` where the broker has no offset (no commit yet). A partition's
/// own error fails the whole measurement: half a picture would under-report lag.
fn offsets(
    partitions: &[i32],
    request: impl FnOnce(TopicPartitionList) -> KafkaResult<TopicPartitionList>,
    topic: &str,
    ask: Option<Offset>,
) -> KafkaResult<HashMap<i32, Option<i64>>> {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for &p in partitions {
        match ask {
            Some(offset) => tpl.add_partition_offset(topic, p, offset)?,
            None => drop(tpl.add_partition(topic, p)),
        }
    }
    let answer = request(tpl)?;
    let mut out: HashMap<i32, Option<i64>> = partitions.iter().map(|&p| (p, None)).collect();
    for e in answer.elements_for_topic(topic) {
        e.error()?;
        if let (Some(slot), Offset::Offset(o)) = (out.get_mut(&e.partition()), e.offset()) {
            *slot = Some(o);
        }
    }
    Ok(out)
}

/// librdkafka's own log lines would interleave with the `lag` command's table and repeat what
/// the monitor reports; failures reach the caller as errors instead. The last client-level error
/// is kept: a request that merely timed out does not say that the credentials were refused.
#[derive(Default)]
pub struct Quiet {
    last_error: Mutex<Option<(KafkaError, String)>>,
}

impl Quiet {
    /// The last client-level error librdkafka reported, with its sentence, forgotten once read.
    fn take_last_error(&self) -> Option<(KafkaError, String)> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl ClientContext for Quiet {
    fn log(&self, _: RDKafkaLogLevel, fac: &str, message: &str) {
        debug!(target: "librdkafka", fac, "{message}");
    }
    fn error(&self, error: KafkaError, reason: &str) {
        debug!(target: "librdkafka", error = %error, "{reason}");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((error, reason.into()));
    }
}

impl ConsumerContext for Quiet {}

/// A client that reads the group's offsets without ever joining it (no rebalance), on its own
/// connections (no queueing behind a consumer's fetches).
pub fn reader(
    brokers: &str,
    properties: &[KafkaProperty],
    group: &str,
) -> KafkaResult<BaseConsumer<Quiet>> {
    let mut config = crate::kafka::client_config(brokers, properties);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    config.create_with_context(Quiet::default())
}

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
        let mut answered = false;
        match measure(&self.reader, v.group(), v.topic(), self.reset, timeout) {
            Ok(lag) => {
                v.update(lag);
                self.health.kafka_ok();
                answered = true;
            }
            Err(e) => {
                self.metrics.lag_refresh_failures.increment(1);
                let last = self.reader.context().take_last_error();
                match problem(&e, last, v.topic()) {
                    Problem::Credentials(detail) => self.health.kafka_refused_credentials(&detail),
                    Problem::Other(reason) => self.health.kafka_problem(reason),
                }
                if let Some(held) = throttle.admit(&e.to_string()) {
                    warn!(error = %e, repeated = held, "could not measure consumer lag; the last figures stay");
                }
            }
        }
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
