//! A valid message PostgreSQL refused at write time, with the bytes its dead letter stores.
//!
//! Invariant: a refused row's dead letter carries the message's original key and bytes, read
//! back from Kafka (the message's offset is not committed, so Kafka still has it), or its event
//! re-encoded with an `error` that says why: Kafka no longer has the message, or it could not be
//! read back within READ_BACK_LIMIT. A batch therefore waits for Kafka about READ_BACK_LIMIT at
//! most, never for ever, and not at all once the processor aborts. Failed attempts are retried,
//! and what one attempt read is kept: the next asks only for what is missing.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::contract::DeadLetterRecord;
use crate::contract::{Headers, OrderEvent, Rejection};
use crate::error::Error;
use crate::kafka::originals::{Original, Originals, ReadBack};
use crate::pipeline::{Decoded, named};
use crate::retry::{self, Schedule, Verdict};

/// How long one attempt to read refused messages back from Kafka may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a batch waits, across attempts, for its refused messages: long enough to ride out a
/// leader election, short enough that a partition Kafka cannot serve does not stall the lane.
pub(crate) const READ_BACK_LIMIT: Duration = Duration::from_secs(60);

/// A valid message PostgreSQL refused, with the bytes its dead letter stores.
pub(crate) struct Refused {
    index: usize,
    rejection: Rejection,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    /// The original's headers (`contract::headers`); the envelope's own were dropped with its
    /// bytes.
    headers: Vec<u8>,
}

/// What reading a refused message back from Kafka came to.
enum ReadBackOutcome {
    Read(Original),
    NotReadWithin(Duration),
}

impl Refused {
    fn new(
        batch: &[Decoded],
        index: usize,
        mut rejection: Rejection,
        outcome: ReadBackOutcome,
    ) -> Self {
        let note = match outcome {
            ReadBackOutcome::Read(Original::Found {
                key,
                payload,
                headers,
            }) => {
                return Self {
                    index,
                    rejection,
                    key,
                    payload,
                    headers,
                };
            }
            ReadBackOutcome::Read(Original::Gone) => {
                " (the message was no longer in Kafka: the payload is its event re-encoded)"
                    .to_owned()
            }
            ReadBackOutcome::NotReadWithin(limit) => format!(
                " (the message could not be read back from Kafka within {} s: the payload is its \
                 event re-encoded)",
                limit.as_secs()
            ),
        };
        rejection.detail.push_str(&note);
        let event = batch[index].outcome.as_ref().ok();
        Self {
            index,
            rejection,
            key: event.map(|e| e.order_id.to_string().into_bytes()),
            payload: event.map(OrderEvent::to_json),
            headers: Vec::new(),
        }
    }

    pub fn dead_letter<'a>(&'a self, batch: &'a [Decoded]) -> DeadLetterRecord<'a> {
        batch[self.index].dead_letter_with(
            &self.rejection,
            self.key.as_deref(),
            self.payload.as_deref(),
            Headers::new(&self.headers),
        )
    }
}

/// How a processor reads its refused messages back from Kafka.
pub(crate) struct OriginalReader<'a> {
    pub originals: &'a Originals,
    pub schedule: Schedule,
    pub abort: &'a CancellationToken,
    pub lane: usize,
    /// How long a batch waits for its originals, across attempts.
    pub limit: Duration,
}

