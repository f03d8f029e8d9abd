//! A message's Kafka headers as the worker keeps them for a dead letter: in order, duplicates
//! and null values kept, in one flat buffer.
//!
//! Invariant: at most [`MAX_HEADERS`] headers and [`MAX_HEADER_BYTES`] bytes of names and values
//! are kept per message (a message cannot grow the worker's memory through its headers); the
//! ones past either bound are dropped and counted. Each header is encoded as its name's length
//! (u16), the name, its value's length (u32, `u32::MAX` for a null value) and the value, so a
//! buffer reads back exactly as it was written.

use base64::Engine;
use bytes::BufMut;
use serde_json::{Value, json};

/// Most headers kept per message; producers attach a handful (trace context, ids).
pub const MAX_HEADERS: usize = 64;
/// Most bytes of header names and values kept per message.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
const NULL: u32 = u32::MAX;

/// Appends headers to a buffer in the encoding [`Headers`] reads.
#[derive(Debug, Default)]
pub struct HeaderWriter {
    count: usize,
    bytes: usize,
    /// Headers left out by the bounds.
    pub dropped: usize,
}

impl HeaderWriter {
    /// The encoded size of one header, to size a buffer before writing.
    pub fn encoded_len(name: &[u8], value: Option<&[u8]>) -> usize {
        2 + String::from_utf8_lossy(name).len() + 4 + value.map_or(0, <[u8]>::len)
    }

    /// Appends `name: value` to `out`, unless a bound says no (then it is counted as dropped).
    /// A name that is not UTF-8 is kept with U+FFFD in place of each bad sequence: Kafka allows
    /// any bytes there, and a dead letter stores names as text.
    pub fn push(&mut self, out: &mut impl BufMut, name: &[u8], value: Option<&[u8]>) {
        let name = String::from_utf8_lossy(name);
        let size = name.len() + value.map_or(0, <[u8]>::len);
        let fits = self.count < MAX_HEADERS
            && self.bytes + size <= MAX_HEADER_BYTES
            && u16::try_from(name.len()).is_ok();
        if !fits {
            self.dropped += 1;
            return;
        }
        self.count += 1;
        self.bytes += size;
        out.put_slice(&(name.len() as u16).to_be_bytes());
        out.put_slice(name.as_bytes());
        match value {
            Some(v) => {
                out.put_slice(&(v.len() as u32).to_be_bytes());
                out.put_slice(v);
            }
            None => out.put_slice(&NULL.to_be_bytes()),
        }
    }
}

/// Headers encoded by [`HeaderWriter`], borrowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Headers<'a>(&'a [u8]);

impl<'a> Headers<'a> {
    /// `bytes` must come from [`HeaderWriter`]; anything else reads as fewer headers, never
    /// panics.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter(self.0)
    }

    /// The first value of header `name` (a null value reads as `None` too).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v)
    }

    /// The headers as stored in `dead_letters.headers`: a JSON array of `{"key": ..., "value":
    /// ...}` in order, a value as text when it is UTF-8 without NUL, else as `"value_base64"`, a
    /// null value as `null`; `None` when there are none. PostgreSQL's `jsonb` refuses `\u0000`
    /// in any string, and a refused dead letter stops the worker, so a NUL in a name is kept as
    /// U+FFFD (names are text already, see [`HeaderWriter::push`]).
    pub fn to_json(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let list: Vec<Value> = self
            .iter()
            .map(|(name, value)| {
                let name = name.replace('\0', "\u{FFFD}");
                match value.map(std::str::from_utf8) {
                    None => json!({"key": name, "value": null}),
                    Some(Ok(text)) if !text.contains('\0') => json!({"key": name, "value": text}),
                    Some(_) => json!({
                        "key": name,
                        "value_base64": base64::engine::general_purpose::STANDARD
                            .encode(value.unwrap_or_default())
                    }),
                }
            })
            .collect();
        Some(Value::Array(list).to_string())
    }
}

/// Reads [`Headers::to_json`]'s form back: (name, value) in order. Entries it cannot read are
/// skipped (the column is the worker's own output).
pub fn from_json(json: &Value) -> Vec<(String, Option<Vec<u8>>)> {
    let Some(list) = json.as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|h| {
            let name = h.get("key")?.as_str()?.to_owned();
            let value = match (h.get("value"), h.get("value_base64")) {
                (Some(Value::String(text)), _) => Some(text.clone().into_bytes()),
                (_, Some(Value::String(b64))) => {
                    Some(base64::engine::general_purpose::STANDARD.decode(b64).ok()?)
                }
                _ => None,
            };
            Some((name, value))
        })
        .collect()
}

