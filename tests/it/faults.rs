//! Faults on the mock cluster: PostgreSQL outages, refused commits, a crash, a full pipeline,
//! a rebalance. In each, the final state is compared with the oracle: nothing lost, nothing
//! applied twice.

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use order_worker::synth::{Expectation, SynthSpec, event, order_id};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::helpers::kafka::{
    CAUGHT_UP, Mock, OffsetProbe, message_of, publish, publish_in_background, publish_to,
};
use crate::helpers::pg::{PrivatePostgres, TestDb, assert_state_is, count, lock_orders};
use crate::helpers::{
    Binary, TINY_PIPELINE, eventually, get, metric, start_worker, unique, valid_only,
};

fn spec(seed: u64) -> SynthSpec {
    SynthSpec {
        orders: 400,
        invalid_ratio: 0.01,
        duplicate_ratio: 0.03,
        seed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_mid_stream_loses_nothing() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 3);
    let pg = PrivatePostgres::start();
    let db = TestDb::create_on(&pg.server_url()).await;
    let (spec, events) = (spec(31), 6_000);
    let publisher = publish_in_background(&mock.brokers, &topic, &spec, events, 600);

    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    let http = worker.http_addr();
    eventually("some orders written", CAUGHT_UP, || async {
        count(&db.pool, "orders").await > 0
    })
    .await;

    pg.stop_server();
    eventually(
        "/readyz reports the outage",
        Duration::from_secs(15),
        || async {
            get(http, "/readyz").await == (503, "not ready: postgres unavailable\n".into())
        },
    )
    .await;
    // Longer than the first steps of the backoff (100 ms, 200 ms, 400 ms, ...).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(metric(http, "order_worker_db_retries_total", &[]).await > 0.0);
    pg.start_server();

    publisher.join().expect("publisher");
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 3);
    probe
        .wait_caught_up("everything committed after the outage")
        .await;
    assert_state_is(&db.pool, &Expectation::of(&spec, events)).await;
    eventually("/readyz recovers", Duration::from_secs(15), || async {
        get(http, "/readyz").await.0 == 200
    })
    .await;
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_commits_refused_by_the_broker_lose_nothing() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 3);
    let db = TestDb::create().await;
    use RDKafkaRespErr::*;
    // The next commits fail in every way a coordinator refuses them, including one that
    // expels the member (UNKNOWN_MEMBER_ID: it must rejoin and is handed partitions again).
    let refusals = [
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
        RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
    ];
    mock.cluster
        .request_errors(RDKafkaApiKey::OffsetCommit, &refusals);
    let (spec, events) = (spec(41), 5_000);
    let publisher = publish_in_background(&mock.brokers, &topic, &spec, events, 1_000);

    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    publisher.join().expect("publisher");
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 3);
    probe
        .wait_caught_up("everything committed despite the refusals")
        .await;

    assert_state_is(&db.pool, &Expectation::of(&spec, events)).await;
    assert!(
        metric(
            worker.http_addr(),
            "order_worker_kafka_commit_failures_total",
            &[]
        )
        .await
            > 0.0,
        "the refused commits were seen"
    );
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_writes_are_stuck_has_committed_none_of_them_and_a_restart_applies_all()
 {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 3);
    let db = TestDb::create().await;
    let (spec, half) = (spec(51), 4_000);
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 3);
    publish(&mock.brokers, &topic, &spec, half);

    // Lanes with room for the whole second half, so all of it is consumed while none of it can
    // become durable.
    let first = Binary::run(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &["--channel-capacity", "4000"],
    );
    probe
        .wait_caught_up("the first half is durable and committed")
        .await;
    let committed_before = probe.committed();

    // Writes now block: whatever the worker consumes next stays in flight.
    let lock = lock_orders(&db.pool).await;
    publish(&mock.brokers, &topic, &spec_tail(&spec), half);
    eventually("the second half consumed", CAUGHT_UP, || async {
        metric(first.http, "order_worker_messages_consumed_total", &[]).await >= (2 * half) as f64
    })
    .await;
    // Several commit intervals pass with messages consumed but not durable.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        probe.committed(),
        committed_before,
        "nothing that is not durable was committed"
    );

    first.signal(Signal::SIGKILL);
    drop(first);
    lock.rollback().await.unwrap();

    let second = Binary::run(&mock.brokers, &db.url, &topic, &group, &[]);
    probe
        .wait_caught_up("the restarted worker commits everything")
        .await;
    let mut expected = Expectation::of(&spec, half);
    let tail = Expectation::of(&spec_tail(&spec), half);
    expected.orders.extend(tail.orders);
    for (reason, n) in tail.mix.invalid {
        *expected.mix.invalid.entry(reason).or_default() += n;
    }
    assert_state_is(&db.pool, &expected).await;
    assert!(
        second.log_text().contains("partitions assigned"),
        "the second worker took over"
    );
}

