//! The consumer's callbacks: rebalances, commit results, and librdkafka's own logs and errors.
//!
//! Invariant: a partition leaves this instance only after its durable offsets were committed
//! (waiting for the broker's answer, bounded) and it was forgotten by the tracker; messages of it
//! that were not yet durable within the drain timeout are neither committed nor reported later
//! (their generation is gone), so the next owner reprocesses them and the idempotent write makes
//! that harmless. Once the stop has begun, no wait here outlasts the stop's deadline. A partition
//! assigned while the pipeline has room is fetched: it never inherits a pause from an earlier
//! assignment. Each assigned partition forwards its messages to the fetch queue before its fetch
//! starts, and the fetch queue is closed before the consumer is destroyed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{IsError, KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::REVOKE_COMMIT_WAIT;
use crate::health::{Health, KAFKA_UNREACHABLE};
use crate::kafka::commit;
use crate::kafka::fetched::{FetchQueue, FetchSlot};
use crate::kafka::group::resume_where_taken;
use crate::kafka::overcounted::Overcounted;
use crate::metrics::Metrics;
use crate::offsets::OffsetTracker;
use crate::telemetry::Throttle;

/// Part of the shutdown timeout kept for the final commit and leaving the group.
pub(crate) const FINAL_COMMIT_MARGIN: Duration = Duration::from_secs(2);
/// How often a repeating librdkafka warning or error is logged at most.
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// How partitions are given up: on a revoke, and when the worker stops.
pub(crate) struct Release {
    /// How long a revoked partition's in-flight messages may take to become durable.
    pub drain_timeout: Duration,
    /// Everything of a stop, leaving the group included, ends this long after it began.
    pub shutdown_timeout: Duration,
    /// Fired to begin the graceful stop.
    pub stop: CancellationToken,
    /// When the stop began, as the first to see `stop` fired recorded it: the worker and the
    /// consumer count the stop's deadline from the same instant.
    pub stopped_at: Arc<OnceLock<Instant>>,
}

pub(crate) struct WorkerContext {
    pub topic: String,
    pub group: String,
    pub tracker: Arc<OffsetTracker>,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    pub release: Release,
    /// Set while the consumer holds its partitions paused for backpressure, so that partitions
    /// assigned meanwhile start paused too.
    pub backpressured: AtomicBool,
    /// Set once the graceful stop has drained: revokes from then on commit without waiting.
    pub closing: AtomicBool,
    /// Partitions whose librdkafka position counts a message not taken: set back at each pause.
    pub overcounted: Overcounted,
    fetch_queue: FetchSlot,
    throttle: Throttle,
}

impl WorkerContext {
    pub fn new(
        topic: String,
        group: String,
        tracker: Arc<OffsetTracker>,
        metrics: Metrics,
        health: Arc<Health>,
        release: Release,
    ) -> Self {
        Self {
            topic,
            group,
            tracker,
            metrics,
            health,
            release,
            backpressured: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            overcounted: Overcounted::default(),
            fetch_queue: FetchSlot::default(),
            throttle: Throttle::new(LOG_WINDOW),
        }
    }

    /// Once the stop has begun: when everything must be done, the final commit and leaving the
    /// group included.
    pub fn stop_deadline(&self) -> Option<Instant> {
        if !self.release.stop.is_cancelled() {
            return None;
        }
        let began = *self.release.stopped_at.get_or_init(Instant::now);
        Some(began + self.release.shutdown_timeout)
    }

    /// Once the stop has begun: until when in-flight messages may still become durable.
    pub fn drain_deadline(&self) -> Option<Instant> {
        self.stop_deadline()
            .map(|end| end.checked_sub(FINAL_COMMIT_MARGIN).unwrap_or(end))
    }

    /// The queue the consumer takes messages from in batches (see [`FetchSlot::open`]).
    pub fn fetch_queue(&self, consumer: &BaseConsumer<Self>) -> Option<Arc<FetchQueue>> {
        self.fetch_queue.open(consumer.client())
    }

    /// Lets go of the fetch queue, before the consumer is destroyed.
    pub fn close_fetch_queue(&self) {
        self.fetch_queue.close();
    }

