//! The dead-letter topic: every dead letter published there with its reasons in headers, its
//! source offset committed only once the topic acknowledged it or refused it for good, letters
//! too large for the producer or the topic published cut, and a topic that refuses everything
//! reported (unready, counted) without ever holding a partition.

use std::time::Duration;

use order_worker::kafka::dead_letter_topic::{
    HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON, HEADER_STAGE, HEADER_TOPIC,
};
use order_worker::synth::{Expectation, SynthSpec, event};
use rdkafka::message::{Headers, Message};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use sqlx::Row;
use uuid::Uuid;

use crate::helpers::kafka::{
    Mock, OffsetProbe, RawMessage, message_of, publish, publish_raw, publish_stamped, read_topic,
};
use crate::helpers::pg::{TestDb, count};
use crate::helpers::{eventually, get, metric, start_worker, unique};

/// Long enough for a correct worker on a loaded 2-core machine, far shorter than "for ever".
const SETTLES: Duration = Duration::from_secs(60);

fn header(m: &rdkafka::message::OwnedMessage, key: &str) -> Option<String> {
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A source topic and its dead-letter topic on the mock broker, and a database of their own.
struct World {
    topic: String,
    group: String,
    dlq: String,
    partitions: i32,
    mock: Mock,
    db: TestDb,
}

impl World {
    async fn new(partitions: i32) -> Self {
        let (topic, group, dlq) = (unique("orders"), unique("group"), unique("orders-dlq"));
        let mock = Mock::with_topic(&topic, partitions);
        mock.cluster.create_topic(&dlq, 1, 1).unwrap();
        Self {
            topic,
            group,
            dlq,
            partitions,
            mock,
            db: TestDb::create().await,
        }
    }

    /// A worker that also publishes its dead letters to the dead-letter topic.
    async fn worker(&self) -> order_worker::Worker {
        let flags = ["--dead-letter-topic", self.dlq.as_str()];
        start_worker(
            &self.mock.brokers,
            &self.db.url,
            &self.topic,
            &self.group,
            &flags,
        )
        .await
    }

    fn probe(&self) -> OffsetProbe {
        OffsetProbe::new(
            &self.mock.brokers,
            &self.group,
            &self.topic,
            self.partitions,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_also_published_to_the_dead_letter_topic_with_their_reasons_in_headers() {
    let w = World::new(2).await;
    let (topic, dlq, mock, db) = (&w.topic, &w.dlq, &w.mock, &w.db);
    let spec = SynthSpec {
        orders: 200,
        invalid_ratio: 0.1,
        duplicate_ratio: 0.0,
        seed: 101,
    };
    publish(&mock.brokers, topic, &spec, 600);
    let worker = w.worker().await;
    w.probe().wait_caught_up("everything committed").await;

    let expected = Expectation::of(&spec, 600).mix.invalid_total() as usize;
    let published = read_topic(&mock.brokers, dlq, 1);
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
    let w = World::new(1).await;
    let (topic, dlq, mock, db) = (&w.topic, &w.dlq, &w.mock, &w.db);
    // A transient fault: the topic has no leader, so librdkafka holds the letter and retries.
    mock.cluster
        .topic_error(dlq, RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE)
        .unwrap();
    let valid = |n: u64| message_of(&event(Uuid::new_v4(), 1, n));
    let invalid: RawMessage = (Some(b"k".to_vec()), Some(b"{broken".to_vec()));
    publish_raw(&mock.brokers, topic, &[valid(0), invalid, valid(2)]);
    let worker = w.worker().await;
    let probe = w.probe();
    eventually(
        "the dead letter durable in PostgreSQL",
        Duration::from_secs(30),
        || async { count(&db.pool, "dead_letters").await == 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        probe.committed().get(&0).is_none_or(|c| *c <= 1),
        "offset 1 not committed while its letter waits for the topic: {:?}",
        probe.committed()
    );

    mock.cluster
        .topic_error(dlq, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .unwrap();
    probe
        .wait_caught_up("committed once the topic accepts it")
        .await;
    assert_eq!(read_topic(&mock.brokers, dlq, 1).len(), 1);
    assert_eq!(get(worker.http_addr(), "/readyz").await.0, 200);
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_that_refuses_everything_makes_the_worker_unready_but_never_stalls_it()
{
    let w = World::new(1).await;
    let (topic, dlq, mock, db) = (&w.topic, &w.dlq, &w.mock, &w.db);
    // A permanent fault: the worker may not write to the topic (no ACL).
    mock.cluster
        .topic_error(
            dlq,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .unwrap();
    let valid = |n: u64| message_of(&event(Uuid::new_v4(), 1, n));
    let invalid = |n: u8| -> RawMessage { (Some(vec![b'k', n]), Some(b"{broken".to_vec())) };
    publish_raw(&mock.brokers, topic, &[valid(0), invalid(1), valid(2)]);
    let worker = w.worker().await;
    let http = worker.http_addr();
    let probe = w.probe();
    probe
        .wait_caught_up_within("the partition moves on", Duration::from_secs(60))
        .await;
    assert_eq!(
        count(&db.pool, "dead_letters").await,
        1,
        "the letter is in the table"
    );
    assert_eq!(count(&db.pool, "orders").await, 2);
    let (status, body) = get(http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("dead-letter topic"), "{body}");
    assert!(
        metric(http, "order_worker_dead_letter_topic_refusals_total", &[]).await >= 1.0,
        "counted"
    );

    // Once the topic accepts letters again, the next one is published and the worker is ready.
    mock.cluster
        .topic_error(dlq, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .unwrap();
    publish_raw(&mock.brokers, topic, &[invalid(3)]);
    probe.wait_caught_up("the next letter committed").await;
    assert_eq!(read_topic(&mock.brokers, dlq, 1).len(), 1);
    eventually("ready again", Duration::from_secs(30), || async {
        get(http, "/readyz").await.0 == 200
    })
    .await;
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_larger_than_the_producer_accepts_is_published_cut_once_and_the_partition_moves_on()
 {
    let w = World::new(1).await;
    let (topic, dlq, mock, db) = (&w.topic, &w.dlq, &w.mock, &w.db);
    let huge: Vec<u8> = (0..1_200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut messages: Vec<(RawMessage, Option<i64>)> =
        vec![(message_of(&event(Uuid::new_v4(), 1, 0)), None)];
    messages.push(((Some(b"big".to_vec()), Some(huge.clone())), None));
    for i in 0..5u8 {
        messages.push(((Some(vec![b'k', i]), Some(b"{broken".to_vec())), None));
    }
    messages.push((message_of(&event(Uuid::new_v4(), 1, 7)), None));
    publish_stamped(&mock.brokers, topic, &messages);

    let worker = w.worker().await;
    w.probe()
        .wait_caught_up_within("committed past the oversized dead letter", SETTLES)
        .await;
    assert_eq!(
        count(&db.pool, "orders").await,
        2,
        "the valid orders behind it"
    );
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT payload FROM dead_letters WHERE reason = 'payload_too_large'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        huge[..1_048_576],
        "the table keeps MAX_PAYLOAD_BYTES of it"
    );

    // Give a worker that re-sends acknowledged letters the time to do so.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let published = read_topic(&mock.brokers, dlq, 1);
    assert_eq!(
        published.len(),
        6,
        "one message per dead letter, none twice"
    );
    let big = published
        .iter()
        .find(|m| header(m, HEADER_OFFSET).as_deref() == Some("1"))
        .expect("the oversized letter was published");
    let value = big.payload().expect("a value");
    assert!(value.len() < 1_000_000, "cut to fit: {} bytes", value.len());
    assert_eq!(value, &huge[..value.len()], "a prefix of the original");
    let cut = header(big, "order_worker.errors.truncated").expect("the cut is recorded");
    assert!(cut.contains("of 1200000 bytes"), "{cut}");
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_that_refuses_a_letter_as_too_large_gets_it_cut_until_it_fits() {
    let w = World::new(1).await;
    let (topic, dlq, mock, db) = (&w.topic, &w.dlq, &w.mock, &w.db);
    // The broker refuses the next produce requests as too large, as a topic with a small
    // max.message.bytes refuses every message above it.
    let value = vec![b'x'; 200_000];
    publish_raw(
        &mock.brokers,
        topic,
        &[(Some(b"k".to_vec()), Some(value.clone()))],
    );
    mock.cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 3],
    );
    let worker = w.worker().await;
    w.probe()
        .wait_caught_up_within("committed once a cut letter fits", SETTLES)
        .await;
    let published = read_topic(&mock.brokers, dlq, 1);
    assert_eq!(published.len(), 1, "{published:?}");
    let got = published[0].payload().unwrap_or_default();
    assert!(got.len() < value.len(), "cut: {} bytes", got.len());
    assert!(header(&published[0], "order_worker.errors.truncated").is_some());
    let stored: Vec<u8> = sqlx::query_scalar("SELECT payload FROM dead_letters")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, value, "the table keeps the whole message");
    worker.stop();
    worker.wait().await.expect("graceful stop");
}
