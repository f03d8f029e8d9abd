//! The contract in Avro: a datum written with the producer's schema (from the registry) mapped
//! onto the same wire event the JSON form produces, so that one set of rules judges both.
//!
//! Invariant: fields are taken by name from the writer's record, so a writer schema with more
//! fields, or its fields in another order, reads the same (`schema/order_event.avsc` is the one
//! producers start from; any schema with these names and types works). An unknown field is
//! ignored, a missing or mistyped required one is a `schema_violation` naming its path, bytes
//! the writer schema cannot read are `invalid_avro`. Nothing here panics on any input.

use apache_avro::Schema;
use apache_avro::types::Value;
use compact_str::CompactString;
use serde::Deserialize;
use serde::de::IntoDeserializer;
use serde::de::value::{Error as ValueError, StrDeserializer};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{LineItem, Reason, Rejection, SCHEMA_VERSION, Shipping, WireEvent, unsupported};

/// Reads one Avro datum written with `writer`.
pub(super) fn parse(writer: &Schema, datum: &[u8]) -> Result<WireEvent, Rejection> {
    let mut reader = datum;
    let value = apache_avro::from_avro_datum(writer, &mut reader, None).map_err(|e| {
        Rejection::new(
            Reason::InvalidAvro,
            format!("payload is not a datum of the writer's schema: {e}"),
        )
    })?;
    if !reader.is_empty() {
        return Err(Rejection::new(
            Reason::InvalidAvro,
            format!("{} bytes follow the datum", reader.len()),
        ));
    }
    let event = Record::of("", &value)?;
    let v2 = match event.optional_long("schema_version")? {
        None | Some(1) => false,
        Some(v) if (2..=SCHEMA_VERSION as i64).contains(&v) => true,
        Some(v) => return Err(unsupported(&v.to_string())),
    };
    let items = match event.required("items")? {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| line_item(&Record::of(&format!("items[{i}]"), item)?))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(event.wrong("items", "an array")),
    };
    Ok(WireEvent {
        schema_version: Some(if v2 { 2 } else { 1 }),
        event_id: event.uuid("event_id")?,
        event_type: event.symbol("event_type")?,
        order_id: event.uuid("order_id")?,
        version: event.long("version")?,
        occurred_at: event.timestamp("occurred_at")?,
        customer_id: event.string("customer_id")?,
        status: event.symbol("status")?,
        currency: event.string("currency")?,
        items,
        total_minor: event.long("total_minor")?,
        discount_minor: if v2 {
            event.optional_long("discount_minor")?
        } else {
            None
        },
        shipping: match event.optional("shipping").filter(|_| v2) {
            Some(s) => Some(shipping(&Record::of("shipping", s)?)?),
            None => None,
        },
    })
}

fn line_item(item: &Record<'_>) -> Result<LineItem, Rejection> {
    let quantity = item.long("quantity")?;
    Ok(LineItem {
        sku: item.string("sku")?,
        quantity: u32::try_from(quantity)
            .map_err(|_| item.wrong("quantity", "a u32 (0 to 4294967295)"))?,
        unit_price_minor: item.long("unit_price_minor")?,
    })
}

fn shipping(s: &Record<'_>) -> Result<Shipping, Rejection> {
    Ok(Shipping {
        method: s.symbol("method")?,
        country: s.string("country")?,
        postal_code: s.optional_string("postal_code")?,
        city: s.optional_string("city")?,
    })
}

/// A record's fields, with the path it sits at for messages.
struct Record<'a> {
    path: String,
    fields: &'a [(String, Value)],
}

impl<'a> Record<'a> {
    fn of(path: &str, value: &'a Value) -> Result<Self, Rejection> {
        match unwrap_union(value) {
            Value::Record(fields) => Ok(Self {
                path: path.to_owned(),
                fields,
            }),
            _ => Err(Rejection::new(
                Reason::SchemaViolation,
                format!(
                    "{}: expected a record",
                    if path.is_empty() { "." } else { path }
                ),
            )),
        }
    }

