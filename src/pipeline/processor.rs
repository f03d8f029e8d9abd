//! One processor: drains its lane into batches and writes each batch durably (`write`).
//!
//! Invariant: a batch's offsets are reported durable to the tracker only after PostgreSQL
//! committed every row and dead letter of that batch, and the dead-letter topic (if any)
//! acknowledged or refused for good each of its dead letters. An abort leaves the batch
//! unreported, so its offsets are never committed and Kafka redelivers them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::contract::{Reason, Rejection, WriterSchema, wire_format};
use crate::db::OrderStore;
use crate::error::Error;
use crate::health::Health;
use crate::kafka::dead_letter_topic::DeadLetterTopic;
use crate::kafka::originals::Originals;
use crate::metrics::Metrics;
use crate::offsets::{OffsetTracker, Position};
use crate::pipeline::{Decoded, Envelope, InFlight, decode_with, named, offset_ranges};
use crate::registry::SchemaRegistry;
use crate::retry::{Delays, Schedule};

#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessorSettings {
    pub batch_max_rows: usize,
    pub linger: Duration,
    pub max_payload_bytes: usize,
    pub retry: Schedule,
}

pub(crate) struct Processor {
    pub lane: usize,
    pub rx: flume::Receiver<Envelope>,
    pub store: OrderStore,
    pub tracker: Arc<OffsetTracker>,
    pub in_flight: Arc<InFlight>,
    pub health: Arc<Health>,
    pub metrics: Metrics,
    pub settings: ProcessorSettings,
    /// Where dead letters are also published, when configured.
    pub dead_letter_topic: Option<Arc<DeadLetterTopic>>,
    /// Reads a refused row's message back from Kafka for its dead letter.
    pub originals: Originals,
    /// Gives Confluent-framed messages their writer schemas, when configured.
    pub registry: Option<Arc<SchemaRegistry>>,
    /// Fired when the graceful stop runs out of time: stop retrying, report nothing.
    pub abort: CancellationToken,
}

impl Processor {
    /// Runs until the lane is closed and drained (graceful stop) or the abort token fires.
    ///
    /// Unless batches fill up (a backlog), a batch is collected while the one before it is
    /// written, so a batch whose linger ran out during that write is written as soon as the
    /// write ends (not one linger later). Writes stay one at a time, in lane order.
    pub async fn run(self) -> Result<(), Error> {
        let mut writing: Vec<Decoded> = Vec::new();
        let mut filling: Vec<Decoded> = Vec::new();
        let mut closed = self.collect(&mut filling, false, None).await;
        while !filling.is_empty() {
            std::mem::swap(&mut writing, &mut filling);
            if closed {
                return self.flush(&mut writing).await;
            }
            if writing.len() >= self.settings.batch_max_rows {
                // A backlog: the next batch fills at once after this write anyway. Starting
                // every write the moment the last one ends would keep all processors writing
                // at once, which on a small PostgreSQL costs more than it gains
                // (docs/performance.md#decisions).
                self.write(&mut writing).await?;
                closed = self.collect(&mut filling, true, None).await;
                continue;
            }
            let written = CancellationToken::new();
            let write = async {
                let result = self.write(&mut writing).await;
                written.cancel();
                result
            };
            let next = async {
                Ok::<bool, Error>(self.collect(&mut filling, false, Some(&written)).await)
            };
            // On a failed write, the batch being collected is dropped unreported: its offsets
            // are never committed, like everything else in the lane.
            ((), closed) = tokio::try_join!(write, next)?;
        }
        Ok(())
    }

    /// Writes a batch durably, then, if the lane is empty (no backlog), gives the batch's room
    /// back until it is needed; in a backlog the room is kept for the next batch.
    async fn write(&self, batch: &mut Vec<Decoded>) -> Result<(), Error> {
        self.flush(batch).await?;
        if self.rx.is_empty() {
            *batch = Vec::new();
        }
        Ok(())
    }

    /// Fills `batch` from the lane: waits for a first message, then takes more until the batch
    /// is full, the lane is closed, or the linger (counted from that first message) is over.
    /// In a backlog (the batch before was full, or the lane is full) it lingers
    /// [`BACKLOG_LINGER_FACTOR`] times longer: its messages are late already, and a fuller
    /// statement costs PostgreSQL less per row, so the backlog drains sooner. Returns whether
    /// the lane is closed and drained. While the write before it is still running (`writing`
    /// not yet cancelled) the batch cannot be written anyway, so it keeps filling until that
    /// write ends, whatever the linger.
    async fn collect(
        &self,
        batch: &mut Vec<Decoded>,
        after_full: bool,
        writing: Option<&CancellationToken>,
    ) -> bool {
        let max = self.settings.batch_max_rows;
        if self.rx.is_empty() {
            *batch = Vec::new();
        }
        let linger = if after_full || self.rx.is_full() {
            self.settings.linger * BACKLOG_LINGER_FACTOR
        } else {
            self.settings.linger
        };
        let Ok(first) = self.rx.recv_async().await else {
            return true;
        };
        batch.reserve(max.min(self.rx.len() + 1));
        let Some(first) = self.decode(first).await else {
            return true;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            let next = match self.rx.try_recv() {
                Ok(env) => Ok(env),
                Err(flume::TryRecvError::Disconnected) => return true,
                Err(flume::TryRecvError::Empty) => {
                    let next = match tokio::time::timeout_at(deadline, self.rx.recv_async()).await {
                        Ok(next) => next,
                        Err(_linger_elapsed) => match writing {
                            Some(w) if !w.is_cancelled() => tokio::select! {
                                next = self.rx.recv_async() => next,
                                () = w.cancelled() => break,
                            },
                            _ => break,
                        },
                    };
                    next.map_err(|_| ())
                }
            };
            match next {
                Ok(env) => match self.decode(env).await {
                    Some(decoded) => batch.push(decoded),
                    None => return true,
                },
                Err(()) => return true,
            }
        }
        false
    }

