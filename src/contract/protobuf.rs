//! The contract's Protobuf form, `schema/order_event.proto`, mapped onto the same wire event the
//! JSON form produces, so that one set of rules judges both.
//!
//! Invariant: [`parse`] never panics and maps every field the proto defines; a field left at its
//! proto3 zero value where the JSON contract requires the field is refused as that field missing
//! (`schema_violation`), and bytes that are no OrderEvent at all as `invalid_protobuf`. What
//! passes is validated by `validate::event`, exactly as a JSON event.

use compact_str::CompactString;
use prost::Message;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    EventType, LineItem, OrderStatus, Reason, Rejection, SCHEMA_VERSION, Shipping, ShippingMethod,
    WireEvent, unsupported,
};

/// The types generated from `schema/order_event.proto` by build.rs.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod types {
    include!(concat!(env!("OUT_DIR"), "/order_worker.contract.rs"));
}

/// `schema/order_event.proto` compiled: a serialized `FileDescriptorSet` with its imports, for
/// clients that build the message types at run time (the tests' Python producer).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/order_event.fds"));

/// Reads one bare OrderEvent message (no framing).
pub(super) fn parse(bytes: &[u8]) -> Result<WireEvent, Rejection> {
    let event = types::OrderEvent::decode(bytes).map_err(|e| {
        Rejection::new(
            Reason::InvalidProtobuf,
            format!("payload is not a Protobuf OrderEvent: {e}"),
        )
    })?;
    let v2 = match event.schema_version {
        0 | 1 => false,
        v if u64::from(v) <= SCHEMA_VERSION => true,
        v => return Err(unsupported(&v.to_string())),
    };
    Ok(WireEvent {
        schema_version: Some(if v2 { 2 } else { 1 }),
        event_id: uuid("event_id", &event.event_id)?,
        event_type: event_type(event.event_type)?,
        order_id: uuid("order_id", &event.order_id)?,
        version: event.version,
        occurred_at: timestamp(event.occurred_at)?,
        customer_id: event.customer_id.into(),
        status: status(event.status)?,
        currency: event.currency.into(),
        items: event
            .items
            .into_iter()
            .map(|i| LineItem {
                sku: i.sku.into(),
                quantity: i.quantity,
                unit_price_minor: i.unit_price_minor,
            })
            .collect(),
        total_minor: event.total_minor,
        discount_minor: event.discount_minor.filter(|_| v2),
        shipping: match event.shipping.filter(|_| v2) {
            Some(s) => Some(Box::new(shipping(s)?)),
            None => None,
        },
    })
}

fn missing(field: &str) -> Rejection {
    Rejection::new(Reason::SchemaViolation, format!("{field}: missing field"))
}

fn unknown(field: &str, value: i32) -> Rejection {
    Rejection::new(
        Reason::SchemaViolation,
        format!("{field}: unknown enum value {value}"),
    )
}

fn uuid(field: &str, text: &str) -> Result<Uuid, Rejection> {
    if text.is_empty() {
        return Err(missing(field));
    }
    Uuid::parse_str(text)
        .map_err(|e| Rejection::new(Reason::SchemaViolation, format!("{field}: {e}")))
}

fn timestamp(t: Option<prost_types::Timestamp>) -> Result<OffsetDateTime, Rejection> {
    let t = t.ok_or_else(|| missing("occurred_at"))?;
    let nanos = (0..1_000_000_000)
        .contains(&t.nanos)
        .then(|| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos));
    nanos
        .and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(n).ok())
        .ok_or_else(|| {
            Rejection::new(
                Reason::SchemaViolation,
                format!(
                    "occurred_at: {}s {}ns is not a valid timestamp",
                    t.seconds, t.nanos
                ),
            )
        })
}

fn event_type(value: i32) -> Result<EventType, Rejection> {
    use types::EventType as T;
    match T::try_from(value) {
        Ok(T::Unspecified) => Err(missing("event_type")),
        Ok(T::Created) => Ok(EventType::Created),
        Ok(T::Updated) => Ok(EventType::Updated),
        Ok(T::Cancelled) => Ok(EventType::Cancelled),
        Err(_) => Err(unknown("event_type", value)),
    }
}

