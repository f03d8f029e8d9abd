//! The contract's JSON form: the payload parsed into the wire event, or the rejection that says
//! what is wrong with it, the path of a mistyped field included.
//!
//! Invariant: a JSON payload is parsed once on the success path; only one that fails is parsed
//! again, to name the field and tell a newer contract version from broken input.

use serde::Deserialize;

use super::{Reason, Rejection, SCHEMA_VERSION, WireEvent, object_only};

/// Only read when a payload fails to parse, to tell "a newer contract" from "broken input".
#[derive(Deserialize)]
struct VersionProbe {
    schema_version: Option<serde_json::Value>,
}

pub(super) fn parse_payload(payload: &[u8]) -> Result<WireEvent, Rejection> {
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejection::new(
            Reason::InvalidJson,
            format!(
                "payload is not UTF-8: invalid byte at offset {}",
                e.valid_up_to()
            ),
        )
    })?;
    parse(text)
}

fn parse(text: &str) -> Result<WireEvent, Rejection> {
    let mut de = serde_json::Deserializer::from_str(text);
    // Tracking the field path costs about half of the decode (docs/performance.md): only a payload
    // that fails is parsed again with it, for the rejection's message.
    match WireEvent::deserialize(object_only::ObjectOnly(&mut de)) {
        Ok(wire) => complete(de, wire),
        Err(_) => parse_tracking_path(text),
    }
}

fn parse_tracking_path(text: &str) -> Result<WireEvent, Rejection> {
    let mut de = serde_json::Deserializer::from_str(text);
    let wire: WireEvent = serde_path_to_error::deserialize(object_only::ObjectOnly(&mut de))
        .map_err(|err| classify(text, err))?;
    complete(de, wire)
}

/// Refuses trailing input and contract versions this build does not read.
fn complete(
    mut de: serde_json::Deserializer<serde_json::de::StrRead<'_>>,
    wire: WireEvent,
) -> Result<WireEvent, Rejection> {
    de.end().map_err(|e| {
        Rejection::new(
            Reason::InvalidJson,
            format!("payload is not valid JSON: {e}"),
        )
    })?;
    match wire.schema_version.unwrap_or(1) {
        1 => Ok(WireEvent {
            discount_minor: None,
            shipping: None,
            ..wire
        }),
        2 => Ok(wire),
        other => Err(unsupported(&other.to_string())),
    }
}

fn classify(text: &str, err: serde_path_to_error::Error<serde_json::Error>) -> Rejection {
    use serde_json::error::Category;
    let path = err.path().to_string();
    let inner = err.into_inner();
    match inner.classify() {
        Category::Data => {
            // The typed parse stops at the first wrong shape; broken syntax further on is the
            // more basic fault, so it is looked for (only on this failure path).
            if let Err(syntax) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                return Rejection::new(
                    Reason::InvalidJson,
                    format!("payload is not valid JSON: {syntax}"),
                );
            }
            // A payload of another contract version fails on its own shape first; name the
            // version instead, it is the actionable fact for the producer.
            let mut de = serde_json::Deserializer::from_str(text);
            if let Ok(VersionProbe {
                schema_version: Some(v),
            }) = VersionProbe::deserialize(object_only::ObjectOnly(&mut de))
                && !v
                    .as_u64()
                    .is_some_and(|v| (1..=SCHEMA_VERSION).contains(&v))
            {
                return unsupported(&v.to_string());
            }
            let at = if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            };
            Rejection::new(Reason::SchemaViolation, format!("{at}{inner}"))
        }
        Category::Syntax | Category::Eof | Category::Io => Rejection::new(
            Reason::InvalidJson,
            format!("payload is not valid JSON: {inner}"),
        ),
    }
}

/// `found` is JSON text (control characters escaped); it is only cut to a readable length.
pub(super) fn unsupported(found: &str) -> Rejection {
    let found: String = found.chars().take(32).collect();
    Rejection::new(
        Reason::UnsupportedSchemaVersion,
        format!(
            "schema_version {found} is not supported, this worker reads versions 1 to \
             {SCHEMA_VERSION}"
        ),
    )
}
