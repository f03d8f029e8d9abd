use apache_avro::types::Value;
use serde_json::json;

use super::super::tests::{ORDER, valid};
use super::super::{
    Hints, OrderEvent, OrderStatus, Reason, Rejection, WriterSchema, decode, decode_with,
};

const AVSC: &str = include_str!("../../../schema/order_event.avsc");

fn json_event(v: &serde_json::Value) -> OrderEvent {
    let bytes = serde_json::to_vec(v).unwrap();
    decode(Some(ORDER.as_bytes()), Some(&bytes), bytes.len(), 1 << 20).unwrap()
}

fn v2() -> OrderEvent {
    let mut v = valid();
    v["schema_version"] = json!(2);
    v["discount_minor"] = json!(99);
    v["total_minor"] = json!(2600);
    v["shipping"] = json!({"method": "standard", "country": "IT", "postal_code": "00184"});
    json_event(&v)
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn optional(v: Option<Value>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(v)),
    }
}

/// An enum value: Avro writes the symbol's index in the writer's list.
fn symbol(s: &str, symbols: &[&str]) -> Value {
    let index = symbols
        .iter()
        .position(|x| *x == s)
        .expect("a symbol of the enum");
    Value::Enum(index as u32, s.to_owned())
}

/// `e` as a record of `schema/order_event.avsc`, as a producer's serializer builds it.
fn record(e: &OrderEvent) -> Vec<(String, Value)> {
    let items = e
        .items
        .iter()
        .map(|i| {
            Value::Record(vec![
                ("sku".into(), text(&i.sku)),
                ("quantity".into(), Value::Long(i64::from(i.quantity))),
                ("unit_price_minor".into(), Value::Long(i.unit_price_minor)),
            ])
        })
        .collect();
    let shipping = e.shipping.as_ref().map(|s| {
        Value::Record(vec![
            (
                "method".into(),
                symbol(
                    serde_json::to_value(s.method).unwrap().as_str().unwrap(),
                    &["standard", "express", "pickup"],
                ),
            ),
            ("country".into(), text(&s.country)),
            (
                "postal_code".into(),
                optional(s.postal_code.as_deref().map(text)),
            ),
            ("city".into(), optional(s.city.as_deref().map(text))),
        ])
    });
    vec![
        (
            "schema_version".into(),
            Value::Int(e.schema_version() as i32),
        ),
        ("event_id".into(), Value::Uuid(e.event_id)),
        (
            "event_type".into(),
            symbol(e.event_type.as_str(), &["created", "updated", "cancelled"]),
        ),
        ("order_id".into(), Value::Uuid(e.order_id)),
        ("version".into(), Value::Long(e.version)),
        (
            "occurred_at".into(),
            Value::TimestampMicros((e.occurred_at.unix_timestamp_nanos() / 1_000) as i64),
        ),
        ("customer_id".into(), text(&e.customer_id)),
        (
            "status".into(),
            symbol(
                e.status.as_str(),
                &OrderStatus::ALL.map(OrderStatus::as_str),
            ),
        ),
        ("currency".into(), text(&e.currency)),
        ("items".into(), Value::Array(items)),
        ("total_minor".into(), Value::Long(e.total_minor)),
        (
            "discount_minor".into(),
            optional(e.discount_minor.map(Value::Long)),
        ),
        ("shipping".into(), optional(shipping)),
    ]
}

/// `fields` written with `schema`, in Confluent's wire format under schema id 11.
fn framed(schema: &apache_avro::Schema, fields: Vec<(String, Value)>) -> Vec<u8> {
    let datum = apache_avro::to_avro_datum(schema, Value::Record(fields)).expect("encodes");
    let mut out = vec![0, 0, 0, 0, 11];
    out.extend_from_slice(&datum);
    out
}

fn read(writer: &WriterSchema, bytes: &[u8]) -> Result<OrderEvent, Rejection> {
    let hints = Hints {
        content_type: None,
        writer: Some(writer),
    };
    decode_with(
        hints,
        Some(ORDER.as_bytes()),
        Some(bytes),
        bytes.len(),
        1 << 20,
    )
}

fn avsc() -> (WriterSchema, apache_avro::Schema) {
    let WriterSchema::Avro(schema) = WriterSchema::parse("AVRO", AVSC) else {
        panic!("schema/order_event.avsc parses");
    };
    (WriterSchema::Avro(schema.clone()), *schema)
}

#[test]
fn an_avro_event_decodes_to_the_same_event_as_its_json() {
    let (writer, schema) = avsc();
    for event in [json_event(&valid()), v2()] {
        assert_eq!(read(&writer, &framed(&schema, record(&event))), Ok(event));
    }
}

#[test]
fn a_writer_schema_with_more_fields_in_another_order_reads_the_same() {
    let mut schema: serde_json::Value = serde_json::from_str(AVSC).unwrap();
    let fields = schema["fields"].as_array_mut().unwrap();
    fields.reverse();
    fields.push(json!({"name": "channel", "type": "string"}));
    let changed = schema.to_string();
    let WriterSchema::Avro(parsed) = WriterSchema::parse("AVRO", &changed) else {
        panic!("the changed schema parses");
    };
    let event = v2();
    let mut fields = record(&event);
    fields.reverse();
    fields.push(("channel".into(), text("web")));
    let bytes = framed(&parsed, fields);
    assert_eq!(read(&WriterSchema::Avro(parsed), &bytes), Ok(event));
}

#[test]
fn a_writer_schema_without_a_required_field_is_a_schema_violation_naming_it() {
    let mut schema: serde_json::Value = serde_json::from_str(AVSC).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "customer_id");
    let WriterSchema::Avro(parsed) = WriterSchema::parse("AVRO", &schema.to_string()) else {
        panic!("parses");
    };
    let fields = record(&json_event(&valid()))
        .into_iter()
        .filter(|(name, _)| name != "customer_id")
        .collect();
    let bytes = framed(&parsed, fields);
    let r = read(&WriterSchema::Avro(parsed), &bytes).unwrap_err();
    assert_eq!(r.reason, Reason::SchemaViolation);
    assert_eq!(
        r.detail,
        "Avro (Confluent wire format, schema id 11): customer_id: missing field"
    );
}

#[test]
fn bytes_the_writer_schema_cannot_read_are_invalid_avro() {
    let (writer, schema) = avsc();
    let mut bytes = framed(&schema, record(&json_event(&valid())));
    bytes.truncate(20);
    assert_eq!(
        read(&writer, &bytes).unwrap_err().reason,
        Reason::InvalidAvro
    );
    let mut longer = framed(&schema, record(&json_event(&valid())));
    longer.push(0);
    let r = read(&writer, &longer).unwrap_err();
    assert_eq!(r.reason, Reason::InvalidAvro);
    assert!(r.detail.ends_with("1 bytes follow the datum"), "{r}");
}

#[test]
fn the_rules_of_the_contract_judge_avro_events_too() {
    let (writer, schema) = avsc();
    let mut event = json_event(&valid());
    event.total_minor = 1;
    let r = read(&writer, &framed(&schema, record(&event))).unwrap_err();
    assert_eq!(r.reason, Reason::InvalidValue);
    let unreadable = WriterSchema::parse("XML", "<order/>");
    let r = read(&unreadable, &framed(&schema, record(&json_event(&valid())))).unwrap_err();
    assert_eq!(r.reason, Reason::SchemaViolation);
    assert!(r.detail.contains("schema 11 cannot be read"), "{r}");
}
