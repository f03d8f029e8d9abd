//! The same orders in every encoding the worker reads, end to end on the separate broker (tansu):
//! JSON, bare Protobuf named by the `content-type` header, and Confluent-framed Protobuf and Avro
//! published by Confluent's own serializers through a schema registry (the stand-in of
//! `helpers::registry`). `validate topic` calls each event ok, and each lands as the same rows. A registry that is down dead-letters
//! nothing: the messages wait, lag stays, `/readyz` says why, and they drain once it is back.

use std::time::Duration;

use order_worker::contract::{OrderEvent, Shipping, ShippingMethod};
use order_worker::kafka::client_config;
use order_worker::kafka::producer::ensure_topic;
use order_worker::synth::event;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::confluent::{Format, produce_confluent};
use crate::helpers::kafka::{OffsetProbe, Tansu, publish_raw};
use crate::helpers::pg::TestDb;
use crate::helpers::registry::TestRegistry;
use crate::helpers::{eventually, get, metric, start_worker, unique};

/// Ten orders, two versions each, published newest first for half of them; v2 events (with a
/// discount and shipping) among them.
fn events() -> Vec<OrderEvent> {
    let mut out = Vec::new();
    for i in 0..10u64 {
        let order = Uuid::new_v4();
        let mut versions = vec![event(order, 1, i), event(order, 2, i)];
        if i % 2 == 0 {
            let latest = &mut versions[1];
            let discount = latest.total_minor / 4;
            latest.discount_minor = Some(discount);
            latest.total_minor -= discount;
            latest.shipping = Some(Box::new(Shipping {
                method: ShippingMethod::Standard,
                country: "SE".into(),
                postal_code: Some("114 55".into()),
                city: (i % 4 == 0).then(|| "Stockholm".into()),
            }));
            versions.reverse();
        }
        out.extend(versions);
    }
    out
}

fn json_values(events: &[OrderEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::from_slice(&e.to_json()).unwrap())
        .collect()
}

