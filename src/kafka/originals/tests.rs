use super::*;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// The messages at `coordinates`, in the same order, read in one call.
fn fetch(
    originals: &Originals,
    coordinates: &[(i32, i64)],
    timeout: Duration,
) -> Result<Vec<Original>, KafkaError> {
    let mut read = ReadBack::new();
    originals.fetch_into(coordinates, &mut read, timeout, &CancellationToken::new())?;
    Ok(coordinates.iter().map(|c| read[c].clone()).collect())
}

#[test]
fn reads_back_exactly_the_messages_asked_for_and_reports_missing_offsets_as_gone() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("t", 2, 1).expect("topic");
    let brokers = mock.bootstrap_servers();
    let producer: BaseProducer = client_config(&brokers, &[]).create().expect("producer");
    for i in 0..5 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let record = BaseRecord::to("t").partition(1).key(&key).payload(&value);
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    let tombstone: BaseRecord<'_, str, str> = BaseRecord::to("t").partition(1).key("dead");
    producer.send(tombstone).map_err(|(e, _)| e).expect("send");
    producer.flush(Duration::from_secs(5)).expect("flush");

    let originals = Originals::new(&brokers, &[], "t", "g");
    let got = fetch(
        &originals,
        &[(1, 3), (1, 0), (1, 5), (1, 99)],
        Duration::from_secs(10),
    )
    .expect("fetched");
    let found = |k: &str, v: Option<&str>| Original::Found {
        key: Some(k.as_bytes().to_vec()),
        payload: v.map(|v| v.as_bytes().to_vec()),
        headers: Vec::new(),
    };
    assert_eq!(
        got,
        [
            found("k3", Some("v3")),
            found("k0", Some("v0")),
            found("dead", None),
            Original::Gone
        ]
    );
}

/// Publishes `count` messages keyed `p{partition}-{offset}` to each partition; with
/// `one_per_batch`, each is a record batch of its own, which the mock broker returns one
/// per fetch.
fn publish(brokers: &str, partitions: i32, count: i64, one_per_batch: bool) {
    let mut config = client_config(brokers, &[]);
    if one_per_batch {
        config.set("batch.num.messages", "1");
    }
    let producer: BaseProducer = config.create().expect("producer");
    for partition in 0..partitions {
        for offset in 0..count {
            let key = format!("p{partition}-{offset}");
            let record = BaseRecord::to("t")
                .partition(partition)
                .key(&key)
                .payload(&key);
            producer.send(record).map_err(|(e, _)| e).expect("send");
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn found(partition: i32, offset: i64) -> Original {
    let bytes = format!("p{partition}-{offset}").into_bytes();
    Original::Found {
        key: Some(bytes.clone()),
        payload: Some(bytes),
        headers: Vec::new(),
    }
}

#[test]
fn a_call_cut_short_keeps_what_it_read_and_the_next_call_reads_only_the_rest() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("t", 1, 1).expect("topic");
    let brokers = mock.bootstrap_servers();
    publish(&brokers, 1, 40, true);
    // One message per fetch, one fetch per 100 ms: 40 messages cannot be read in 1.5 s.
    mock.broker_round_trip_time(1, Duration::from_millis(100))
        .expect("rtt");
    let originals = Originals::new(&brokers, &[], "t", "g");
    let wanted: Vec<(i32, i64)> = (0..40).map(|o| (0, o)).collect();
    let never = CancellationToken::new();

    let mut read = ReadBack::new();
    let cut = originals.fetch_into(&wanted, &mut read, Duration::from_millis(1_500), &never);
    assert!(cut.is_err(), "{cut:?}");
    assert!(
        !read.is_empty() && read.len() < wanted.len(),
        "partial progress: {} of {}",
        read.len(),
        wanted.len()
    );
    for (&(partition, offset), original) in &read {
        assert_eq!(*original, found(partition, offset));
    }
    // Marked, so that reading any of them again would show.
    let kept: Vec<(i32, i64)> = read.keys().copied().collect();
    for c in &kept {
        read.insert(*c, Original::Gone);
    }

    mock.broker_round_trip_time(1, Duration::ZERO).expect("rtt");
    originals
        .fetch_into(&wanted, &mut read, Duration::from_secs(30), &never)
        .expect("the rest read");
    assert_eq!(read.len(), wanted.len());
    for (c, original) in &read {
        if kept.contains(c) {
            assert_eq!(*original, Original::Gone, "{c:?} read a second time");
        } else {
            assert_eq!(*original, found(c.0, c.1));
        }
    }
}

#[test]
fn many_coordinates_over_two_partitions_are_read_in_one_pass() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("t", 2, 1).expect("topic");
    let brokers = mock.bootstrap_servers();
    publish(&brokers, 2, 1_000, false);
    // Partition 0 densely, partition 1 in two runs 600 offsets apart; asked in no order.
    let mut wanted: Vec<(i32, i64)> = (0..1_000).step_by(3).map(|o| (0, o)).collect();
    wanted.extend((0..200).chain(800..1_000).map(|o| (1, o)));
    wanted.reverse();
    wanted.sort_by_key(|&(partition, offset)| (offset % 7, partition));

    let mut read = ReadBack::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let repositioned = Originals::new(&brokers, &[], "t", "g")
        .read_missing(&wanted, &mut read, deadline, &CancellationToken::new())
        .expect("read");
    assert_eq!(
        repositioned, 1,
        "one seek over partition 1's gap, and no offset read twice"
    );
    assert_eq!(read.len(), wanted.len());
    for &(partition, offset) in &wanted {
        assert_eq!(read[&(partition, offset)], found(partition, offset));
    }
}
