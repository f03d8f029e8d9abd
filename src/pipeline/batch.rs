//! Turning a batch of consumed messages into the rows one write applies.
//!
//! Invariant: every message of a batch is accounted for exactly once in its [`Plan`]: as the
//! order row it sets, as superseded by a higher (or equal) version of the same order in the same
//! batch, or as a dead letter. The plan's order rows hold each order id once, in id order, so
//! concurrent writers lock rows in the same order and cannot deadlock each other.

use std::collections::HashMap;

use opentelemetry::trace::SpanContext;
use uuid::Uuid;

use crate::contract::DeadLetterRecord;
use crate::contract::{self, Headers, Hints, OrderEvent, Rejection, WriterSchema};
use crate::db::OrderRow;
use crate::pipeline::Envelope;
use crate::telemetry::otlp;

/// A message after decoding. A rejected one still holds its raw bytes (its dead letter stores
/// them); a valid one has dropped them (see `kafka::originals` for the rare case of needing them).
#[derive(Debug)]
pub struct Decoded {
    pub envelope: Envelope,
    pub outcome: Result<OrderEvent, Rejection>,
    /// The W3C trace context the message carried, read before its headers are dropped, when
    /// spans are exported (`telemetry::otlp`); the batch's span links to it.
    pub trace: Option<Box<SpanContext>>,
}

pub fn decode(envelope: Envelope, max_payload_bytes: usize) -> Decoded {
    decode_with(envelope, max_payload_bytes, None)
}

/// [`decode`] with the writer schema the registry gave for a Confluent-framed value.
pub fn decode_with(
    mut envelope: Envelope,
    max_payload_bytes: usize,
    writer: Option<&WriterSchema>,
) -> Decoded {
    let headers = envelope.headers();
    let hints = Hints {
        content_type: headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(contract::CONTENT_TYPE_HEADER))
            .and_then(|(_, value)| value),
        writer,
    };
    // Export off, no header is looked at.
    let trace = otlp::enabled()
        .then(|| otlp::message_context(headers.get("traceparent"), headers.get("tracestate")))
        .flatten();
    let outcome = contract::decode_with(
        hints,
        envelope.key(),
        envelope.payload(),
        envelope.payload_size,
        max_payload_bytes,
    );
    if outcome.is_ok() {
        envelope.drop_bytes();
    } else {
        envelope.keep_bytes();
    }
    Decoded {
        envelope,
        outcome,
        trace,
    }
}

impl Decoded {
    /// This rejected message as a dead letter, with the bytes it still holds.
    pub fn dead_letter<'a>(&'a self, rejection: &'a Rejection) -> DeadLetterRecord<'a> {
        debug_assert!(
            !self.envelope.bytes_dropped(),
            "a rejected message keeps its bytes"
        );
        let e = &self.envelope;
        self.dead_letter_with(rejection, e.key(), e.payload(), e.headers())
    }

    /// This message as a dead letter for `rejection`, storing `key`, `payload` and `headers`
    /// (for a valid message refused at write time: its message read back from Kafka).
    pub fn dead_letter_with<'a>(
        &'a self,
        rejection: &'a Rejection,
        key: Option<&'a [u8]>,
        payload: Option<&'a [u8]>,
        headers: Headers<'a>,
    ) -> DeadLetterRecord<'a> {
        let e = &self.envelope;
        DeadLetterRecord {
            partition: e.position.partition,
            offset: e.position.offset,
            key,
            payload,
            payload_size: e.payload_size,
            reason: rejection.reason,
            error: &rejection.detail,
            kafka_timestamp_ms: e.timestamp_ms,
            headers,
        }
    }
}

/// What one batch write applies.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    /// One row per order id, the highest version in the batch, sorted by order id.
    pub orders: Vec<OrderRow<'a>>,
    /// Index in the batch of the message behind each order row.
    pub order_sources: Vec<usize>,
    pub dead: Vec<DeadLetterRecord<'a>>,
    /// Valid events not written because the same order has an equal or higher version in the
    /// batch: their effect is already contained in the row that is written.
    pub superseded: u64,
}

