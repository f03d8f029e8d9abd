//! A consumed Kafka message, owned, with the coordinates the offset tracker needs.
//!
//! Invariant: an envelope never holds more than `max_payload_bytes` of value, nor of key (a
//! larger one is cut, and the value's real size kept), nor more headers than
//! `contract::headers` keeps, so one message cannot blow the memory bound. Its weight for the
//! in-flight budget is fixed when it is made, so what is released is what was added even after
//! its bytes are dropped. Envelopes made by one [`Copier`] share its chunks: a chunk holds at
//! most [`CHUNK_BYTES`] and is freed with the last envelope that reads it. Only a message not
//! yet decoded keeps its chunk alive (a decoded one drops its bytes, a rejected one moves them
//! out), and the consumer keeps a copier per lane, whose processor decodes in order: so beyond
//! the bytes the in-flight budget counts, chunks hold at most about one chunk per lane.

use bytes::{BufMut, Bytes, BytesMut};

use crate::contract::Headers;
use crate::contract::headers::{HeaderWriter, MAX_HEADER_BYTES};
use crate::offsets::Position;

/// Fixed cost counted per message on top of its bytes (the struct, allocator slack).
const OVERHEAD_BYTES: u64 = 128;
/// Size of the chunks a [`Copier`] copies messages into: tens of order events, so allocations
/// are rare, and small, so what a message kept waiting can hold alive is small too. Under glibc's
/// mmap threshold in the image (1 MiB), so a freed chunk goes back to the heap for the next.
pub const CHUNK_BYTES: usize = 8 * 1024;
/// A message this large gets an allocation of its own, so one chunk holds many messages.
const OWN_ALLOCATION_BYTES: usize = CHUNK_BYTES / 4;

