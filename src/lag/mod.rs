//! Consumer lag as KEDA and operators see it: per partition, the log end offset minus the offset
//! the group coordinator holds as committed.
//!
//! Invariant: every figure is read from the broker when it is measured (end offsets by ListOffsets,
//! committed offsets from the group coordinator), never taken from librdkafka's fetch statistics:
//! those only learn the end offset from fetch responses, so they go stale for a paused partition,
//! and the worker pauses exactly when it is behind (measured in docs/lag-cost.md).

mod describe;
mod view;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use time::OffsetDateTime;
use tracing::warn;

use crate::config::OffsetReset;
use crate::metrics::Metrics;

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
/// `group.id`; it does not need to be a member (reading offsets does not join the group).
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
    let mut tpl = TopicPartitionList::with_capacity(ids.len());
    for &p in &ids {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut partitions = Vec::with_capacity(ids.len());
    for p in ids {
        let (low, end) = consumer.fetch_watermarks(topic, p, timeout)?;
        let committed = committed
            .find_partition(topic, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        let lag = match (committed, reset) {
            (Some(c), _) => end - c,
            (None, OffsetReset::Earliest) => end - low,
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

/// How the worker refreshes its lag figures.
pub(crate) struct Monitor<'a, C: ConsumerContext> {
    pub consumer: &'a BaseConsumer<C>,
    pub view: &'a LagView,
    pub reset: OffsetReset,
    pub interval: Duration,
    pub metrics: &'a Metrics,
}

impl<C: ConsumerContext> Monitor<'_, C> {
    /// Measures every `interval` until `stop` is set. Runs on a thread of its own: the broker
    /// requests block, and the consumer thread must keep polling meanwhile.
    pub fn run(&self, stop: &AtomicBool) {
        // Independent of the interval: a slow broker delays the next refresh, it does not make
        // every refresh fail.
        let timeout = Duration::from_secs(5);
        let mut due = Instant::now();
        while !stop.load(Ordering::Acquire) {
            if Instant::now() >= due {
                let v = self.view;
                match measure(self.consumer, v.group(), v.topic(), self.reset, timeout) {
                    Ok(lag) => v.update(lag),
                    Err(e) => {
                        self.metrics.lag_refresh_failures.increment(1);
                        warn!(error = %e, "could not measure consumer lag; the last figures stay");
                    }
                }
                due = Instant::now() + self.interval;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
