//! The consumer's callbacks: rebalances, commit results, and librdkafka's own logs.
//!
//! Invariant: a partition leaves this instance only after its durable offsets were committed
//! synchronously and it was forgotten by the tracker; messages of it that were not yet durable
//! within the drain timeout are neither committed nor reported later (their generation is gone),
//! so the next owner reprocesses them and the idempotent write makes that harmless.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{IsError, KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use crate::kafka::tracker::OffsetTracker;
use crate::metrics::Metrics;

pub(crate) struct WorkerContext {
    pub topic: String,
    pub tracker: Arc<OffsetTracker>,
    pub metrics: Metrics,
    pub drain_timeout: Duration,
    /// Set while the consumer holds its partitions paused for backpressure, so that partitions
    /// assigned meanwhile start paused too.
    pub backpressured: AtomicBool,
    /// Set once the graceful stop has drained: revokes from then on commit without waiting.
    pub closing: AtomicBool,
}

impl WorkerContext {
    pub fn new(
        topic: String,
        tracker: Arc<OffsetTracker>,
        metrics: Metrics,
        drain_timeout: Duration,
    ) -> Self {
        Self {
            topic,
            tracker,
            metrics,
            drain_timeout,
            backpressured: AtomicBool::new(false),
            closing: AtomicBool::new(false),
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

    /// Commits durable progress now and waits for the broker's answer.
    pub fn commit_now(
        &self,
        consumer: &BaseConsumer<Self>,
        only: Option<&[i32]>,
    ) -> KafkaResult<usize> {
        let (tpl, offsets) = self.progress(only)?;
        if offsets.is_empty() {
            return Ok(0);
        }
        // Stored too, so librdkafka's own commit on unassign/close carries the same offsets.
        let _ = consumer.store_offsets(&tpl);
        match consumer.commit(&tpl, CommitMode::Sync) {
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
    fn release(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) {
        let wait = if self.closing.load(Ordering::Acquire) {
            Duration::ZERO
        } else {
            self.drain_timeout
        };
        let started = Instant::now();
        let drained = self.tracker.wait_drained(Some(partitions), started + wait);
        if !drained {
            warn!(
                ?partitions,
                timeout_ms = wait.as_millis() as u64,
                "revoked partitions still had messages in flight; they will be redelivered to the next owner"
            );
        }
        if let Err(e) = self.commit_now(consumer, Some(partitions)) {
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
}

impl ClientContext for WorkerContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                error!(target: "librdkafka", fac, "{message}")
            }
            L::Warning => warn!(target: "librdkafka", fac, "{message}"),
            L::Notice | L::Info => info!(target: "librdkafka", fac, "{message}"),
            L::Debug => debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(target: "librdkafka", error = %error, "{reason}");
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = self.partitions_of(tpl);
                self.tracker.assign(&partitions);
                self.metrics.rebalance_assign.increment(1);
                info!(?partitions, "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                let partitions = self.partitions_of(tpl);
                self.metrics.rebalance_revoke.increment(1);
                self.release(consumer, &partitions);
            }
            Rebalance::Error(e) => {
                self.metrics.rebalance_error.increment(1);
                error!(error = %e, "rebalance failed");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance
            && self.backpressured.load(Ordering::Acquire)
            && let Err(e) = consumer.pause(tpl)
        {
            warn!(error = %e, "could not pause newly assigned partitions");
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
                warn!(error = %e, "offset commit failed; the offsets are committed again at the next interval");
            }
        }
    }
}
