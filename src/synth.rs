//! Synthetic order events for `produce`, `dev`, tests and benchmarks, with their oracle.
//!
//! Invariant: the stream is a pure function of its [`SynthSpec`] (same seed, same messages), and
//! [`Expectation::of`] computes from the same stream exactly what a correct worker must leave
//! in PostgreSQL: one row per order at its highest valid version, one dead letter per invalid
//! message, duplicates changing nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

use crate::config::SynthConfig;
use crate::contract::{EventType, LineItem, OrderEvent, OrderStatus, Reason};

/// How many recent valid messages a duplicate is drawn from.
const RECENT: usize = 256;
const EPOCH: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    pub orders: u64,
    pub invalid_ratio: f64,
    pub duplicate_ratio: f64,
    pub seed: u64,
}

impl Default for SynthSpec {
    fn default() -> Self {
        Self {
            orders: 1_000,
            invalid_ratio: 0.01,
            duplicate_ratio: 0.02,
            seed: 1,
        }
    }
}

impl From<&SynthConfig> for SynthSpec {
    fn from(c: &SynthConfig) -> Self {
        Self {
            orders: c.orders.max(1),
            invalid_ratio: c.invalid_ratio,
            duplicate_ratio: c.duplicate_ratio,
            seed: c.seed,
        }
    }
}

/// What a message is meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Valid,
    /// A byte-identical re-send of an earlier valid message.
    Duplicate,
    /// Invalid on purpose; the worker must dead-letter it with this reason.
    Invalid(Reason),
}

#[derive(Debug, Clone)]
pub struct SynthMessage {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub kind: Kind,
}

/// The id of the `n`th order of a spec: a valid v4 UUID derived from the seed.
pub fn order_id(spec: &SynthSpec, n: u64) -> Uuid {
    let mut rng = StdRng::seed_from_u64(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n);
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

/// A valid event for `order` at `version`, deterministic in its arguments.
pub fn event(order: Uuid, version: i64, salt: u64) -> OrderEvent {
    let mut rng =
        StdRng::seed_from_u64(order.as_u64_pair().0 ^ (version as u64) ^ salt.rotate_left(32));
    let lines = rng.random_range(1..=5);
    let items: Vec<LineItem> = (0..lines)
        .map(|_| LineItem {
            sku: compact_str::format_compact!("SKU-{:05}", rng.random_range(0..50_000)),
            quantity: rng.random_range(1..=5),
            unit_price_minor: rng.random_range(100..=100_000),
        })
        .collect();
    let total_minor = items
        .iter()
        .map(|i| i64::from(i.quantity) * i.unit_price_minor)
        .sum();
    let cancelled = version > 1 && rng.random_ratio(1, 30);
    let (event_type, status) = match version {
        _ if cancelled => (EventType::Cancelled, OrderStatus::Cancelled),
        1 => (EventType::Created, OrderStatus::Pending),
        v => (EventType::Updated, OrderStatus::ALL[((v - 1) % 5) as usize]),
    };
    OrderEvent {
        event_id: uuid::Builder::from_random_bytes(rng.random()).into_uuid(),
        event_type,
        order_id: order,
        version,
        occurred_at: EPOCH + time::Duration::milliseconds(salt as i64),
        customer_id: compact_str::format_compact!("customer-{}", rng.random_range(0..10_000)),
        status,
        currency: ["EUR", "USD", "GBP", "JPY"][rng.random_range(0..4)].into(),
        items,
        total_minor,
        discount_minor: None,
        shipping: None,
    }
}

/// The endless, deterministic stream of messages of a spec.
pub struct Generator {
    spec: SynthSpec,
    rng: StdRng,
    versions: Vec<i64>,
    recent: VecDeque<SynthMessage>,
    produced: u64,
    invalid_turn: usize,
}

impl Generator {
    pub fn new(spec: SynthSpec) -> Self {
        Self {
            rng: StdRng::seed_from_u64(spec.seed),
            versions: vec![0; spec.orders as usize],
            recent: VecDeque::with_capacity(RECENT),
            produced: 0,
            invalid_turn: 0,
            spec,
        }
    }

    fn valid(&mut self, n: u64) -> (SynthMessage, OrderEvent) {
        self.versions[n as usize] += 1;
        let order = order_id(&self.spec, n);
        let event = event(order, self.versions[n as usize], self.produced);
        let message = SynthMessage {
            key: Some(order.to_string().into_bytes()),
            payload: Some(event.to_json()),
            kind: Kind::Valid,
        };
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(message.clone());
        (message, event)
    }

    fn invalid(&mut self, n: u64) -> SynthMessage {
        let order = order_id(&self.spec, n);
        let good = event(order, self.versions[n as usize] + 1, self.produced);
        let key = Some(order.to_string().into_bytes());
        let json = |edit: &dyn Fn(&mut Value)| {
            let mut v = serde_json::to_value(&good).expect("event serializes");
            edit(&mut v);
            Some(serde_json::to_vec(&v).expect("value serializes"))
        };
        self.invalid_turn += 1;
        let (key, payload, reason) = match self.invalid_turn % 9 {
            0 => (key, None, Reason::Tombstone),
            1 => (
                key,
                Some(b"{\"event_id\": oops".to_vec()),
                Reason::InvalidJson,
            ),
            2 => (
                key,
                Some(b"\xff\xfe not utf-8".to_vec()),
                Reason::InvalidJson,
            ),
            3 => (
                key,
                json(&|v| drop(v.as_object_mut().map(|o| o.remove("currency")))),
                Reason::SchemaViolation,
            ),
            4 => (
                key,
                json(&|v| v["schema_version"] = 3.into()),
                Reason::UnsupportedSchemaVersion,
            ),
            5 => (
                key,
                json(&|v| v["total_minor"] = (good.total_minor + 1).into()),
                Reason::InvalidValue,
            ),
            6 => (
                key,
                json(&|v| v["currency"] = "ZZZ".into()),
                Reason::InvalidValue,
            ),
            7 => (
                Some(Uuid::nil().to_string().into_bytes()),
                json(&|_| {}),
                Reason::KeyMismatch,
            ),
            _ => (None, json(&|_| {}), Reason::KeyMismatch),
        };
        SynthMessage {
            key,
            payload,
            kind: Kind::Invalid(reason),
        }
    }

    /// The next message and, when it is a new valid event, that event.
    pub fn next_with_event(&mut self) -> (SynthMessage, Option<OrderEvent>) {
        let n = self.rng.random_range(0..self.spec.orders);
        let roll: f64 = self.rng.random();
        let out = if roll < self.spec.invalid_ratio {
            (self.invalid(n), None)
        } else if roll < self.spec.invalid_ratio + self.spec.duplicate_ratio
            && !self.recent.is_empty()
        {
            let pick = self.rng.random_range(0..self.recent.len());
            let mut dup = self.recent[pick].clone();
            dup.kind = Kind::Duplicate;
            (dup, None)
        } else {
            let (m, e) = self.valid(n);
            (m, Some(e))
        };
        self.produced += 1;
        out
    }
}

impl Iterator for Generator {
    type Item = SynthMessage;
    fn next(&mut self) -> Option<SynthMessage> {
        Some(self.next_with_event().0)
    }
}

/// How many messages of each kind a stream held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mix {
    pub valid: u64,
    pub duplicates: u64,
    /// Invalid messages by the reason the worker must give.
    pub invalid: BTreeMap<&'static str, u64>,
}

