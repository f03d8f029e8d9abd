//! Consumer lag as KEDA and operators see it: per partition, the log end offset minus the offset
//! the group coordinator holds as committed.
//!
//! Invariant: every figure is read from the broker when it is measured (end offsets by ListOffsets,
//! committed offsets from the group coordinator), never taken from librdkafka's fetch statistics:
//! those only learn the end offset from fetch responses, so they go stale for a paused partition,
//! and the worker pauses exactly when it is behind (measured in docs/lag-cost.md). Each
//! measurement also tells readiness whether Kafka answered for the topic, and why not.

mod describe;
mod monitor;
mod view;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;
use time::OffsetDateTime;
use tracing::debug;

use crate::config::{KafkaProperty, OffsetReset};

pub use describe::{describe, print_table};
pub(crate) use monitor::Problem;
pub(crate) use monitor::{Monitor, MonitorHandle};
pub(crate) use view::LagView;

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
    let ids = partitions(consumer, topic, timeout)?;
    measure_partitions(consumer, group, topic, &ids, reset, timeout)
}

/// The topic's partitions, from its metadata: the one request that tells whether Kafka answers
/// for the topic at all.
pub(crate) fn partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<Vec<i32>> {
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
    Ok(ids)
}

/// The group's lag on `ids`, the topic's partitions.
pub(crate) fn measure_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    group: &str,
    topic: &str,
    ids: &[i32],
    reset: OffsetReset,
    timeout: Duration,
) -> KafkaResult<GroupLag> {
    let ids = ids.to_vec();
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
    /// librdkafka's last sentence about a failed connection (a refused login says why there).
    last_failure: Mutex<Option<String>>,
}

impl Quiet {
    /// The last client-level error librdkafka reported, with its sentence, forgotten once read.
    fn take_last_error(&self) -> Option<(KafkaError, String)> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn take_last_failure(&self) -> Option<String> {
        self.last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl ClientContext for Quiet {
    crate::kafka::answer_token_requests!();

    fn log(&self, _: RDKafkaLogLevel, fac: &str, message: &str) {
        debug!(target: "librdkafka", fac, "{message}");
        if fac == "FAIL" {
            // "[thrd:...]: sasl_ssl://host:9093/1: SASL authentication error: ..."
            let sentence = message.split_once("]: ").map_or(message, |(_, rest)| rest);
            *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(sentence.into());
        }
    }
    fn error(&self, error: KafkaError, reason: &str) {
        debug!(target: "librdkafka", error = %error, "{reason}");
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        // A refused login is followed by "all brokers down" as the connection closes; the
        // refusal is what explains both.
        if !last.as_ref().is_some_and(|(e, _)| is_refused_login(e)) || is_refused_login(&error) {
            *last = Some((error, reason.into()));
        }
    }
}

impl ConsumerContext for Quiet {}

pub(crate) fn is_refused_login(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
    )
}

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
    let reader: BaseConsumer<Quiet> = config.create_with_context(Quiet::default())?;
    // Its requests block without serving its queue, so it gets a first token now.
    crate::kafka::prime(reader.client());
    Ok(reader)
}
