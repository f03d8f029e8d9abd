//! A consumed Kafka message, owned, with the coordinates the offset tracker needs.
//!
//! Invariant: an envelope never holds more than `max_payload_bytes` of value, nor of key (a
//! larger one is cut, and the value's real size kept), nor more headers than
//! `contract::headers` keeps, so one message cannot blow the memory bound. Its weight for the
//! in-flight budget is fixed when it is made, so what is released is what was added even after
//! its bytes are dropped.

use crate::contract::Headers;
use crate::contract::headers::{HeaderWriter, MAX_HEADER_BYTES};
use crate::offsets::Position;

/// Fixed cost counted per message on top of its bytes (the struct, allocator slack).
const OVERHEAD_BYTES: u64 = 128;

#[derive(Debug, Clone)]
pub struct Envelope {
    pub position: Position,
    /// The key, the value (each cut to `max_payload_bytes`) and the headers, in one allocation:
    /// the consumer thread allocates it and a processor frees it, and every such cross-thread
    /// pair contends on the allocator's locks (docs/performance.md).
    bytes: Box<[u8]>,
    /// Length of the key at the start of `bytes`; `None` for a message without a key.
    key_len: Option<u32>,
    /// Where the headers start in `bytes` (after the value).
    headers_at: usize,
    /// Whether the message has a value (`false` for a tombstone).
    has_payload: bool,
    /// The size of the value as delivered by the broker.
    pub payload_size: usize,
    /// Kafka message timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    weight: u32,
    /// Whether the key and value were dropped ([`Envelope::drop_bytes`]).
    dropped: bool,
}

impl Envelope {
    pub fn new(
        position: Position,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        timestamp_ms: Option<i64>,
        max_payload_bytes: usize,
    ) -> Self {
        Self::with_headers(
            position,
            key,
            payload,
            std::iter::empty(),
            timestamp_ms,
            max_payload_bytes,
        )
    }

