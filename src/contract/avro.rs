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
            Some(s) => Some(Box::new(shipping(&Record::of("shipping", s)?)?)),
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
mod tests;
