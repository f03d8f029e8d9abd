//! Hostile input: the decoder never panics and every input is a valid event or a typed
//! rejection (a checked-in corpus of nasty cases, generated giants, property tests); and what
//! passes is stored literally, SQL meta-characters and unicode included.

use std::path::Path;
use std::time::{Duration, Instant};

use order_worker::contract::{self, OrderEvent, Reason, Rejection};
use order_worker::synth::event;
use proptest::prelude::*;
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

use crate::helpers::kafka::{Mock, OffsetProbe, RawMessage, message_of, publish_raw};
use crate::helpers::pg::TestDb;
use crate::helpers::{start_worker, unique};

const ORDER: &str = "6f1c2a4e-7a43-4a39-9f7e-2b1d7c1e0a11";

fn decode(payload: &[u8], limit: usize) -> Result<OrderEvent, Rejection> {
    contract::decode(Some(ORDER.as_bytes()), Some(payload), payload.len(), limit)
}

/// The rules an accepted event must satisfy, checked independently of the decoder's code.
fn holds_the_contract(e: &OrderEvent) -> bool {
    let sum = e.items.iter().try_fold(0i64, |acc, i| {
        i64::from(i.quantity)
            .checked_mul(i.unit_price_minor)?
            .checked_add(acc)
    });
    e.version >= 1
        && !e.items.is_empty()
        && e.items.len() <= contract::MAX_ITEMS
        && sum.map(|s| s - e.discount_minor.unwrap_or(0)) == Some(e.total_minor)
        && e.discount_minor.is_none_or(|d| d >= 0)
        && !e.customer_id.is_empty()
        && !e.customer_id.contains('\0')
        && e.items
            .iter()
            .all(|i| i.quantity >= 1 && i.unit_price_minor >= 0 && !i.sku.is_empty())
}

#[test]
fn every_corpus_case_gets_the_outcome_its_name_promises() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/decode");
    let (mut checked, mut wrong) = (0, Vec::new());
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((expected, _)) = name.split_once("--") else {
            continue;
        };
        let bytes = std::fs::read(&path).unwrap();
        let outcome = decode(&bytes, 16 << 20);
        let ok = match (expected, &outcome) {
            ("valid", Ok(e)) => holds_the_contract(e),
            (reason, Err(r)) => {
                r.reason.as_str() == reason && !r.detail.is_empty() && !r.detail.contains('\0')
            }
            _ => false,
        };
        if !ok {
            wrong.push(format!("{name}: {outcome:?}"));
        }
        checked += 1;
    }
    assert!(
        wrong.is_empty(),
        "unexpected outcomes:\n{}",
        wrong.join("\n")
    );
    assert!(checked >= 30, "the corpus is there: {checked} cases");
}

#[test]
fn a_ten_megabyte_payload_is_refused_by_its_size_without_being_parsed() {
    let payload = vec![b'['; 10 << 20];
    let started = Instant::now();
    let r = decode(&payload, 1 << 20).unwrap_err();
    assert_eq!(r.reason, Reason::PayloadTooLarge);
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "no parse: {:?}",
        started.elapsed()
    );
}

#[test]
fn giant_arrays_within_the_size_limit_are_rejected_without_panicking() {
    let item = json!({"sku": "A", "quantity": 1, "unit_price_minor": 1});
    let mut e = serde_json::to_value(event(Uuid::parse_str(ORDER).unwrap(), 1, 0)).unwrap();
    e["items"] = Value::Array(vec![item; 200_000]);
    e["total_minor"] = json!(200_000);
    let bytes = serde_json::to_vec(&e).unwrap();
    assert!(bytes.len() > 8 << 20, "{} bytes", bytes.len());
    assert_eq!(
        decode(&bytes, 16 << 20).unwrap_err().reason,
        Reason::InvalidValue
    );
    let numbers = format!("[{}]", vec!["1"; 1_000_000].join(","));
    assert_eq!(
        decode(numbers.as_bytes(), 16 << 20).unwrap_err().reason,
        Reason::SchemaViolation
    );
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        Just(Value::String(ORDER.into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 12] = [
    "schema_version",
    "event_id",
    "event_type",
    "order_id",
    "version",
    "occurred_at",
    "customer_id",
    "status",
    "currency",
    "items",
    "total_minor",
    "items.0",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_never_accepted_and_never_panic(
        key in proptest::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        payload in proptest::option::of(prop::collection::vec(any::<u8>(), 0..2048)),
    ) {
        let size = payload.as_ref().map_or(0, Vec::len);
        let r = contract::decode(key.as_deref(), payload.as_deref(), size, 4096);
        prop_assert!(r.is_err());
    }

    #[test]
    fn arbitrary_json_is_a_valid_event_or_a_typed_rejection(value in any_json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        match decode(&bytes, 1 << 20) {
            Ok(e) => prop_assert!(holds_the_contract(&e)),
            Err(r) => prop_assert!(!r.detail.is_empty()),
        }
    }

    #[test]
    fn a_valid_event_with_one_field_replaced_still_holds_the_contract_if_accepted(
        field in prop::sample::select(&FIELDS[..]),
        replacement in any_json(),
        version in 1i64..1_000,
    ) {
        let mut e = serde_json::to_value(event(Uuid::parse_str(ORDER).unwrap(), version, 7)).unwrap();
        match field.split_once('.') {
            Some((list, index)) => e[list][index.parse::<usize>().unwrap()] = replacement,
            None => e[field] = replacement,
        }
        let bytes = serde_json::to_vec(&e).unwrap();
        match decode(&bytes, 1 << 20) {
            Ok(event) => prop_assert!(holds_the_contract(&event), "{event:?}"),
            Err(r) => prop_assert!(!r.detail.contains('\0')),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_metacharacters_and_unicode_in_every_string_field_are_stored_literally() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    let nasty = [
        "Robert'); DROP TABLE orders;--",
        "x' OR '1'='1",
        "$1 $$ \\x00 \\' \" ` ; -- /* */",
        "顧客 🦀 ñ é ß",
        "\u{202e}gnp.exe",
        "%s %n {} {{0}} ${jndi:ldap://x}",
        "\u{feff}bom-inside",
    ];
    let mut messages: Vec<RawMessage> = Vec::new();
    let mut expected = Vec::new();
    for (i, s) in nasty.iter().enumerate() {
        let mut e = event(Uuid::new_v4(), 1, i as u64);
        e.customer_id = (*s).into();
        e.items[0].sku = s.chars().take(contract::MAX_SKU_CHARS).collect();
        messages.push(message_of(&e));
        expected.push(e);
    }
    publish_raw(&mock.brokers, &topic, &messages);
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    OffsetProbe::new(&mock.brokers, &group, &topic, 1)
        .wait_caught_up("all committed")
        .await;
    for e in &expected {
        let row = sqlx::query(
            "SELECT customer_id, items->0->>'sku' AS sku FROM orders WHERE order_id = $1",
        )
        .bind(e.order_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(row.get::<String, _>("customer_id"), e.customer_id);
        assert_eq!(row.get::<String, _>("sku"), e.items[0].sku);
    }
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE tablename IN ('orders', 'dead_letters')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tables, 2, "nothing was executed");
    worker.stop();
    worker.wait().await.expect("graceful stop");
}