pub struct HeaderIter<'a>(&'a [u8]);

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let (name, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*len)))?;
        let (len, rest) = rest.split_first_chunk::<4>()?;
        let (value, rest) = match u32::from_be_bytes(*len) {
            NULL => (None, rest),
            n => {
                let (v, rest) = rest.split_at_checked(n as usize)?;
                (Some(v), rest)
            }
        };
        self.0 = rest;
        Some((std::str::from_utf8(name).ok()?, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(headers: &[(&str, Option<&[u8]>)]) -> (Vec<u8>, HeaderWriter) {
        let (mut out, mut w) = (Vec::new(), HeaderWriter::default());
        for (name, value) in headers {
            w.push(&mut out, name.as_bytes(), *value);
        }
        (out, w)
    }

    #[test]
    fn headers_read_back_in_order_with_duplicates_nulls_and_binary_values() {
        let given: [(&str, Option<&[u8]>); 4] = [
            ("traceparent", Some(b"00-abc-def-01")),
            ("id", Some(b"\x00\xff")),
            ("id", None),
            ("", Some(b"")),
        ];
        let (bytes, w) = written(&given);
        assert_eq!(w.dropped, 0);
        let back: Vec<_> = Headers::new(&bytes).iter().collect();
        assert_eq!(back, given);
        assert_eq!(Headers::new(&bytes).get("id"), Some(&b"\x00\xff"[..]));
        let bytes_len: usize = given
            .iter()
            .map(|(n, v)| HeaderWriter::encoded_len(n.as_bytes(), *v))
            .sum();
        assert_eq!(bytes.len(), bytes_len);
    }

    #[test]
    fn the_json_form_keeps_text_binary_and_null_and_reads_back() {
        let given: [(&str, Option<&[u8]>); 3] =
            [("a", Some(b"text")), ("b", Some(b"\xff\x00")), ("a", None)];
        let (bytes, _) = written(&given);
        let json = Headers::new(&bytes).to_json().unwrap();
        assert_eq!(
            json,
            r#"[{"key":"a","value":"text"},{"key":"b","value_base64":"/wA="},{"key":"a","value":null}]"#
        );
        let back = from_json(&serde_json::from_str(&json).unwrap());
        let expected: Vec<(String, Option<Vec<u8>>)> = given
            .iter()
            .map(|(n, v)| (n.to_string(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(back, expected);
        assert_eq!(Headers::default().to_json(), None);
    }

    #[test]
    fn a_nul_is_never_stored_as_json_text() {
        let (bytes, _) = written(&[("n\0", Some(b"\0\0\0\x01"))]);
        let json = Headers::new(&bytes).to_json().unwrap();
        assert_eq!(
            json,
            "[{\"key\":\"n\u{FFFD}\",\"value_base64\":\"AAAAAQ==\"}]"
        );
        let back = from_json(&serde_json::from_str(&json).unwrap());
        assert_eq!(
            back,
            [("n\u{FFFD}".to_owned(), Some(b"\0\0\0\x01".to_vec()))]
        );
    }

    #[test]
    fn headers_past_the_bounds_are_dropped_and_counted() {
        let many: Vec<(String, Option<&[u8]>)> = (0..MAX_HEADERS + 3)
            .map(|i| (format!("h{i}"), Some(&b"v"[..])))
            .collect();
        let refs: Vec<(&str, Option<&[u8]>)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let (bytes, w) = written(&refs);
        assert_eq!(
            (Headers::new(&bytes).iter().count(), w.dropped),
            (MAX_HEADERS, 3)
        );
        let big = vec![b'x'; MAX_HEADER_BYTES];
        let (bytes, w) = written(&[("small", Some(b"1")), ("big", Some(&big))]);
        assert_eq!((Headers::new(&bytes).iter().count(), w.dropped), (1, 1));
    }

    #[test]
    fn a_name_that_is_not_utf8_reads_back_with_replacement_characters() {
        let (mut bytes, mut w) = (Vec::new(), HeaderWriter::default());
        w.push(&mut bytes, b"tag\xff\xfe", Some(b"v"));
        let back: Vec<_> = Headers::new(&bytes).iter().collect();
        assert_eq!(back, [("tag\u{FFFD}\u{FFFD}", Some(&b"v"[..]))]);
        assert_eq!(
            bytes.len(),
            HeaderWriter::encoded_len(b"tag\xff\xfe", Some(b"v"))
        );
    }

    #[test]
    fn a_truncated_buffer_reads_as_fewer_headers() {
        let (bytes, _) = written(&[("a", Some(b"1")), ("b", Some(b"2"))]);
        assert_eq!(Headers::new(&bytes[..bytes.len() - 1]).iter().count(), 1);
    }
}
