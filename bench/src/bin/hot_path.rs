//! Allocations and CPU time per message on a processor's path, without Kafka or PostgreSQL:
//! copying the message out of librdkafka's buffer (an `Envelope`), decoding and validating it,
//! planning 1,000-message batches and encoding them as the batch write's parameters; and the
//! decode alone of the mix's valid events as JSON and as Protobuf, side by side, and the JSON's
//! syntax checked alone (what any serde_json parse of it costs before a field is read).
//!
//! Run: `cargo run --release -p order-worker-bench --bin hot_path` (a few seconds). `HOT_PATH_MESSAGES` (200000)
//! messages of the benchmark's mix (1% invalid, 2% duplicates, 1-5 items per order), decoded
//! `HOT_PATH_ROUNDS` (5) times; prints allocations per message (exact, from a counting
//! allocator) and the median time per message over the rounds. Allocations are the repeatable
//! figure; the time moves with the machine's other load.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use order_worker::contract;
use order_worker::db::encode_batch;
use order_worker::offsets::Position;
use order_worker::pipeline::{Copier, Decoded, Envelope, decode, plan};
use order_worker::synth::{Generator, SynthSpec};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MAX_PAYLOAD: usize = 1 << 20;
const BATCH: usize = 1_000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One stage's cost: allocations and nanoseconds per message.
#[derive(Default)]
struct Cost {
    allocations: u64,
    nanos: Vec<f64>,
}

impl Cost {
    fn measure<T>(&mut self, messages: usize, f: impl FnOnce() -> T) -> T {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let started = Instant::now();
        let out = f();
        self.nanos
            .push(started.elapsed().as_nanos() as f64 / messages as f64);
        self.allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        out
    }

    fn row(&mut self, stage: &str, messages: usize) {
        self.nanos.sort_by(f64::total_cmp);
        let median = self.nanos[self.nanos.len() / 2];
        let per = self.allocations as f64 / messages as f64;
        println!("| {stage} | {per:.2} | {median:.0} |");
    }
}

fn main() {
    let n = env_or("HOT_PATH_MESSAGES", 200_000);
    let rounds = env_or("HOT_PATH_ROUNDS", 5).max(1);
    let messages: Vec<_> = Generator::new(SynthSpec {
        orders: (n as u64 / 5).max(1),
        ..SynthSpec::default()
    })
    .take(n)
    .collect();

    // The valid events in both encodings, keyed, for the side-by-side decode.
    let valid: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = messages
        .iter()
        .filter_map(|m| {
            let (key, json) = (m.key.clone()?, m.payload.clone()?);
            let event = contract::decode(Some(&key), Some(&json), json.len(), MAX_PAYLOAD).ok()?;
            Some((key, json, event.to_protobuf()))
        })
        .collect();
    let protobuf = contract::Hints {
        content_type: Some(b"application/x-protobuf"),
        writer: None,
    };
    let (mut as_json, mut as_protobuf) = (Cost::default(), Cost::default());
    let mut syntax = Cost::default();

    let (mut copy, mut dec, mut write) = (Cost::default(), Cost::default(), Cost::default());
    for _ in 0..rounds {
        let envelopes: Vec<Envelope> = copy.measure(n, || {
            // As the consumer thread copies: into chunks shared by many envelopes.
            let mut copier = Copier::default();
            messages
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let at = Position {
                        partition: 0,
                        generation: 1,
                        offset: i as i64,
                    };
                    let (key, payload) = (m.key.as_deref(), m.payload.as_deref());
                    let no_headers = std::iter::empty();
                    copier.envelope(at, key, payload, no_headers, Some(0), MAX_PAYLOAD)
                })
                .collect()
        });
        let decoded: Vec<Decoded> = dec.measure(n, || {
            envelopes
                .into_iter()
                .map(|e| decode(e, MAX_PAYLOAD))
                .collect()
        });
        let bytes: usize = write.measure(n, || {
            decoded
                .chunks(BATCH)
                .map(|batch| {
                    let p = plan(batch);
                    encode_batch("orders", &p.orders, &p.dead)
                })
                .sum()
        });
        assert!(bytes > 0);
        let ok = as_json.measure(valid.len(), || {
            valid
                .iter()
                .filter(|(k, j, _)| {
                    contract::decode(Some(k), Some(j), j.len(), MAX_PAYLOAD).is_ok()
                })
                .count()
        });
        let ok_too = as_protobuf.measure(valid.len(), || {
            valid
                .iter()
                .filter(|(k, _, p)| {
                    contract::decode_with(protobuf, Some(k), Some(p), p.len(), MAX_PAYLOAD).is_ok()
                })
                .count()
        });
        // The floor of any parse with serde_json: the same text walked without reading a field.
        let well_formed = syntax.measure(valid.len(), || {
            valid
                .iter()
                .filter(|(_, j, _)| {
                    std::str::from_utf8(j).is_ok_and(|text| {
                        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
                    })
                })
                .count()
        });
        assert_eq!(
            (ok, ok_too, well_formed),
            (valid.len(), valid.len(), valid.len())
        );
    }
    println!(
        "{n} messages, {rounds} rounds; allocations per message (exact), median ns per message\n"
    );
    println!("| Stage | Allocations | ns |");
    println!("|---|---|---|");
    copy.row("copy out of the consumer (`Copier::envelope`)", n);
    dec.row("decode and validate", n);
    write.row("plan and encode 1,000-message batches", n);
    as_json.row("decode a valid event, JSON", valid.len());
    as_protobuf.row("decode the same event, Protobuf", valid.len());
    syntax.row(
        "its JSON syntax alone (serde_json, no field read)",
        valid.len(),
    );
    let median = |c: &Cost| c.nanos[c.nanos.len() / 2];
    println!(
        "\nProtobuf / JSON decode time: {:.2} ({} valid events, bytes {:.0}%)",
        median(&as_protobuf) / median(&as_json),
        valid.len(),
        100.0 * valid.iter().map(|v| v.2.len()).sum::<usize>() as f64
            / valid.iter().map(|v| v.1.len()).sum::<usize>() as f64
    );
}
