//! The member's side of the group: pausing its whole assignment, and leaving by a deadline.
//!
//! Invariant: leaving never holds the caller past its deadline, whatever the coordinator does.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use tracing::{info, warn};

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
    } else {
        consumer.resume(&tpl)?;
    }
    Ok(tpl.count())
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