    /// [`Envelope::new`] keeping the message's headers too (as many as `contract::headers`
    /// keeps). `headers` is read twice (sizing, then copying) rather than collected: a message
    /// costs the consumer thread one allocation, headers or not.
    pub fn with_headers<'h>(
        position: Position,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)> + Clone,
        timestamp_ms: Option<i64>,
        max_payload_bytes: usize,
    ) -> Self {
        fn cut(b: &[u8], max: usize) -> &[u8] {
            &b[..b.len().min(max)]
        }
        let key = key.map(|k| cut(k, max_payload_bytes));
        let value = payload.map_or(&[][..], |v| cut(v, max_payload_bytes));
        let header_bytes: usize = headers
            .clone()
            .map(|(n, v)| HeaderWriter::encoded_len(n, v))
            .sum();
        let mut bytes = Vec::with_capacity(
            key.map_or(0, <[u8]>::len) + value.len() + header_bytes.min(2 * MAX_HEADER_BYTES),
        );
        bytes.extend_from_slice(key.unwrap_or_default());
        bytes.extend_from_slice(value);
        let headers_at = bytes.len();
        let mut writer = HeaderWriter::default();
        for (name, value) in headers {
            writer.push(&mut bytes, name, value);
        }
        let weight = u32::try_from(OVERHEAD_BYTES + bytes.len() as u64).unwrap_or(u32::MAX);
        Self {
            position,
            weight,
            dropped: false,
            bytes: bytes.into_boxed_slice(),
            // Cut to `max_payload_bytes`, a u32.
            key_len: key.map(|k| k.len() as u32),
            headers_at,
            has_payload: payload.is_some(),
            payload_size: payload.map_or(0, <[u8]>::len),
            timestamp_ms,
        }
    }

    /// The key; `None` without one, and after [`Envelope::drop_bytes`].
    pub fn key(&self) -> Option<&[u8]> {
        self.key_len.map(|n| &self.bytes[..n as usize])
    }

    /// The value, cut to `max_payload_bytes`; `None` for a tombstone, and after
    /// [`Envelope::drop_bytes`].
    pub fn payload(&self) -> Option<&[u8]> {
        self.has_payload
            .then(|| &self.bytes[self.key_len.unwrap_or(0) as usize..self.headers_at])
    }

    /// The headers kept; none after [`Envelope::drop_bytes`].
    pub fn headers(&self) -> Headers<'_> {
        Headers::new(self.bytes.get(self.headers_at..).unwrap_or_default())
    }

    /// Bytes this message held when it was taken from Kafka, for the in-flight budget.
    pub fn weight(&self) -> u64 {
        u64::from(self.weight)
    }

    /// Frees the key and value once they are no longer needed (a valid message, decoded). The
    /// coordinates stay, so the bytes can be read back from Kafka (`kafka::originals`).
    pub fn drop_bytes(&mut self) {
        self.bytes = Box::default();
        self.key_len = None;
        self.headers_at = 0;
        self.has_payload = false;
        self.dropped = true;
    }

    /// Whether [`Envelope::drop_bytes`] was called.
    pub fn bytes_dropped(&self) -> bool {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_kept_after_the_value_and_dropped_with_the_bytes() {
        let headers: [(&str, Option<&[u8]>); 2] =
            [("traceparent", Some(b"00-1-2-01")), ("x", None)];
        let mut e = Envelope::with_headers(
            at(7),
            Some(b"k"),
            Some(b"value"),
            headers.into_iter(),
            None,
            100,
        );
        assert_eq!(
            (e.key(), e.payload()),
            (Some(&b"k"[..]), Some(&b"value"[..]))
        );
        assert_eq!(e.headers().iter().collect::<Vec<_>>(), headers);
        assert!(e.weight() > OVERHEAD_BYTES + 6 + 11);
        e.drop_bytes();
        assert!(e.headers().is_empty());
        let tombstone = Envelope::with_headers(at(8), None, None, headers.into_iter(), None, 100);
        assert_eq!(tombstone.payload(), None);
        assert_eq!(
            tombstone.headers().get("traceparent"),
            Some(&b"00-1-2-01"[..])
        );
    }

    fn at(offset: i64) -> Position {
        Position {
            partition: 0,
            generation: 1,
            offset,
        }
    }

    #[test]
    fn a_value_over_the_limit_is_cut_but_its_size_is_kept() {
        let big = vec![b'x'; 10_000];
        let e = Envelope::new(at(0), Some(b"k"), Some(&big), None, 100);
        assert_eq!(e.payload().map(<[u8]>::len), Some(100));
        assert_eq!(e.key(), Some(&b"k"[..]));
        assert_eq!(e.payload_size, 10_000);
        assert_eq!(e.weight(), OVERHEAD_BYTES + 1 + 100);
    }

    #[test]
    fn dropping_the_bytes_keeps_the_weight_and_says_so() {
        let mut e = Envelope::new(at(5), Some(b"key"), Some(b"value"), None, 100);
        let weight = e.weight();
        e.drop_bytes();
        assert_eq!((e.key(), e.payload()), (None, None));
        assert!(e.bytes_dropped());
        assert_eq!(e.weight(), weight);
        assert_eq!(e.payload_size, 5);
    }

    #[test]
    fn a_tombstone_has_no_value_and_size_zero() {
        let e = Envelope::new(at(1), Some(b"k"), None, Some(5), 100);
        assert!(e.payload().is_none());
        assert_eq!(e.key(), Some(&b"k"[..]));
        assert_eq!(e.payload_size, 0);
    }

    #[test]
    fn a_key_over_the_limit_is_cut_too() {
        let big = vec![b'k'; 10_000];
        let e = Envelope::new(at(4), Some(&big), Some(b"v"), None, 100);
        assert_eq!(e.key().map(<[u8]>::len), Some(100));
        assert_eq!(e.payload(), Some(&b"v"[..]));
    }

    #[test]
    fn a_missing_key_an_empty_key_and_an_empty_value_stay_apart() {
        let keyless = Envelope::new(at(2), None, Some(b"{}"), None, 100);
        assert_eq!((keyless.key(), keyless.payload()), (None, Some(&b"{}"[..])));
        let empty = Envelope::new(at(3), Some(b""), Some(b""), None, 100);
        assert_eq!(
            (empty.key(), empty.payload()),
            (Some(&b""[..]), Some(&b""[..]))
        );
        assert_eq!(empty.weight(), OVERHEAD_BYTES);
    }
}
