//! Event contracts v1 and v2: the only shapes of message this worker applies.
//!
//! Invariant: [`decode`] is total. Every possible Kafka message (any bytes, any key, no value)
//! becomes either an [`OrderEvent`] whose every rule of the contract holds, or a [`Rejection`]
//! naming the stage and reason. It never panics and never allocates more than the payload it was
//! given plus the event it returns.
//!
//! The contract is published for producers in `schema/order-event.v1.schema.json`,
//! `schema/order-event.v2.schema.json` and docs/contract.md. Each event is a full snapshot of the
//! order at `version`, not a delta: that is what lets the worker apply events idempotently and in
//! any order (the highest version wins). v2 adds two optional parts to v1 and changes no v1 rule,
//! so both are read side by side and a producer moves to v2 without a flag day.

mod avro;
mod currency;
pub mod headers;
mod json;
mod object_only;
pub mod protobuf;
mod rejection;
mod shipping;
mod validate;
pub mod wire_format;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod v2_tests;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use json::unsupported;

pub use headers::Headers;
pub use rejection::{DeadLetterRecord, Reason, Rejection, Stage};
pub use shipping::{MAX_CITY_CHARS, MAX_POSTAL_CODE_CHARS, Shipping, ShippingMethod};
pub use validate::{
    MAX_CUSTOMER_ID_CHARS, MAX_ITEMS, MAX_QUANTITY, MAX_SKU_CHARS, MAX_UNIT_PRICE_MINOR,
};
pub use wire_format::{CONTENT_TYPE_HEADER, Encoding, WriterSchema};

/// The newest schema version this build reads; it reads every version from 1 up to it. Events
/// may omit `schema_version` (it means 1).
pub const SCHEMA_VERSION: u64 = 2;

/// What happened to the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Created,
    Updated,
    Cancelled,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The order's lifecycle state after the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        Self::Pending,
        Self::Confirmed,
        Self::Paid,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One order line. Amounts are integers in the currency's minor unit (cents for EUR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub sku: CompactString,
    pub quantity: u32,
    pub unit_price_minor: i64,
}

/// A validated order event (v1, or v2 with its optional parts). Only [`decode`] builds one from
/// the wire, so holding one means every rule of the contract held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderEvent {
    pub event_id: Uuid,
    pub event_type: EventType,
    pub order_id: Uuid,
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub customer_id: CompactString,
    pub status: OrderStatus,
    pub currency: CompactString,
    pub items: Vec<LineItem>,
    pub total_minor: i64,
    /// v2: subtracted from the items' sum to give `total_minor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_minor: Option<i64>,
    /// v2: where and how the order ships. Boxed: a backlog holds thousands of decoded events in
    /// flight, and most have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipping: Option<Box<Shipping>>,
}

impl OrderEvent {
    /// The oldest contract version that carries everything this event holds: 1 unless it has a
    /// v2 part.
    pub fn schema_version(&self) -> u64 {
        if self.discount_minor.is_some() || self.shipping.is_some() {
            2
        } else {
            1
        }
    }

    /// The JSON this event is published as (its [`schema_version`](Self::schema_version)'s wire
    /// form, `schema_version` included).
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Wire<'a> {
            schema_version: u64,
            #[serde(flatten)]
            event: &'a OrderEvent,
        }
        serde_json::to_vec(&Wire {
            schema_version: self.schema_version(),
            event: self,
        })
        .expect("an OrderEvent always serializes")
    }

    /// The items as the JSON stored in `orders.items`.
    pub fn items_json(&self) -> String {
        let mut json = Vec::with_capacity(64 * self.items.len());
        self.write_items_json(&mut json);
        String::from_utf8(json).expect("serde_json writes UTF-8")
    }

    /// Appends [`items_json`](Self::items_json) to `out` (a batch writes all of its rows' into
    /// one buffer).
    ///
    /// Written by hand rather than with serde_json's serializer, which costs ~5% of the runtime
    /// threads' CPU in a drain (docs/performance.md#decisions); the output is the same bytes (a
    /// property test compares them).
    pub fn write_items_json(&self, out: &mut Vec<u8>) {
        let mut numbers = itoa::Buffer::new();
        out.push(b'[');
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"sku":"#);
            // Validation refused control characters, so only a quote or a backslash needs an
            // escape; serde_json writes those (and anything else) as it always did.
            if item
                .sku
                .bytes()
                .any(|b| b == b'"' || b == b'\\' || b < 0x20)
            {
                serde_json::to_writer(&mut *out, item.sku.as_str()).expect("a str serializes");
            } else {
                out.push(b'"');
                out.extend_from_slice(item.sku.as_bytes());
                out.push(b'"');
            }
            out.extend_from_slice(br#","quantity":"#);
            out.extend_from_slice(numbers.format(item.quantity).as_bytes());
            out.extend_from_slice(br#","unit_price_minor":"#);
            out.extend_from_slice(numbers.format(item.unit_price_minor).as_bytes());
            out.push(b'}');
        }
        out.push(b']');
    }
}

/// The wire form: types only. Rules about values live in `validate`.
#[derive(Deserialize)]
struct WireEvent {
    #[serde(default)]
    schema_version: Option<u64>,
    event_id: Uuid,
    event_type: EventType,
    order_id: Uuid,
    version: i64,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    customer_id: CompactString,
    status: OrderStatus,
    currency: CompactString,
    #[serde(deserialize_with = "object_only::vec_of_objects")]
    items: Vec<LineItem>,
    total_minor: i64,
    /// v2 only: a v1 event ignores it, as it ignores any field it does not define.
    #[serde(default)]
    discount_minor: Option<i64>,
    /// v2 only, like `discount_minor`.
    #[serde(default, deserialize_with = "object_only::optional_object")]
    shipping: Option<Box<Shipping>>,
}

