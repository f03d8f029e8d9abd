//! The librdkafka call that rdkafka 0.39 does not offer with a bound: a commit that waits for
//! the broker's answer only until a deadline.
//!
//! Invariant: no call here blocks past the deadline it is given, whatever the coordinator does;
//! every librdkafka object created here is released before returning.

use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{IsError, KafkaError, KafkaResult, RDKafkaErrorCode};

/// Commits `tpl` and waits for the coordinator's answer until `deadline`. librdkafka's own
/// synchronous commit waits without a bound, which held a stop for tens of seconds when the
/// coordinator had gone. A commit still pending at the deadline completes or fails on its own.
pub(crate) fn until<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
    deadline: Instant,
) -> KafkaResult<()> {
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` and `tpl` are valid for the whole call; the queue is created and destroyed
    // here, and librdkafka's pending commit keeps a reference of its own to it.
    unsafe {
        let queue = rdsys::rd_kafka_queue_new(rk);
        if queue.is_null() {
            return Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::Fail));
        }
        let err = rdsys::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
        let result = if err.is_error() {
            Err(KafkaError::ConsumerCommit(err.into()))
        } else {
            wait_for_answer(queue, deadline)
        };
        rdsys::rd_kafka_queue_destroy(queue);
        result
    }
}

/// Polls `queue` for the commit's result event until `deadline`.
///
/// # Safety
/// `queue` must be a valid queue that a commit reports to.
unsafe fn wait_for_answer(
    queue: *mut rdsys::rd_kafka_queue_t,
    deadline: Instant,
) -> KafkaResult<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let wait_ms = left.min(Duration::from_millis(100)).as_millis().max(1) as i32;
        // SAFETY: the caller guarantees `queue`; every event polled is destroyed below.
        let event = unsafe { rdsys::rd_kafka_queue_poll(queue, wait_ms) };
        if event.is_null() {
            continue;
        }
        let result = unsafe {
            (rdsys::rd_kafka_event_type(event) == rdsys::RD_KAFKA_EVENT_OFFSET_COMMIT)
                .then(|| commit_result(event))
        };
        unsafe { rdsys::rd_kafka_event_destroy(event) };
        if let Some(result) = result {
            return result;
        }
    }
}

/// The outcome of an offset-commit event: its own error, or the first partition's.
///
/// # Safety
/// `event` must be a valid `RD_KAFKA_EVENT_OFFSET_COMMIT` event.
unsafe fn commit_result(event: *mut rdsys::rd_kafka_event_t) -> KafkaResult<()> {
    let err = unsafe { rdsys::rd_kafka_event_error(event) };
    if err.is_error() {
        return Err(KafkaError::ConsumerCommit(err.into()));
    }
    let list = unsafe { rdsys::rd_kafka_event_topic_partition_list(event) };
    if list.is_null() {
        return Ok(());
    }
    let (count, elems) = unsafe { ((*list).cnt, (*list).elems) };
    for i in 0..usize::try_from(count).unwrap_or(0) {
        let err = unsafe { (*elems.add(i)).err };
        if err.is_error() {
            return Err(KafkaError::ConsumerCommit(err.into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::Consumer;
    use rdkafka::mocking::MockCluster;
    use rdkafka::{ClientConfig, Offset};

    fn consumer(brokers: &str) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "commit-test")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer")
    }

    #[test]
    fn a_commit_is_answered_and_stored_by_the_coordinator() {
        let mock = MockCluster::new(1).expect("mock");
        mock.create_topic("t", 1, 1).expect("topic");
        let c = consumer(&mock.bootstrap_servers());
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Offset(7)).unwrap();
        until(&c, &tpl, Instant::now() + Duration::from_secs(10)).expect("committed");
        let mut ask = TopicPartitionList::new();
        ask.add_partition("t", 0);
        let got = c.committed_offsets(ask, Duration::from_secs(5)).unwrap();
        assert_eq!(got.elements()[0].offset(), Offset::Offset(7));
    }

    #[test]
    fn a_commit_to_a_coordinator_that_is_gone_returns_at_its_deadline() {
        let mock = MockCluster::new(1).expect("mock");
        mock.create_topic("t", 1, 1).expect("topic");
        let c = consumer(&mock.bootstrap_servers());
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Offset(3)).unwrap();
        until(&c, &tpl, Instant::now() + Duration::from_secs(10)).expect("first commit");
        mock.broker_down(1).expect("down");
        let started = Instant::now();
        let r = until(&c, &tpl, started + Duration::from_millis(800));
        let took = started.elapsed();
        assert!(r.is_err(), "{r:?}");
        assert!(took < Duration::from_millis(1_500), "{took:?}");
        mock.broker_up(1).expect("up");
    }
}