impl OriginalReader<'_> {
    /// Reads the refused messages back from Kafka, retrying for up to `limit`. A message Kafka
    /// no longer has (retention, compaction), or one still unread when that time is up, is
    /// dead-lettered with its event re-encoded, and its error says which.
    pub(crate) async fn read(
        &self,
        batch: &[Decoded],
        refusals: Vec<(usize, Rejection)>,
    ) -> Result<Vec<Refused>, Error> {
        let Self {
            originals,
            schedule,
            abort,
            lane,
            limit,
        } = *self;
        if refusals.is_empty() {
            return Ok(Vec::new());
        }
        let coordinate = |index: usize| {
            let at = batch[index].envelope.position;
            (at.partition, at.offset)
        };
        let wanted: Arc<[(i32, i64)]> = refusals.iter().map(|&(i, _)| coordinate(i)).collect();
        // Outlives the attempts, so that an attempt cut short hands what it read to the next.
        let progress = Arc::new(Mutex::new(ReadBack::new()));
        let started = Instant::now();
        let outcome = retry::until_ok(
            schedule,
            abort,
            || Error::Aborted,
            || {
                let (originals, wanted) = (originals.clone(), Arc::clone(&wanted));
                let (progress, stop) = (Arc::clone(&progress), abort.clone());
                let timeout = ATTEMPT_TIMEOUT.min(limit.saturating_sub(started.elapsed()));
                async move {
                    tokio::task::spawn_blocking(move || {
                        let mut read = progress.lock().unwrap_or_else(PoisonError::into_inner);
                        originals.fetch_into(&wanted, &mut read, timeout, &stop)
                    })
                    .await
                    .map_err(|e| Error::TaskFailed(e.to_string()))?
                    .map_err(Error::Kafka)
                }
            },
            |err, delay| {
                if started.elapsed() + delay >= limit {
                    return Verdict::Fail(err);
                }
                warn!(lane, error = %err, retry_in_ms = delay.as_millis() as u64,
                  "reading refused messages back from Kafka failed; retrying");
                Verdict::Retry
            },
        )
        .await;
        // A stopped attempt may end before the abort is seen: it must not pass for a timeout.
        if abort.is_cancelled() {
            return Err(Error::Aborted);
        }
        let mut read =
            std::mem::take(&mut *progress.lock().unwrap_or_else(PoisonError::into_inner));
        match outcome {
            Ok(()) => {}
            Err(Error::Aborted) => return Err(Error::Aborted),
            Err(err) => warn!(
                lane,
                error = %err,
                refused = wanted.len(),
                unread = wanted.len().saturating_sub(read.len()),
                limit_s = limit.as_secs(),
                "refused messages not all read back from Kafka in time; dead-lettering the unread \
                 ones with their events re-encoded"
            ),
        }
        let gone: Vec<(i32, i64)> = refusals
            .iter()
            .map(|&(i, _)| coordinate(i))
            .filter(|c| read.get(c) == Some(&Original::Gone))
            .collect();
        if !gone.is_empty() {
            warn!(lane, messages = gone.len(), coordinates = %named(gone),
              "refused messages no longer in Kafka; dead-lettering their events re-encoded");
        }
        Ok(refusals
            .into_iter()
            .map(|(index, rejection)| {
                let outcome = match read.remove(&coordinate(index)) {
                    Some(original) => ReadBackOutcome::Read(original),
                    None => ReadBackOutcome::NotReadWithin(limit),
                };
                Refused::new(batch, index, rejection, outcome)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Reason;
    use crate::kafka::client_config;
    use crate::offsets::Position;
    use crate::pipeline::{Envelope, decode};
    use crate::synth;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use uuid::Uuid;

    fn reader<'a>(
        originals: &'a Originals,
        abort: &'a CancellationToken,
        limit: Duration,
    ) -> OriginalReader<'a> {
        OriginalReader {
            originals,
            schedule: fast(),
            abort,
            lane: 0,
            limit,
        }
    }

    fn fast() -> Schedule {
        Schedule {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
        }
    }

    /// A valid message at `offset` of partition 0 as a processor holds it: decoded, its bytes
    /// dropped.
    fn held(offset: i64, key: &[u8], value: &[u8]) -> Decoded {
        let at = Position {
            partition: 0,
            generation: 1,
            offset,
        };
        let decoded = decode(
            Envelope::new(at, Some(key), Some(value), Some(0), 1 << 20),
            1 << 20,
        );
        assert!(decoded.outcome.is_ok() && decoded.envelope.bytes_dropped());
        decoded
    }

    /// Laid out as no encoder of the worker would, so a re-encoded event shows.
    fn pretty(order: Uuid, version: i64) -> (Vec<u8>, Vec<u8>) {
        let event = synth::event(order, version, 0);
        let value = serde_json::to_vec_pretty(&event).expect("json");
        (order.to_string().into_bytes(), value)
    }

    fn all_refused(batch: &[Decoded]) -> Vec<(usize, Rejection)> {
        (0..batch.len())
            .map(|i| (i, Rejection::new(Reason::DbRejected, "violates check")))
            .collect()
    }

    /// A broker address nothing listens on.
    fn nowhere() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    }

    #[tokio::test]
    async fn a_refused_message_keeps_its_bytes_and_one_kafka_no_longer_has_is_re_encoded() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("t", 1, 1).expect("topic");
        let brokers = mock.bootstrap_servers();
        let (key, value) = pretty(Uuid::new_v4(), 1);
        let producer: BaseProducer = client_config(&brokers, &[]).create().expect("producer");
        let record = BaseRecord::to("t").partition(0).key(&key).payload(&value);
        producer.send(record).map_err(|(e, _)| e).expect("send");
        producer.flush(Duration::from_secs(5)).expect("flush");
        let (gone_key, gone_value) = pretty(Uuid::new_v4(), 2);
        let batch = [held(0, &key, &value), held(7, &gone_key, &gone_value)];

        let originals = Originals::new(&brokers, &[], "t", "g");
        let never = CancellationToken::new();
        let refused = reader(&originals, &never, READ_BACK_LIMIT)
            .read(&batch, all_refused(&batch))
            .await
            .expect("read back");

        let kept = refused[0].dead_letter(&batch);
        assert_eq!((kept.key, kept.payload), (Some(&key[..]), Some(&value[..])));
        assert_eq!(kept.error, "violates check");
        let gone = refused[1].dead_letter(&batch);
        let event = batch[1].outcome.as_ref().expect("valid");
        assert_eq!(gone.payload, Some(&event.to_json()[..]));
        assert_eq!(gone.key, Some(&gone_key[..]));
        assert!(gone.error.contains("no longer in Kafka"), "{}", gone.error);
        assert!(gone.error.contains("re-encoded"), "{}", gone.error);
    }

    #[tokio::test]
    async fn refused_messages_not_read_back_in_time_are_re_encoded_with_a_note_saying_so() {
        let batch: Vec<Decoded> = (0..3)
            .map(|offset| {
                let (key, value) = pretty(Uuid::new_v4(), 1);
                held(offset, &key, &value)
            })
            .collect();
        let originals = Originals::new(&nowhere(), &[], "t", "g");
        let never = CancellationToken::new();
        let started = Instant::now();
        let refused = reader(&originals, &never, Duration::from_secs(2))
            .read(&batch, all_refused(&batch))
            .await
            .expect("dead letters, not an error");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        for (r, decoded) in refused.iter().zip(&batch) {
            let letter = r.dead_letter(&batch);
            let event = decoded.outcome.as_ref().expect("valid");
            assert_eq!(letter.payload, Some(&event.to_json()[..]));
            assert!(
                letter
                    .error
                    .contains("could not be read back from Kafka within 2 s")
                    && letter.error.contains("re-encoded")
                    && !letter.error.contains("no longer in Kafka"),
                "{}",
                letter.error
            );
        }
    }

    #[tokio::test]
    async fn an_abort_ends_reading_back_at_once() {
        let (key, value) = pretty(Uuid::new_v4(), 1);
        let batch = [held(0, &key, &value)];
        let originals = Originals::new(&nowhere(), &[], "t", "g");
        let abort = CancellationToken::new();
        let trigger = abort.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let read = reader(&originals, &abort, READ_BACK_LIMIT)
            .read(&batch, all_refused(&batch))
            .await;
        assert!(matches!(read, Err(Error::Aborted)));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
