//! Taking messages from librdkafka: a batch at a time from the fetch queue every assigned
//! partition forwards to, and the consumer's own queue served for events beside it.
//!
//! Invariant: a batch is taken only when nothing waits for room, so at most one batch waits in
//! the consumer thread; each message taken is copied into its lane's chunk (or dropped, when its
//! partition is no longer assigned) before the batch's messages go back to librdkafka.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use tracing::debug;

use super::{ConsumerLoop, Routed};
use crate::error::Error;
use crate::kafka::{Batch, FetchQueue, Fetched};
use crate::offsets::Position;
use crate::pipeline::pacing::Pacing;
use crate::pipeline::{Copier, envelope};

/// Messages taken from librdkafka per call: a call by message costs the consumer thread about
/// three times as much per message as a batch of 1,000 does (`consume_cost`), and what waits
/// for room in the lanes stays at most one batch.
const TAKE_BATCH: usize = 500;

/// What the consumer thread takes messages with.
pub(super) struct Intake {
    /// `None` if librdkafka could not make one: then messages come one by one with the events.
    queue: Option<Arc<FetchQueue>>,
    /// Reused for every take.
    batch: Batch,
    pub copiers: Vec<Copier>,
}

impl ConsumerLoop {
    /// Serves the consumer's own queue (rebalances, commit results, errors) without waiting,
    /// then, unless messages wait for room, takes a batch of messages, waiting up to `timeout`
    /// for the first. True when it came back empty after waiting, so `now` is stale.
    pub(super) fn take(
        &self,
        intake: &mut Intake,
        timeout: Duration,
        now: Instant,
        pacing: &mut Pacing,
        pending: &mut VecDeque<Routed>,
    ) -> Result<bool, Error> {
        let Intake {
            queue,
            batch,
            copiers,
        } = intake;
        let Some(queue) = queue else {
            let polled = self.poll_consumer(copiers, timeout, now, pacing, pending)?;
            return Ok(!polled && !timeout.is_zero());
        };
        // Paused and still waiting for room: events only.
        let waiting = !pending.is_empty();
        let polled = self.poll_consumer(copiers, Duration::ZERO, now, pacing, pending)?;
        if waiting {
            return Ok(false);
        }
        // A message on the consumer's own queue (a partition not forwarded) may have more
        // behind it, and an event left there would not wake the wait: no waiting then.
        let timeout = if polled || queue.events_waiting() {
            Duration::ZERO
        } else {
            timeout
        };
        if queue.take(timeout, batch) == 0 {
            return Ok(!timeout.is_zero());
        }
        let mut taken = 0;
        for m in batch.iter() {
            taken += self.accept(m, copiers, pending)?;
        }
        // The messages were copied out: their fetch buffers go back to librdkafka now.
        batch.clear();
        self.took(taken, now, pacing);
        Ok(false)
    }

    /// One poll of the consumer's own queue: an event, or a message of a partition that is not
    /// forwarded to the fetch queue. True when it returned a message or an error.
    fn poll_consumer(
        &self,
        copiers: &mut [Copier],
        timeout: Duration,
        now: Instant,
        pacing: &mut Pacing,
        pending: &mut VecDeque<Routed>,
    ) -> Result<bool, Error> {
        match self.consumer.poll(timeout) {
            None => return Ok(false),
            Some(Ok(message)) => {
                let taken = self.accept(Fetched::of(&message), copiers, pending)?;
                self.took(taken, now, pacing);
            }
            Some(Err(e)) => self.consumer_error(e)?,
        }
        Ok(true)
    }

    /// A message into `pending` (unless its partition is no longer assigned), or the error
    /// librdkafka returned in its place. Returns how many messages it took.
    fn accept(
        &self,
        m: Fetched<'_>,
        copiers: &mut [Copier],
        pending: &mut VecDeque<Routed>,
    ) -> Result<u64, Error> {
        let overcounted = &self.consumer.context().overcounted;
        if let Some(e) = m.error() {
            if let Some(generation) = self.tracker.generation(m.partition()) {
                overcounted.error_at(m.partition(), generation, m.offset());
            }
            self.consumer_error(e)?;
            return Ok(0);
        }
        overcounted.taken(m.partition(), m.offset());
        if let Some(routed) = self.envelope(m, copiers) {
            pending.push_back(routed);
        }
        Ok(1)
    }

    fn took(&self, messages: u64, now: Instant, pacing: &mut Pacing) {
        if messages > 0 {
            self.metrics.consumed.increment(messages);
            self.health.consumer_fetched();
            pacing.on_message(now);
        }
    }

    /// librdkafka gives up on a fatal error (a fenced static member): so does the worker, with
    /// the error, instead of polling a dead consumer. Any other is reported and polled past.
    fn consumer_error(&self, e: KafkaError) -> Result<(), Error> {
        if let KafkaError::MessageConsumptionFatal(_) = e {
            self.metrics.consumer_errors.increment(1);
            return Err(Error::Kafka(e));
        }
        self.consumer.context().report_error(&e, None);
        Ok(())
    }

    /// One copier per lane.
    pub(super) fn copiers(&self) -> Vec<Copier> {
        (0..self.dispatcher.lanes())
            .map(|_| Copier::default())
            .collect()
    }

    pub(super) fn intake(&self) -> Intake {
        Intake {
            queue: self.consumer.context().fetch_queue(&self.consumer),
            batch: Batch::with_capacity(TAKE_BATCH),
            copiers: self.copiers(),
        }
    }

    /// Owns a polled message: its lane, coordinates, generation and (bounded) bytes.
    fn envelope(&self, m: Fetched<'_>, copiers: &mut [Copier]) -> Option<Routed> {
        let Some(generation) = self.tracker.generation(m.partition()) else {
            // Not assigned (any more): it was never registered, so it is redelivered.
            debug!(
                partition = m.partition(),
                offset = m.offset(),
                "message of an unassigned partition"
            );
            return None;
        };
        let position = Position {
            partition: m.partition(),
            generation,
            offset: m.offset(),
        };
        // Into its lane's chunk: a chunk read by one processor in order is freed as soon as that
        // processor has taken its last message, never held by a slower lane.
        let max = self.settings.max_payload_bytes;
        let lane = self
            .dispatcher
            .lane_of(m.partition(), m.key().map(|k| envelope::cut(k, max)));
        let envelope = copiers[lane.index()].envelope(
            position,
            m.key(),
            m.payload(),
            m.headers(),
            m.timestamp_ms(),
            max,
        );
        Some((lane, envelope))
    }
}
