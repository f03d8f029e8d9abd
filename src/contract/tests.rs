use serde_json::{Value, json};

use super::*;

pub(super) const LIMIT: usize = 64 * 1024;
pub(super) const ORDER: &str = "6f1c2a4e-7a43-4a39-9f7e-2b1d7c1e0a11";

pub(super) fn valid() -> Value {
    json!({
        "event_id": "0b7f8a52-5c6e-4c1e-8f57-3f3f0a6d9b10",
        "event_type": "updated",
        "order_id": ORDER,
        "version": 3,
        "occurred_at": "2026-11-22T10:15:00.250Z",
        "customer_id": "cust-42",
        "status": "paid",
        "currency": "EUR",
        "items": [
            {"sku": "BOOK-1", "quantity": 2, "unit_price_minor": 1250},
            {"sku": "PEN-9", "quantity": 1, "unit_price_minor": 199}
        ],
        "total_minor": 2699
    })
}

pub(super) fn decode_value(value: &Value) -> Result<OrderEvent, Rejection> {
    let bytes = serde_json::to_vec(value).unwrap();
    decode(Some(ORDER.as_bytes()), Some(&bytes), bytes.len(), LIMIT)
}

pub(super) fn rejection_of(value: &Value) -> Rejection {
    decode_value(value).expect_err("the event should be rejected")
}

pub(super) fn with(field: &str, new: Value) -> Value {
    let mut v = valid();
    v[field] = new;
    v
}

#[test]
fn a_valid_event_decodes_with_every_field() {
    let event = decode_value(&valid()).unwrap();
    assert_eq!(event.order_id.to_string(), ORDER);
    assert_eq!(event.version, 3);
    assert_eq!(event.event_type, EventType::Updated);
    assert_eq!(event.status, OrderStatus::Paid);
    assert_eq!(event.total_minor, 2699);
    assert_eq!(event.items.len(), 2);
    assert_eq!(event.occurred_at.millisecond(), 250);
}

#[test]
fn unknown_fields_are_ignored_at_every_level() {
    let mut v = valid();
    v["channel"] = json!("web");
    v["items"][0]["gift_wrap"] = json!(true);
    assert!(decode_value(&v).is_ok());
}

#[test]
fn an_explicit_schema_version_one_is_accepted() {
    assert!(decode_value(&with("schema_version", json!(1))).is_ok());
}

#[test]
fn another_schema_version_is_named_even_when_the_shape_differs() {
    let mut v = json!({"schema_version": 3, "order": {"id": ORDER}});
    let r = rejection_of(&v);
    assert_eq!(r.reason, Reason::UnsupportedSchemaVersion);
    assert!(r.detail.contains("schema_version 3"), "{r}");
    v = with("schema_version", json!(7));
    assert_eq!(rejection_of(&v).reason, Reason::UnsupportedSchemaVersion);
}

#[test]
fn a_tombstone_is_rejected_at_receive() {
    let r = decode(Some(ORDER.as_bytes()), None, 0, LIMIT).unwrap_err();
    assert_eq!(r.reason, Reason::Tombstone);
    assert_eq!(r.stage(), Stage::Receive);
}

#[test]
fn an_oversized_payload_is_rejected_before_parsing() {
    let r = decode(Some(b"k"), Some(b"{"), LIMIT + 1, LIMIT).unwrap_err();
    assert_eq!(r.reason, Reason::PayloadTooLarge);
    assert!(r.detail.contains(&format!("{}", LIMIT + 1)), "{r}");
}

#[test]
fn bytes_that_are_not_utf8_are_invalid_json_with_the_offset() {
    let payload = b"{\"a\": \"\xff\"}";
    let r = decode(Some(b"k"), Some(payload), payload.len(), LIMIT).unwrap_err();
    assert_eq!(r.reason, Reason::InvalidJson);
    assert!(r.detail.contains("offset 7"), "{r}");
}

#[test]
fn broken_json_is_invalid_json() {
    for payload in [
        &b"{not json"[..],
        b"",
        b"{\"event_id\": ",
        b"[1,2] trailing",
        b"{} x",
    ] {
        let r = decode(Some(b"k"), Some(payload), payload.len(), LIMIT).unwrap_err();
        assert_eq!(r.reason, Reason::InvalidJson, "{payload:?}: {r}");
    }
}

#[test]
fn trailing_data_after_the_event_is_invalid_json() {
    let mut bytes = serde_json::to_vec(&valid()).unwrap();
    bytes.extend_from_slice(b" {}");
    let r = decode(Some(ORDER.as_bytes()), Some(&bytes), bytes.len(), LIMIT).unwrap_err();
    assert_eq!(r.reason, Reason::InvalidJson, "{r}");
}