/// A key or value as an envelope keeps it: its first `max` bytes.
pub(crate) fn cut(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

/// Copies messages out of librdkafka's buffers into chunks shared by many envelopes (of one
/// lane, in the consumer): one allocation per chunk instead of one per message. The consumer
/// thread allocates and a processor frees, and every such cross-thread pair contends on the
/// allocator's locks (docs/performance.md); a chunk is freed by whichever thread drops its last
/// envelope.
#[derive(Debug)]
pub struct Copier {
    chunk: BytesMut,
    /// Messages of at least this many bytes get an allocation of their own.
    own_from: usize,
}

impl Default for Copier {
    fn default() -> Self {
        Self {
            chunk: BytesMut::new(),
            own_from: OWN_ALLOCATION_BYTES,
        }
    }
}

impl Copier {
    /// An [`Envelope`] of the message; `headers` is read twice (sizing, then copying) rather
    /// than collected.
    pub fn envelope<'h>(
        &mut self,
        position: Position,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h [u8], Option<&'h [u8]>)> + Clone,
        timestamp_ms: Option<i64>,
        max_payload_bytes: usize,
    ) -> Envelope {
        let key = key.map(|k| cut(k, max_payload_bytes));
        let value = payload.map_or(&[][..], |v| cut(v, max_payload_bytes));
        let header_bytes: usize = headers
            .clone()
            .map(|(n, v)| HeaderWriter::encoded_len(n, v))
            .sum();
        // At least what is written: the writer keeps fewer headers than it is given, never more.
        let most =
            key.map_or(0, <[u8]>::len) + value.len() + header_bytes.min(2 * MAX_HEADER_BYTES);
        let mut own = BytesMut::new();
        let in_chunk = most < self.own_from;
        let out = if !in_chunk {
            own.reserve(most);
            &mut own
        } else {
            if self.chunk.capacity() - self.chunk.len() < most {
                // The full chunk stays alive through the envelopes that read it.
                self.chunk = BytesMut::with_capacity(CHUNK_BYTES);
            }
            &mut self.chunk
        };
        out.put_slice(key.unwrap_or_default());
        out.put_slice(value);
        let headers_at = out.len();
        let mut writer = HeaderWriter::default();
        for (name, value) in headers {
            writer.push(out, name, value);
        }
        let bytes = out.split().freeze();
        let weight = u32::try_from(OVERHEAD_BYTES + bytes.len() as u64).unwrap_or(u32::MAX);
        Envelope {
            position,
            weight,
            dropped: false,
            in_chunk,
            bytes,
            // Cut to `max_payload_bytes`, a u32.
            key_len: key.map(|k| k.len() as u32),
            headers_at,
            has_payload: payload.is_some(),
            payload_size: payload.map_or(0, <[u8]>::len),
            timestamp_ms,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Envelope {
    pub position: Position,
    /// The key, the value (each cut to `max_payload_bytes`) and the headers, in one slice of a
    /// [`Copier`]'s chunk.
    bytes: Bytes,
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
    /// Whether `bytes` is a slice of a [`Copier`]'s chunk (else an allocation of its own).
    in_chunk: bool,
}

impl Envelope {
    /// A message without headers, in an allocation of its own; the consumer thread copies
    /// through a [`Copier`].
    pub fn new(
        position: Position,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        timestamp_ms: Option<i64>,
        max_payload_bytes: usize,
    ) -> Self {
        let no_headers = std::iter::empty();
        let mut alone = Copier {
            chunk: BytesMut::new(),
            own_from: 0,
        };
        alone.envelope(
            position,
            key,
            payload,
            no_headers,
            timestamp_ms,
            max_payload_bytes,
        )
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
        self.bytes = Bytes::new();
        self.in_chunk = false;
        self.key_len = None;
        self.headers_at = 0;
        self.has_payload = false;
        self.dropped = true;
    }

    /// Moves the bytes out of the chunk they share with other messages into an allocation of
    /// their own: a rejected message is kept until its dead letter is written, and it would
    /// keep its whole chunk alive with it.
    pub fn keep_bytes(&mut self) {
        if self.in_chunk {
            self.bytes = Bytes::copy_from_slice(&self.bytes);
            self.in_chunk = false;
        }
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
        let mut copier = Copier::default();
        let mut e = copier.envelope(
            at(7),
            Some(b"k"),
            Some(b"value"),
            headers.iter().map(|&(n, v)| (n.as_bytes(), v)),
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
        let named = headers.iter().map(|&(n, v)| (n.as_bytes(), v));
        let tombstone = copier.envelope(at(8), None, None, named, None, 100);
        assert_eq!(tombstone.payload(), None);
        assert_eq!(
            tombstone.headers().get("traceparent"),
            Some(&b"00-1-2-01"[..])
        );
    }

    #[test]
    fn envelopes_copied_into_shared_chunks_each_read_back_their_own_bytes() {
        let mut copier = Copier::default();
        let made: Vec<(String, String, Envelope)> = (0..2_000)
            .map(|i| {
                let (key, value) = (
                    format!("key-{i}"),
                    format!("{{\"n\":{}}}", "9".repeat(i % 300)),
                );
                let trace = format!("00-{i}-01");
                let headers = [(&b"traceparent"[..], Some(trace.as_bytes()))];
                let e = copier.envelope(
                    at(i as i64),
                    Some(key.as_bytes()),
                    Some(value.as_bytes()),
                    headers.into_iter(),
                    None,
                    1 << 20,
                );
                (key, trace, e)
            })
            .collect();
        for (i, (key, trace, e)) in made.iter().enumerate() {
            assert_eq!(e.key(), Some(key.as_bytes()));
            assert_eq!(e.payload().map(<[u8]>::len), Some(6 + i % 300));
            assert_eq!(e.headers().get("traceparent"), Some(trace.as_bytes()));
        }
        let chunks: std::collections::HashSet<usize> = made
            .iter()
            .map(|(_, _, e)| e.bytes.as_ptr() as usize / CHUNK_BYTES)
            .collect();
        assert!(chunks.len() < made.len() / 10, "{} chunks", chunks.len());
    }

    #[test]
    fn a_message_kept_for_its_dead_letter_moves_out_of_the_shared_chunk() {
        let mut copier = Copier::default();
        let mut kept = copier.envelope(at(0), Some(b"k"), Some(b"{"), std::iter::empty(), None, 64);
        let other = copier.envelope(at(1), None, Some(b"[]"), std::iter::empty(), None, 64);
        let chunk = kept.bytes.as_ptr() as usize..other.bytes.as_ptr() as usize + 2;
        kept.keep_bytes();
        assert!(!chunk.contains(&(kept.bytes.as_ptr() as usize)));
        assert_eq!(
            (kept.key(), kept.payload()),
            (Some(&b"k"[..]), Some(&b"{"[..]))
        );
        let moved = kept.bytes.as_ptr();
        kept.keep_bytes();
        assert_eq!(kept.bytes.as_ptr(), moved, "copied once");
    }

    #[test]
    fn a_large_message_gets_its_own_allocation_and_leaves_the_chunk_to_the_small_ones() {
        let mut copier = Copier::default();
        let mut envelope = |value: &[u8]| {
            copier.envelope(at(0), None, Some(value), std::iter::empty(), None, 1 << 20)
        };
        let small = envelope(b"small");
        let large = envelope(&[b'x'; OWN_ALLOCATION_BYTES]);
        let next = envelope(b"next");
        assert_eq!(large.payload().map(<[u8]>::len), Some(OWN_ALLOCATION_BYTES));
        let after_small = small.bytes.as_ptr().wrapping_add(small.bytes.len());
        assert_eq!(after_small, next.bytes.as_ptr());
        assert_eq!(next.payload(), Some(&b"next"[..]));
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
