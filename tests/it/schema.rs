//! The published contract, `schema/order-event.v1.schema.json`, and the worker's decoder agree.
//!
//! Proven here:
//! - the schema is a valid draft 2020-12 schema, and compiles with format assertion on;
//! - every event the worker's own generator calls valid satisfies it, as do its own examples,
//!   which the decoder also accepts;
//! - every rule the schema states is enforced by the decoder too: each payload that breaks one
//!   rule is rejected by both;
//! - the rules the schema cannot state (real ISO 4217 codes, the total, the key, integer
//!   spelling, duplicate properties) are enforced by the decoder alone, as the schema says.
//!
//! Producers validate against the schema, the worker against the code; if the two drifted apart,
//! producers would either be refused events the worker accepts or have valid-looking events
//! dead-lettered.

use jsonschema::Validator;
use order_worker::contract::{self, OrderEvent, Reason, Rejection};
use order_worker::synth::{Generator, Kind, SynthSpec};
use serde_json::{Value, json};

const SCHEMA: &str = include_str!("../../schema/order-event.v1.schema.json");
/// Any limit above the test payloads: the size limit is the worker's configuration, not the
/// contract.
const MAX_PAYLOAD: usize = 1 << 20;
pub(crate) const ORDER_ID: &str = "3e0c7f2a-8d41-4b6e-9f25-0a7d1c4b8e93";

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("the schema file is JSON")
}

/// Formats are asserted: in 2020-12 `format` is only an annotation by default, but producers may
/// turn assertion on, so the worker's output must pass the stricter reading.
fn validator() -> Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema())
        .expect("the schema compiles")
}

/// The schema's complaints about `instance`, one line each, for assertion messages.
pub(crate) fn schema_errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("at '{}': {e}", e.instance_path()))
        .collect()
}

/// The decoder on `payload` as the broker would deliver it, keyed by `key`.
fn decode(key: &str, payload: &[u8]) -> Result<OrderEvent, Rejection> {
    contract::decode(
        Some(key.as_bytes()),
        Some(payload),
        payload.len(),
        MAX_PAYLOAD,
    )
}

pub(crate) fn decode_value(key: &str, event: &Value) -> Result<OrderEvent, Rejection> {
    decode(key, &serde_json::to_vec(event).expect("a Value serializes"))
}

/// A change to a valid event that breaks exactly one rule of the contract.
pub(crate) type Edit = fn(&mut Value);

/// One valid event, the base every invalid case below is derived from.
pub(crate) fn valid_event() -> Value {
    json!({
        "schema_version": 1,
        "event_id": "c5a1e0d2-7b3f-4e8a-b6c9-2d4f1a8e7b30",
        "event_type": "updated",
        "order_id": ORDER_ID,
        "version": 2,
        "occurred_at": "2026-03-04T05:06:07.890Z",
        "customer_id": "customer-17",
        "status": "paid",
        "currency": "EUR",
        "items": [
            { "sku": "SKU-00001", "quantity": 2, "unit_price_minor": 1250 },
            { "sku": "SKU-00002", "quantity": 1, "unit_price_minor": 999 }
        ],
        "total_minor": 3499
    })
}

/// Sets `total_minor` to the sum of the items (a missing or non-integer number counts as 0), so
/// that a case editing the items breaks only the rule it is named after, not also the total.
pub(crate) fn retotal(event: &mut Value) {
    let sum = event["items"].as_array().map_or(0, |items| {
        items
            .iter()
            .map(|i| {
                i["quantity"].as_i64().unwrap_or(0) * i["unit_price_minor"].as_i64().unwrap_or(0)
            })
            .sum::<i64>()
    });
    event["total_minor"] = sum.into();
}

#[test]
fn the_schema_is_a_valid_draft_2020_12_schema() {
    let schema = schema();
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "the schema must declare draft 2020-12"
    );
    assert_eq!(
        schema["$id"],
        "https://order-worker.example/schema/order-event.v1.schema.json"
    );
    if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
        panic!("the schema breaks the draft 2020-12 meta-schema: {e}");
    }
    // Compiling also checks what the meta-schema does not: every pattern is a valid regex.
    validator();
}