    fn at(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    fn wrong(&self, field: &str, expected: &str) -> Rejection {
        Rejection::new(
            Reason::SchemaViolation,
            format!("{}: expected {expected}", self.at(field)),
        )
    }

    /// The field's value, unions unwrapped; `None` when absent or null.
    fn optional(&self, field: &str) -> Option<&'a Value> {
        self.fields
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, v)| unwrap_union(v))
            .filter(|v| !matches!(v, Value::Null))
    }

    fn required(&self, field: &str) -> Result<&'a Value, Rejection> {
        self.optional(field).ok_or_else(|| {
            Rejection::new(
                Reason::SchemaViolation,
                format!("{}: missing field", self.at(field)),
            )
        })
    }

    fn optional_long(&self, field: &str) -> Result<Option<i64>, Rejection> {
        match self.optional(field) {
            None => Ok(None),
            Some(Value::Long(n)) => Ok(Some(*n)),
            Some(Value::Int(n)) => Ok(Some(i64::from(*n))),
            Some(_) => Err(self.wrong(field, "an int or a long")),
        }
    }

    fn long(&self, field: &str) -> Result<i64, Rejection> {
        self.required(field)?;
        Ok(self.optional_long(field)?.expect("required"))
    }

    fn optional_string(&self, field: &str) -> Result<Option<CompactString>, Rejection> {
        match self.optional(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str().into())),
            Some(_) => Err(self.wrong(field, "a string")),
        }
    }

    fn string(&self, field: &str) -> Result<CompactString, Rejection> {
        self.required(field)?;
        Ok(self.optional_string(field)?.expect("required"))
    }

    fn uuid(&self, field: &str) -> Result<Uuid, Rejection> {
        match self.required(field)? {
            Value::Uuid(u) => Ok(*u),
            Value::String(s) => Uuid::parse_str(s).map_err(|e| {
                Rejection::new(Reason::SchemaViolation, format!("{}: {e}", self.at(field)))
            }),
            _ => Err(self.wrong(field, "a uuid or a string")),
        }
    }

    /// An enum symbol (or a string) read as the contract's enum of the same spelling.
    fn symbol<T: for<'de> Deserialize<'de>>(&self, field: &str) -> Result<T, Rejection> {
        let text = match self.required(field)? {
            Value::Enum(_, symbol) => symbol.as_str(),
            Value::String(s) => s.as_str(),
            _ => return Err(self.wrong(field, "an enum or a string")),
        };
        let de: StrDeserializer<'_, ValueError> = text.into_deserializer();
        T::deserialize(de).map_err(|e| {
            Rejection::new(Reason::SchemaViolation, format!("{}: {e}", self.at(field)))
        })
    }

    /// A timestamp-millis or -micros, or an RFC 3339 string as in the JSON contract.
    fn timestamp(&self, field: &str) -> Result<OffsetDateTime, Rejection> {
        let nanos = match self.required(field)? {
            Value::TimestampMillis(ms) => i128::from(*ms) * 1_000_000,
            Value::TimestampMicros(us) => i128::from(*us) * 1_000,
            Value::TimestampNanos(ns) => i128::from(*ns),
            Value::String(s) => {
                return OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        Rejection::new(Reason::SchemaViolation, format!("{}: {e}", self.at(field)))
                    });
            }
            _ => {
                return Err(self.wrong(
                    field,
                    "a timestamp-millis, timestamp-micros or an RFC 3339 string",
                ));
            }
        };
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .map_err(|_| self.wrong(field, "a timestamp within years -9999 to 9999"))
    }
}

fn unwrap_union(value: &Value) -> &Value {
    match value {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;
    use serde_json::json;

    use super::super::tests::{ORDER, valid};
    use super::super::{
        Hints, OrderEvent, OrderStatus, Reason, Rejection, WriterSchema, decode, decode_with,
    };

    const AVSC: &str = include_str!("../../schema/order_event.avsc");

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
        let text = schema.to_string();
        let WriterSchema::Avro(parsed) = WriterSchema::parse("AVRO", &text) else {
            panic!("the changed schema parses");
        };
        let event = v2();
        let mut fields = record(&event);
        fields.reverse();
        fields.push(("channel".into(), text_value("web")));
        let bytes = framed(&parsed, fields);
        assert_eq!(read(&WriterSchema::Avro(parsed), &bytes), Ok(event));
    }

    fn text_value(s: &str) -> Value {
        text(s)
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
}
