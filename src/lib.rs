//! order-worker: consumes order events from Kafka and applies them to PostgreSQL.
//!
//! What the worker guarantees:
//! - **Nothing is lost.** A Kafka offset is committed only after the message behind it, and
//!   every message before it in its partition, is durable in PostgreSQL: an order row applied,
//!   a duplicate ignored, or a dead letter stored.
//! - **No effect twice.** Writes are idempotent (an order only moves to a strictly higher
//!   version; a dead letter is unique on its source coordinates), so redelivery after a crash or
//!   rebalance and duplicates from producers never change the result.
//! - **Bounded memory.** librdkafka's prefetch queue, the channels, the batches and the bytes in
//!   flight are all bounded; when the pipeline is full the consumer pauses its partitions.
//! - **It keeps running.** Transient failures are retried without limit; bad input is
//!   dead-lettered with a precise reason.
//!
//! The modules, by layer (imports point down only; `tests/it/layers.rs` checks it):
//! - pure cores, no I/O: [`contract`] (the event contracts v1 and v2 in JSON, Protobuf, Avro), [`offsets`] (which offsets are
//!   durable, so committable), [`config`], [`synth`], `retry`, [`Error`];
//! - around everything: `metrics` (the catalogue is public as [`METRICS`]), `health`, [`telemetry`], [`shutdown`], `memory`;
//! - adapters that know nothing of the pipeline: [`kafka`], [`db`], [`lag`], [`registry`], `http`;
//! - [`pipeline`]: intake, routing to bounded lanes, batching, the processors;
//! - `worker` ([`Worker`]): wiring, supervision and the ordered stop; the commands [`check`],
//!   [`dev`], [`produce`], [`dead_letters`].
//!
//! The public surface is what the binary, the tests and the benchmark crate use.

pub mod check;
pub mod config;
pub mod contract;
pub mod db;
pub mod dead_letters;
pub mod dev;
pub mod error;
pub(crate) mod health;
pub(crate) mod http;
pub mod kafka;
pub mod lag;
pub(crate) mod memory;
pub(crate) mod metrics;
pub mod offsets;
pub mod pipeline;
pub mod produce;
pub mod registry;
pub(crate) mod retry;
pub mod shutdown;
pub mod synth;
pub mod telemetry;
pub mod validate;
pub(crate) mod worker;

pub use error::{Error, Result};
pub use metrics::{ALL as METRICS, Kind as MetricKind, Metric};
pub use worker::Worker;