#[test]
fn a_missing_field_is_a_schema_violation_naming_it() {
    let mut v = valid();
    v.as_object_mut().unwrap().remove("currency");
    let r = rejection_of(&v);
    assert_eq!(r.reason, Reason::SchemaViolation);
    assert!(r.detail.contains("currency"), "{r}");
}

#[test]
fn a_wrong_type_is_a_schema_violation_with_its_path() {
    let mut v = valid();
    v["items"][1]["quantity"] = json!("two");
    let r = rejection_of(&v);
    assert_eq!(r.reason, Reason::SchemaViolation);
    assert!(r.detail.starts_with("items[1].quantity"), "{r}");
}

#[test]
fn an_unknown_enum_value_is_a_schema_violation() {
    for (field, value) in [("status", "lost"), ("event_type", "deleted")] {
        let r = rejection_of(&with(field, json!(value)));
        assert_eq!(r.reason, Reason::SchemaViolation, "{field}: {r}");
    }
}

#[test]
fn numbers_out_of_range_are_schema_violations() {
    for value in [
        json!(1.5),
        json!(9_223_372_036_854_775_808u64),
        json!(-1e40),
    ] {
        let r = rejection_of(&with("version", value.clone()));
        assert_eq!(r.reason, Reason::SchemaViolation, "{value}: {r}");
    }
    let mut v = valid();
    v["items"][0]["quantity"] = json!(-1);
    assert_eq!(rejection_of(&v).reason, Reason::SchemaViolation);
}

#[test]
fn a_bad_uuid_or_timestamp_is_a_schema_violation() {
    assert_eq!(
        rejection_of(&with("event_id", json!("nope"))).reason,
        Reason::SchemaViolation
    );
    let r = rejection_of(&with("occurred_at", json!("yesterday")));
    assert_eq!(r.reason, Reason::SchemaViolation, "{r}");
    assert!(r.detail.starts_with("occurred_at"), "{r}");
}

#[test]
fn version_must_be_positive() {
    let r = rejection_of(&with("version", json!(0)));
    assert_eq!(r.reason, Reason::InvalidValue);
    assert_eq!(r.stage(), Stage::Validate);
}

#[test]
fn currency_must_be_an_iso_4217_code() {
    for code in ["ZZZ", "eur", "EURO", ""] {
        let r = rejection_of(&with("currency", json!(code)));
        assert_eq!(r.reason, Reason::InvalidValue, "{code}: {r}");
    }
    assert!(decode_value(&with("currency", json!("JPY"))).is_ok_and(|e| e.currency == "JPY"));
}

#[test]
fn quantity_zero_or_too_large_is_invalid() {
    for q in [0, MAX_QUANTITY + 1] {
        let mut v = valid();
        v["items"][0]["quantity"] = json!(q);
        let r = rejection_of(&v);
        assert_eq!(r.reason, Reason::InvalidValue);
        assert!(r.detail.starts_with("items[0].quantity"), "{r}");
    }
}

#[test]
fn a_negative_price_is_invalid() {
    let mut v = valid();
    v["items"][1]["unit_price_minor"] = json!(-1);
    assert_eq!(rejection_of(&v).reason, Reason::InvalidValue);
}

#[test]
fn the_total_must_equal_the_sum_of_the_items() {
    let r = rejection_of(&with("total_minor", json!(2700)));
    assert_eq!(r.reason, Reason::InvalidValue);
    assert!(r.detail.contains("2699"), "{r}");
}

#[test]
fn a_total_that_overflows_is_invalid_not_a_panic() {
    let item =
        json!({"sku": "X", "quantity": MAX_QUANTITY, "unit_price_minor": MAX_UNIT_PRICE_MINOR});
    let mut v = valid();
    v["items"] = json!(vec![item; 1000]);
    v["total_minor"] = json!(0);
    let r = rejection_of(&v);
    assert_eq!(r.reason, Reason::InvalidValue);
    assert!(r.detail.contains("overflows"), "{r}");
}

#[test]
fn items_must_not_be_empty_or_huge() {
    let r = rejection_of(&with("items", json!([])));
    assert_eq!(r.reason, Reason::InvalidValue);
    let item = json!({"sku": "X", "quantity": 1, "unit_price_minor": 1});
    let mut v = with("items", json!(vec![item; MAX_ITEMS + 1]));
    v["total_minor"] = json!(MAX_ITEMS + 1);
    assert_eq!(rejection_of(&v).reason, Reason::InvalidValue);
}

#[test]
fn strings_must_be_non_empty_bounded_and_free_of_control_characters() {
    for bad in [
        "",
        "a\u{0}b",
        "tab\there",
        &"x".repeat(MAX_CUSTOMER_ID_CHARS + 1),
    ] {
        let r = rejection_of(&with("customer_id", json!(bad)));
        assert_eq!(r.reason, Reason::InvalidValue, "{bad:?}: {r}");
        assert!(
            !r.detail.contains('\u{0}'),
            "the reason must not carry raw NUL"
        );
    }
}

