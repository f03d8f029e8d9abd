//! The consumer thread: polls Kafka, hands messages to the lanes, pauses when they are full,
//! commits durable progress, and drains on stop. Its decisions are [`Pacing`]'s; this module
//! carries them out against librdkafka.
//!
//! Invariant: while it owns partitions the thread polls at least every PAUSE_AFTER (a message
//! that waits for room in a full lane holds it no longer than that), so librdkafka's rebalance
//! and commit callbacks run promptly and the member is never evicted for not polling. When the
//! lanes stay full it pauses all its partitions (librdkafka then purges what it prefetched and
//! resumes from the first message not taken, see `kafka::overcounted`), so at most one batch
//! taken from librdkafka waits here, never a backlog: a batch is taken only once the last one
//! was handed over. The stop ends by its deadline whatever the brokers do: the final commit and
//! leaving the group wait for them only until then.

mod take;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ::metrics::Gauge;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::health::Health;
use crate::kafka::{WorkerContext, leave_group, pause_assignment, positions};
use crate::lag::MonitorHandle;
use crate::memory;
use crate::metrics::{self, Metrics};
use crate::offsets::{Generation, OffsetTracker, Position};
use crate::pipeline::pacing::{Flow, Load, POLL_TIMEOUT, Pacing};
use crate::pipeline::{Dispatcher, Envelope, InFlight, Lane};

/// Longest one attempt to hand a message over waits for room in its lane.
const OFFER_SLICE: Duration = Duration::from_millis(10);
/// Part of the stop's final margin kept for leaving the group after the final commit.
const LEAVE_MARGIN: Duration = Duration::from_secs(1);
/// The group is left this long before the stop's deadline, so that the worker sees the
/// consumer done before it gives up on it.
const LEAVE_BEFORE_END: Duration = Duration::from_millis(200);
/// How long a consumer that failed waits to leave its group: the worker's own stop follows.
const LEAVE_ON_FAILURE: Duration = Duration::from_secs(2);

/// A message waiting for room, with the lane it was copied for (its key is hashed once).
type Routed = (Lane, Envelope);

/// What an idle worker gives back: the histograms' sample blocks, then the heap's free pages.
fn release_idle() {
    metrics::fold_pending_samples();
    memory::release_free_heap();
}

/// Closes the fetch queue if the thread ends by unwinding (a bug, in a build that unwinds), so
/// that it goes before the consumer does; leaving the group closes it on every other path.
struct CloseFetchQueue(Arc<WorkerContext>);