#[test]
fn every_synthetic_valid_event_satisfies_the_schema() {
    let validator = validator();
    let spec = SynthSpec {
        orders: 100,
        invalid_ratio: 0.3,
        duplicate_ratio: 0.1,
        seed: 5,
    };
    let mut checked = 0;
    for (i, message) in Generator::new(spec).take(2_000).enumerate() {
        if !matches!(message.kind, Kind::Valid | Kind::Duplicate) {
            continue;
        }
        let payload = message.payload.expect("a valid message has a value");
        let event: Value = serde_json::from_slice(&payload).expect("a valid message is JSON");
        let errors = schema_errors(&validator, &event);
        assert!(
            errors.is_empty(),
            "message {i} ({:?}) breaks the schema: {errors:#?}\n{event:#}",
            message.kind
        );
        checked += 1;
    }
    // Guards against a generator change that would make this test vacuous.
    assert!(
        checked > 1_000,
        "only {checked} valid messages were checked"
    );
}

#[test]
fn invalid_payloads_the_schema_can_express_are_rejected_by_both() {
    let validator = validator();
    let base = valid_event();
    // Without this the cases would prove nothing: each must fail because of its edit alone.
    assert_eq!(schema_errors(&validator, &base), Vec::<String>::new());
    decode_value(ORDER_ID, &base).expect("the base event decodes");

    let cases: &[(&str, Edit)] = &[
        ("missing currency", |e| {
            e.as_object_mut().map(|o| o.remove("currency"));
        }),
        ("version 0", |e| e["version"] = 0.into()),
        ("version above i64::MAX", |e| {
            e["version"] = (i64::MAX as u64 + 1).into()
        }),
        ("quantity 0", |e| {
            e["items"][0]["quantity"] = 0.into();
            retotal(e);
        }),
        ("quantity above 1000000", |e| {
            e["items"][0]["quantity"] = 1_000_001.into();
            retotal(e);
        }),
        ("negative price", |e| {
            e["items"][1]["unit_price_minor"] = (-1).into();
            retotal(e);
        }),
        ("price above 10^12", |e| {
            e["items"][1]["unit_price_minor"] = 1_000_000_000_001_i64.into();
            retotal(e);
        }),
        ("unknown status", |e| e["status"] = "refunded".into()),
        ("unknown event_type", |e| e["event_type"] = "deleted".into()),
        ("cancelled event with status paid", |e| {
            e["event_type"] = "cancelled".into()
        }),
        ("empty items", |e| {
            e["items"] = json!([]);
            retotal(e);
        }),
        ("1001 items", |e| {
            let line = json!({"sku": "S", "quantity": 1, "unit_price_minor": 1});
            e["items"] = Value::Array(vec![line; 1001]);
            retotal(e);
        }),
        ("item without sku", |e| {
            e["items"][0].as_object_mut().map(|o| o.remove("sku"));
        }),
        ("customer_id with a control char", |e| {
            e["customer_id"] = "customer\u{7}17".into()
        }),
        // char::is_control is Unicode category Cc, which includes the C1 range.
        ("customer_id with a C1 control char", |e| {
            e["customer_id"] = "customer\u{85}17".into()
        }),
        ("empty customer_id", |e| e["customer_id"] = "".into()),
        ("customer_id of 129 chars", |e| {
            e["customer_id"] = "é".repeat(129).into()
        }),
        ("schema_version 3", |e| e["schema_version"] = 3.into()),
        ("sku of 65 chars", |e| {
            e["items"][0]["sku"] = "S".repeat(65).into()
        }),
        ("sku with a newline", |e| {
            e["items"][0]["sku"] = "SKU\n1".into()
        }),
        ("lowercase currency", |e| e["currency"] = "eur".into()),
        ("event_id not a uuid", |e| e["event_id"] = "order-1".into()),
        ("occurred_at without offset", |e| {
            e["occurred_at"] = "2026-03-04T05:06:07".into()
        }),
        ("occurred_at on 30 February", |e| {
            e["occurred_at"] = "2026-02-30T05:06:07Z".into()
        }),
        ("negative total", |e| e["total_minor"] = (-1).into()),
        ("items not an array", |e| e["items"] = json!({"sku": "S"})),
        ("payload not an object", |e| *e = json!("an order")),
    ];

    for (name, edit) in cases {
        let mut event = base.clone();
        edit(&mut event);
        assert!(
            !validator.is_valid(&event),
            "{name}: the schema accepts it\n{event:#}"
        );
        if let Ok(decoded) = decode_value(ORDER_ID, &event) {
            panic!("{name}: the worker accepts it as {decoded:?}");
        }
    }
}