#[test]
fn unicode_and_sql_metacharacters_are_ordinary_text() {
    let v = with("customer_id", json!("Robert'); DROP TABLE orders;-- 🦀 ü"));
    assert_eq!(
        decode_value(&v).unwrap().customer_id,
        "Robert'); DROP TABLE orders;-- 🦀 ü"
    );
}

#[test]
fn a_cancelled_event_must_carry_the_cancelled_status() {
    let mut v = with("event_type", json!("cancelled"));
    assert_eq!(rejection_of(&v).reason, Reason::InvalidValue);
    v["status"] = json!("cancelled");
    assert!(decode_value(&v).is_ok());
}

#[test]
fn the_key_must_be_the_order_id() {
    let bytes = serde_json::to_vec(&valid()).unwrap();
    let other = b"11111111-2222-3333-4444-555555555555";
    for key in [None, Some(&other[..]), Some(b"\xff\xfe")] {
        let r = decode(key, Some(&bytes), bytes.len(), LIMIT).unwrap_err();
        assert_eq!(r.reason, Reason::KeyMismatch, "{key:?}: {r}");
    }
    assert!(decode(Some(ORDER.as_bytes()), Some(&bytes), bytes.len(), LIMIT).is_ok());
}

#[test]
fn a_key_spelling_the_order_id_any_other_way_than_lower_case_hyphenated_is_a_key_mismatch() {
    // Kafka partitions, and the worker routes, by the key's bytes: two spellings of one id could
    // put an order's events on two partitions, read by two pods that race on its row.
    let bytes = serde_json::to_vec(&valid()).unwrap();
    for key in [
        ORDER.to_uppercase(),
        ORDER.replace('-', ""),
        format!("{{{ORDER}}}"),
        format!("urn:uuid:{ORDER}"),
        format!(" {ORDER}"),
    ] {
        let r = decode(Some(key.as_bytes()), Some(&bytes), bytes.len(), LIMIT).unwrap_err();
        assert_eq!(r.reason, Reason::KeyMismatch, "{key}: {r}");
        assert!(r.detail.contains(ORDER), "{key}: {r}");
    }
    // The value may spell order_id as it likes: only the key decides the partition.
    let upper = with("order_id", json!(ORDER.to_uppercase()));
    assert!(decode_value(&upper).is_ok());
}

#[test]
fn an_event_round_trips_through_its_wire_form() {
    let event = decode_value(&valid()).unwrap();
    let bytes = event.to_json();
    let again = decode(Some(ORDER.as_bytes()), Some(&bytes), bytes.len(), LIMIT).unwrap();
    assert_eq!(event, again);
}

#[test]
fn every_reason_has_a_distinct_label() {
    let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), Reason::ALL.len());
}

#[test]
fn an_event_or_item_written_as_an_array_of_fields_is_a_schema_violation() {
    // serde would otherwise read a struct from its fields in declaration order.
    let event = decode_value(&valid()).unwrap();
    let as_array = json!([
        event.event_id, "updated", ORDER, 3, "2026-11-22T10:15:00Z", "cust-42", "paid", "EUR",
        [{"sku": "A", "quantity": 1, "unit_price_minor": 5}], 5
    ]);
    assert_eq!(rejection_of(&as_array).reason, Reason::SchemaViolation);
    let mut v = valid();
    v["items"] =
        json!([["BOOK-1", 2, 1250], {"sku": "PEN-9", "quantity": 1, "unit_price_minor": 199}]);
    let r = rejection_of(&v);
    assert_eq!(r.reason, Reason::SchemaViolation);
    assert!(r.detail.starts_with("items[0]"), "{r}");
}

proptest::proptest! {
    /// The hand-written items JSON is byte for byte what serde_json writes, for any SKU text
    /// (quotes, backslashes, non-ASCII, control characters a decoded event cannot hold anyway).
    #[test]
    fn the_items_json_is_what_serde_json_writes(
        items in proptest::collection::vec(
            ("\\PC{0,12}|[\"\\\\a\u{7f}\u{1}]{0,4}", proptest::num::u32::ANY, proptest::num::i64::ANY),
            1..6,
        )
    ) {
        let mut event = decode_value(&valid()).unwrap();
        event.items = items
            .into_iter()
            .map(|(sku, quantity, unit_price_minor)| LineItem { sku: sku.into(), quantity, unit_price_minor })
            .collect();
        proptest::prop_assert_eq!(event.items_json(), serde_json::to_string(&event.items).unwrap());
    }
}
