use serde_json::{Value, json};

use super::tests::{decode_value, rejection_of, valid, with};
use super::*;

/// The v1 event of `tests::valid` (items sum to 2699) as v2, with both of v2's parts.
fn valid_v2() -> Value {
    let mut v = valid();
    v["schema_version"] = json!(2);
    v["discount_minor"] = json!(200);
    v["total_minor"] = json!(2499);
    v["shipping"] = json!({
        "method": "express", "country": "DE", "postal_code": "10115", "city": "Berlin"
    });
    v
}

fn v2_with(field: &str, new: Value) -> Value {
    let mut v = valid_v2();
    v[field] = new;
    v
}

#[test]
fn a_v2_event_decodes_with_its_discount_and_shipping() {
    let event = decode_value(&valid_v2()).unwrap();
    assert_eq!(event.discount_minor, Some(200));
    assert_eq!(event.total_minor, 2499);
    let shipping = event.shipping.as_ref().unwrap();
    assert_eq!(shipping.method, ShippingMethod::Express);
    assert_eq!(
        (shipping.country.as_str(), shipping.city.as_deref()),
        ("DE", Some("Berlin"))
    );
    assert_eq!(event.schema_version(), 2);
}

#[test]
fn a_v2_event_may_leave_out_both_of_its_parts_and_is_then_a_v1_event() {
    let event = decode_value(&with("schema_version", json!(2))).unwrap();
    assert_eq!((event.discount_minor, &event.shipping), (None, &None));
    assert_eq!(event.schema_version(), 1);
}

#[test]
fn a_v1_event_ignores_the_v2_fields_like_any_unknown_field() {
    let mut v = valid_v2();
    v["schema_version"] = json!(1);
    v["total_minor"] = json!(2699);
    let event = decode_value(&v).unwrap();
    assert_eq!((event.discount_minor, &event.shipping), (None, &None));
    // Without schema_version 2 the discount is not subtracted: the v1 total rule names the sum.
    v["total_minor"] = json!(2499);
    let r = rejection_of(&v);
    assert_eq!(r.reason, Reason::InvalidValue);
    assert!(r.detail.contains("sum of the items, 2699"), "{r}");
}

#[test]
fn the_total_of_a_v2_event_is_the_sum_less_the_discount() {
    let r = rejection_of(&v2_with("total_minor", json!(2699)));
    assert_eq!(r.reason, Reason::InvalidValue);
    assert!(r.detail.contains("2699 - 200 = 2499"), "{r}");
    let mut whole = v2_with("discount_minor", json!(2699));
    whole["total_minor"] = json!(0);
    assert_eq!(decode_value(&whole).unwrap().total_minor, 0);
}

#[test]
fn a_discount_below_zero_or_above_the_sum_is_invalid() {
    for discount in [-1, 2700] {
        let mut v = v2_with("discount_minor", json!(discount));
        v["total_minor"] = json!(2699 - discount);
        let r = rejection_of(&v);
        assert_eq!(r.reason, Reason::InvalidValue, "{discount}");
        assert!(r.detail.contains("discount_minor must be 0 to"), "{r}");
    }
}

#[test]
fn shipping_needs_a_method_and_an_iso_country_in_upper_case() {
    for country in ["de", "XX", "DEU", "", "276"] {
        let mut v = valid_v2();
        v["shipping"]["country"] = json!(country);
        let r = rejection_of(&v);
        assert_eq!(r.reason, Reason::InvalidValue, "{country}");
        assert!(r.detail.contains("ISO 3166-1"), "{r}");
    }
    let mut v = valid_v2();
    v["shipping"].as_object_mut().unwrap().remove("method");
    let r = rejection_of(&v);
    assert_eq!(r.reason, Reason::SchemaViolation);
    assert!(r.detail.starts_with("shipping"), "{r}");
    v["shipping"]["method"] = json!("drone");
    assert_eq!(rejection_of(&v).reason, Reason::SchemaViolation);
}

#[test]
fn shipping_texts_are_bounded_and_free_of_control_characters() {
    let mut v = valid_v2();
    v["shipping"]["postal_code"] = json!("1".repeat(MAX_POSTAL_CODE_CHARS + 1));
    assert!(rejection_of(&v).detail.contains("shipping.postal_code"));
    let mut v = valid_v2();
    v["shipping"]["city"] = json!("Ber\u{7}lin");
    assert!(rejection_of(&v).detail.contains("shipping.city"));
    let mut v = valid_v2();
    v["shipping"]["city"] = json!("é".repeat(MAX_CITY_CHARS));
    assert!(decode_value(&v).is_ok());
}

#[test]
fn shipping_is_an_object_or_null_never_an_array_of_its_fields() {
    let r = rejection_of(&v2_with("shipping", json!(["express", "DE"])));
    assert_eq!(r.reason, Reason::SchemaViolation);
    let event = decode_value(&v2_with("shipping", Value::Null)).unwrap();
    assert_eq!(event.shipping, None);
}

#[test]
fn a_v2_event_round_trips_through_its_wire_form() {
    let event = decode_value(&valid_v2()).unwrap();
    let json = event.to_json();
    let wire: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(wire["schema_version"], 2);
    let again = decode(Some(ORDER_KEY), Some(&json), json.len(), 1 << 20).unwrap();
    assert_eq!(again, event);
}

#[test]
fn a_version_above_the_newest_is_still_unsupported_and_says_which_are_read() {
    let r = rejection_of(&with("schema_version", json!(3)));
    assert_eq!(r.reason, Reason::UnsupportedSchemaVersion);
    assert!(r.detail.contains("reads versions 1 to 2"), "{r}");
    assert_eq!(
        rejection_of(&with("schema_version", json!(0))).reason,
        Reason::UnsupportedSchemaVersion
    );
}

const ORDER_KEY: &[u8] = super::tests::ORDER.as_bytes();
