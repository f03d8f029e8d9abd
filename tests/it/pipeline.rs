//! The pipeline on librdkafka's mock cluster: exact final state, idempotence, dead letters.

use std::time::{Duration, Instant};

use order_worker::contract::OrderEvent;
use order_worker::synth::{Expectation, SynthSpec, event};
use sqlx::Row;
use uuid::Uuid;

use crate::helpers::confluent::TransactionBroker;
use crate::helpers::kafka::{Mock, OffsetProbe, publish, publish_raw};
use crate::helpers::pg::{TestDb, assert_state_is, count, orders};
use crate::helpers::{Binary, eventually, metric, start_worker, unique, worker_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_over_many_orders_end_in_exactly_the_oracle_state_with_every_offset_committed() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 4);
    let db = TestDb::create().await;
    let spec = SynthSpec {
        orders: 300,
        invalid_ratio: 0.02,
        duplicate_ratio: 0.05,
        seed: 11,
    };
    let events = 6_000;
    publish(&mock.brokers, &topic, &spec, events);
    let expected = Expectation::of(&spec, events);

    let worker = start_worker(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &["--processors", "3", "--batch-max-rows", "200"],
    )
    .await;
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 4);
    probe
        .wait_caught_up("committed offsets at the end of every partition")
        .await;

    assert_state_is(&db.pool, &expected).await;
    let http = worker.http_addr();
    let m = |name: &'static str| metric(http, name, &[]);
    assert_eq!(
        m("order_worker_messages_consumed_total").await,
        events as f64
    );
    let applied = m("order_worker_events_applied_total").await;
    let ignored = m("order_worker_events_duplicate_total").await;
    assert_eq!(
        applied + ignored,
        (expected.mix.valid + expected.mix.duplicates) as f64,
        "every valid event is applied or ignored as a duplicate"
    );
    assert!(applied >= expected.orders.len() as f64);
    for (reason, n) in &expected.mix.invalid {
        let counted = metric(
            http,
            "order_worker_dead_letters_total",
            &[("reason", reason)],
        )
        .await;
        assert_eq!(counted, *n as f64, "dead letters counted for {reason}");
    }
    assert!(m("order_worker_kafka_commits_total").await > 0.0);

    worker.stop();
    worker.wait().await.expect("a graceful stop ends Ok");
    assert!(
        probe.caught_up(),
        "still committed at the end after the stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backlog_is_committed_at_once_not_at_the_next_auto_commit() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 4);
    let db = TestDb::create().await;
    let spec = SynthSpec {
        orders: 200,
        invalid_ratio: 0.0,
        duplicate_ratio: 0.0,
        seed: 5,
    };
    publish(&mock.brokers, &topic, &spec, 2_000);
    let mut cfg = worker_config(&mock.brokers, &db.url, &topic, &group, &[]);
    // librdkafka's auto-commit alone would commit a minute after the drain.
    cfg.worker.pipeline.commit_interval = std::time::Duration::from_secs(60);
    let worker = order_worker::Worker::start(&cfg.kafka, &cfg.worker)
        .await
        .expect("worker starts");
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 4);
    eventually(
        "every partition committed to its end well before the 60 s auto-commit",
        std::time::Duration::from_secs(20),
        || async { probe.caught_up() },
    )
    .await;
    assert_state_is(&db.pool, &Expectation::of(&spec, 2_000)).await;
    assert!(
        metric(worker.http_addr(), "order_worker_kafka_commits_total", &[]).await >= 1.0,
        "the worker saw its commit acknowledged"
    );
    worker.stop();
    worker.wait().await.expect("a graceful stop ends Ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_ending_in_a_transaction_marker_is_committed_to_its_end_and_shows_no_lag() {
    let (topic, group) = (unique("orders"), unique("group"));
    let db = TestDb::create().await;
    let transaction = |salt: u64| -> Vec<OrderEvent> {
        (0..3).map(|i| event(Uuid::new_v4(), 1, salt + i)).collect()
    };
    let transactions = [transaction(10), transaction(20)];
    let json = |t: &[OrderEvent]| -> Vec<serde_json::Value> {
        t.iter()
            .map(|e| serde_json::from_slice(&e.to_json()).unwrap())
            .collect()
    };
    // Offsets 0-2 and a commit marker at 3, then 4-6 and a marker at 7.
    let broker = TransactionBroker::start(&topic, &transactions.each_ref().map(|t| json(t)));
    assert_eq!(broker.end, 8);

    let worker = Binary::run(&broker.brokers, &db.url, &topic, &group, &[]);
    let probe = OffsetProbe::new(&broker.brokers, &group, &topic, 1);
    probe.wait_caught_up("committed past the last marker").await;
    assert_eq!(probe.committed(), [(0, 8)].into());
    let written = orders(&db.pool).await;
    assert_eq!(written.len(), 6);
    assert!(
        transactions
            .iter()
            .flatten()
            .all(|e| written.contains_key(&e.order_id))
    );
    eventually("no lag left to report", Duration::from_secs(20), || async {
        worker
            .sample("order_worker_consumer_lag_sum_messages")
            .await
            == Some(0.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_duplicate_and_stale_events_never_change_the_state() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 2);
    let db = TestDb::create().await;
    let spec = SynthSpec {
        orders: 50,
        invalid_ratio: 0.02,
        duplicate_ratio: 0.0,
        seed: 21,
    };
    let events = 1_500;
    publish(&mock.brokers, &topic, &spec, events);
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 2);
    probe.wait_caught_up("the first pass is committed").await;
    let first = orders(&db.pool).await;
    let applied = metric(worker.http_addr(), "order_worker_events_applied_total", &[]).await;

    // The same stream again: every valid event is now a duplicate, and most are stale
    // (older than the version already stored).
    publish(&mock.brokers, &topic, &spec, events);
    probe.wait_caught_up("the second pass is committed").await;

    assert_eq!(
        orders(&db.pool).await,
        first,
        "state unchanged by the replay"
    );
    assert_eq!(
        metric(worker.http_addr(), "order_worker_events_applied_total", &[]).await,
        applied,
        "no row changed in the second pass"
    );
    let expected = Expectation::of(&spec, events);
    assert_eq!(
        count(&db.pool, "dead_letters").await as u64,
        2 * expected.mix.invalid_total(),
        "the replayed invalid messages are new messages (new offsets), each dead-lettered once"
    );
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_version_never_overwrites_a_newer_one() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    let order = Uuid::new_v4();
    let key = Some(order.to_string().into_bytes());
    let at = |v: i64| (key.clone(), Some(event(order, v, v as u64).to_json()));
    // v9 is written first; the older versions (and a re-send of v9) arrive after it is durable,
    // so only the database's version guard stands between them and the row.
    publish_raw(&mock.brokers, &topic, &[at(9)]);
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 1);
    probe.wait_caught_up("v9 committed").await;
    for v in [3, 8, 9, 1] {
        publish_raw(&mock.brokers, &topic, &[at(v)]);
        probe.wait_caught_up("the older version committed").await;
    }
    let stored = orders(&db.pool).await;
    assert_eq!(stored[&order].version, 9);
    assert_eq!(stored[&order].total_minor, event(order, 9, 9).total_minor);
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_invalid_message_is_dead_lettered_with_its_reason_and_its_bytes() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    let order = Uuid::new_v4();
    let key = || Some(order.to_string().into_bytes());
    let good = event(order, 1, 0);
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = serde_json::to_value(&good).unwrap();
        f(&mut v);
        Some(serde_json::to_vec(&v).unwrap())
    };
    let huge = Some(vec![b' '; 5_000]);
    // (key, value, reason, stage, a fragment of the error text)
    type Case<'a> = (Option<Vec<u8>>, Option<Vec<u8>>, &'a str, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (key(), None, "tombstone", "receive", "tombstone"),
        (
            key(),
            Some(b"{oops".to_vec()),
            "invalid_json",
            "decode",
            "not valid JSON",
        ),
        (
            key(),
            Some(b"\xff\xfe".to_vec()),
            "invalid_json",
            "decode",
            "not UTF-8",
        ),
        (
            key(),
            edit(&|v| drop(v.as_object_mut().unwrap().remove("currency"))),
            "schema_violation",
            "decode",
            "missing field `currency`",
        ),
        (
            key(),
            edit(&|v| v["schema_version"] = 3.into()),
            "unsupported_schema_version",
            "decode",
            "schema_version 3",
        ),
        (
            key(),
            edit(&|v| v["total_minor"] = 1.into()),
            "invalid_value",
            "validate",
            "does not equal the sum",
        ),
        (
            Some(b"someone-else".to_vec()),
            edit(&|_| {}),
            "key_mismatch",
            "validate",
            "is not the order_id",
        ),
        (None, edit(&|_| {}), "key_mismatch", "validate", "no key"),
        (
            key(),
            huge.clone(),
            "payload_too_large",
            "receive",
            "5000 bytes",
        ),
    ];
    let mut messages: Vec<_> = cases
        .iter()
        .map(|(k, v, ..)| (k.clone(), v.clone()))
        .collect();
    messages.push((key(), Some(good.to_json())));
    publish_raw(&mock.brokers, &topic, &messages);

    let worker = start_worker(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &["--max-payload-bytes", "2048"],
    )
    .await;
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 1);
    probe.wait_caught_up("all messages committed").await;

    let rows = sqlx::query(
        "SELECT source_offset, reason, stage, error, message_key, payload, payload_size \
         FROM dead_letters ORDER BY source_offset",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows.len(),
        cases.len(),
        "one dead letter per invalid message"
    );
    for (row, (k, v, reason, stage, fragment)) in rows.iter().zip(&cases) {
        let offset: i64 = row.get("source_offset");
        assert_eq!(row.get::<String, _>("reason"), *reason, "offset {offset}");
        assert_eq!(row.get::<String, _>("stage"), *stage, "offset {offset}");
        let error: String = row.get("error");
        assert!(
            error.contains(fragment),
            "offset {offset}: {error:?} lacks {fragment:?}"
        );
        assert_eq!(
            row.get::<Option<Vec<u8>>, _>("message_key"),
            *k,
            "offset {offset}"
        );
        let payload: Option<Vec<u8>> = row.get("payload");
        let size: i32 = row.get("payload_size");
        match v {
            Some(v) if v.len() > 2048 => {
                assert_eq!(
                    payload.as_deref(),
                    Some(&v[..2048]),
                    "stored cut to the limit"
                );
                assert_eq!(size as usize, v.len(), "with its real size");
            }
            _ => assert_eq!(payload, *v, "raw bytes kept, offset {offset}"),
        }
    }
    assert_eq!(
        orders(&db.pool).await[&order].version,
        1,
        "the valid event after them is applied"
    );
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_linger_ran_out_during_a_slow_write_is_written_as_soon_as_that_write_ends() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    let message = |order: Uuid| {
        let value = event(order, 1, 0).to_json();
        (Some(order.to_string().into_bytes()), Some(value))
    };
    // One processor, and a linger long enough to tell "at once" from "one linger later".
    let worker = start_worker(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &["--processors", "1", "--batch-linger", "1s"],
    )
    .await;
    let http = worker.http_addr();

    // The first batch's write waits for this lock.
    let mut lock = db.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE orders IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock orders");
    publish_raw(&mock.brokers, &topic, &[message(Uuid::new_v4())]);
    eventually(
        "the first batch's write waits for the lock",
        Duration::from_secs(30),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&db.pool)
            .await
            .expect("pg_stat_activity");
            waiting > 0
        },
    )
    .await;

    // A second message arrives during that write, and its linger runs out before the write ends.
    publish_raw(&mock.brokers, &topic, &[message(Uuid::new_v4())]);
    eventually(
        "the second message consumed",
        Duration::from_secs(10),
        || async { metric(http, "order_worker_messages_consumed_total", &[]).await == 2.0 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let released = Instant::now();
    lock.rollback().await.expect("release the lock");

    eventually("both orders durable", Duration::from_secs(10), || async {
        count(&db.pool, "orders").await == 2
    })
    .await;
    let after = released.elapsed();
    assert!(
        after < Duration::from_millis(700),
        "the second batch was durable {after:?} after the first write ended; one linger is 1 s"
    );
    worker.stop();
    worker.wait().await.expect("graceful stop");
}