fn status(value: i32) -> Result<OrderStatus, Rejection> {
    use types::OrderStatus as S;
    match S::try_from(value) {
        Ok(S::Unspecified) => Err(missing("status")),
        Ok(S::Pending) => Ok(OrderStatus::Pending),
        Ok(S::Confirmed) => Ok(OrderStatus::Confirmed),
        Ok(S::Paid) => Ok(OrderStatus::Paid),
        Ok(S::Shipped) => Ok(OrderStatus::Shipped),
        Ok(S::Delivered) => Ok(OrderStatus::Delivered),
        Ok(S::Cancelled) => Ok(OrderStatus::Cancelled),
        Err(_) => Err(unknown("status", value)),
    }
}

fn shipping(s: types::Shipping) -> Result<Shipping, Rejection> {
    use types::ShippingMethod as M;
    let method = match M::try_from(s.method) {
        Ok(M::Unspecified) => return Err(missing("shipping.method")),
        Ok(M::Standard) => ShippingMethod::Standard,
        Ok(M::Express) => ShippingMethod::Express,
        Ok(M::Pickup) => ShippingMethod::Pickup,
        Err(_) => return Err(unknown("shipping.method", s.method)),
    };
    if s.country.is_empty() {
        return Err(missing("shipping.country"));
    }
    Ok(Shipping {
        method,
        country: s.country.into(),
        postal_code: s.postal_code.map(CompactString::from),
        city: s.city.map(CompactString::from),
    })
}

impl super::OrderEvent {
    /// This event as a bare Protobuf OrderEvent (`schema/order_event.proto`), `schema_version`
    /// set as [`to_json`](Self::to_json) sets it.
    pub fn to_protobuf(&self) -> Vec<u8> {
        use types::{EventType as T, OrderStatus as S, ShippingMethod as M};
        let seconds = self.occurred_at.unix_timestamp();
        types::OrderEvent {
            schema_version: self.schema_version() as u32,
            event_id: self.event_id.to_string(),
            event_type: match self.event_type {
                EventType::Created => T::Created,
                EventType::Updated => T::Updated,
                EventType::Cancelled => T::Cancelled,
            } as i32,
            order_id: self.order_id.to_string(),
            version: self.version,
            occurred_at: Some(prost_types::Timestamp {
                seconds,
                nanos: self.occurred_at.nanosecond() as i32,
            }),
            customer_id: self.customer_id.to_string(),
            status: match self.status {
                OrderStatus::Pending => S::Pending,
                OrderStatus::Confirmed => S::Confirmed,
                OrderStatus::Paid => S::Paid,
                OrderStatus::Shipped => S::Shipped,
                OrderStatus::Delivered => S::Delivered,
                OrderStatus::Cancelled => S::Cancelled,
            } as i32,
            currency: self.currency.to_string(),
            items: self
                .items
                .iter()
                .map(|i| types::LineItem {
                    sku: i.sku.to_string(),
                    quantity: i.quantity,
                    unit_price_minor: i.unit_price_minor,
                })
                .collect(),
            total_minor: self.total_minor,
            discount_minor: self.discount_minor,
            shipping: self.shipping.as_ref().map(|s| types::Shipping {
                method: match s.method {
                    ShippingMethod::Standard => M::Standard,
                    ShippingMethod::Express => M::Express,
                    ShippingMethod::Pickup => M::Pickup,
                } as i32,
                country: s.country.to_string(),
                postal_code: s.postal_code.as_ref().map(ToString::to_string),
                city: s.city.as_ref().map(ToString::to_string),
            }),
        }
        .encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{ORDER, valid};
    use super::super::{Hints, OrderEvent, decode_with};
    use super::*;

    const PROTOBUF: Option<&[u8]> = Some(b"application/x-protobuf");

    fn hints(content_type: Option<&[u8]>) -> Hints<'_> {
        Hints {
            content_type,
            writer: None,
        }
    }

    fn decoded(content_type: Option<&[u8]>, bytes: &[u8]) -> Result<OrderEvent, Rejection> {
        decode_with(
            hints(content_type),
            Some(ORDER.as_bytes()),
            Some(bytes),
            bytes.len(),
            1 << 20,
        )
    }

    fn json_event(v: &serde_json::Value) -> OrderEvent {
        decoded(None, &serde_json::to_vec(v).unwrap()).expect("a valid JSON event")
    }

    fn v2() -> OrderEvent {
        let mut v = valid();
        v["schema_version"] = json!(2);
        v["discount_minor"] = json!(699);
        v["total_minor"] = json!(2000);
        v["shipping"] = json!({"method": "pickup", "country": "JP", "city": "Kyoto"});
        json_event(&v)
    }