impl Drop for CloseFetchQueue {
    fn drop(&mut self) {
        self.0.close_fetch_queue();
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ConsumerSettings {
    pub max_payload_bytes: usize,
    /// librdkafka's auto-commit interval; also the least time between two idle commits.
    pub commit_interval: Duration,
}

pub(crate) struct ConsumerLoop {
    pub consumer: BaseConsumer<WorkerContext>,
    pub dispatcher: Dispatcher,
    pub tracker: Arc<OffsetTracker>,
    pub in_flight: Arc<InFlight>,
    pub health: Arc<Health>,
    pub metrics: Metrics,
    /// Depth gauge of each lane.
    pub lane_depths: Vec<Gauge>,
    /// Keeps the lag monitor running while this loop lives.
    pub _lag_monitor: MonitorHandle,
    pub settings: ConsumerSettings,
    /// Fired to begin the graceful stop.
    pub stop: CancellationToken,
    /// Fired when in-flight work will never finish (a failed task, the deadline): stop waiting.
    pub abort: CancellationToken,
}

impl ConsumerLoop {
    /// Polls until `stop` fires, then drains. Returns whether every dispatched message became
    /// durable (and so was committed) before the deadline.
    pub fn run(self) -> Result<bool, Error> {
        let _closes = CloseFetchQueue(self.consumer.context().clone());
        let mut pending: VecDeque<Routed> = VecDeque::new();
        let polled = self.poll_until_stopped(&mut pending);
        if let Err(e) = polled {
            // A lane's processor is gone, or librdkafka gave up: leave without waiting for work
            // that cannot finish.
            self.consumer
                .context()
                .closing
                .store(true, Ordering::Release);
            leave_group(self.consumer, Instant::now() + LEAVE_ON_FAILURE);
            return Err(e);
        }
        Ok(self.finish(pending))
    }

    fn poll_until_stopped(&self, pending: &mut VecDeque<Routed>) -> Result<(), Error> {
        let mut pacing = Pacing::new(Instant::now(), self.settings.commit_interval);
        let mut intake = self.intake();
        while !self.stop.is_cancelled() {
            // One clock reading per turn: `clock_gettime` is a visible share of this thread's
            // time in a backlog.
            let mut now = Instant::now();
            self.health.consumer_polled(now);
            while let Some((lane, envelope)) = pending.pop_front() {
                if let Some(back) = self.offer(lane, envelope, now)? {
                    pending.push_front((lane, back));
                    break;
                }
            }
            match pacing.on_offered(now, !pending.is_empty()) {
                Flow::Keep => {}
                Flow::Pause => self.set_paused(true),
                Flow::Resume => self.set_paused(false),
            }
            if let Some(timeout) = pacing.poll_timeout(!pending.is_empty()) {
                // An empty take may have waited POLL_TIMEOUT, and the tick below must not wait
                // one more turn for it. Only when idle, so it costs nothing in a backlog.
                if self.take(&mut intake, timeout, now, &mut pacing, pending)? {
                    now = Instant::now();
                }
            }
            let load = || Load {
                waiting: pending.len(),
                in_flight: self.tracker.in_flight(),
                bytes: self.in_flight.bytes(),
            };
            let Some((load, chores)) = pacing.on_tick(now, load) else {
                continue;
            };
            if pending.is_empty() {
                self.advance_past_unseen();
            }
            self.store();
            self.report_depths(load);
            self.health.observe(chores.holding, now);
            if chores.commit && self.commit_drained() {
                pacing.on_idle_commit(now);
            }
            if chores.release_memory {
                // The copiers' chunks too, before the heap is trimmed.
                intake.copiers = self.copiers();
                self.release_memory(pending);
            }
        }
        Ok(())
    }

    /// Hands back what a backlog grew, once the pipeline is idle.
    fn release_memory(&self, pending: &mut VecDeque<Routed>) {
        self.tracker.shrink();
        // A backlog grows this to thousands of slots (~200 KiB).
        pending.shrink_to_fit();
        release_idle();
    }

    fn report_depths(&self, load: Load) {
        self.metrics.in_flight_messages.set(load.in_flight as f64);
        self.metrics.in_flight_bytes.set(load.bytes as f64);
        for (gauge, depth) in self.lane_depths.iter().zip(self.dispatcher.depths()) {
            gauge.set(depth as f64);
        }
    }

    /// Hands a message to its lane, waiting up to OFFER_SLICE for room in the byte budget and
    /// in the lane. Gives it back if there is none. `now` is the turn's clock reading.
    fn offer(
        &self,
        lane: Lane,
        envelope: Envelope,
        now: Instant,
    ) -> Result<Option<Envelope>, Error> {
        let deadline = now + OFFER_SLICE;
        if !self.in_flight.wait_for_room(envelope.weight(), deadline) {
            return Ok(Some(envelope));
        }
        // Registered before it is sent, so a fast processor cannot report it first; withdrawn
        // if the lane stays full.
        let Some(registered) = self
            .tracker
            .register(envelope.position, envelope.timestamp_ms)
        else {
            return Ok(None);
        };
        let back = self.dispatcher.send_to(lane, envelope, deadline)?;
        if back.is_some() {
            self.tracker.withdraw(registered);
        }
        Ok(back)
    }

    /// Idle partitions are committable up to librdkafka's position, past the records it never
    /// hands over; else a partition whose last record is a transaction marker shows a lag of one
    /// for as long as it stays idle. Only while no message taken waits for room (it is not
    /// registered yet), and not where an error may have counted past a message.
    fn advance_past_unseen(&self) {
        let ctx = self.consumer.context();
        let idle: Vec<(i32, Generation)> = self
            .tracker
            .idle()
            .into_iter()
            .filter(|&(p, _)| !ctx.overcounted.contains(p))
            .collect();
        if idle.is_empty() {
            return;
        }
        let partitions: Vec<i32> = idle.iter().map(|&(p, _)| p).collect();
        let found: Vec<Position> = positions(&self.consumer, &ctx.topic, &partitions)
            .into_iter()
            .zip(idle)
            .filter_map(|(offset, (partition, generation))| {
                Some(Position {
                    partition,
                    generation,
                    offset: offset?,
                })
            })
            .collect();
        self.tracker.advance_idle(&found);
    }

    fn set_paused(&self, pause: bool) {
        match pause_assignment(&self.consumer, pause) {
            Ok(n) => {
                self.metrics
                    .partitions_paused
                    .set(if pause { n as f64 } else { 0.0 });
                if pause {
                    self.metrics.backpressure_pauses.increment(1);
                    debug!(
                        partitions = n,
                        queued = self.dispatcher.queued(),
                        "pipeline full: partitions paused"
                    );
                } else {
                    debug!(partitions = n, "pipeline has room: partitions resumed");
                }
            }
            Err(e) => warn!(error = %e, pause, "could not pause/resume partitions"),
        }
    }

    /// Everything taken is durable: commit it now rather than at the next auto-commit, so the
    /// lag reads zero as soon as a backlog is done (KEDA scales down on it). Returns whether a
    /// commit was sent or failed (false when there was nothing to commit). Asynchronous: a
    /// coordinator that is away would otherwise hold this thread, and with it every new message
    /// and the stop, for up to `session.timeout.ms`.
    fn commit_drained(&self) -> bool {
        match self.consumer.context().commit_async(&self.consumer) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => {
                debug!(error = %e, "idle commit failed; the auto-commit retries it");
                true
            }
        }
    }

    fn store(&self) {
        if let Err(e) = self.consumer.context().store(&self.consumer) {
            debug!(error = %e, "storing offsets failed (a partition may just have been revoked)");
        }
    }

    /// The graceful stop: stop fetching, let the processors drain the lanes, commit what is
    /// durable, leave the group; all by the stop's deadline.
    fn finish(self, pending: VecDeque<Routed>) -> bool {
        let ctx = self.consumer.context();
        let end = ctx
            .stop_deadline()
            .unwrap_or_else(|| Instant::now() + ctx.release.shutdown_timeout);
        let drain_by = ctx.drain_deadline().unwrap_or(end);
        self.set_paused(true);
        // Never registered, so not committed: Kafka hands them out again.
        drop(pending);
        let Self {
            consumer,
            dispatcher,
            tracker,
            health,
            abort,
            ..
        } = self;
        info!(
            in_flight = tracker.in_flight(),
            "stopping: draining in-flight messages"
        );
        // Closing the lanes tells each processor to write what it holds and stop.
        drop(dispatcher);
        let drained = loop {
            let slice = (Instant::now() + POLL_TIMEOUT).min(drain_by);
            if tracker.wait_drained(None, slice) {
                break true;
            }
            if abort.is_cancelled() || Instant::now() >= drain_by {
                break false;
            }
        };
        let ctx = consumer.context();
        ctx.closing.store(true, Ordering::Release);
        let commit_by = end.checked_sub(LEAVE_MARGIN).unwrap_or(end);
        match ctx.commit_until(&consumer, None, commit_by.max(Instant::now())) {
            Ok(n) => info!(partitions = n, drained, "final offsets committed"),
            Err(e) => {
                warn!(error = %e, "final commit failed; uncommitted messages will be redelivered")
            }
        }
        if !drained {
            warn!(
                in_flight = tracker.in_flight(),
                "stop deadline reached with messages not yet durable; they stay uncommitted"
            );
        }
        leave_group(consumer, end.checked_sub(LEAVE_BEFORE_END).unwrap_or(end));
        health.consumer_stopped();
        drained
    }
}
