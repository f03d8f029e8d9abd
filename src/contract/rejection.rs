//! Why a message was not applied: a closed set of reasons, each tied to exactly one stage.
//!
//! Invariant: the reason labels are a small fixed set (they are metric label values and the
//! `dead_letters.reason` column); the free-form `detail` carries the precise explanation.

use std::fmt;

/// Where in the pipeline a message was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Checks on the raw Kafka message: size, tombstone.
    Receive,
    /// Parsing the payload against the contract's types.
    Decode,
    /// Rules on values: ranges, consistency, key.
    Validate,
    /// PostgreSQL refused the row although it passed validation.
    Write,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receive => "receive",
            Self::Decode => "decode",
            Self::Validate => "validate",
            Self::Write => "write",
        }
    }
}

/// The machine-readable reason of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    PayloadTooLarge,
    Tombstone,
    InvalidJson,
    InvalidProtobuf,
    InvalidAvro,
    SchemaViolation,
    UnsupportedSchemaVersion,
    InvalidValue,
    KeyMismatch,
    DbRejected,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Self::PayloadTooLarge,
        Self::Tombstone,
        Self::InvalidJson,
        Self::InvalidProtobuf,
        Self::InvalidAvro,
        Self::SchemaViolation,
        Self::UnsupportedSchemaVersion,
        Self::InvalidValue,
        Self::KeyMismatch,
        Self::DbRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PayloadTooLarge => "payload_too_large",
            Self::Tombstone => "tombstone",
            Self::InvalidJson => "invalid_json",
            Self::InvalidProtobuf => "invalid_protobuf",
            Self::InvalidAvro => "invalid_avro",
            Self::SchemaViolation => "schema_violation",
            Self::UnsupportedSchemaVersion => "unsupported_schema_version",
            Self::InvalidValue => "invalid_value",
            Self::KeyMismatch => "key_mismatch",
            Self::DbRejected => "db_rejected",
        }
    }

    pub fn stage(self) -> Stage {
        match self {
            Self::PayloadTooLarge | Self::Tombstone => Stage::Receive,
            Self::InvalidJson
            | Self::InvalidProtobuf
            | Self::InvalidAvro
            | Self::SchemaViolation
            | Self::UnsupportedSchemaVersion => Stage::Decode,
            Self::InvalidValue | Self::KeyMismatch => Stage::Validate,
            Self::DbRejected => Stage::Write,
        }
    }
}

/// Longest detail kept, in characters; enough for any reason the contract gives with its
/// quoted excerpt.
pub const MAX_DETAIL_CHARS: usize = 1_024;

/// A message that will be dead-lettered instead of applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    /// Control characters in `detail` are escaped (`\u{0}`): messages from parsers quote the
    /// producer's input, and a reason must never carry raw control bytes into logs, headers or
    /// PostgreSQL text (which refuses NUL). A detail is cut to [`MAX_DETAIL_CHARS`]: a parser
    /// may quote a whole field of a megabyte, and the detail goes into a log line and a header.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if let Some((cut, _)) = detail.char_indices().nth(MAX_DETAIL_CHARS) {
            detail.truncate(cut);
            detail.push_str("... (cut)");
        }
        let detail = if detail.chars().any(char::is_control) {
            detail
                .chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_unicode().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        } else {
            detail
        };
        Self { reason, detail }
    }

    pub fn stage(&self) -> Stage {
        self.reason.stage()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

/// A message that will not be applied, as a dead letter records it (in PostgreSQL and on the
/// dead-letter topic): where it came from, its bytes, and why.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetterRecord<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub payload_size: usize,
    pub reason: Reason,
    pub error: &'a str,
    /// The message's Kafka timestamp, milliseconds since the epoch.
    pub kafka_timestamp_ms: Option<i64>,
    /// The message's Kafka headers, as kept (`contract::headers`).
    pub headers: super::Headers<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_quoting_a_huge_field_is_cut() {
        let r = Rejection::new(Reason::SchemaViolation, "x".repeat(1_000_000));
        assert!(r.detail.chars().count() < MAX_DETAIL_CHARS + 16);
        assert!(r.detail.ends_with("(cut)"));
    }

    #[test]
    fn control_characters_in_a_detail_are_escaped() {
        let r = Rejection::new(Reason::SchemaViolation, "unknown variant `\0\n`");
        assert_eq!(r.detail, "unknown variant `\\u{0}\\u{a}`");
    }
}