    /// Decodes a message. A Confluent-framed one first gets the writer schema its id names,
    /// waiting for the registry (retried with backoff, the worker unready meanwhile) for as
    /// long as it does not give it: the message is fine, the registry is not. `None` when the
    /// abort token fires during that wait: the message stays unreported, so uncommitted.
    async fn decode(&self, envelope: Envelope) -> Option<Decoded> {
        let max = self.settings.max_payload_bytes;
        let id = match &self.registry {
            Some(_) if envelope.payload_size <= max => {
                envelope.payload().and_then(wire_format::schema_id)
            }
            _ => None,
        };
        let writer = match (&self.registry, id) {
            (Some(registry), Some(id)) => Some(self.writer_schema(registry, id).await?),
            _ => None,
        };
        Some(decode_with(envelope, max, writer.as_deref()))
    }

    async fn writer_schema(&self, registry: &SchemaRegistry, id: u32) -> Option<Arc<WriterSchema>> {
        if let Some(schema) = registry.cached(id) {
            return Some(schema);
        }
        // However this ends (given, aborted, or the future dropped), the lane waits no more.
        let _waiting = RegistryWait(&self.health, self.lane);
        let mut delays = Delays::new(self.settings.retry);
        loop {
            match registry.writer_schema(id).await {
                Ok(schema) => return Some(schema),
                Err(e) => {
                    self.metrics.schema_registry_failures.increment(1);
                    warn!(lane = self.lane, error = %e, "waiting for the schema registry");
                    let reason = Some(e.to_string());
                    self.health.schema_registry_unavailable(self.lane, reason);
                    if !delays.sleep(&self.abort).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn flush(&self, batch: &mut Vec<Decoded>) -> Result<(), Error> {
        let span = info_span!("batch", lane = self.lane, topic = %self.store.topic(),
                              offsets = %offset_ranges(batch), messages = batch.len());
        // Each message's producer trace continues in the batch that applied it (a batch has
        // many parents, so links, not a parent).
        for context in batch.iter().filter_map(|d| d.trace.as_deref()) {
            span.add_link(context.clone());
        }
        let started = Instant::now();
        let written = {
            let _running = self.health.writing(self.lane);
            self.write_durably(batch).instrument(span).await?
        };
        let elapsed = started.elapsed();

        let positions: Vec<Position> = batch.iter().map(|d| d.envelope.position).collect();
        self.tracker.complete(&positions);
        self.in_flight
            .release(batch.iter().map(|d| d.envelope.weight()).sum());
        self.health.set_db_ok(true);
        self.health.progressed();

        let m = &self.metrics;
        let valid = batch.iter().filter(|d| d.outcome.is_ok()).count() as u64;
        let refused = written.refused;
        m.applied.increment(written.stats.applied);
        m.duplicates
            .increment((valid - refused).saturating_sub(written.stats.applied));
        self.log_rejections(batch);
        m.dead_lettered(Reason::DbRejected).increment(refused);
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        for ts in batch.iter().filter_map(|d| d.envelope.timestamp_ms) {
            m.end_to_end_latency
                .record(now_ms.saturating_sub(ts).max(0) as f64 / 1000.0);
        }
        m.batch_duration.record(elapsed.as_secs_f64());
        m.batch_size.record(batch.len() as f64);
        debug!(
            lane = self.lane,
            messages = batch.len(),
            applied = written.stats.applied,
            dead_letters_new = written.stats.dead_letters_new,
            ms = elapsed.as_millis() as u64,
            "batch durable"
        );
        batch.clear();
        Ok(())
    }

    /// Counts a batch's rejected messages and logs one line per reason, naming some of them
    /// with the first one's error: a stream of bad messages is a few lines per batch, not one
    /// per message.
    fn log_rejections(&self, batch: &[Decoded]) {
        let rejected: Vec<(Position, &Rejection)> = batch
            .iter()
            .filter_map(|d| d.outcome.as_ref().err().map(|r| (d.envelope.position, r)))
            .collect();
        for reason in Reason::ALL {
            let of_reason = || rejected.iter().filter(move |(_, r)| r.reason == reason);
            let Some((_, first)) = of_reason().next() else {
                continue;
            };
            let count = of_reason().count();
            self.metrics.dead_lettered(reason).increment(count as u64);
            let coordinates = named(of_reason().map(|(at, _)| (at.partition, at.offset)));
            warn!(lane = self.lane, reason = reason.as_str(), stage = reason.stage().as_str(),
                  messages = count, %coordinates, error = %first.detail, "messages dead-lettered");
        }
    }
}

/// A lane's wait for the schema registry; it ends when this drops.
struct RegistryWait<'a>(&'a Health, usize);

impl Drop for RegistryWait<'_> {
    fn drop(&mut self) {
        self.0.schema_registry_unavailable(self.1, None);
    }
}

/// How many times `BATCH_LINGER` a batch may wait to fill in a backlog, where a lane refills at
/// the consumer's pace while its batch waits: fuller batches cost PostgreSQL less per row
/// (docs/performance.md#decisions).
const BACKLOG_LINGER_FACTOR: u32 = 4;
