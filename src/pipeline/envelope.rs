//! A consumed Kafka message, owned, with the coordinates the offset tracker needs.
//!
//! Invariant: an envelope never holds more than `max_payload_bytes` of value, nor of key (a
//! larger one is cut, and the value's real size kept), so one message cannot blow the memory
//! bound.

use crate::kafka::tracker::Position;

/// Fixed cost counted per message on top of its bytes (the struct, allocator slack).
const OVERHEAD_BYTES: u64 = 128;

#[derive(Debug, Clone)]
pub struct Envelope {
    pub position: Position,
    /// The key followed by the value (each cut to `max_payload_bytes`), in one allocation: the
    /// consumer thread allocates it and a processor frees it, and every such cross-thread pair
    /// contends on the allocator's locks (docs/performance.md).
    bytes: Box<[u8]>,
    /// Length of the key at the start of `bytes`; `None` for a message without a key.
    key_len: Option<usize>,
    /// Whether the message has a value (`false` for a tombstone).
    has_payload: bool,
    /// The size of the value as delivered by the broker.
    pub payload_size: usize,
    /// Kafka message timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl Envelope {
    pub fn new(
        position: Position,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        timestamp_ms: Option<i64>,
        max_payload_bytes: usize,
    ) -> Self {
        fn cut(b: &[u8], max: usize) -> &[u8] {
            &b[..b.len().min(max)]
        }
        let key = key.map(|k| cut(k, max_payload_bytes));
        let value = payload.map_or(&[][..], |v| cut(v, max_payload_bytes));
        let mut bytes = Vec::with_capacity(key.map_or(0, <[u8]>::len) + value.len());
        bytes.extend_from_slice(key.unwrap_or_default());
        bytes.extend_from_slice(value);
        Self {
            position,
            bytes: bytes.into_boxed_slice(),
            key_len: key.map(<[u8]>::len),
            has_payload: payload.is_some(),
            payload_size: payload.map_or(0, <[u8]>::len),
            timestamp_ms,
        }
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.key_len.map(|n| &self.bytes[..n])
    }

    /// The value, cut to `max_payload_bytes`; `None` for a tombstone.
    pub fn payload(&self) -> Option<&[u8]> {
        self.has_payload
            .then(|| &self.bytes[self.key_len.unwrap_or(0)..])
    }

    /// Bytes this message holds while in flight, for the in-flight budget.
    pub fn weight(&self) -> u64 {
        OVERHEAD_BYTES + self.bytes.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
