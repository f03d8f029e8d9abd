//! Contract v2's schema, `schema/order-event.v2.schema.json`, and the worker's decoder agree,
//! as `schema.rs` proves for v1: the examples and v2 events are valid for both, each rule the
//! schema states for v2's parts is enforced by both, and the v2 rules it cannot state (the
//! discounted total, real ISO 3166-1 codes) by the decoder alone. Each contract's schema refuses
//! the other's events, so a producer validating against one cannot publish the other by mistake.

use jsonschema::Validator;
use serde_json::{Value, json};

use crate::schema::{Edit, ORDER_ID, decode_value, retotal, schema_errors, valid_event};
use order_worker::contract::Reason;

const SCHEMA_V1: &str = include_str!("../../schema/order-event.v1.schema.json");
const SCHEMA_V2: &str = include_str!("../../schema/order-event.v2.schema.json");

fn validator(text: &str) -> Validator {
    let schema: Value = serde_json::from_str(text).expect("the schema file is JSON");
    jsonschema::draft202012::meta::validate(&schema).expect("a draft 2020-12 schema");
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

/// `schema.rs`'s valid v1 event (items sum to 3499) with both of v2's parts.
fn valid_v2_event() -> Value {
    let mut event = valid_event();
    event["schema_version"] = json!(2);
    event["discount_minor"] = json!(499);
    event["total_minor"] = json!(3000);
    event["shipping"] = json!({
        "method": "pickup", "country": "FR", "postal_code": "75001", "city": "Paris"
    });
    event
}

#[test]
fn v2_events_and_the_v2_examples_are_valid_for_the_schema_and_the_worker() {
    let v2 = validator(SCHEMA_V2);
    let schema: Value = serde_json::from_str(SCHEMA_V2).unwrap();
    let mut events: Vec<Value> = schema["examples"].as_array().unwrap().clone();
    let mut bare = valid_event();
    bare["schema_version"] = json!(2);
    events.extend([valid_v2_event(), bare]);
    for (i, event) in events.iter().enumerate() {
        let errors = schema_errors(&v2, event);
        assert!(
            errors.is_empty(),
            "event {i} breaks the schema: {errors:#?}"
        );
        let key = event["order_id"].as_str().unwrap();
        let decoded = decode_value(key, event)
            .unwrap_or_else(|r| panic!("event {i} is rejected by the worker: {r}"));
        assert_eq!(decoded.total_minor, event["total_minor"].as_i64().unwrap());
    }
    assert!(
        events[0]["shipping"].is_object(),
        "the first example shows v2"
    );
}

#[test]
fn each_contract_s_schema_refuses_the_other_s_events() {
    let (v1, v2) = (validator(SCHEMA_V1), validator(SCHEMA_V2));
    assert!(!v1.is_valid(&valid_v2_event()));
    let mut v1_event = valid_event();
    assert!(!v2.is_valid(&v1_event), "v2 requires schema_version 2");
    v1_event.as_object_mut().unwrap().remove("schema_version");
    assert!(!v2.is_valid(&v1_event));
}

#[test]
fn invalid_v2_parts_the_schema_can_express_are_rejected_by_both() {
    let v2 = validator(SCHEMA_V2);
    let cases: [(&str, Edit); 9] = [
        ("negative discount", |e| {
            e["discount_minor"] = json!(-1);
            e["total_minor"] = json!(3500);
        }),
        ("discount as a string", |e| {
            e["discount_minor"] = json!("499")
        }),
        ("shipping without method", |e| {
            e["shipping"].as_object_mut().map(|o| o.remove("method"));
        }),
        ("shipping without country", |e| {
            e["shipping"].as_object_mut().map(|o| o.remove("country"));
        }),
        ("unknown method", |e| {
            e["shipping"]["method"] = json!("drone")
        }),
        ("lowercase country", |e| {
            e["shipping"]["country"] = json!("fr")
        }),
        ("three-letter country", |e| {
            e["shipping"]["country"] = json!("FRA")
        }),
        ("postal code of 17 chars", |e| {
            e["shipping"]["postal_code"] = json!("1".repeat(17))
        }),
        ("city with a control char", |e| {
            e["shipping"]["city"] = json!("Pa\u{85}ris")
        }),
    ];
    for (name, edit) in cases {
        let mut event = valid_v2_event();
        edit(&mut event);
        assert!(!v2.is_valid(&event), "{name}: the schema accepts it");
        if let Ok(decoded) = decode_value(ORDER_ID, &event) {
            panic!("{name}: the worker accepts it as {decoded:?}");
        }
    }
}

#[test]
fn what_the_v2_schema_cannot_express_is_rejected_by_the_worker_alone() {
    let v2 = validator(SCHEMA_V2);
    let cases: [(&str, Edit); 3] = [
        ("total not the sum less the discount", |e| {
            e["total_minor"] = json!(3499)
        }),
        ("discount above the sum", |e| {
            e["discount_minor"] = json!(3500);
            retotal(e);
            e["total_minor"] = json!(0);
        }),
        ("country not an ISO 3166-1 code", |e| {
            e["shipping"]["country"] = json!("XK")
        }),
    ];
    for (name, edit) in cases {
        let mut event = valid_v2_event();
        edit(&mut event);
        let errors = schema_errors(&v2, &event);
        assert!(
            errors.is_empty(),
            "{name}: the schema refuses it: {errors:#?}"
        );
        let rejection = decode_value(ORDER_ID, &event).expect_err(name);
        assert_eq!(
            rejection.reason,
            Reason::InvalidValue,
            "{name}: {rejection}"
        );
    }
}

#[test]
fn the_v2_example_in_the_contract_satisfies_the_v2_schema_and_decodes() {
    let contract = include_str!("../../docs/contract.md");
    let block = contract
        .split("## Event contract v2")
        .nth(1)
        .and_then(|section| section.split("```json").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("a json block in the v2 section");
    let example: Value = serde_json::from_str(block).expect("the v2 example is JSON");
    let errors = schema_errors(&validator(SCHEMA_V2), &example);
    assert!(errors.is_empty(), "{errors:#?}");
    let key = example["order_id"].as_str().unwrap();
    let event = decode_value(key, &example).expect("the v2 example decodes");
    assert_eq!((event.total_minor, event.discount_minor), (2499, Some(200)));
}
