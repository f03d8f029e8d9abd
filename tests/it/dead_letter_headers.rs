//! A dead letter keeps its message's Kafka headers: in the `dead_letters` table, on the
//! dead-letter topic (before the worker's own `order_worker.errors.*`), and when `dead-letters
//! replay` publishes it again; for a message refused by the decoder and for a row PostgreSQL
//! refused (whose message the worker reads back from Kafka).

use std::process::Command;
use std::time::Duration;

use order_worker::dead_letters::HEADER_REPLAY_OF;
use order_worker::kafka::dead_letter_topic::HEADER_REASON;
use order_worker::synth::event;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::kafka::{Mock, OffsetProbe, read_topic};
use crate::helpers::pg::TestDb;
use crate::helpers::{start_worker, unique};

type HeaderList = Vec<(String, Option<Vec<u8>>)>;

/// Headers a producer sets: trace context, a duplicate name, a null value, binary bytes.
fn original_headers() -> HeaderList {
    vec![
        (
            "traceparent".into(),
            Some(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec()),
        ),
        ("correlation-id".into(), Some(b"c-1".to_vec())),
        ("correlation-id".into(), None),
        ("producer".into(), Some(vec![0x00, 0xff, 0x10])),
    ]
}

fn headers_of(m: &OwnedMessage) -> HeaderList {
    m.headers().map_or_else(Vec::new, |h| {
        h.iter()
            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
            .collect()
    })
}

/// Each dead letter's reason and headers column, in offset order.
async fn reasons_and_headers(db: &TestDb) -> Vec<(String, Option<Value>)> {
    sqlx::query_as("SELECT reason, headers FROM dead_letters ORDER BY source_offset")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn publish_with_headers(brokers: &str, topic: &str, key: &[u8], value: &[u8]) {
    let mut headers = OwnedHeaders::new();
    for (key, value) in &original_headers() {
        headers = headers.insert(Header {
            key: key.as_str(),
            value: value.as_deref(),
        });
    }
    publish(brokers, topic, key, value, headers).await;
}

async fn publish(brokers: &str, topic: &str, key: &[u8], value: &[u8], headers: OwnedHeaders) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(value)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .expect("published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_keeps_its_headers_through_the_table_the_topic_and_replay() {
    let (topic, group, dlq, again) = (
        unique("orders"),
        unique("group"),
        unique("orders-dlq"),
        unique("replayed"),
    );
    let mock = Mock::with_topic(&topic, 1);
    mock.cluster.create_topic(&dlq, 1, 1).unwrap();
    mock.cluster.create_topic(&again, 1, 1).unwrap();
    let db = TestDb::create().await;
    // A row PostgreSQL refuses: its message's bytes (and headers) are read back from Kafka.
    db.add_check("no_blocked", "customer_id <> 'blocked'").await;
    let order = Uuid::new_v4();
    let mut blocked = event(order, 1, 1);
    blocked.customer_id = "blocked".into();
    publish_with_headers(&mock.brokers, &topic, b"not-json", b"{oops").await;
    publish_with_headers(
        &mock.brokers,
        &topic,
        order.to_string().as_bytes(),
        &blocked.to_json(),
    )
    .await;
    let flags = ["--dead-letter-topic", dlq.as_str()];
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &flags).await;
    OffsetProbe::new(&mock.brokers, &group, &topic, 1)
        .wait_caught_up("both dead-lettered and committed")
        .await;

    let stored = reasons_and_headers(&db).await;
    let expected = json!([
        {"key": "traceparent", "value": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"key": "correlation-id", "value": "c-1"},
        {"key": "correlation-id", "value": null},
        {"key": "producer", "value_base64": "AP8Q"}
    ]);
    assert_eq!(
        stored,
        [
            ("invalid_json".to_owned(), Some(expected.clone())),
            ("db_rejected".to_owned(), Some(expected)),
        ]
    );

    let letters = read_topic(&mock.brokers, &dlq, 1);
    assert_eq!(letters.len(), 2);
    for letter in &letters {
        let headers = headers_of(letter);
        assert_eq!(
            headers[..4],
            original_headers(),
            "the originals first, in order"
        );
        assert!(
            headers[4..].iter().any(|(k, _)| k == HEADER_REASON),
            "then the worker's own: {headers:?}"
        );
    }
    worker.stop();
    worker.wait().await.expect("graceful stop");

    let out = Command::new(env!("CARGO_BIN_EXE_order-worker"))
        .args(["dead-letters", "replay", "--database-url", &db.url])
        .args(["--brokers", &mock.brokers, "--topic", &again])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("replayed 2 dead letter(s); 0 failed"),
        "{said}"
    );
    let replayed = read_topic(&mock.brokers, &again, 1);
    assert_eq!(replayed.len(), 2);
    for message in &replayed {
        let headers = headers_of(message);
        assert_eq!(headers[..4], original_headers());
        assert_eq!(headers[4].0, HEADER_REPLAY_OF);
        assert_eq!(headers.len(), 5);
    }
}

/// Headers named by bytes that are not UTF-8: rdkafka's API takes names as `&str`, Kafka and
/// librdkafka carry them as bytes, and any producer library can write them.
fn headers_named(list: &[(&[u8], &[u8])]) -> OwnedHeaders {
    use rdkafka::bindings as rdsys;
    use rdkafka::message::BorrowedHeaders;
    let headers = OwnedHeaders::new();
    // SAFETY: a `BorrowedHeaders` reference is rdkafka's view of the same native list (its
    // address is the list's); librdkafka copies the name and the value.
    unsafe {
        let native = std::ptr::from_ref::<BorrowedHeaders>(headers.as_borrowed())
            .cast_mut()
            .cast::<rdsys::rd_kafka_headers_t>();
        for (name, value) in list {
            let err = rdsys::rd_kafka_header_add(
                native,
                name.as_ptr().cast(),
                name.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            );
            assert_eq!(err, rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
        }
    }
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_and_values_json_text_cannot_hold_are_kept_readably_and_stop_nothing() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    db.add_check("no_blocked", "customer_id <> 'blocked'").await;
    let (applied, refused) = (Uuid::new_v4(), Uuid::new_v4());
    let mut blocked = event(refused, 1, 1);
    blocked.customer_id = "blocked".into();
    let messages = [
        (applied.to_string(), event(applied, 1, 1).to_json()),
        ("not-json".to_owned(), b"{oops".to_vec()),
        (refused.to_string(), blocked.to_json()),
    ];
    for (key, value) in &messages {
        // A name that is not UTF-8; a value that is UTF-8 but holds NUL, which PostgreSQL's
        // jsonb refuses in text (a big-endian int 1).
        let headers = headers_named(&[(b"tag\xff", b"v"), (b"n", b"\0\0\0\x01")]);
        publish(&mock.brokers, &topic, key.as_bytes(), value, headers).await;
    }
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    OffsetProbe::new(&mock.brokers, &group, &topic, 1)
        .wait_caught_up("applied, dead-lettered and committed")
        .await;

    let rows: Vec<(Uuid,)> = sqlx::query_as("SELECT order_id FROM orders")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, [(applied,)]);
    let stored = reasons_and_headers(&db).await;
    let kept = json!([
        {"key": "tag\u{FFFD}", "value": "v"},
        {"key": "n", "value_base64": "AAAAAQ=="}
    ]);
    assert_eq!(
        stored,
        [
            ("invalid_json".to_owned(), Some(kept.clone())),
            ("db_rejected".to_owned(), Some(kept)),
        ]
    );
    worker.stop();
    worker.wait().await.expect("graceful stop");
}
