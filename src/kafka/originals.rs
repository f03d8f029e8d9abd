//! Reading messages' original bytes back from Kafka by their coordinates.
//!
//! Invariant: for each coordinate asked for, [`Originals::fetch_into`] records either exactly the
//! key and value Kafka holds at that offset or [`Original::Gone`] when Kafka no longer has (or
//! never had) a message there; never the bytes of another offset. A coordinate already recorded
//! is never read again, so a call cut short by its deadline loses nothing: the next call reads
//! only what is missing. It only assigns partitions (no group membership) and never commits, so
//! it cannot move the worker's offsets.
//!
//! Why: a valid message's raw bytes are dropped once it is decoded (they are ~30% of the memory a
//! row holds while a backlog drains, docs/performance.md#decisions). The only later use of them is the
//! dead letter of a row PostgreSQL refuses at write time; its offset is not committed yet, so
//! Kafka still has the message, and reading it back keeps the dead letter byte-exact. A
//! constraint can refuse thousands of rows of one batch, so a call reads each partition forward
//! once, in small fetches, and seeks only over long runs of offsets nobody asked for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaProperty;
use crate::contract::headers::HeaderWriter;
use crate::kafka::{
    FETCH_QUEUE_BACKOFF_MS, FETCH_WAIT_MAX_MS, Fetched, Login, client_config, prime,
};

/// Most a broker returns of one partition per fetch. A single larger message still comes whole
/// (KIP-74), so this bounds the bytes read past what is wanted, never what can be read.
const PARTITION_FETCH_BYTES: &str = "65536";
/// Bound of what librdkafka prefetches ahead of the reader, per partition.
const PREFETCH_KBYTES: &str = "256";
/// Offsets read through rather than sought over: a few hundred small messages cost about one
/// fetch, while a seek drops the prefetched ones and waits for a new fetch.
const SEEK_GAP: i64 = 500;
/// Longest a blocking librdkafka call runs before the deadline and stop token are looked at.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// Longest one watermark query waits before the stop token is looked at; long enough for a
/// distant broker to answer.
const QUERY_SLICE: Duration = Duration::from_secs(1);

/// A message read back, or the news that Kafka has nothing at that offset any more (retention,
/// compaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Original {
    Found {
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        /// Its headers as `contract::headers` keeps them.
        headers: Vec<u8>,
    },
    Gone,
}

