//! A consumed Kafka message, owned, with the coordinates the offset tracker needs.
//!
//! Invariant: an envelope never holds more than `max_payload_bytes` of value (a larger value is
//! cut, and its real size kept), so one message cannot blow the memory bound.

use crate::kafka::tracker::Position;

/// Fixed cost counted per message on top of its bytes (the struct, allocator slack).
const OVERHEAD_BYTES: u64 = 128;

#[derive(Debug, Clone)]
pub struct Envelope {
    pub position: Position,
    pub key: Option<Vec<u8>>,
    /// The value, cut to `max_payload_bytes`; `None` for a tombstone.
    pub payload: Option<Vec<u8>>,
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
        let cut = |b: &[u8]| b[..b.len().min(max_payload_bytes)].to_vec();
        Self {
            position,
            key: key.map(cut),
            payload: payload.map(cut),
            payload_size: payload.map_or(0, <[u8]>::len),
            timestamp_ms,
        }
    }

    /// Bytes this message holds while in flight, for the in-flight budget.
    pub fn weight(&self) -> u64 {
        let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len) as u64;
        OVERHEAD_BYTES + len(&self.key) + len(&self.payload)
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
        assert_eq!(e.payload.as_ref().map(Vec::len), Some(100));
        assert_eq!(e.payload_size, 10_000);
        assert_eq!(e.weight(), OVERHEAD_BYTES + 1 + 100);
    }

    #[test]
    fn a_tombstone_has_no_value_and_size_zero() {
        let e = Envelope::new(at(1), Some(b"k"), None, Some(5), 100);
        assert!(e.payload.is_none());
        assert_eq!(e.payload_size, 0);
    }
}
