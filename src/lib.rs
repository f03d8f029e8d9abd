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
//! The modules, in the order a message meets them:
//! - [`kafka`]: the consumer thread, its rebalance/commit callbacks, the offset tracker;
//! - [`pipeline`]: routing to bounded lanes, batching, the processors;
//! - [`contract`]: the event contract v1, decoding and validation;
//! - [`db`]: migrations, the batched idempotent writes, error classification;
//! - [`worker`]: wiring and the ordered stop; [`http`], [`health`], [`metrics`], [`lag`] around it;
//! - [`config`] (every setting), [`retry`], [`shutdown`], [`telemetry`], [`memory`];
//! - [`synth`], [`produce`], [`dev`]: synthetic events, the `produce` and `dev` commands.

pub mod config;
pub mod contract;
pub mod db;
pub mod dead_letters;
pub mod dev;
pub mod error;
pub mod health;
pub mod http;
pub mod kafka;
pub mod lag;
pub mod memory;
pub mod metrics;
pub mod offsets;
pub mod pipeline;
pub mod produce;
pub mod retry;
pub mod shutdown;
pub mod synth;
pub mod telemetry;
pub mod worker;

pub use error::{Error, Result};
pub use worker::Worker;