/// A second stream over other orders (another seed), so both halves' final states are known.
fn spec_tail(spec: &SynthSpec) -> SynthSpec {
    SynthSpec {
        seed: spec.seed + 1_000,
        ..spec.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_pauses_its_partitions_stays_in_the_group_and_resumes() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 2);
    let db = TestDb::create().await;
    let (spec, events) = (spec(61), 3_000);
    publish(&mock.brokers, &topic, &spec, events);

    // Writes block on this lock, so the processor cannot drain its lane.
    let lock = lock_orders(&db.pool).await;

    let worker = start_worker(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &[
            &TINY_PIPELINE[..],
            &[
                // Evicted after 7 s without a poll: the lock below is held longer than that.
                "--kafka-property",
                "max.poll.interval.ms=7000",
                "--rebalance-drain-timeout",
                "1s",
            ],
        ]
        .concat(),
    )
    .await;
    let http = worker.http_addr();
    eventually(
        "partitions paused for backpressure",
        Duration::from_secs(30),
        || async { metric(http, "order_worker_partitions_paused", &[]).await > 0.0 },
    )
    .await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let in_flight = metric(http, "order_worker_in_flight_messages", &[]).await;
        assert!(
            in_flight <= 9.0,
            "in flight stays within lane + batch + one held: {in_flight}"
        );
    }
    assert_eq!(
        metric(http, "order_worker_rebalances_total", &[("kind", "revoke")]).await,
        0.0,
        "still a member of the group after 10 s of backpressure"
    );
    assert_eq!(
        metric(http, "order_worker_partitions_assigned", &[]).await,
        2.0
    );

    lock.commit().await.unwrap();
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 2);
    probe
        .wait_caught_up("the backlog drains once writes go through")
        .await;
    assert_state_is(&db.pool, &Expectation::of(&spec, events)).await;
    assert_eq!(
        metric(http, "order_worker_partitions_paused", &[]).await,
        0.0,
        "resumed"
    );
    assert!(metric(http, "order_worker_backpressure_pauses_total", &[]).await >= 1.0);
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

/// Publishes one first version of each of `orders` fresh orders to `partition`.
fn publish_orders(mock: &Mock, topic: &str, partition: i32, orders: u64, salt: u64) {
    let spec = valid_only(orders, salt);
    let messages: Vec<_> = (0..orders)
        .map(|n| (message_of(&event(order_id(&spec, n), 1, salt)), None))
        .collect();
    publish_to(&mock.brokers, topic, partition, &messages);
}

/// A worker on a topic of `PARTITIONS` partitions, one order on each committed, whose reads are
/// now refused until the test clears the Fetch errors: librdkafka reports each partition's
/// refusal as an error in place of a message at its next offset, and its batch call counts that
/// offset as taken.
struct RefusedForAMoment {
    mock: Mock,
    db: TestDb,
    topic: String,
    group: String,
    worker: Binary,
    probe: OffsetProbe,
}

const PARTITIONS: i32 = 8;

