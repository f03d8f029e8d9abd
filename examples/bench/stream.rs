//! The stream every phase works on: the deterministic generated events, the oracle's final
//! state, the backlog published to the broker (and checked to be all there), and the valid
//! events as rows with their Kafka coordinates, for the ceiling loaders.

use order_worker::synth::{Expectation, Generator, Mix, SynthSpec};

use crate::bench::{TOPIC, log};
use crate::kafka::{self, Msg, Placement, Probe};
use crate::loaders::Row;
use crate::settings::Settings;

/// The final state the oracle expects from the whole stream.
pub struct Expected {
    pub rows: i64,
    pub version_sum: i64,
    pub mix: Mix,
}

impl Expected {
    /// The oracle's final state after the first `events` events of `spec` (whose mix is `mix`).
    pub fn of(spec: &SynthSpec, events: usize, mix: Mix) -> Self {
        let oracle = Expectation::of(spec, events as u64);
        Self {
            rows: oracle.orders.len() as i64,
            version_sum: oracle.orders.values().map(|e| e.version).sum(),
            mix,
        }
    }
}

/// The first `count` messages of `spec`, and how many of each kind they hold.
pub fn generate(spec: &SynthSpec, count: usize) -> (Vec<Msg>, Mix) {
    let mut mix = Mix::default();
    let messages = Generator::new(spec.clone())
        .take(count)
        .map(|m| {
            mix.add(m.kind);
            Msg {
                key: m.key,
                payload: m.payload,
            }
        })
        .collect();
    (messages, mix)
}

/// Orders per segment of [`generate_in_segments`]: at ~100k events/s a segment is ~0.5 s of
/// traffic.
const SEGMENT_ORDERS: u64 = 10_000;

/// `count` messages shaped like the backlog (the same mix, the same versions per order), but
/// made of consecutive segments, each `spec`'s generator over [`SEGMENT_ORDERS`] orders of its
/// own (its own seed) for as many messages as the backlog has per order. An order's versions
/// then all fall within one segment, so its last one, the only one its row keeps observable,
/// comes at most a segment after its first: the observable messages are spread over the whole
/// run instead of clustering at its end.
pub fn generate_in_segments(spec: &SynthSpec, events_per_order: f64, count: usize) -> Vec<Msg> {
    let per_segment = ((SEGMENT_ORDERS as f64 * events_per_order).round() as usize).max(1);
    let mut messages = Vec::with_capacity(count);
    let mut segment = 0u64;
    while messages.len() < count {
        segment += 1;
        let spec = SynthSpec {
            orders: SEGMENT_ORDERS,
            seed: spec.seed.wrapping_add(1_000_003 * segment),
            ..spec.clone()
        };
        messages.extend(generate(&spec, per_segment.min(count - messages.len())).0);
    }
    messages
}

/// Publishes the backlog to `TOPIC` as fast as the broker takes it and checks that the broker
/// holds all of it from offset 0; the placement, and the most messages in one partition.
pub fn publish_backlog(brokers: &str, s: &Settings, messages: &[Msg]) -> (Placement, i64) {
    let placement = kafka::publish(brokers, TOPIC, messages, 0.0);
    assert_eq!(placement.failed, 0, "every message acknowledged");
    let marks = Probe::new(brokers, "bench-reader", TOPIC, s.partitions).watermarks();
    let published: i64 = marks.values().map(|(_, high)| high).sum();
    assert_eq!(published as usize, s.events, "the broker holds every event");
    let truncated: Vec<i32> = marks
        .iter()
        .filter(|(_, (low, _))| *low > 0)
        .map(|(p, _)| *p)
        .collect();
    assert!(
        truncated.is_empty(),
        "the mock cluster dropped old messages of partitions {truncated:?} (it keeps 5 MiB / 100k \
         messages per partition): raise BENCH_PARTITIONS"
    );
    let per_partition_max = marks.values().map(|(_, h)| *h).max().unwrap_or(0);
    log(format!(
        "published {} events in {:.1}s ({:.0}/s); every partition starts at offset 0",
        s.events,
        placement.elapsed.as_secs_f64(),
        s.events as f64 / placement.elapsed.as_secs_f64()
    ));
    (placement, per_partition_max)
}

/// The valid messages decoded, each with the coordinates it was published at.
pub fn rows(messages: &[Msg], placement: &Placement) -> Vec<Row> {
    messages
        .iter()
        .zip(&placement.coords)
        .filter_map(|(m, &(partition, offset))| {
            let payload = m.payload.as_deref();
            let event = order_worker::contract::decode(
                m.key.as_deref(),
                payload,
                payload.map_or(0, <[u8]>::len),
                1 << 20,
            )
            .ok()?;
            Some(Row {
                event,
                partition,
                offset,
            })
        })
        .collect()
}