#[test]
fn what_the_schema_cannot_express_is_rejected_by_the_worker_alone() {
    let validator = validator();
    let base = serde_json::to_string(&valid_event()).expect("a Value serializes");
    // Payloads as text: two of the cases (`1.0`, a repeated property) do not survive a round trip
    // through serde_json::Value.
    let cases: [(&str, String, &str, Reason); 6] = [
        (
            "total not the sum of the items",
            base.replace("\"total_minor\":3499", "\"total_minor\":3500"),
            ORDER_ID,
            Reason::InvalidValue,
        ),
        (
            "currency not an ISO 4217 code",
            base.replace("\"EUR\"", "\"ZZZ\""),
            ORDER_ID,
            Reason::InvalidValue,
        ),
        (
            "key not the order_id",
            base.clone(),
            "00000000-0000-0000-0000-000000000000",
            Reason::KeyMismatch,
        ),
        (
            "integer written with a fraction",
            base.replace("\"version\":2", "\"version\":2.0"),
            ORDER_ID,
            Reason::SchemaViolation,
        ),
        (
            "integer written with an exponent",
            base.replace("\"version\":2", "\"version\":2e0"),
            ORDER_ID,
            Reason::SchemaViolation,
        ),
        (
            "property given twice",
            base.replacen('{', "{\"status\":\"paid\",", 1),
            ORDER_ID,
            Reason::SchemaViolation,
        ),
    ];
    for (name, payload, key, reason) in cases {
        assert!(
            payload != base || key != ORDER_ID,
            "{name}: the case changes nothing"
        );
        let event: Value = serde_json::from_str(&payload).expect("the case is JSON");
        let errors = schema_errors(&validator, &event);
        assert!(
            errors.is_empty(),
            "{name}: the schema now rejects it, update the test and the description: {errors:#?}"
        );
        let rejection = decode(key, payload.as_bytes()).expect_err(name);
        assert_eq!(rejection.reason, reason, "{name}: {rejection}");
    }
}

/// The examples embedded in the schema are the ones producers read first, so they must be valid
/// for both.
#[test]
fn the_schema_examples_are_valid_and_decode() {
    let validator = validator();
    let schema = schema();
    let examples = schema["examples"]
        .as_array()
        .expect("the schema has examples");
    assert!(!examples.is_empty(), "the schema has no examples");
    for (i, example) in examples.iter().enumerate() {
        let errors = schema_errors(&validator, example);
        assert!(
            errors.is_empty(),
            "example {i} breaks the schema: {errors:#?}"
        );
        let key = example["order_id"]
            .as_str()
            .expect("an example has an order_id");
        let decoded = decode_value(key, example)
            .unwrap_or_else(|r| panic!("example {i} is rejected by the worker: {r}"));
        assert_eq!(decoded.order_id.to_string(), key);
    }
}

#[test]
fn the_contract_example_satisfies_the_schema_and_decodes() {
    // The first ```json block under "## Event contract v1" is what producers copy.
    let contract = include_str!("../../docs/contract.md");
    let section = contract
        .split("## Event contract v1")
        .nth(1)
        .expect("contract section");
    let block = section
        .split("```json")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a json block in the contract section");
    let example: Value = serde_json::from_str(block).expect("the contract example is JSON");
    assert!(
        schema_errors(&validator(), &example).is_empty(),
        "contract example vs schema"
    );
    let order_id = example["order_id"].as_str().expect("order_id").to_owned();
    let event = decode_value(&order_id, &example).expect("the contract example decodes");
    assert_eq!(event.total_minor, 2699);
}