    /// Confluent's wire format with message indexes [0].
    fn framed(schema_id: u32, message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&schema_id.to_be_bytes());
        out.push(0);
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn an_event_in_protobuf_decodes_to_the_same_event_as_its_json() {
        for event in [json_event(&valid()), v2()] {
            let bytes = event.to_protobuf();
            assert_eq!(decoded(PROTOBUF, &bytes), Ok(event.clone()));
            assert_eq!(decoded(None, &framed(42, &bytes)), Ok(event.clone()));
            // Confluent's JSON Schema serializer: the header, no message indexes.
            let mut json = vec![0, 0, 0, 0, 43];
            json.extend_from_slice(&event.to_json());
            assert_eq!(decoded(None, &json), Ok(event));
        }
    }

    #[test]
    fn protobuf_without_the_header_or_framing_is_read_as_json_and_refused_as_such() {
        let bytes = json_event(&valid()).to_protobuf();
        assert_eq!(
            decoded(None, &bytes).unwrap_err().reason,
            Reason::InvalidJson
        );
    }

    #[test]
    fn fields_left_at_their_zero_value_are_missing_fields() {
        let r = decoded(PROTOBUF, b"").unwrap_err();
        assert_eq!(r.reason, Reason::SchemaViolation);
        assert_eq!(
            r.detail,
            "Protobuf (content-type header): event_id: missing field"
        );
        let mut event = types::OrderEvent::decode(&json_event(&valid()).to_protobuf()[..]).unwrap();
        event.status = 0;
        let r = decoded(PROTOBUF, &event.encode_to_vec()).unwrap_err();
        assert!(r.detail.ends_with("status: missing field"), "{r}");
        event.status = 99;
        let r = decoded(PROTOBUF, &event.encode_to_vec()).unwrap_err();
        assert!(r.detail.ends_with("status: unknown enum value 99"), "{r}");
        event.status = 3;
        event.occurred_at = None;
        let r = decoded(PROTOBUF, &event.encode_to_vec()).unwrap_err();
        assert!(r.detail.ends_with("occurred_at: missing field"), "{r}");
        event.occurred_at = Some(prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        });
        assert_eq!(
            decoded(PROTOBUF, &event.encode_to_vec())
                .unwrap_err()
                .reason,
            Reason::SchemaViolation
        );
    }

    #[test]
    fn bytes_that_are_no_order_event_are_invalid_protobuf_naming_how_they_were_told() {
        let r = decoded(PROTOBUF, b"\xff\xff\xff").unwrap_err();
        assert_eq!(r.reason, Reason::InvalidProtobuf);
        assert!(
            r.detail.starts_with("Protobuf (content-type header): "),
            "{r}"
        );
        let r = decoded(None, &framed(7, b"\x0a\x05ab")).unwrap_err();
        assert_eq!(r.reason, Reason::InvalidProtobuf);
        assert!(
            r.detail
                .starts_with("Protobuf (Confluent wire format, schema id 7): "),
            "{r}"
        );
        let r = decoded(None, b"\x00\x00\x01").unwrap_err();
        assert_eq!(r.reason, Reason::InvalidProtobuf);
        assert!(r.detail.contains("5-byte header"), "{r}");
    }

    #[test]
    fn the_rules_of_the_contract_judge_protobuf_events_too() {
        let mut event = json_event(&valid());
        event.total_minor += 1;
        let r = decoded(PROTOBUF, &event.to_protobuf()).unwrap_err();
        assert_eq!(r.reason, Reason::InvalidValue);
        assert!(r.detail.contains("does not equal the sum"), "{r}");
        let other_key = decode_with(
            hints(PROTOBUF),
            Some(b"not-the-order"),
            Some(&json_event(&valid()).to_protobuf()),
            10,
            1 << 20,
        );
        assert_eq!(other_key.unwrap_err().reason, Reason::KeyMismatch);
    }

    #[test]
    fn a_v1_protobuf_event_ignores_v2_fields_and_a_newer_version_is_unsupported() {
        let mut event = types::OrderEvent::decode(&v2().to_protobuf()[..]).unwrap();
        event.schema_version = 0;
        let r = decoded(PROTOBUF, &event.encode_to_vec()).unwrap_err();
        assert!(
            r.detail
                .contains("does not equal the sum of the items, 2699"),
            "{r}"
        );
        event.schema_version = 3;
        let r = decoded(PROTOBUF, &event.encode_to_vec()).unwrap_err();
        assert_eq!(r.reason, Reason::UnsupportedSchemaVersion);
    }
}