async fn refused(flags: &[&str]) -> RefusedForAMoment {
    use RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED as REFUSED;
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, PARTITIONS);
    let db = TestDb::create().await;
    let worker = Binary::run(&mock.brokers, &db.url, &topic, &group, flags);
    for p in 0..PARTITIONS {
        publish_orders(&mock, &topic, p, 1, 100 + p as u64);
    }
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, PARTITIONS);
    probe.wait_caught_up("the first orders").await;
    mock.cluster
        .request_errors(RDKafkaApiKey::Fetch, &[REFUSED; 1_000]);
    worker.unready_because("not authorized to read topic").await;
    RefusedForAMoment {
        mock,
        db,
        topic,
        group,
        worker,
        probe,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_refused_for_a_moment_then_a_full_pipeline_skips_no_message() {
    const FULL: i32 = PARTITIONS - 1;
    let t = refused(&TINY_PIPELINE).await;
    t.mock.cluster.clear_request_errors(RDKafkaApiKey::Fetch);
    // One partition fills the pipeline while writes block, so every partition is paused, and a
    // paused partition resumes from what librdkafka counts as taken.
    let lock = lock_orders(&t.db.pool).await;
    publish_orders(&t.mock, &t.topic, FULL, 40, 200);
    eventually(
        "partitions paused for backpressure",
        Duration::from_secs(30),
        || async { t.worker.sample("order_worker_partitions_paused").await == Some(8.0) },
    )
    .await;
    for p in 0..FULL {
        publish_orders(&t.mock, &t.topic, p, 5, 300 + p as u64);
    }
    lock.commit().await.unwrap();

    t.probe.wait_caught_up("everything published").await;
    let mut ends: BTreeMap<i32, i64> = (0..FULL).map(|p| (p, 6)).collect();
    ends.insert(FULL, 41);
    assert_eq!(t.probe.committed(), ends);
    assert_eq!(
        count(&t.db.pool, "orders").await,
        i64::from(PARTITIONS) + 40 + 5 * i64::from(FULL),
        "every order written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_refused_for_a_moment_then_a_rebalance_skips_no_message() {
    let t = refused(&[]).await;
    // While reads are refused, a second member joins: the cooperative rebalance pauses the
    // partitions the first keeps, and resumes them from what librdkafka counts as taken.
    let second = Binary::run(&t.mock.brokers, &t.db.url, &t.topic, &t.group, &[]);
    let owned = "order_worker_partitions_assigned";
    eventually(
        "both members own partitions",
        Duration::from_secs(60),
        || async {
            let (a, b) = (t.worker.sample(owned).await, second.sample(owned).await);
            a.zip(b)
                .is_some_and(|(a, b)| a > 0.0 && b > 0.0 && a + b == f64::from(PARTITIONS))
        },
    )
    .await;
    for p in 0..PARTITIONS {
        publish_orders(&t.mock, &t.topic, p, 5, 300 + p as u64);
    }
    t.mock.cluster.clear_request_errors(RDKafkaApiKey::Fetch);

    t.probe.wait_caught_up("everything published").await;
    let ends: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 6)).collect();
    assert_eq!(t.probe.committed(), ends);
    assert_eq!(
        count(&t.db.pool, "orders").await,
        6 * i64::from(PARTITIONS),
        "every order written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_handed_between_workers_by_rebalances_lose_nothing() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 6);
    let db = TestDb::create().await;
    let (spec, events) = (spec(71), 15_000);
    let publisher = publish_in_background(&mock.brokers, &topic, &spec, events, 1_500);

    let a = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    eventually("the first worker writes", CAUGHT_UP, || async {
        count(&db.pool, "orders").await > 0
    })
    .await;
    let b = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A graceful stop of A revokes its partitions; B takes them over.
    a.stop();
    a.wait().await.expect("graceful stop of the first worker");

    publisher.join().expect("publisher");
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 6);
    probe
        .wait_caught_up("everything committed by the remaining worker")
        .await;
    assert_state_is(&db.pool, &Expectation::of(&spec, events)).await;
    assert!(
        metric(
            b.http_addr(),
            "order_worker_rebalances_total",
            &[("kind", "revoke")]
        )
        .await
            >= 1.0
    );
    b.stop();
    b.wait().await.expect("graceful stop of the second worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_no_longer_in_the_log_is_counted_and_its_partition_restarts_at_the_start() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    publish_orders(&mock, &topic, 0, 10, 1);
    // The group's offset is past the log's end, as after a topic was deleted and created again.
    let committer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &mock.brokers)
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut gone = TopicPartitionList::new();
    gone.add_partition_offset(&topic, 0, Offset::Offset(50))
        .unwrap();
    committer.commit(&gone, CommitMode::Sync).expect("commit");

    let worker = Binary::run(&mock.brokers, &db.url, &topic, &group, &[]);
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 1);
    probe.wait_caught_up("restarted at the log's start").await;
    assert_eq!(count(&db.pool, "orders").await, 10);
    assert_eq!(
        worker
            .sample("order_worker_kafka_offset_resets_total")
            .await,
        Some(1.0)
    );
    assert!(worker.log_text().contains("offset reset"));
}