    /// Sends newly assigned partitions' messages to the fetch queue, before their fetch starts.
    fn forward(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) {
        let Some(queue) = self.fetch_queue(consumer) else {
            return;
        };
        let missed = queue.forward(consumer.client(), &self.topic, partitions);
        if !missed.is_empty() {
            warn!(partitions = ?missed, "partitions not forwarded to the fetch queue: their messages are taken one at a time");
        }
    }

    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect()
    }

    /// The tracker's durable progress (of `only` some partitions, or all) as a partition list.
    fn progress(&self, only: Option<&[i32]>) -> KafkaResult<(TopicPartitionList, Vec<(i32, i64)>)> {
        let offsets = self.tracker.commit_candidates(only);
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for &(p, o) in &offsets {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(o))?;
        }
        Ok((tpl, offsets))
    }

    /// Hands durable progress to librdkafka, which commits it at the next auto-commit.
    pub fn store(&self, consumer: &BaseConsumer<Self>) -> KafkaResult<()> {
        let (tpl, offsets) = self.progress(None)?;
        if !offsets.is_empty() {
            consumer.store_offsets(&tpl)?;
        }
        Ok(())
    }

    /// Asks for a commit of durable progress without waiting for it. The broker's answer comes
    /// back through the consumer's own queue to `commit_callback`, as an auto-commit's does
    /// (rdkafka's `commit(Async)` passes no queue, and librdkafka then reports to nobody).
    /// Returns how many partitions it covers.
    pub fn commit_async(&self, consumer: &BaseConsumer<Self>) -> KafkaResult<usize> {
        let (tpl, offsets) = self.progress(None)?;
        if offsets.is_empty() {
            return Ok(0);
        }
        // Stored too, so librdkafka's own commits carry the same offsets.
        consumer.store_offsets(&tpl)?;
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` and `tpl` outlive both calls. The queue handle is a new reference to the
        // consumer queue, released at once: the pending commit keeps its own reference.
        let err = unsafe {
            let queue = rdsys::rd_kafka_queue_get_consumer(rk);
            if queue.is_null() {
                return Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::Fail));
            }
            let err =
                rdsys::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(queue);
            err
        };
        if err.is_error() {
            self.metrics.commit_failures.increment(1);
            return Err(KafkaError::ConsumerCommit(err.into()));
        }
        Ok(offsets.len())
    }

    /// Commits durable progress (of `only` some partitions, or all) and waits for the broker's
    /// answer until `deadline`. A coordinator that does not answer in time fails the call; the
    /// commit may still complete later, which is harmless (it covers only durable offsets).
    pub fn commit_until(
        &self,
        consumer: &BaseConsumer<Self>,
        only: Option<&[i32]>,
        deadline: Instant,
    ) -> KafkaResult<usize> {
        let (tpl, offsets) = self.progress(only)?;
        if offsets.is_empty() {
            return Ok(0);
        }
        // Stored too, so librdkafka's own commit on unassign/close carries the same offsets.
        let _ = consumer.store_offsets(&tpl);
        match commit::until(consumer, &tpl, deadline) {
            Ok(()) => {
                self.tracker.mark_committed(&offsets);
                self.metrics.commits.increment(1);
                Ok(offsets.len())
            }
            Err(e) => {
                self.metrics.commit_failures.increment(1);
                Err(e)
            }
        }
    }

    /// Hands revoked partitions back: wait (bounded) for their in-flight messages, commit, forget.
    /// A stop that begins meanwhile shortens the wait to the stop's own deadline.
    fn release(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) {
        let started = Instant::now();
        let wait = if self.closing.load(Ordering::Acquire) {
            Duration::ZERO
        } else {
            self.release.drain_timeout
        };
        let mut deadline = started.checked_add(wait).unwrap_or(started);
        let drained = loop {
            if let Some(stop) = self.drain_deadline() {
                deadline = deadline.min(stop);
            }
            let slice = deadline.min(Instant::now() + Duration::from_millis(100));
            if self.tracker.wait_drained(Some(partitions), slice) {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
        };
        if !drained {
            warn!(
                ?partitions,
                waited_ms = started.elapsed().as_millis() as u64,
                "revoked partitions still had messages in flight; they will be redelivered to the next owner"
            );
        }
        let commit_by = self
            .stop_deadline()
            .unwrap_or_else(|| Instant::now() + REVOKE_COMMIT_WAIT)
            .max(Instant::now() + Duration::from_millis(100));
        if let Err(e) = self.commit_until(consumer, Some(partitions), commit_by) {
            warn!(error = %e, ?partitions, "commit on revoke failed; the next owner may reprocess some messages");
        }
        self.tracker.revoke(partitions);
        info!(
            ?partitions,
            drained,
            ms = started.elapsed().as_millis() as u64,
            "partitions revoked"
        );
    }

    /// Logs a consumer error (throttled), counts it, and tells readiness what it means.
    /// `detail` is librdkafka's own sentence for it, when it gave one.
    pub fn report_error(&self, error: &KafkaError, detail: Option<&str>) {
        use RDKafkaErrorCode as C;
        self.metrics.consumer_errors.increment(1);
        let text = detail.map_or_else(|| error.to_string(), str::to_owned);
        match error.rdkafka_error_code() {
            Some(C::Authentication | C::SaslAuthenticationFailed) => {
                self.health.kafka_refused_credentials(&text)
            }
            Some(C::AllBrokersDown) => self.health.kafka_problem(KAFKA_UNREACHABLE.into()),
            Some(C::UnknownTopicOrPartition | C::UnknownTopic) => self
                .health
                .kafka_problem(format!("topic {} does not exist", self.topic)),
            // Only the consumer's own requests see these: the lag monitor needs less (Describe).
            Some(C::TopicAuthorizationFailed) => self
                .health
                .consumer_refused(format!("not authorized to read topic {}", self.topic)),
            Some(C::GroupAuthorizationFailed) => self
                .health
                .consumer_refused(format!("not authorized for group {}", self.group)),
            _ => {}
        }
        if let Some(held) = self.throttle.admit(&log_key(&error.to_string(), &text)) {
            warn!(target: "librdkafka", error = %error, repeated = held, "kafka: {text}");
        }
    }
}

/// The part of a librdkafka log line that stays the same when the condition repeats (it ends
/// with timings and counts in parentheses).
fn log_key(fac: &str, message: &str) -> String {
    let stem = message.split(" (after").next().unwrap_or(message);
    format!("{fac}:{stem}")
}

/// librdkafka's only word of a partition restarted at `auto.offset.reset` because its offset
/// was not in the log: a warning (a reset that is not an error, a first start, is debug-logged).
/// The messages between that offset and where it restarted were never applied.
fn is_offset_reset(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) -> bool {
    matches!(level, rdkafka::config::RDKafkaLogLevel::Warning)
        && fac == "OFFSET"
        && message.contains("offset reset")
}

impl ClientContext for WorkerContext {
    crate::kafka::answer_token_requests!();

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if is_offset_reset(level, fac, message) {
            self.metrics.offset_resets.increment(1);
        }
        let loud = matches!(
            level,
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
        );
        let repeated = if loud {
            match self.throttle.admit(&log_key(fac, message)) {
                Some(held) => held,
                None => return,
            }
        } else {
            0
        };
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                error!(target: "librdkafka", fac, repeated, "{message}")
            }
            L::Warning => warn!(target: "librdkafka", fac, repeated, "{message}"),
            L::Notice | L::Info => info!(target: "librdkafka", fac, "{message}"),
            L::Debug => debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.report_error(&error, Some(reason));
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // An incremental rebalance pauses the partitions kept, and resumes them once
                // this callback returns, from librdkafka's position.
                resume_where_taken(consumer);
                let partitions = self.partitions_of(tpl);
                self.forward(consumer, &partitions);
                self.tracker.assign(&partitions);
                self.metrics.rebalance_assign.increment(1);
                info!(?partitions, "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                let partitions = self.partitions_of(tpl);
                self.metrics.rebalance_revoke.increment(1);
                if consumer.assignment_lost() {
                    // Evicted (a missed session timeout): not a member until it joins again.
                    self.health.group_member(false);
                }
                self.release(consumer, &partitions);
                resume_where_taken(consumer);
            }
            Rebalance::Error(e) => {
                self.metrics.rebalance_error.increment(1);
                self.health.group_member(false);
                error!(error = %e, "rebalance failed");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // The group assigned partitions, or none (more members than partitions): a member.
            self.health.group_member(true);
            // librdkafka keeps a partition's pause across assignments: one paused, revoked and
            // assigned back later would never be fetched again unless resumed here.
            let paused = self.backpressured.load(Ordering::Acquire);
            let result = if paused {
                consumer.pause(tpl)
            } else {
                consumer.resume(tpl)
            };
            if let Err(e) = result {
                warn!(error = %e, paused, "could not set the pause of newly assigned partitions");
            }
            if paused {
                let assigned = consumer.assignment().map_or(0, |a| a.count());
                self.metrics.partitions_paused.set(assigned as f64);
            }
        }
        self.metrics
            .partitions_assigned
            .set(self.tracker.partitions().len() as f64);
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                let acked: Vec<(i32, i64)> = offsets
                    .elements_for_topic(&self.topic)
                    .iter()
                    .filter(|e| e.error().is_ok())
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect();
                self.tracker.mark_committed(&acked);
                self.metrics.commits.increment(1);
            }
            Err(e) => {
                self.metrics.commit_failures.increment(1);
                if let Some(held) = self.throttle.admit(&format!("commit {e}")) {
                    warn!(error = %e, repeated = held, "offset commit failed; the offsets are committed again at the next interval");
                }
            }
        }
    }
}
