use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::*;
use crate::kafka::client_config;

#[test]
fn a_take_hands_over_what_arrived_without_waiting_out_its_timeout() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("t", 2, 1).expect("topic");
    let brokers = mock.bootstrap_servers();
    let producer: BaseProducer = client_config(&brokers, &[]).create().expect("producer");
    for i in 0..3 {
        let headers = OwnedHeaders::new().insert(Header {
            key: "trace",
            value: Some("x"),
        });
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let record = BaseRecord::to("t")
            .partition(0)
            .key(&key)
            .payload(&value)
            .timestamp(1_700_000_000_000 + i)
            .headers(headers);
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(5)).expect("flush");

    let mut config = client_config(&brokers, &[]);
    config.set("group.id", "g");
    let consumer: BaseConsumer = config.create().expect("consumer");
    let slot = FetchSlot::default();
    let queue = slot.open(consumer.client()).expect("a fetch queue");
    assert_eq!(
        queue.forward(consumer.client(), "t", &[0, 1]),
        Vec::<i32>::new()
    );
    let mut tpl = TopicPartitionList::new();
    for p in [0, 1] {
        tpl.add_partition_offset("t", p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).expect("assign");

    let (started, mut batch, mut seen) = (Instant::now(), Batch::with_capacity(500), vec![]);
    while seen.len() < 3 && started.elapsed() < Duration::from_secs(10) {
        queue.take(Duration::from_secs(5), &mut batch);
        seen.extend(batch.iter().map(|m| {
            assert!(m.error().is_none());
            let headers: Vec<_> = m.headers().collect();
            assert_eq!(headers, [(&b"trace"[..], Some(&b"x"[..]))]);
            let owned = |b: Option<&[u8]>| b.map(<[u8]>::to_vec);
            let at = (m.partition(), m.offset(), m.timestamp_ms());
            (at, owned(m.key()), owned(m.payload()))
        }));
    }
    // A batch call alone waits its whole timeout for a batch that never fills.
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        started.elapsed()
    );
    let expected: Vec<_> = (0..3)
        .map(|i| {
            let (key, value) = (format!("k{i}"), format!("v{i}"));
            let at = (0, i, Some(1_700_000_000_000 + i));
            (at, Some(key.into_bytes()), Some(value.into_bytes()))
        })
        .collect();
    assert_eq!(seen, expected);
    assert!(
        consumer.poll(Duration::from_millis(200)).is_none(),
        "forwarded messages never reach the consumer's own queue"
    );
    drop(batch);
    slot.close();
    drop(queue);
}

#[test]
fn an_event_on_the_consumer_queue_ends_a_wait_for_messages() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("t", 1, 1).expect("topic");
    let mut config = client_config(&mock.bootstrap_servers(), &[]);
    config.set("group.id", "g");
    let consumer: BaseConsumer = config.create().expect("consumer");
    let slot = FetchSlot::default();
    let queue = slot.open(consumer.client()).expect("a fetch queue");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("t", 0, Offset::Offset(0)).unwrap();
    let rk = consumer.client().native_ptr() as usize;
    let commit = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: the consumer outlives this thread (joined below); the commit's answer is
        // routed to the consumer's own queue, as the worker's asynchronous commit does.
        unsafe {
            let rk = rk as *mut rdsys::rd_kafka_t;
            let events = rdsys::rd_kafka_queue_get_consumer(rk);
            rdsys::rd_kafka_commit_queue(rk, tpl.ptr(), events, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(events);
        }
    });

    let started = Instant::now();
    let taken = queue.take(Duration::from_secs(5), &mut Batch::with_capacity(10));
    let waited = started.elapsed();
    commit.join().unwrap();
    assert_eq!(taken, 0);
    assert!(waited < Duration::from_millis(2_500), "waited {waited:?}");
    assert!(
        queue.events_waiting(),
        "the commit's answer waits to be served"
    );
    slot.close();
    drop(queue);
}