/// Coordinates named in a log line that summarizes many messages; the rest are counted.
const NAMED: usize = 10;

/// `partition@offset` of the first few of `coordinates`, and how many more there are: a log
/// line about many messages names some and counts the rest, so it stays one line.
pub fn named(coordinates: impl IntoIterator<Item = (i32, i64)>) -> String {
    let mut all = coordinates.into_iter();
    let mut text: Vec<String> = all
        .by_ref()
        .take(NAMED)
        .map(|(p, o)| format!("{p}@{o}"))
        .collect();
    let more = all.count();
    if more > 0 {
        text.push(format!("and {more} more"));
    }
    text.join(",")
}

/// The offsets of a batch as `partition:first-last` ranges, for its log span (a batch holds the
/// messages of one lane, which may come from several partitions).
pub fn offset_ranges(batch: &[Decoded]) -> String {
    let mut ranges: Vec<(i32, i64, i64)> = Vec::new();
    for d in batch {
        let p = d.envelope.position;
        match ranges.iter_mut().find(|r| r.0 == p.partition) {
            Some(r) => {
                r.1 = r.1.min(p.offset);
                r.2 = r.2.max(p.offset);
            }
            None => ranges.push((p.partition, p.offset, p.offset)),
        }
    }
    ranges.sort_unstable();
    let parts: Vec<String> = ranges
        .iter()
        .map(|(p, a, b)| format!("{p}:{a}-{b}"))
        .collect();
    parts.join(",")
}

/// Each order's valid events in the batch, highest version first, and among equal versions the
/// first offset first: the row a write plans comes first, then the versions a refused row falls
/// back to, in turn, so that the order ends where applying the events one at a time leaves it.
pub fn versions_by_order(batch: &[Decoded]) -> HashMap<Uuid, Vec<usize>> {
    let mut versions: HashMap<Uuid, Vec<usize>> = HashMap::new();
    for (i, d) in batch.iter().enumerate() {
        if let Ok(event) = &d.outcome {
            versions.entry(event.order_id).or_default().push(i);
        }
    }
    let version = |i: usize| batch[i].outcome.as_ref().map_or(0, |e| e.version);
    for indices in versions.values_mut() {
        indices.sort_by_key(|&i| {
            (
                std::cmp::Reverse(version(i)),
                batch[i].envelope.position.offset,
            )
        });
    }
    versions
}

