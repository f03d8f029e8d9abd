//! Which encoding a message's value is in, decided per message from its first bytes and its
//! `content-type` header.
//!
//! Invariant: detection reads at most the framing (a few bytes) and never fails: an unframed
//! value without a Protobuf content type is JSON, as every producer of contract v1 writes it, so
//! adding Protobuf changes nothing for them. No JSON text starts with byte 0, so Confluent's
//! framing cannot be mistaken for JSON, nor JSON for it.

use std::fmt;

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

/// How the value is encoded, and how that was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JSON without framing: the default.
    Json,
    /// A bare Protobuf message, named by the content-type header.
    Protobuf,
    /// Confluent's wire format: the schema id, and where the message starts.
    Framed {
        schema_id: u32,
        body: Framed,
        /// Offset of the serialized message within the value.
        start: usize,
    },
}

/// What follows Confluent's framing. Without a schema registry the payload tells: Confluent's
/// JSON Schema serializer writes a JSON object (`{`, which as the first byte of message indexes
/// would be a negative count) where its Protobuf serializer writes message indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    Json,
    Protobuf,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json => f.write_str("JSON"),
            Self::Protobuf => f.write_str("Protobuf (content-type header)"),
            Self::Framed {
                schema_id, body, ..
            } => {
                let body = match body {
                    Framed::Json => "JSON",
                    Framed::Protobuf => "Protobuf",
                };
                write!(f, "{body} (Confluent wire format, schema id {schema_id})")
            }
        }
    }
}

/// Why a framed value cannot be read past its framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFrame(pub String);

/// The encoding of `value`, given the message's content-type header if it has one.
pub fn detect(content_type: Option<&[u8]>, value: &[u8]) -> Result<Encoding, BadFrame> {
    if value.first() == Some(&MAGIC) {
        return framed(value);
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

fn framed(value: &[u8]) -> Result<Encoding, BadFrame> {
    let Some(id) = value.get(1..FRAME_HEADER) else {
        return Err(BadFrame(format!(
            "starts with Confluent's magic byte 0 but is {} bytes, shorter than its 5-byte header",
            value.len()
        )));
    };
    let schema_id = u32::from_be_bytes(id.try_into().expect("4 bytes"));
    let rest = &value[FRAME_HEADER..];
    if rest.first() == Some(&b'{') {
        return Ok(Encoding::Framed {
            schema_id,
            body: Framed::Json,
            start: FRAME_HEADER,
        });
    }
    let indexes = message_indexes(rest)
        .ok_or_else(|| BadFrame("its Protobuf message indexes are malformed".to_owned()))?;
    Ok(Encoding::Framed {
        schema_id,
        body: Framed::Protobuf,
        start: FRAME_HEADER + indexes,
    })
}

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
    fn confluent_framing_gives_the_schema_id_and_skips_the_message_indexes() {
        // Schema id 258, indexes [0] written as the single byte 0, then the message.
        let short = b"\x00\x00\x00\x01\x02\x00\x08\x01";
        assert_eq!(
            detect(None, short),
            Ok(Encoding::Framed {
                schema_id: 258,
                body: Framed::Protobuf,
                start: 6
            })
        );
        // Indexes [1, 0] written in full: count 2 (zig-zag 4), then 1 (2) and 0.
        let nested = b"\x00\x00\x00\x00\x07\x04\x02\x00\x08\x01";
        assert_eq!(
            detect(Some(b"application/json"), nested),
            Ok(Encoding::Framed {
                schema_id: 7,
                body: Framed::Protobuf,
                start: 8
            })
        );
    }

    #[test]
    fn framed_json_is_told_apart_from_framed_protobuf() {
        let framed = b"\x00\x00\x00\x00\x09{\"a\":1}";
        assert_eq!(
            detect(None, framed),
            Ok(Encoding::Framed {
                schema_id: 9,
                body: Framed::Json,
                start: 5
            })
        );
    }

    #[test]
    fn a_frame_cut_short_or_with_broken_indexes_is_a_bad_frame() {
        assert!(detect(None, b"\x00\x00\x01").is_err());
        // An unterminated varint, and a negative count.
        assert!(detect(None, b"\x00\x00\x00\x00\x01\x80").is_err());
        assert!(detect(None, b"\x00\x00\x00\x00\x01\x01").is_err());
        // More indexes announced than present.
        assert!(detect(None, b"\x00\x00\x00\x00\x01\x06\x00").is_err());
    }
}
