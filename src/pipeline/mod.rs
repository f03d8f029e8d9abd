//! From a consumed message to a durable row: routing, bounded channels, batching, writing.
//!
//! Invariant: between the consumer and PostgreSQL every buffer is bounded, in messages (the
//! channels, the batches) and in bytes (the in-flight budget); a message leaves the pipeline
//! only as a durable effect (row applied, duplicate ignored, dead letter stored) reported to
//! the offset tracker, or not at all (a crash or abort), in which case its offset is never
//! committed.

mod batch;
mod dispatch;
mod envelope;
mod intake;
mod pacing;
mod processor;
mod publish;
mod refused;
mod write;

pub use batch::{Decoded, Plan, decode, decode_with, plan};
pub(crate) use batch::{named, offset_ranges, versions_by_order};
pub(crate) use dispatch::{Dispatcher, InFlight, Lane, lanes};
pub use envelope::{Copier, Envelope};
pub(crate) use intake::{ConsumerLoop, ConsumerSettings};
pub(crate) use processor::{Processor, ProcessorSettings};