pub fn plan(batch: &[Decoded]) -> Plan<'_> {
    let mut best: HashMap<Uuid, usize> = HashMap::with_capacity(batch.len());
    let mut plan = Plan::default();
    for (i, d) in batch.iter().enumerate() {
        match &d.outcome {
            Ok(event) => {
                let slot = best.entry(event.order_id).or_insert(i);
                if *slot != i {
                    plan.superseded += 1;
                    let kept = batch[*slot].outcome.as_ref().map_or(0, |e| e.version);
                    if event.version > kept {
                        *slot = i;
                    }
                }
            }
            Err(rejection) => plan.dead.push(d.dead_letter(rejection)),
        }
    }
    let mut chosen: Vec<(Uuid, usize)> = best.into_iter().collect();
    chosen.sort_unstable_by_key(|&(id, _)| id);
    for (_, i) in chosen {
        let d = &batch[i];
        if let Ok(event) = &d.outcome {
            plan.orders.push(OrderRow {
                event,
                partition: d.envelope.position.partition,
                offset: d.envelope.position.offset,
            });
            plan.order_sources.push(i);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Reason;
    use crate::offsets::Position;
    use crate::synth::{self, SynthSpec};

    fn decoded(offset: i64, order: Uuid, version: i64) -> Decoded {
        let event = synth::event(order, version, offset as u64);
        let bytes = event.to_json();
        let key = order.to_string();
        let pos = Position {
            partition: 0,
            generation: 1,
            offset,
        };
        decode(
            Envelope::new(pos, Some(key.as_bytes()), Some(&bytes), Some(0), 1 << 20),
            1 << 20,
        )
    }

    fn rejected(offset: i64) -> Decoded {
        let pos = Position {
            partition: 2,
            generation: 1,
            offset,
        };
        decode(
            Envelope::new(pos, Some(b"k"), Some(b"nope"), Some(0), 1 << 20),
            1 << 20,
        )
    }

    fn order(n: u64) -> Uuid {
        synth::order_id(&SynthSpec::default(), n)
    }

    #[test]
    fn the_highest_version_of_an_order_wins_within_a_batch() {
        let batch = vec![
            decoded(0, order(1), 2),
            decoded(1, order(1), 5),
            decoded(2, order(1), 3),
        ];
        let p = plan(&batch);
        assert_eq!(p.orders.len(), 1);
        assert_eq!(p.orders[0].event.version, 5);
        assert_eq!(p.orders[0].offset, 1);
        assert_eq!(p.superseded, 2);
    }

    #[test]
    fn an_exact_duplicate_in_a_batch_is_counted_once() {
        let batch = vec![decoded(0, order(1), 1), decoded(1, order(1), 1)];
        let p = plan(&batch);
        assert_eq!((p.orders.len(), p.superseded), (1, 1));
        assert_eq!(p.orders[0].offset, 0, "the first of equal versions is kept");
    }

    #[test]
    fn every_message_is_accounted_for_exactly_once() {
        let batch: Vec<Decoded> = (0..30)
            .map(|i| {
                if i % 7 == 0 {
                    rejected(i)
                } else {
                    decoded(i, order(i as u64 % 4), i)
                }
            })
            .collect();
        let p = plan(&batch);
        assert_eq!(
            p.orders.len() as u64 + p.superseded + p.dead.len() as u64,
            30
        );
        assert_eq!(p.dead.len(), 5);
        assert!(
            p.dead
                .iter()
                .all(|d| d.reason == Reason::InvalidJson && d.partition == 2)
        );
    }

    #[test]
    fn an_order_s_versions_are_listed_highest_first_with_the_planned_row_at_the_head() {
        let batch = vec![
            decoded(0, order(1), 1),
            decoded(1, order(2), 1),
            decoded(2, order(1), 3),
            rejected(3),
            decoded(4, order(1), 2),
            decoded(5, order(1), 3),
        ];
        let versions = versions_by_order(&batch);
        assert_eq!(versions[&order(1)], [2, 5, 4, 0]);
        assert_eq!(versions[&order(2)], [1]);
        let p = plan(&batch);
        for (row, source) in p.orders.iter().zip(&p.order_sources) {
            assert_eq!(
                versions[&row.event.order_id][0], *source,
                "the planned row leads"
            );
        }
    }

    #[test]
    fn a_summary_names_ten_coordinates_and_counts_the_rest() {
        assert_eq!(named([(0, 1), (2, 7)]), "0@1,2@7");
        let many = named((0..25).map(|o| (1, o)));
        assert!(many.starts_with("1@0,1@1,"), "{many}");
        assert!(many.ends_with("1@9,and 15 more"), "{many}");
    }

    #[test]
    fn a_batch_names_its_offset_range_per_partition() {
        let batch = vec![
            decoded(4, order(1), 1),
            rejected(7),
            decoded(2, order(2), 1),
            rejected(9),
        ];
        assert_eq!(offset_ranges(&batch), "0:2-4,2:7-9");
    }

    #[test]
    fn order_rows_are_sorted_by_order_id() {
        let batch: Vec<Decoded> = (0..50).map(|i| decoded(i, order(i as u64), 1)).collect();
        let ids: Vec<Uuid> = plan(&batch)
            .orders
            .iter()
            .map(|r| r.event.order_id)
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_dead_letter_keeps_the_raw_bytes_and_the_kafka_timestamp() {
        let pos = Position {
            partition: 1,
            generation: 1,
            offset: 9,
        };
        let d = decode(
            Envelope::new(pos, None, Some(b"\xff"), Some(1_700_000_000_000), 64),
            64,
        );
        let p = plan(std::slice::from_ref(&d));
        let dl = &p.dead[0];
        assert_eq!(
            (dl.partition, dl.offset, dl.payload),
            (1, 9, Some(&b"\xff"[..]))
        );
        assert_eq!(dl.kafka_timestamp_ms, Some(1_700_000_000_000));
    }
}