impl Original {
    fn of(m: &BorrowedMessage<'_>) -> Self {
        let mut headers = Vec::new();
        let mut writer = HeaderWriter::default();
        // Read by their bytes: rdkafka's header reader panics on a name that is not UTF-8.
        for (name, value) in Fetched::of(m).headers() {
            writer.push(&mut headers, name, value);
        }
        Original::Found {
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// What has been read back so far, by (partition, offset).
pub type ReadBack = HashMap<(i32, i64), Original>;

/// Reads messages of one topic back by partition and offset.
#[derive(Clone)]
pub struct Originals {
    config: ClientConfig,
    topic: String,
}

// Not derived: the client configuration may hold credentials (`sasl.password` and the like).
impl std::fmt::Debug for Originals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Originals")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Originals {
    /// `group` is only a name librdkafka requires to assign partitions: the worker's own, which
    /// the brokers' ACLs already allow. Nothing joins it and nothing is committed for it.
    pub fn new(brokers: &str, properties: &[KafkaProperty], topic: &str, group: &str) -> Self {
        let mut config = client_config(brokers, properties);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // The end of a partition is news: an offset asked for and not passed on the way
            // there is not in Kafka.
            .set("enable.partition.eof", "true")
            // An offset Kafka no longer holds must be reported, not silently replaced by another.
            .set("auto.offset.reset", "error")
            .set("max.partition.fetch.bytes", PARTITION_FETCH_BYTES)
            // `fetch.max.bytes` is left to librdkafka, which keeps it at or above
            // `message.max.bytes` (a property the user may raise) and near this bound.
            .set("queued.max.messages.kbytes", PREFETCH_KBYTES)
            // librdkafka's 1 s default idles a partition that long each time the small prefetch
            // bound is reached.
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
            .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
        Self {
            config,
            topic: topic.to_owned(),
        }
    }

    /// Adds to `read` the messages at those of `wanted` (partition, offset) it does not hold
    /// yet. Blocking: a new client is made for each call (the path is rare). Fails with a Kafka
    /// error if the brokers do not answer within `timeout`, or with [`KafkaError::Canceled`]
    /// once `stop` fires; what was read until then stays in `read` for the next call.
    pub fn fetch_into(
        &self,
        wanted: &[(i32, i64)],
        read: &mut ReadBack,
        timeout: Duration,
        stop: &CancellationToken,
    ) -> Result<(), KafkaError> {
        self.read_missing(wanted, read, Instant::now() + timeout, stop)
            .map(drop)
    }

    /// [`Self::fetch_into`], returning how often a partition was repositioned after the first
    /// assignment.
    fn read_missing(
        &self,
        wanted: &[(i32, i64)],
        read: &mut ReadBack,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<usize, KafkaError> {
        // Ascending and without duplicates: each partition is read forward, once.
        let mut pending: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
        for &(partition, offset) in wanted {
            if !read.contains_key(&(partition, offset)) {
                pending.entry(partition).or_default().insert(offset);
            }
        }
        if pending.is_empty() {
            return Ok(0);
        }
        let consumer: BaseConsumer<Login> = self.config.create_with_context(Login)?;
        // Its first requests are watermark queries made before any poll serves a token
        // refresh: with a login token (MSK IAM) it must hold one from the start.
        prime(consumer.client());
        self.drop_out_of_range(&consumer, &mut pending, read, deadline, stop)?;
        self.assign(&consumer, &pending)?;
        let mut repositioned = 0;
        while !pending.is_empty() {
            if stop.is_cancelled() {
                return Err(KafkaError::Canceled);
            }
            let message = match consumer.poll(time_left(deadline)?.min(POLL_SLICE)) {
                None => continue,
                Some(Ok(m)) => m,
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    // Everything up to the end of the partition was delivered before this news.
                    if let Some(offsets) = pending.remove(&partition) {
                        for offset in offsets {
                            read.insert((partition, offset), Original::Gone);
                        }
                        self.pause(&consumer, partition)?;
                    }
                    continue;
                }
                Some(Err(KafkaError::MessageConsumption(
                    e @ (RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange),
                ))) => {
                    // The error does not name its partition: ask every partition its range
                    // again, then restart all of them where they stand.
                    let dropped =
                        self.drop_out_of_range(&consumer, &mut pending, read, deadline, stop)?;
                    if dropped == 0 {
                        return Err(KafkaError::MessageConsumption(e));
                    }
                    self.assign(&consumer, &pending)?;
                    repositioned += 1;
                    continue;
                }
                Some(Err(e)) => return Err(e),
            };
            let (partition, at) = (message.partition(), message.offset());
            let Some(offsets) = pending.get_mut(&partition) else {
                continue;
            };
            let mut resolved = false;
            while let Some(&offset) = offsets.first() {
                if offset > at {
                    break;
                }
                // A partition's messages come in offset order from where it was positioned (at
                // or before `offset`): an offset passed without its message is not in Kafka
                // (compaction).
                let original = if offset == at {
                    Original::of(&message)
                } else {
                    Original::Gone
                };
                read.insert((partition, offset), original);
                offsets.pop_first();
                resolved = true;
            }
            match offsets.first() {
                None => {
                    pending.remove(&partition);
                    self.pause(&consumer, partition)?;
                }
                Some(&next) if resolved && next - at > SEEK_GAP => {
                    consumer.seek(
                        &self.topic,
                        partition,
                        Offset::Offset(next),
                        time_left(deadline)?,
                    )?;
                    repositioned += 1;
                }
                Some(_) => {}
            }
        }
        Ok(repositioned)
    }

    /// Records as gone the pending offsets outside their partition's range (retention removed
    /// what is below it; nothing at or past its end was ever consumed), and returns how many.
    fn drop_out_of_range(
        &self,
        consumer: &BaseConsumer<Login>,
        pending: &mut BTreeMap<i32, BTreeSet<i64>>,
        read: &mut ReadBack,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<usize, KafkaError> {
        let mut dropped = 0;
        for (&partition, offsets) in pending.iter_mut() {
            let (low, high) = self.watermarks(consumer, partition, deadline, stop)?;
            offsets.retain(|&offset| {
                let held = (low..high).contains(&offset);
                if !held {
                    read.insert((partition, offset), Original::Gone);
                    dropped += 1;
                }
                held
            });
        }
        pending.retain(|_, offsets| !offsets.is_empty());
        Ok(dropped)
    }

    fn watermarks(
        &self,
        consumer: &BaseConsumer<Login>,
        partition: i32,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<(i64, i64), KafkaError> {
        loop {
            if stop.is_cancelled() {
                return Err(KafkaError::Canceled);
            }
            let slice = time_left(deadline)?.min(QUERY_SLICE);
            match consumer.fetch_watermarks(&self.topic, partition, slice) {
                Err(KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut)) => continue,
                answer => return answer,
            }
        }
    }

    /// Positions every pending partition at its first pending offset.
    fn assign(
        &self,
        consumer: &BaseConsumer<Login>,
        pending: &BTreeMap<i32, BTreeSet<i64>>,
    ) -> Result<(), KafkaError> {
        let mut assignment = TopicPartitionList::new();
        for (&partition, offsets) in pending {
            if let Some(&first) = offsets.first() {
                assignment.add_partition_offset(&self.topic, partition, Offset::Offset(first))?;
            }
        }
        consumer.assign(&assignment)
    }

    /// Stops fetching a partition nothing more is wanted from.
    fn pause(&self, consumer: &BaseConsumer<Login>, partition: i32) -> Result<(), KafkaError> {
        let mut done = TopicPartitionList::new();
        done.add_partition(&self.topic, partition);
        consumer.pause(&done)
    }
}

fn time_left(deadline: Instant) -> Result<Duration, KafkaError> {
    match deadline.saturating_duration_since(Instant::now()) {
        left if left.is_zero() => Err(KafkaError::MessageConsumption(
            RDKafkaErrorCode::OperationTimedOut,
        )),
        left => Ok(left),
    }
}

#[cfg(test)]
mod tests;
