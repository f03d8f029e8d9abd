//! Contract v2 beside v1 on the mock cluster: events of both versions of the same orders,
//! interleaved, end as the highest version with exactly that event's v2 parts; and the schema the
//! v2 migration leaves still takes the writes of a worker that predates it.

use order_worker::contract::{OrderEvent, Shipping, ShippingMethod};
use order_worker::synth::event;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::kafka::{Mock, OffsetProbe, publish_raw};
use crate::helpers::pg::TestDb;
use crate::helpers::{start_worker, unique};

/// Version `version` of `order` as a v2 event: a discount of a tenth of its sum, and shipping.
fn v2_event(order: Uuid, version: i64) -> OrderEvent {
    let mut e = event(order, version, 1);
    let discount = e.total_minor / 10;
    e.discount_minor = Some(discount);
    e.total_minor -= discount;
    e.shipping = Some(Box::new(Shipping {
        method: ShippingMethod::Express,
        country: "NL".into(),
        postal_code: Some(format!("{version}011 AB").into()),
        city: None,
    }));
    e
}

fn v1_event(order: Uuid, version: i64) -> OrderEvent {
    event(order, version, 1)
}

/// What `orders` holds for one order: version, total, discount, shipping.
async fn stored(db: &TestDb, order: Uuid) -> (i64, i64, Option<i64>, Option<Value>) {
    sqlx::query_as(
        "SELECT version, total_minor, discount_minor, shipping FROM orders WHERE order_id = $1",
    )
    .bind(order)
    .fetch_one(&db.pool)
    .await
    .expect("the order is stored")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_v2_events_of_an_order_interleaved_leave_the_highest_version_with_its_v2_fields() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 2);
    let db = TestDb::create().await;
    let (ends_v2, ends_v1, ends_v2_again) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let message = |e: OrderEvent| (Some(e.order_id.to_string().into_bytes()), Some(e.to_json()));
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 2);
    // Out of order and across two rounds, so that both a batch's own choice of the highest
    // version and the database's version guard decide.
    publish_raw(
        &mock.brokers,
        &topic,
        &[
            message(v1_event(ends_v2, 1)),
            message(v2_event(ends_v2, 4)),
            message(v1_event(ends_v2, 3)),
            message(v2_event(ends_v1, 2)),
            message(v1_event(ends_v1, 5)),
            message(v2_event(ends_v2_again, 6)),
        ],
    );
    probe.wait_caught_up("the first round committed").await;
    publish_raw(
        &mock.brokers,
        &topic,
        &[
            message(v1_event(ends_v2_again, 7)),
            message(v2_event(ends_v2_again, 8)),
            message(v2_event(ends_v1, 4)),
            message(v1_event(ends_v2, 2)),
        ],
    );
    probe.wait_caught_up("the second round committed").await;

    for (order, version) in [(ends_v2, 4), (ends_v2_again, 8)] {
        let expected = v2_event(order, version);
        let (v, total, discount, shipping) = stored(&db, order).await;
        assert_eq!(
            (v, total, discount),
            (version, expected.total_minor, expected.discount_minor)
        );
        assert_eq!(
            shipping,
            Some(
                json!({"method": "express", "country": "NL", "postal_code": format!("{version}011 AB")})
            )
        );
    }
    let (v, total, discount, shipping) = stored(&db, ends_v1).await;
    assert_eq!(
        (v, total, discount, shipping),
        (5, v1_event(ends_v1, 5).total_minor, None, None),
        "a v1 event of a higher version clears the v2 parts: each event is the whole order"
    );
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(dead, 0);
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

/// The write of the release before contract v2, as it sends it (its upsert names none of the v2
/// columns): the migration only added nullable columns, so that build keeps working when an
/// image rolls back.
const UPSERT_BEFORE_V2: &str = r#"
INSERT INTO orders AS o (order_id, version, customer_id, status, currency, total_minor, items,
                         occurred_at, last_event_id, last_event_type,
                         source_topic, source_partition, source_offset)
SELECT u.order_id, u.version, u.customer_id, u.status, u.currency, u.total_minor, u.items::jsonb,
       u.occurred_at, u.event_id, u.event_type, $1, u.src_partition, u.src_offset
FROM UNNEST($2::uuid[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[],
            $9::timestamptz[], $10::uuid[], $11::text[], $12::int4[], $13::int8[])
     AS u(order_id, version, customer_id, status, currency, total_minor, items,
          occurred_at, event_id, event_type, src_partition, src_offset)
ON CONFLICT (order_id) DO UPDATE SET
    version = EXCLUDED.version, total_minor = EXCLUDED.total_minor, items = EXCLUDED.items
WHERE o.version < EXCLUDED.version
"#;

#[tokio::test]
async fn a_worker_that_predates_v2_still_writes_to_the_migrated_schema() {
    let db = TestDb::create().await;
    let e = v1_event(Uuid::new_v4(), 3);
    let written = sqlx::query(UPSERT_BEFORE_V2)
        .bind("orders")
        .bind(vec![e.order_id])
        .bind(vec![e.version])
        .bind(vec![e.customer_id.as_str()])
        .bind(vec![e.status.as_str()])
        .bind(vec![e.currency.as_str()])
        .bind(vec![e.total_minor])
        .bind(vec![e.items_json()])
        .bind(vec![e.occurred_at])
        .bind(vec![e.event_id])
        .bind(vec![e.event_type.as_str()])
        .bind(vec![0_i32])
        .bind(vec![7_i64])
        .execute(&db.pool)
        .await
        .expect("the older statement runs on the new schema");
    assert_eq!(written.rows_affected(), 1);
    assert_eq!(
        stored(&db, e.order_id).await,
        (3, e.total_minor, None, None)
    );
}