impl Mix {
    pub fn add(&mut self, kind: Kind) {
        match kind {
            Kind::Valid => self.valid += 1,
            Kind::Duplicate => self.duplicates += 1,
            Kind::Invalid(r) => *self.invalid.entry(r.as_str()).or_default() += 1,
        }
    }

    pub fn invalid_total(&self) -> u64 {
        self.invalid.values().sum()
    }

    pub fn total(&self) -> u64 {
        self.valid + self.duplicates + self.invalid_total()
    }
}

/// What a correct worker leaves behind after consuming the first `events` messages of a spec.
#[derive(Debug, Default)]
pub struct Expectation {
    /// Final state per order: the valid event with the highest version.
    pub orders: HashMap<Uuid, OrderEvent>,
    pub mix: Mix,
}

impl Expectation {
    pub fn of(spec: &SynthSpec, events: u64) -> Self {
        let mut generator = Generator::new(spec.clone());
        let mut x = Self::default();
        for _ in 0..events {
            let (m, event) = generator.next_with_event();
            x.mix.add(m.kind);
            if let Some(e) = event {
                x.orders.insert(e.order_id, e);
            }
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::decode;

    fn check(m: &SynthMessage) -> Result<OrderEvent, crate::contract::Rejection> {
        let size = m.payload.as_ref().map_or(0, Vec::len);
        decode(m.key.as_deref(), m.payload.as_deref(), size, 1 << 20)
    }

    #[test]
    fn every_message_is_what_it_claims_to_be() {
        let spec = SynthSpec {
            orders: 50,
            invalid_ratio: 0.2,
            duplicate_ratio: 0.2,
            seed: 7,
        };
        for m in Generator::new(spec).take(2_000) {
            match (m.kind, check(&m)) {
                (Kind::Valid | Kind::Duplicate, r) => assert!(r.is_ok(), "{:?}", r),
                (Kind::Invalid(reason), r) => assert_eq!(r.map_err(|e| e.reason), Err(reason)),
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let spec = SynthSpec {
            seed: 99,
            ..SynthSpec::default()
        };
        let a: Vec<_> = Generator::new(spec.clone())
            .take(300)
            .map(|m| m.payload)
            .collect();
        let b: Vec<_> = Generator::new(spec).take(300).map(|m| m.payload).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn versions_of_an_order_increase_and_the_oracle_keeps_the_highest() {
        let spec = SynthSpec {
            orders: 3,
            invalid_ratio: 0.0,
            duplicate_ratio: 0.0,
            seed: 3,
        };
        let x = Expectation::of(&spec, 30);
        assert_eq!(x.mix.valid, 30);
        assert_eq!(x.orders.values().map(|e| e.version).sum::<i64>(), 30);
    }

    #[test]
    fn the_oracle_counts_every_message_once() {
        let spec = SynthSpec::default();
        let x = Expectation::of(&spec, 5_000);
        assert_eq!(x.mix.total(), 5_000);
        assert!(x.mix.invalid.len() >= 5, "{:?}", x.mix.invalid);
    }
}
