//! Which encoding a message's value is in, decided per message from its first bytes and its
//! `content-type` header.
//!
//! Invariant: detection reads at most the framing (a few bytes) and never fails: an unframed
//! value without a Protobuf content type is JSON, as every producer of contract v1 writes it, so
//! adding Protobuf changes nothing for them. No JSON text starts with byte 0, so Confluent's
//! framing cannot be mistaken for JSON, nor JSON for it.

/// The header a producer names its value's media type in.
pub const CONTENT_TYPE_HEADER: &str = "content-type";

/// Media types read as a bare Protobuf OrderEvent (the first is the one to use).
const PROTOBUF_TYPES: [&str; 3] = [
    "application/x-protobuf",
    "application/protobuf",
    "application/vnd.google.protobuf",
];

/// Confluent's wire format: byte 0, then the schema id (4 bytes, big-endian).
const MAGIC: u8 = 0;
const FRAME_HEADER: usize = 5;
/// Deepest nesting of message indexes read; the contract's OrderEvent is at depth 1.
const MAX_MESSAGE_INDEXES: u64 = 16;

/// How the value is encoded, as far as the message itself tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JSON without framing: the default.
    Json,
    /// A bare Protobuf message, named by the content-type header.
    Protobuf,
    /// Confluent's wire format; what follows the header is told by the writer schema the id
    /// names in the registry, or without one by [`framed_body`].
    Framed { schema_id: u32 },
}

/// What a Confluent-framed value holds after its 5-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Json,
    Protobuf,
    Avro,
}

impl Body {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::Protobuf => "Protobuf",
            Self::Avro => "Avro",
        }
    }
}

/// A writer schema from a schema registry, as the decoder uses it.
#[derive(Debug, Clone)]
pub enum WriterSchema {
    Avro(Box<apache_avro::Schema>),
    /// Read with the contract's own types: Protobuf carries field numbers, which the contract's
    /// `.proto` fixes.
    Protobuf,
    Json,
    /// A schema this worker cannot read (another type, or an Avro schema that does not parse):
    /// every message written with it is dead-lettered with this reason.
    Unreadable(String),
}

impl WriterSchema {
    /// The schema the registry gave for an id: its `schemaType` (`AVRO`, `PROTOBUF`, `JSON`;
    /// AVRO when the registry leaves it out) and its text.
    pub fn parse(schema_type: &str, text: &str) -> Self {
        match schema_type {
            "AVRO" | "" => match apache_avro::Schema::parse_str(text) {
                Ok(schema) => Self::Avro(Box::new(schema)),
                Err(e) => Self::Unreadable(format!("its Avro schema does not parse: {e}")),
            },
            "PROTOBUF" => Self::Protobuf,
            "JSON" => Self::Json,
            other => Self::Unreadable(format!("schema type {other} is not read by this worker")),
        }
    }
}

/// The schema id of a value in Confluent's wire format, if it is one.
pub fn schema_id(value: &[u8]) -> Option<u32> {
    (value.first() == Some(&MAGIC))
        .then(|| value.get(1..FRAME_HEADER))
        .flatten()
        .map(|id| u32::from_be_bytes(id.try_into().expect("4 bytes")))
}

/// The encoding of `value`, given the message's content-type header if it has one.
pub fn detect(content_type: Option<&[u8]>, value: &[u8]) -> Result<Encoding, BadFrame> {
    if value.first() == Some(&MAGIC) {
        return schema_id(value)
            .map(|schema_id| Encoding::Framed { schema_id })
            .ok_or_else(|| {
                BadFrame(format!(
                    "starts with Confluent's magic byte 0 but is {} bytes, shorter than its \
                     5-byte header",
                    value.len()
                ))
            });
    }
    let protobuf = content_type.is_some_and(|ct| {
        // Parameters (`; proto=...`) and case do not change the media type.
        let media = ct.split(|&b| b == b';').next().unwrap_or_default();
        let media = media.trim_ascii();
        PROTOBUF_TYPES
            .iter()
            .any(|t| media.eq_ignore_ascii_case(t.as_bytes()))
    });
    Ok(if protobuf {
        Encoding::Protobuf
    } else {
        Encoding::Json
    })
}

/// What a framed value holds when no registry says: Confluent's JSON Schema serializer writes a
/// JSON object (`{`, which as the first byte of message indexes would be a negative count), its
/// Protobuf serializer message indexes. Avro cannot be read without its writer schema.
pub fn framed_body(value: &[u8]) -> Body {
    if value.get(FRAME_HEADER) == Some(&b'{') {
        Body::Json
    } else {
        Body::Protobuf
    }
}

/// The message after a framed value's header and, for Protobuf, its message indexes.
pub fn framed_message(value: &[u8], body: Body) -> Result<&[u8], BadFrame> {
    let rest = value.get(FRAME_HEADER..).unwrap_or_default();
    match body {
        Body::Json | Body::Avro => Ok(rest),
        Body::Protobuf => message_indexes(rest)
            .map(|n| &rest[n..])
            .ok_or_else(|| BadFrame("its Protobuf message indexes are malformed".to_owned())),
    }
}

