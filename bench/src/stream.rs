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

/// Orders in progress at any moment in [`generate_in_segments`]: at ~100k events/s an order's
/// versions then fall within ~0.5 s of traffic.
const SEGMENT_ORDERS: u64 = 10_000;

/// Lanes of [`generate_in_segments`], each with `SEGMENT_ORDERS / SEGMENT_LANES` orders in
/// progress, their segments' ends staggered evenly.
const SEGMENT_LANES: u64 = 16;

/// `count` messages shaped like the backlog (the same mix, the same versions per order), with a
/// bounded set of orders in progress: [`SEGMENT_LANES`] lanes, interleaved message by message,
/// each a run of segments, and each segment `spec`'s generator over its own orders (its own
/// seed) for as many messages as the backlog has per order. An order's versions then all fall
/// within one segment, so its last one, the only one its row keeps observable, comes soon after
/// its first.
///
/// Within a segment those last messages crowd towards its end. One long segment at a time made
/// the observable messages come in bursts (one 100 ms of sending held 34x more than another), so
/// a short stall's weight in p99 depended on whether it met a burst. The lanes' first segments
/// are cut to `(lanes - lane) / lanes` of a segment (orders and messages alike), so the lanes'
/// segment ends are spread evenly and the observable messages arrive at an even rate.
pub fn generate_in_segments(spec: &SynthSpec, events_per_order: f64, count: usize) -> Vec<Msg> {
    let lane_orders = SEGMENT_ORDERS / SEGMENT_LANES;
    let mut seeds = (1u64..).map(|segment| spec.seed.wrapping_add(1_000_003 * segment));
    let mut segment = |orders: u64| {
        let messages = ((orders as f64 * events_per_order).round() as usize).max(1);
        let spec = SynthSpec {
            orders: orders.max(1),
            seed: seeds.next().unwrap_or_default(),
            ..spec.clone()
        };
        Generator::new(spec).take(messages)
    };
    let mut lanes: Vec<_> = (0..SEGMENT_LANES)
        .map(|lane| segment(lane_orders * (SEGMENT_LANES - lane) / SEGMENT_LANES))
        .collect();
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        for lane in &mut lanes {
            let m = match lane.next() {
                Some(m) => m,
                None => {
                    *lane = segment(lane_orders);
                    lane.next().expect("a new segment has messages")
                }
            };
            messages.push(Msg {
                key: m.key,
                payload: m.payload,
            });
        }
    }
    messages.truncate(count);
    messages
}

/// Publishes the backlog to `TOPIC` as fast as the broker takes it and checks that the broker
/// holds all of it from offset 0; the placement, and the most messages in one partition.
pub fn publish_backlog(brokers: &str, s: &Settings, messages: &[Msg]) -> (Placement, i64) {
    let placement = kafka::publish(brokers, TOPIC, messages, kafka::Pace::Backlog);
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