/// Every column of `orders` a producer's event decides, by order.
async fn rows(db: &TestDb) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT to_jsonb(t) FROM (SELECT order_id, version, customer_id, status, currency, \
         total_minor, items, occurred_at, last_event_id, last_event_type, discount_minor, \
         shipping FROM orders ORDER BY order_id) t",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn dead_letters(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn publish_protobuf_with_header(brokers: &str, topic: &str, events: &[OrderEvent]) {
    let producer: FutureProducer = client_config(brokers, &[]).create().unwrap();
    for e in events {
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/x-protobuf"),
        });
        let (key, value) = (e.order_id.to_string(), e.to_protobuf());
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("published");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_orders_in_json_protobuf_and_avro_through_the_registry_land_as_identical_rows() {
    let tansu = Tansu::start();
    let registry = TestRegistry::start().await;
    let events = events();
    let config = client_config(&tansu.brokers, &[]);
    let formats = ["json", "protobuf-header", "protobuf-framed", "avro-framed"];
    let mut state = Vec::new();
    for format in formats {
        let (topic, group) = (unique(format), unique("group"));
        ensure_topic(&config, &topic, 2).await.expect("topic");
        match format {
            "json" => {
                let messages: Vec<_> = events
                    .iter()
                    .map(|e| (Some(e.order_id.to_string().into_bytes()), Some(e.to_json())))
                    .collect();
                publish_raw(&tansu.brokers, &topic, &messages);
            }
            "protobuf-header" => {
                publish_protobuf_with_header(&tansu.brokers, &topic, &events).await
            }
            "protobuf-framed" => produce_confluent(
                &tansu.brokers,
                &topic,
                &registry.url,
                Format::Protobuf,
                &json_values(&events),
            ),
            _ => produce_confluent(
                &tansu.brokers,
                &topic,
                &registry.url,
                Format::Avro,
                &json_values(&events),
            ),
        }
        // The producer's check first: `validate` reads the topic as the worker will.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_order-worker"))
            .args([
                "validate",
                "topic",
                "--brokers",
                &tansu.brokers,
                "--topic",
                &topic,
            ])
            .args(["--last", "20", "--schema-registry-url", &registry.url])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.matches(": ok (order").count() == 20,
            "{format}: validate says\n{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let db = TestDb::create().await;
        let flags = ["--schema-registry-url", registry.url.as_str()];
        let worker = start_worker(&tansu.brokers, &db.url, &topic, &group, &flags).await;
        OffsetProbe::new(&tansu.brokers, &group, &topic, 2)
            .wait_caught_up(&format!("{format}: everything committed"))
            .await;
        assert_eq!(
            dead_letters(&db).await,
            0,
            "{format}: nothing dead-lettered"
        );
        state.push((format, rows(&db).await));
        worker.stop();
        worker.wait().await.expect("graceful stop");
    }
    let (_, json) = &state[0];
    assert_eq!(json.len(), 10);
    assert!(
        json.iter().any(|r| r["shipping"]["country"] == "SE"),
        "v2 parts are stored"
    );
    for (format, rows) in &state[1..] {
        assert_eq!(rows, json, "{format} lands as the JSON does");
    }
    let requests = registry.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /schemas/ids/")),
        "the worker resolved the ids: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_registry_is_down_nothing_is_dead_lettered_lag_stays_and_it_drains_after() {
    let tansu = Tansu::start();
    let mut registry = TestRegistry::start().await;
    let (topic, group) = (unique("avro"), unique("group"));
    ensure_topic(&client_config(&tansu.brokers, &[]), &topic, 1)
        .await
        .expect("topic");
    let events = events();
    produce_confluent(
        &tansu.brokers,
        &topic,
        &registry.url,
        Format::Avro,
        &json_values(&events),
    );
    registry.stop();
    let db = TestDb::create().await;
    let flags = ["--schema-registry-url", registry.url.as_str()];
    let worker = start_worker(&tansu.brokers, &db.url, &topic, &group, &flags).await;
    let addr = worker.http_addr();
    eventually(
        "the worker says it waits for the registry",
        Duration::from_secs(30),
        || async {
            get(addr, "/readyz")
                .await
                .1
                .contains("schema registry, schema id")
        },
    )
    .await;
    let probe = OffsetProbe::new(&tansu.brokers, &group, &topic, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !probe.caught_up(),
        "nothing is committed past the waiting message"
    );
    assert_eq!(dead_letters(&db).await, 0, "nothing dead-lettered");
    assert_eq!(rows(&db).await.len(), 0);
    assert!(metric(addr, "order_worker_schema_registry_failures_total", &[]).await >= 1.0);

    registry.restart().await;
    probe
        .wait_caught_up("drained once the registry answers")
        .await;
    assert_eq!(rows(&db).await.len(), 10);
    assert_eq!(dead_letters(&db).await, 0);
    eventually("ready again", Duration::from_secs(30), || async {
        get(addr, "/readyz").await.0 == 200
    })
    .await;
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_waiting_for_an_unknown_schema_id_keeps_the_worker_unready_while_others_apply() {
    let tansu = Tansu::start();
    let registry = TestRegistry::start().await;
    let (topic, group) = (unique("avro"), unique("group"));
    ensure_topic(&client_config(&tansu.brokers, &[]), &topic, 1)
        .await
        .expect("topic");
    let db = TestDb::create().await;
    let flags = ["--schema-registry-url", registry.url.as_str()];
    let worker = start_worker(&tansu.brokers, &db.url, &topic, &group, &flags).await;
    let addr = worker.http_addr();
    // Framed with an id the registry does not know: its lane waits for it.
    let unknown = [&[0u8][..], &999_999u32.to_be_bytes(), b"\x02\x04"].concat();
    let key = Uuid::new_v4().to_string().into_bytes();
    publish_raw(&tansu.brokers, &topic, &[(Some(key), Some(unknown))]);
    let waits = "schema registry, schema id 999999";
    eventually(
        "unready for the unknown id",
        Duration::from_secs(30),
        || async { get(addr, "/readyz").await.1.contains(waits) },
    )
    .await;

    // Ten orders on every lane, framed with an id the registry gives: the other lanes apply
    // theirs, and the waiting lane still waits.
    let events = events();
    let values = json_values(&events);
    produce_confluent(&tansu.brokers, &topic, &registry.url, Format::Avro, &values);
    eventually(
        "other lanes applied their orders",
        Duration::from_secs(30),
        || async { !rows(&db).await.is_empty() },
    )
    .await;
    for _ in 0..10 {
        let (status, reason) = get(addr, "/readyz").await;
        assert_eq!(status, 503, "ready while a lane waits: {reason}");
        assert!(reason.contains(waits), "{reason}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(dead_letters(&db).await, 0, "nothing dead-lettered");
}