/// Why a framed value cannot be read past its framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFrame(pub String);

/// The length of the message-index array at the start of `bytes`: a zig-zag varint count, then
/// that many zig-zag varints (a count of 0 stands for `[0]`, the first message of the file).
fn message_indexes(bytes: &[u8]) -> Option<usize> {
    let (count, mut at) = varint(bytes)?;
    let count = zigzag(count);
    if !(0..=MAX_MESSAGE_INDEXES as i64).contains(&count) {
        return None;
    }
    for _ in 0..count {
        let (_, len) = varint(&bytes[at..])?;
        at += len;
    }
    Some(at)
}

fn zigzag(n: u64) -> i64 {
    (n >> 1) as i64 ^ -((n & 1) as i64)
}

/// An unsigned LEB128 varint of at most 10 bytes, and its length.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_without_framing_or_header_is_json() {
        assert_eq!(detect(None, br#"{"a":1}"#), Ok(Encoding::Json));
        assert_eq!(
            detect(Some(b"application/json"), b"\x0a\x01"),
            Ok(Encoding::Json)
        );
        assert_eq!(detect(None, b""), Ok(Encoding::Json));
    }

    #[test]
    fn the_protobuf_content_type_is_read_in_any_case_and_with_parameters() {
        for ct in [
            &b"application/x-protobuf"[..],
            b"Application/X-Protobuf",
            b"application/protobuf; proto=order_worker.contract.OrderEvent",
            b" application/vnd.google.protobuf ",
        ] {
            assert_eq!(
                detect(Some(ct), b"\x08\x01"),
                Ok(Encoding::Protobuf),
                "{ct:?}"
            );
        }
        assert_eq!(
            detect(Some(b"application/x-protobuffer"), b"{}"),
            Ok(Encoding::Json)
        );
    }

    #[test]
    fn confluent_framing_gives_the_schema_id_whatever_the_header_says() {
        let value = b"\x00\x00\x00\x01\x02\x00\x08\x01";
        assert_eq!(schema_id(value), Some(258));
        assert_eq!(
            detect(Some(b"application/json"), value),
            Ok(Encoding::Framed { schema_id: 258 })
        );
        assert_eq!(schema_id(br#"{"a":1}"#), None);
    }

    #[test]
    fn protobuf_message_indexes_are_skipped_short_or_in_full() {
        // Indexes [0] as the single byte 0, then the message.
        let short = b"\x00\x00\x00\x01\x02\x00\x08\x01";
        assert_eq!(framed_body(short), Body::Protobuf);
        assert_eq!(framed_message(short, Body::Protobuf), Ok(&b"\x08\x01"[..]));
        // Indexes [1, 0] in full: count 2 (zig-zag 4), then 1 (2) and 0.
        let nested = b"\x00\x00\x00\x00\x07\x04\x02\x00\x08\x01";
        assert_eq!(framed_message(nested, Body::Protobuf), Ok(&b"\x08\x01"[..]));
        // Avro has no indexes: the datum follows the header.
        assert_eq!(framed_message(nested, Body::Avro), Ok(&nested[5..]));
    }

    #[test]
    fn framed_json_is_told_apart_from_framed_protobuf() {
        let framed = b"\x00\x00\x00\x00\x09{\"a\":1}";
        assert_eq!(framed_body(framed), Body::Json);
        assert_eq!(framed_message(framed, Body::Json), Ok(&b"{\"a\":1}"[..]));
    }

    #[test]
    fn a_frame_cut_short_or_with_broken_indexes_is_a_bad_frame() {
        assert!(detect(None, b"\x00\x00\x01").is_err());
        // An unterminated varint, a negative count, more indexes announced than present.
        for value in [
            &b"\x00\x00\x00\x00\x01\x80"[..],
            b"\x00\x00\x00\x00\x01\x01",
            b"\x00\x00\x00\x00\x01\x06\x00",
        ] {
            assert!(framed_message(value, Body::Protobuf).is_err(), "{value:?}");
        }
    }

    #[test]
    fn a_registry_schema_of_an_unknown_type_or_broken_avro_is_unreadable() {
        assert!(matches!(
            WriterSchema::parse("PROTOBUF", "syntax"),
            WriterSchema::Protobuf
        ));
        assert!(matches!(
            WriterSchema::parse("", r#""long""#),
            WriterSchema::Avro(_)
        ));
        assert!(matches!(
            WriterSchema::parse("AVRO", "{"),
            WriterSchema::Unreadable(_)
        ));
        assert!(matches!(
            WriterSchema::parse("XML", ""),
            WriterSchema::Unreadable(_)
        ));
    }
}