/// What the worker knows of a message's encoding besides its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hints<'a> {
    /// The message's `content-type` header: it may name the value Protobuf.
    pub content_type: Option<&'a [u8]>,
    /// The writer schema a Confluent-framed value's id names, resolved through the schema
    /// registry; without one a framed value is read as JSON or Protobuf by its first bytes.
    pub writer: Option<&'a WriterSchema>,
}

/// Turns one Kafka message without headers into a valid event or a precise rejection.
///
/// `payload_size` is the size of the message value as the broker delivered it; `payload` may be a
/// prefix of it when the value was larger than `max_payload_bytes` (the consumer never copies more).
pub fn decode(
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    payload_size: usize,
    max_payload_bytes: usize,
) -> Result<OrderEvent, Rejection> {
    decode_with(
        Hints::default(),
        key,
        payload,
        payload_size,
        max_payload_bytes,
    )
}

/// [`decode`] given what else is known of the message ([`Hints`]).
pub fn decode_with(
    hints: Hints<'_>,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    payload_size: usize,
    max_payload_bytes: usize,
) -> Result<OrderEvent, Rejection> {
    let event = decode_value_with(hints, payload, payload_size, max_payload_bytes)?;
    validate::key(key, event.order_id)?;
    Ok(event)
}

/// [`decode`] without the key: every rule of the value. `order-worker validate` judges an event
/// read without a key (a file, a line) with it, as if keyed by its own order id.
pub fn decode_value(
    payload: Option<&[u8]>,
    payload_size: usize,
    max_payload_bytes: usize,
) -> Result<OrderEvent, Rejection> {
    decode_value_with(Hints::default(), payload, payload_size, max_payload_bytes)
}

/// [`decode_value`] given [`Hints`]. A value in any encoding but plain JSON is judged by the
/// same rules, and its rejection names the encoding detected.
pub fn decode_value_with(
    hints: Hints<'_>,
    payload: Option<&[u8]>,
    payload_size: usize,
    max_payload_bytes: usize,
) -> Result<OrderEvent, Rejection> {
    let Some(payload) = payload else {
        return Err(Rejection::new(
            Reason::Tombstone,
            "message has no value (tombstone); contract v1 has no delete, publish an event with \
             event_type \"cancelled\" instead",
        ));
    };
    if payload_size > max_payload_bytes {
        return Err(Rejection::new(
            Reason::PayloadTooLarge,
            format!("payload is {payload_size} bytes, the limit is {max_payload_bytes} bytes"),
        ));
    }
    let encoding = wire_format::detect(hints.content_type, payload)
        .map_err(|bad| Rejection::new(Reason::InvalidProtobuf, format!("payload {}", bad.0)))?;
    let (told, wire) = match encoding {
        Encoding::Json => return validate::event(json::parse_payload(payload)?),
        Encoding::Protobuf => (Told::Header, protobuf::parse(payload)),
        Encoding::Framed { schema_id } => framed(hints.writer, schema_id, payload),
    };
    // The encoding is named in the rejection only: a valid event allocates nothing for it.
    wire.and_then(validate::event)
        .map_err(|r| Rejection::new(r.reason, format!("{told}: {}", r.detail)))
}

/// How a value's encoding was told, for a rejection's message.
enum Told {
    Header,
    Framed {
        body: Option<wire_format::Body>,
        schema_id: u32,
    },
}

impl std::fmt::Display for Told {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Header => f.write_str("Protobuf (content-type header)"),
            Self::Framed { body, schema_id } => {
                if let Some(body) = body {
                    write!(f, "{} ", body.as_str())?;
                }
                write!(f, "(Confluent wire format, schema id {schema_id})")
            }
        }
    }
}

/// A Confluent-framed value: how it was told (for messages) and its wire event.
fn framed(
    writer: Option<&WriterSchema>,
    schema_id: u32,
    payload: &[u8],
) -> (Told, Result<WireEvent, Rejection>) {
    use wire_format::Body;
    let body = match writer {
        None => wire_format::framed_body(payload),
        Some(WriterSchema::Avro(_)) => Body::Avro,
        Some(WriterSchema::Protobuf) => Body::Protobuf,
        Some(WriterSchema::Json) => Body::Json,
        Some(WriterSchema::Unreadable(why)) => {
            return (
                Told::Framed {
                    body: None,
                    schema_id,
                },
                Err(Rejection::new(
                    Reason::SchemaViolation,
                    format!("the registry's schema {schema_id} cannot be read: {why}"),
                )),
            );
        }
    };
    let told = Told::Framed {
        body: Some(body),
        schema_id,
    };
    let bad_frame = |bad: wire_format::BadFrame| {
        let reason = match body {
            Body::Avro => Reason::InvalidAvro,
            Body::Json | Body::Protobuf => Reason::InvalidProtobuf,
        };
        Rejection::new(reason, format!("payload {}", bad.0))
    };
    let wire = wire_format::framed_message(payload, body)
        .map_err(bad_frame)
        .and_then(|message| match writer {
            Some(WriterSchema::Avro(schema)) => avro::parse(schema, message),
            _ if body == Body::Json => json::parse_payload(message),
            _ => protobuf::parse(message),
        });
    (told, wire)
}
