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
