//! The member's side of the group: pausing its whole assignment (each partition to resume at
//! the first message not taken), reading positions, and leaving by a deadline.
//!
//! Invariant: leaving never holds the caller past its deadline, whatever the coordinator does.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::kafka::WorkerContext;

/// Pauses or resumes every assigned partition; returns how many. Partitions assigned while
/// paused start paused too (the context's rebalance callback reads the flag).
pub(crate) fn pause_assignment(
    consumer: &BaseConsumer<WorkerContext>,
    pause: bool,
) -> KafkaResult<usize> {
    consumer
        .context()
        .backpressured
        .store(pause, Ordering::Release);
    let tpl = consumer.assignment()?;
    if pause {
        consumer.pause(&tpl)?;
        resume_where_taken(consumer);
    } else {
        consumer.resume(&tpl)?;
    }
    Ok(tpl.count())
}

/// A paused partition resumes from librdkafka's position, which an error taken in place of a
/// message may have counted past it (see [`Overcounted`](super::overcounted::Overcounted)):
/// those resume where the error was instead. Without waiting: librdkafka applies the seek after
/// the pause asked for before it, and before any resume asked for after it.
pub(crate) fn resume_where_taken(consumer: &BaseConsumer<WorkerContext>) {
    let ctx = consumer.context();
    let points = ctx.overcounted.resume_points(|p| ctx.tracker.generation(p));
    if points.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::with_capacity(points.len());
    for &(partition, offset) in &points {
        let _ = tpl.add_partition_offset(&ctx.topic, partition, Offset::Offset(offset));
    }
    match consumer.seek_partitions(tpl, Duration::ZERO) {
        Ok(_) => debug!(
            ?points,
            "paused partitions resume where an error stood for a message"
        ),
        Err(e) => warn!(error = %e, ?points, "could not set where paused partitions resume"),
    }
}

/// librdkafka's position of each of `partitions` of `topic`, in their order: one past the last
/// record it passed on or over (a message taken, a transaction marker, an aborted transaction's
/// messages); `None` for a partition with none since it was assigned.
pub(crate) fn positions(
    consumer: &BaseConsumer<WorkerContext>,
    topic: &str,
    partitions: &[i32],
) -> Vec<Option<i64>> {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    // SAFETY: both pointers are valid for the call, which only reads the client's partitions
    // and writes the list's offsets (rdkafka's `position` asks the group for its assignment
    // first, a round trip to librdkafka's main thread this does not need).
    unsafe { rdsys::rd_kafka_position(consumer.client().native_ptr(), tpl.ptr()) };
    tpl.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) if e.error().is_ok() => Some(o),
            _ => None,
        })
        .collect()
}

/// Closes the fetch queue, then the consumer, which leaves the group so that its partitions move
/// at once, waiting no longer than `deadline`: with the coordinator gone, librdkafka's close can
/// take tens of seconds. Past the deadline the close goes on in the background; the process is
/// ending, and the group drops the member after `session.timeout.ms`.
pub(crate) fn leave_group(consumer: BaseConsumer<WorkerContext>, deadline: Instant) {
    consumer.context().close_fetch_queue();
    let (left, wait) = std::sync::mpsc::channel();
    let closing = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = left.send(());
        });
    if let Err(e) = closing {
        warn!(error = %e, "could not close the consumer on a thread of its own");
        return;
    }
    match wait.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(()) => info!("left the consumer group"),
        Err(_) => warn!(
            "the group coordinator did not answer before the stop deadline; the group drops this \
             member after session.timeout.ms"
        ),
    }
}
