//! Poison: messages and rows that will never be accepted, and the rebalances and retries around
//! them. Each ends with every partition committed to its end and the exact rows and dead
//! letters a correct worker leaves: a permanent fault is dead-lettered and passed, never retried
//! for ever.

use std::time::Duration;

use order_worker::Worker;
use order_worker::contract::OrderEvent;
use order_worker::kafka::client_config;
use order_worker::synth::{Expectation, event};
use sqlx::Row;
use uuid::Uuid;

use crate::helpers::kafka::{
    Member, Mock, OffsetProbe, RawMessage, message_of, publish, publish_raw, publish_stamped,
};
use crate::helpers::pg::{TestDb, assert_state_is, count, lock_orders, orders};
use crate::helpers::{TINY_PIPELINE, eventually, metric, start_worker, unique, valid_only};

/// Long enough for a correct worker on a loaded 2-core machine, far shorter than "for ever".
const SETTLES: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_revoked_while_paused_and_handed_back_later_is_consumed_to_its_end() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 4);
    let db = TestDb::create().await;
    let spec = valid_only(400, 211);
    publish(&mock.brokers, &topic, &spec, 2_000);
    // PostgreSQL stalls: the lanes fill and the worker pauses all four partitions.
    let lock = lock_orders(&db.pool).await;
    let worker = start_worker(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &[&TINY_PIPELINE[..], &["--rebalance-drain-timeout", "2s"]].concat(),
    )
    .await;
    let http = worker.http_addr();
    eventually("partitions paused for backpressure", SETTLES, || async {
        metric(http, "order_worker_partitions_paused", &[]).await >= 4.0
    })
    .await;
    // A second member takes some of the paused partitions away.
    let member = Member::join(&mock.brokers, &group, &topic);
    eventually("the second member owns partitions", SETTLES, || async {
        member.assigned() > 0 && metric(http, "order_worker_partitions_assigned", &[]).await < 4.0
    })
    .await;
    // PostgreSQL recovers: the worker drains and resumes what it still owns.
    lock.commit().await.unwrap();
    eventually("the worker resumed its partitions", SETTLES, || async {
        metric(http, "order_worker_partitions_paused", &[]).await == 0.0
            && metric(http, "order_worker_in_flight_messages", &[]).await == 0.0
    })
    .await;
    // The second member leaves: its partitions come back to a worker that is not paused.
    drop(member);
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 4);
    probe
        .wait_caught_up_within("every partition consumed to its end", SETTLES)
        .await;
    assert_state_is(&db.pool, &Expectation::of(&spec, 2_000)).await;
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_newest_version_postgres_refuses_ends_at_its_last_acceptable_version() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    db.add_check("no_third_version", "version <> 3").await;
    let (order, other) = (Uuid::new_v4(), Uuid::new_v4());
    let versions: Vec<OrderEvent> = (1..=3).map(|v| event(order, v, v as u64)).collect();
    publish_raw(
        &mock.brokers,
        &topic,
        &[
            message_of(&versions[0]),
            message_of(&event(other, 1, 9)),
            message_of(&versions[1]),
            message_of(&versions[2]),
        ],
    );
    // All four in one batch.
    let worker = start_worker(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &["--processors", "1", "--batch-linger", "500ms"],
    )
    .await;
    OffsetProbe::new(&mock.brokers, &group, &topic, 1)
        .wait_caught_up_within("all four committed", SETTLES)
        .await;
    let stored = orders(&db.pool).await;
    assert_eq!(
        stored.get(&order).map(|s| s.version),
        Some(2),
        "the order stands at v2, as applying the events one at a time leaves it"
    );
    assert!(stored.contains_key(&other));
    let dead: Vec<(String, i64)> =
        sqlx::query_as("SELECT reason, source_offset FROM dead_letters ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        dead,
        [("db_rejected".to_owned(), 3)],
        "only v3 is a dead letter"
    );
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_whose_kafka_timestamp_postgres_cannot_store_is_kept_with_the_timestamp_noted()
 {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    // About 7500 BC: a valid time for the worker, before timestamptz's first day (4714 BC).
    let ancient_ms = -300_000_000_000_000i64;
    let valid = event(Uuid::new_v4(), 1, 0);
    publish_stamped(
        &mock.brokers,
        &topic,
        &[
            (
                (Some(b"k".to_vec()), Some(b"{broken".to_vec())),
                Some(ancient_ms),
            ),
            (message_of(&valid), Some(ancient_ms)),
        ],
    );
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    OffsetProbe::new(&mock.brokers, &group, &topic, 1)
        .wait_caught_up_within("both committed", SETTLES)
        .await;
    let row = sqlx::query("SELECT kafka_timestamp, error FROM dead_letters")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        row.get::<Option<time::OffsetDateTime>, _>("kafka_timestamp")
            .is_none()
    );
    let error: String = row.get("error");
    assert!(error.contains(&ancient_ms.to_string()), "{error}");
    assert!(orders(&db.pool).await.contains_key(&valid.order_id));
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_rows_postgres_mostly_refuses_is_dead_lettered_with_the_original_bytes() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    db.add_check("one_in_ten", "source_offset % 10 = 0").await;
    let events: Vec<OrderEvent> = (0..4_000u64).map(|i| event(Uuid::new_v4(), 1, i)).collect();
    let messages: Vec<RawMessage> = events.iter().map(message_of).collect();
    publish_raw(&mock.brokers, &topic, &messages);
    let worker = start_worker(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &[
            "--processors",
            "1",
            "--batch-max-rows",
            "4000",
            "--channel-capacity",
            "4000",
            "--batch-linger",
            "1s",
        ],
    )
    .await;
    OffsetProbe::new(&mock.brokers, &group, &topic, 1)
        .wait_caught_up_within("all 4,000 committed", Duration::from_secs(90))
        .await;
    assert_eq!(count(&db.pool, "orders").await, 400);
    let exact: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE reason = 'db_rejected' AND payload IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(exact, 3_600);
    let sample: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT source_offset, payload FROM dead_letters ORDER BY source_offset LIMIT 50",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (offset, payload) in sample {
        assert_eq!(
            Some(payload),
            messages[offset as usize].1,
            "offset {offset}: the original bytes"
        );
    }
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_whose_message_left_kafka_is_stored_re_encoded_and_can_be_replayed() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    db.add_check("no_blocked", "customer_id <> 'blocked'").await;
    let mut blocked = event(Uuid::new_v4(), 1, 0);
    blocked.customer_id = "blocked".into();
    // Laid out as no encoder of the worker would, so the re-encoded event differs from it.
    let original = (
        Some(blocked.order_id.to_string().into_bytes()),
        Some(serde_json::to_vec_pretty(&blocked).unwrap()),
    );
    let lock = lock_orders(&db.pool).await;
    publish_raw(&mock.brokers, &topic, &[original]);
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    let http = worker.http_addr();
    eventually("the refused event is in flight", SETTLES, || async {
        metric(http, "order_worker_in_flight_messages", &[]).await >= 1.0
    })
    .await;
    // More than the mock broker keeps of a partition (5 MiB): the refused message leaves Kafka.
    let filler = valid_only(20_000, 221);
    let mut p =
        order_worker::kafka::producer::Publisher::new(client_config(&mock.brokers, &[]), &topic)
            .expect("producer");
    for m in order_worker::synth::Generator::new(filler).take(14_000) {
        let value = m.payload.map(|mut v| {
            v.resize(v.len() + 400, b' ');
            v
        });
        p.send(m.key.as_deref(), value.as_deref()).expect("send");
    }
    p.finish(Duration::from_secs(60), std::time::Instant::now())
        .expect("flush");
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 1);
    assert!(
        probe.truncated() == [0],
        "the broker dropped the head of the partition"
    );
    lock.commit().await.unwrap();
    eventually("the refused event dead-lettered", SETTLES, || async {
        count(&db.pool, "dead_letters").await == 1
    })
    .await;
    let error: String = sqlx::query_scalar("SELECT error FROM dead_letters")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(error.contains("re-encoded"), "{error}");

    sqlx::query("ALTER TABLE orders DROP CONSTRAINT no_blocked")
        .execute(&db.pool)
        .await
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_order-worker"))
        .args([
            "dead-letters",
            "replay",
            "--database-url",
            &db.url,
            "--brokers",
            &mock.brokers,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("replayed 1 dead letter(s); 0 failed"),
        "{text}"
    );
    eventually("the replayed event applied", SETTLES, || async {
        orders(&db.pool).await.contains_key(&blocked.order_id)
    })
    .await;
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_always_outlasts_statement_timeout_is_split_until_it_is_written() {
    let db = TestDb::create().await;
    // Each row costs 2 ms: a batch of 250 rows or more can never finish within 400 ms.
    let (_broker, worker) = written_in_parts(
        &db,
        &[
            "CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END $$",
            "CREATE TRIGGER slow_row BEFORE INSERT ON orders FOR EACH ROW \
             EXECUTE FUNCTION slow_row()",
            &format!("ALTER DATABASE {} SET statement_timeout = '400ms'", db.name),
        ],
    )
    .await;
    let cancelled = metric(
        worker.http_addr(),
        "order_worker_db_errors_total",
        &[("kind", "timeout")],
    );
    assert!(
        cancelled.await >= 1.0,
        "statements were cancelled before they were split"
    );
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_connection_is_always_cut_as_it_runs_is_split_until_it_is_written() {
    let db = TestDb::create().await;
    // As a pooler's query_timeout does: a statement writing more than 250 orders loses its
    // connection (the backend ends its own session), while new connections are accepted.
    let (_broker, worker) = written_in_parts(
        &db,
        &[
            "CREATE FUNCTION cut_long_statements() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               PERFORM set_config('test.rows', \
                 (coalesce(nullif(current_setting('test.rows', true), ''), '0')::int + 1)::text, \
                 true); \
               IF current_setting('test.rows')::int > 250 THEN \
                 PERFORM pg_terminate_backend(pg_backend_pid()); \
                 PERFORM pg_sleep(5); \
               END IF; \
               RETURN NEW; \
             END $$",
            "CREATE TRIGGER cut_long_statements BEFORE INSERT ON orders FOR EACH ROW \
             EXECUTE FUNCTION cut_long_statements()",
        ],
    )
    .await;
    let cut = metric(
        worker.http_addr(),
        "order_worker_db_errors_total",
        &[("kind", "shutdown")],
    );
    assert!(
        cut.await >= 2.0,
        "statements were cut before they were split"
    );
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

/// Prepares `db` with `sql`, then has one processor with batches of 2,000 drain 3,000 orders'
/// events into it; returns (with the broker, which must outlive the worker) once every offset is
/// committed and the rows are the oracle's.
async fn written_in_parts(db: &TestDb, sql: &[&str]) -> (Mock, Worker) {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    for sql in sql {
        sqlx::query(sql).execute(&db.pool).await.unwrap();
    }
    let spec = valid_only(3_000, 231);
    publish(&mock.brokers, &topic, &spec, 3_000);
    let flags = [
        "--processors",
        "1",
        "--batch-max-rows",
        "2000",
        "--channel-capacity",
        "2000",
    ];
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &flags).await;
    OffsetProbe::new(&mock.brokers, &group, &topic, 1)
        .wait_caught_up_within("every batch written in parts", Duration::from_secs(90))
        .await;
    assert_state_is(&db.pool, &Expectation::of(&spec, 3_000)).await;
    (mock, worker)
}
