//! No silent stalls: readiness waits for what the worker needs and recovers with it, liveness
//! fails only for a wedged pipeline (never for an outage), and a stop always ends within its
//! timeout, whatever Kafka does.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use order_worker::synth::{Expectation, SynthSpec};

use crate::helpers::kafka::{Member, Mock, OffsetProbe, Tansu, publish};
use crate::helpers::pg::{PrivatePostgres, TestDb, assert_state_is, lock_orders};
use crate::helpers::{
    Binary, TINY_PIPELINE, eventually, free_port, get, metric, throughout, unique,
};
use crate::write_stalls::{liveness_fails_after_the_stall_timeout, watched, watched_on};

const SETTLES: Duration = Duration::from_secs(60);

fn spec(seed: u64) -> SynthSpec {
    SynthSpec {
        orders: 300,
        invalid_ratio: 0.01,
        duplicate_ratio: 0.02,
        seed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_no_partitions_is_ready_once_it_joined_the_group() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    let a = Binary::run(&mock.brokers, &db.url, &topic, &group, &[]);
    let b = Binary::run(&mock.brokers, &db.url, &topic, &group, &[]);
    let owned = "order_worker_partitions_assigned";
    eventually("one of the two owns the partition", SETTLES, || async {
        a.sample(owned).await.unwrap_or(-1.0) + b.sample(owned).await.unwrap_or(-1.0) == 1.0
    })
    .await;
    // Owner or not, each is ready.
    a.ready().await;
    b.ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_appears_after_the_worker_started_is_consumed_once_it_is_there() {
    let (topic, group) = (unique("orders"), unique("group"));
    let db = TestDb::create().await;
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let worker = Binary::run(&brokers, &db.url, &topic, &group, &["--lag-interval", "1s"]);
    worker.unready_because("kafka unreachable").await;

    let tansu = Tansu::start_on(port, &[]);
    let config = order_worker::kafka::client_config(&tansu.brokers, &[]);
    order_worker::kafka::producer::ensure_topic(&config, &topic, 2)
        .await
        .expect("topic");
    let spec = spec(311);
    publish(&tansu.brokers, &topic, &spec, 500);
    OffsetProbe::new(&tansu.brokers, &group, &topic, 2)
        .wait_caught_up_within("consumed once the broker is up", SETTLES)
        .await;
    assert_state_is(&db.pool, &Expectation::of(&spec, 500)).await;
    eventually("ready", SETTLES, || async {
        get(worker.http, "/readyz").await.0 == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_wedged_while_postgres_answers_fails_liveness_after_the_stall_timeout() {
    let (topic, group, mock, db, worker) = watched().await;
    // Writes block on the lock; PostgreSQL itself keeps answering.
    let lock = lock_orders(&db.pool).await;
    let spec = spec(321);
    publish(&mock.brokers, &topic, &spec, 300);
    let body = liveness_fails_after_the_stall_timeout(&worker).await;
    assert!(body.contains("stalled"), "{body}");
    assert!(metric(worker.http, "order_worker_pipeline_stall_seconds", &[]).await >= 10.0);

    lock.rollback().await.unwrap();
    OffsetProbe::new(&mock.brokers, &group, &topic, 2)
        .wait_caught_up_within("drained once the lock is gone", SETTLES)
        .await;
    assert_eq!(get(worker.http, "/healthz").await.0, 200);
    assert_eq!(
        metric(worker.http, "order_worker_pipeline_stall_seconds", &[]).await,
        0.0
    );
    assert_state_is(&db.pool, &Expectation::of(&spec, 300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_longer_than_the_stall_timeout_is_an_outage_not_a_wedge() {
    let pg = PrivatePostgres::start();
    let db = TestDb::create_on(&pg.server_url()).await;
    let (topic, group, mock, db, worker) = watched_on(db).await;
    pg.stop_server();
    let spec = spec(331);
    publish(&mock.brokers, &topic, &spec, 300);
    throughout(Duration::from_secs(20), || async {
        assert_eq!(
            get(worker.http, "/healthz").await,
            (200, "ok\n".into()),
            "an outage never fails liveness"
        );
    })
    .await;
    pg.start_server();
    OffsetProbe::new(&mock.brokers, &group, &topic, 2)
        .wait_caught_up_within("drained after the outage", SETTLES)
        .await;
    assert_state_is(&db.pool, &Expectation::of(&spec, 300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_coordinator_gone_exits_within_the_shutdown_timeout() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 2);
    let db = TestDb::create().await;
    publish(&mock.brokers, &topic, &spec(341), 500);
    let mut worker = Binary::run(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &[
            "--shutdown-timeout",
            "4s",
            "--rebalance-drain-timeout",
            "2s",
        ],
    );
    OffsetProbe::new(&mock.brokers, &group, &topic, 2)
        .wait_caught_up_within("consumed", SETTLES)
        .await;
    mock.cluster.broker_down(1).expect("broker down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let signalled = Instant::now();
    worker.signal(Signal::SIGTERM);
    worker.exit_within(Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    assert!(
        took <= Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_rebalance_drain_exits_within_the_shutdown_timeout() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 4);
    let db = TestDb::create().await;
    publish(&mock.brokers, &topic, &spec(351), 2_000);
    // Every partition has messages in flight that cannot become durable: a revoke must wait
    // for them until its drain timeout.
    let lock = lock_orders(&db.pool).await;
    let mut worker = Binary::run(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &[
            "--shutdown-timeout",
            "8s",
            "--rebalance-drain-timeout",
            "8s",
            "--processors",
            "1",
            "--channel-capacity",
            "4000",
            "--batch-max-rows",
            "1000",
        ],
    );
    eventually("everything in flight", SETTLES, || async {
        worker
            .sample("order_worker_in_flight_messages")
            .await
            .is_some_and(|n| n >= 2_000.0)
    })
    .await;
    // A second member: the worker must give partitions up while none of theirs can drain.
    let _member = Member::join(&mock.brokers, &group, &topic);
    eventually("a revoke in progress", SETTLES, || async {
        metric(
            worker.http,
            "order_worker_rebalances_total",
            &[("kind", "revoke")],
        )
        .await
            >= 1.0
    })
    .await;
    let signalled = Instant::now();
    worker.signal(Signal::SIGTERM);
    // And the coordinator goes away: the commits of the revoke and of the stop get no answer.
    mock.cluster.broker_down(1).expect("broker down");
    worker.exit_within(Duration::from_secs(30)).await;
    let took = signalled.elapsed();
    mock.cluster.broker_up(1).expect("broker up");
    assert!(
        took <= Duration::from_secs(9),
        "exited {took:?} after SIGTERM"
    );
    lock.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_wedged_on_messages_of_partitions_revoked_since_still_fails_liveness() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 2);
    let db = TestDb::create().await;
    publish(&mock.brokers, &topic, &spec(361), 400);
    let lock = lock_orders(&db.pool).await;
    let worker = Binary::run(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &[
            &TINY_PIPELINE[..],
            &[
                "--rebalance-drain-timeout",
                "2s",
                "--stall-timeout",
                "30s",
                // Eager rebalancing: a new member takes every partition away, then hands some back.
                "--kafka-property",
                "partition.assignment.strategy=range",
            ],
        ]
        .concat(),
    );
    eventually("paused for backpressure", SETTLES, || async {
        worker
            .sample("order_worker_partitions_paused")
            .await
            .is_some_and(|n| n > 0.0)
    })
    .await;
    let _member = Member::join_with(&mock.brokers, &group, &topic, "range");
    eventually("the revoke done", SETTLES, || async {
        metric(
            worker.http,
            "order_worker_rebalances_total",
            &[("kind", "assign")],
        )
        .await
            >= 2.0
    })
    .await;
    // No message the worker tracks is in flight any more, but its lane is full of the revoked
    // ones and nothing moves: that is a wedge, however the tracker counts.
    eventually("liveness fails", Duration::from_secs(60), || async {
        get(worker.http, "/healthz").await.0 == 503
    })
    .await;
    lock.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_refused_for_good_keep_the_worker_unready_until_messages_come() {
    use rdkafka::types::RDKafkaApiKey;
    use rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED as REFUSED;
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    let (spec, events) = (spec(43), 300);
    publish(&mock.brokers, &topic, &spec, events);
    // The worker may describe the topic and join the group, but not read: every Fetch is
    // refused, which librdkafka reports once per partition.
    mock.cluster
        .request_errors(RDKafkaApiKey::Fetch, &[REFUSED; 1_000]);
    let worker = Binary::run(&mock.brokers, &db.url, &topic, &group, &[]);
    worker.unready_because("not authorized to read topic").await;
    let since = Instant::now();
    throughout(Duration::from_secs(45), || async {
        let (status, body) = get(worker.http, "/readyz").await;
        assert_eq!(
            status,
            503,
            "ready after {:?} with nothing read",
            since.elapsed()
        );
        assert!(body.contains("not authorized to read topic"), "{body}");
    })
    .await;
    // Nothing was committed: the time lag counts from the first measurement that found the
    // partition waiting, so the alerts on it see the stall.
    let waited = worker
        .sample("order_worker_consumer_time_lag_seconds")
        .await;
    assert!(waited.is_some_and(|s| s >= 40.0), "time lag {waited:?}");
    // Read granted: the backlog drains and the worker is ready again.
    mock.cluster.clear_request_errors(RDKafkaApiKey::Fetch);
    OffsetProbe::new(&mock.brokers, &group, &topic, 1)
        .wait_caught_up("drained once reading is allowed")
        .await;
    assert_state_is(&db.pool, &Expectation::of(&spec, events)).await;
    worker.ready().await;
}
