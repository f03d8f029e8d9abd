//! Dead letters beyond the table: the dead-letter topic, and listing and replaying after a fix.

use std::process::Command;
use std::time::Duration;

use order_worker::kafka::dead_letter_topic::{
    HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON, HEADER_STAGE, HEADER_TOPIC,
};
use order_worker::synth::{Expectation, SynthSpec, event};
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use sqlx::Row;
use uuid::Uuid;

use crate::helpers::kafka::{Mock, OffsetProbe, RawMessage, publish, publish_raw, read_topic};
use crate::helpers::pg::{TestDb, count, orders};
use crate::helpers::{eventually, metric, start_worker, unique};

fn header(m: &rdkafka::message::OwnedMessage, key: &str) -> Option<String> {
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_also_published_to_the_dead_letter_topic_with_their_reasons_in_headers() {
    let (topic, group, dlq) = (unique("orders"), unique("group"), unique("orders-dlq"));
    let mock = Mock::with_topic(&topic, 2);
    mock.cluster.create_topic(&dlq, 1, 1).unwrap();
    let db = TestDb::create().await;
    let spec = SynthSpec {
        orders: 200,
        invalid_ratio: 0.1,
        duplicate_ratio: 0.0,
        seed: 101,
    };
    publish(&mock.brokers, &topic, &spec, 600);
    let worker = start_worker(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &["--dead-letter-topic", &dlq],
    )
    .await;
    OffsetProbe::new(&mock.brokers, &group, &topic, 2)
        .wait_caught_up("everything committed")
        .await;

    let expected = Expectation::of(&spec, 600).mix.invalid_total() as usize;
    let published = read_topic(&mock.brokers, &dlq, 1);
    assert_eq!(published.len(), expected, "one message per dead letter");
    let rows = sqlx::query(
        "SELECT source_partition, source_offset, reason, stage, payload FROM dead_letters",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for row in rows {
        let (p, o): (i32, i64) = (row.get("source_partition"), row.get("source_offset"));
        let m = published
            .iter()
            .find(|m| {
                header(m, HEADER_PARTITION) == Some(p.to_string())
                    && header(m, HEADER_OFFSET) == Some(o.to_string())
            })
            .unwrap_or_else(|| panic!("no dead-letter message for {p}@{o}"));
        assert_eq!(header(m, HEADER_TOPIC).as_deref(), Some(topic.as_str()));
        assert_eq!(
            header(m, HEADER_REASON),
            Some(row.get::<String, _>("reason"))
        );
        assert_eq!(header(m, HEADER_STAGE), Some(row.get::<String, _>("stage")));
        assert_eq!(
            m.payload().map(<[u8]>::to_vec),
            row.get::<Option<Vec<u8>>, _>("payload"),
            "original bytes"
        );
    }
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_offset_is_not_committed_before_its_dead_letter_reaches_the_topic() {
    let (topic, group, dlq) = (unique("orders"), unique("group"), unique("orders-dlq"));
    let mock = Mock::with_topic(&topic, 1);
    mock.cluster.create_topic(&dlq, 1, 1).unwrap();
    mock.cluster
        .topic_error(
            &dlq,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .unwrap();
    let db = TestDb::create().await;
    let valid = |n: u64| {
        let e = event(Uuid::new_v4(), 1, n);
        (Some(e.order_id.to_string().into_bytes()), Some(e.to_json()))
    };
    let invalid: RawMessage = (Some(b"k".to_vec()), Some(b"{broken".to_vec()));
    publish_raw(&mock.brokers, &topic, &[valid(0), invalid, valid(2)]);
    let worker = start_worker(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &["--dead-letter-topic", &dlq],
    )
    .await;
    let http = worker.http_addr();
    eventually(
        "the dead letter's publication failing",
        Duration::from_secs(30),
        || async {
            metric(http, "order_worker_dead_letter_publish_failures_total", &[]).await >= 2.0
        },
    )
    .await;
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 1);
    assert!(
        probe.committed().get(&0).is_none_or(|c| *c <= 1),
        "offset 1 not committed: {:?}",
        probe.committed()
    );
    assert_eq!(
        count(&db.pool, "dead_letters").await,
        1,
        "durable in PostgreSQL meanwhile"
    );

    mock.cluster
        .topic_error(&dlq, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .unwrap();
    probe
        .wait_caught_up("committed once the topic accepts it")
        .await;
    assert_eq!(read_topic(&mock.brokers, &dlq, 1).len(), 1);
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_order-worker"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_postgres_refuses_is_dead_lettered_alone_and_replayed_once_after_the_fix() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    // An operator's rule the contract knows nothing about: PostgreSQL refuses the row.
    sqlx::query("ALTER TABLE orders ADD CONSTRAINT no_blocked CHECK (customer_id <> 'blocked')")
        .execute(&db.pool)
        .await
        .unwrap();
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut blocked = event(b, 1, 1);
    blocked.customer_id = "blocked".into();
    let message = |e: &order_worker::contract::OrderEvent| {
        (Some(e.order_id.to_string().into_bytes()), Some(e.to_json()))
    };
    // Laid out as no encoder of the worker would: the dead letter must keep these very bytes.
    let blocked_message = (
        Some(b.to_string().into_bytes()),
        Some(serde_json::to_vec_pretty(&blocked).unwrap()),
    );
    publish_raw(
        &mock.brokers,
        &topic,
        &[
            message(&event(a, 1, 0)),
            blocked_message.clone(),
            message(&event(c, 1, 2)),
            (Some(b"t".to_vec()), None),
        ],
    );
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 1);
    probe.wait_caught_up("all four committed").await;

    let stored = orders(&db.pool).await;
    assert!(
        stored.contains_key(&a) && stored.contains_key(&c) && !stored.contains_key(&b),
        "only the refused row is missing"
    );
    let row = sqlx::query(
        "SELECT id, reason, stage, error, message_key, payload FROM dead_letters \
         WHERE reason = 'db_rejected'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("stage"), "write");
    assert_eq!(
        (
            row.get::<Option<Vec<u8>>, _>("message_key"),
            row.get::<Option<Vec<u8>>, _>("payload")
        ),
        blocked_message,
        "the dead letter holds the message's original bytes, read back from Kafka"
    );
    assert!(row.get::<String, _>("error").contains("no_blocked"));
    assert_eq!(
        metric(
            worker.http_addr(),
            "order_worker_dead_letters_total",
            &[("reason", "db_rejected")]
        )
        .await,
        1.0
    );
    let id: i64 = row.get("id");

    let listed = cli(&[
        "dead-letters",
        "list",
        "--database-url",
        &db.url,
        "--reason",
        "db_rejected",
    ]);
    assert!(
        listed.contains(&format!("{id:>8}")) && listed.contains("1 dead letter(s)"),
        "{listed}"
    );

    // The fix, then the replay: the event goes through the pipeline again and is applied.
    sqlx::query("ALTER TABLE orders DROP CONSTRAINT no_blocked")
        .execute(&db.pool)
        .await
        .unwrap();
    let replay = [
        "dead-letters",
        "replay",
        "--database-url",
        &db.url,
        "--brokers",
        &mock.brokers,
    ];
    let first = cli(&replay);
    assert!(
        first.contains("replayed 1 dead letter(s); 0 failed"),
        "{first}"
    );
    assert!(
        first.contains("tombstone: there is no value to replay"),
        "{first}"
    );
    probe.wait_caught_up("the replayed message committed").await;
    assert_eq!(
        orders(&db.pool).await[&b].version,
        1,
        "applied after the fix"
    );
    let replayed: Option<time::OffsetDateTime> =
        sqlx::query_scalar("SELECT replayed_at FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(replayed.is_some(), "marked replayed");
    assert!(
        cli(&replay).contains("replayed 0 dead letter(s)"),
        "a second replay publishes nothing"
    );
    worker.stop();
    worker.wait().await.expect("graceful stop");
}
