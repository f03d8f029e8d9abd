//! The arguments of the commands besides `run`: `check`, `validate`, `migrate`, `produce`,
//! `lag`, `dev` and `dead-letters`.
//!
//! Invariant: every command that talks to Kafka takes its brokers and librdkafka properties from
//! one [`KafkaArgs`], so the flags and variables are the same everywhere.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::checks::parse_duration;
use super::{DbConfig, KafkaArgs, OffsetReset, RunConfig, WorkerConfig};

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Show dead letters, oldest first.
    List(DeadLetterListConfig),
    /// Re-publish dead letters to their source topic (or --topic) and mark them replayed.
    Replay(DeadLetterReplayConfig),
    /// Delete dead letters created before a time: the table's retention.
    Purge(DeadLetterPurgeConfig),
}

/// Which dead letters a `dead-letters` command works on.
#[derive(Debug, Clone, Args)]
pub struct DeadLetterFilter {
    /// Only this reason (tombstone, invalid_json, schema_violation, invalid_value, ...).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only those created since: a duration back from now (`2h`, `30m`) or an RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<time::OffsetDateTime>,
    /// Only these ids (repeat the flag, or separate with commas).
    #[arg(long = "id", value_delimiter = ',')]
    pub ids: Vec<i64>,
    /// Include dead letters already replayed.
    #[arg(long)]
    pub include_replayed: bool,
    /// At most this many.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub limit: i64,
}

#[derive(Debug, Clone, Args)]
pub struct DeadLetterListConfig {
    #[command(flatten)]
    pub db: DbConfig,
    #[command(flatten)]
    pub filter: DeadLetterFilter,
    /// Print JSON lines (payloads base64-free: as UTF-8 text where possible) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DeadLetterReplayConfig {
    #[command(flatten)]
    pub db: DbConfig,
    #[command(flatten)]
    pub filter: DeadLetterFilter,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Publish to this topic instead of each dead letter's source topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Show what would be replayed without publishing or marking anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// What `validate` judges: files or standard input, or (`validate topic`) a sample of a topic.
#[derive(Debug, Clone, Args)]
pub struct ValidateConfig {
    #[command(subcommand)]
    pub sample: Option<ValidateSource>,
    /// Files of events, one event per file (or per line with --lines); `-` or none: standard
    /// input.
    pub files: Vec<PathBuf>,
    /// One event per line (JSON Lines) instead of one per file.
    #[arg(long)]
    pub lines: bool,
    /// Each line is `key<TAB>value` (kcat's `-K'\t'` format); an empty key is no key, an empty
    /// value no value.
    #[arg(long)]
    pub keyed: bool,
    /// The message key of the events read without one. Without it, each is judged as if keyed
    /// by its own order_id (as contract v1 requires).
    #[arg(long, conflicts_with = "keyed")]
    pub key: Option<String>,
    /// Largest accepted message value, as the worker's setting: larger ones are
    /// payload_too_large.
    #[arg(long, env = "MAX_PAYLOAD_BYTES", default_value_t = 1_048_576, global = true,
          value_parser = clap::value_parser!(u32).range(64..=104_857_600))]
    pub max_payload_bytes: u32,
    /// Print JSON (one object per event) instead of one line per event.
    #[arg(long, global = true)]
    pub json: bool,
    /// The `content-type` header the events read from files or standard input would carry:
    /// `application/x-protobuf` judges each file (or line of --keyed) as a bare Protobuf
    /// OrderEvent. A topic's messages carry their own headers.
    #[arg(long)]
    pub content_type: Option<String>,
    /// Resolves the schema ids of Confluent-framed events (Avro needs it), as the worker does.
    #[command(flatten)]
    pub schema_registry: super::RegistryConfig,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ValidateSource {
    /// Judge a sample of a topic: the last messages of each partition, or from an offset.
    Topic(TopicSample),
}

/// Which messages of a topic `validate topic` reads (never joining a group, never committing).
#[derive(Debug, Clone, Args)]
pub struct TopicSample {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The topic.
    #[arg(long)]
    pub topic: String,
    /// Only this partition (default: all).
    #[arg(long)]
    pub partition: Option<i32>,
    /// The last N messages of each partition.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub last: i64,
    /// From this offset of each partition instead (at most --count messages).
    #[arg(long, conflicts_with = "last", value_parser = clap::value_parser!(i64).range(0..))]
    pub from_offset: Option<i64>,
    /// With --from-offset: at most this many messages per partition.
    #[arg(long, default_value_t = 1_000, requires = "from_offset",
          value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub count: i64,
}

#[derive(Debug, Clone, Args)]
pub struct DeadLetterPurgeConfig {
    #[command(flatten)]
    pub db: DbConfig,
    /// Delete those created before: a duration back from now (`30d`, `720h`) or an RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    pub before: time::OffsetDateTime,
    /// Only this reason.
    #[arg(long)]
    pub reason: Option<String>,
    /// Only those already replayed (the others are kept, whatever their age).
    #[arg(long)]
    pub replayed_only: bool,
    /// Count what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateConfig {
    #[command(flatten)]
    pub db: DbConfig,
}

/// What `produce` and `dev` generate.
#[derive(Debug, Clone, Args)]
pub struct SynthConfig {
    /// Number of distinct orders the events are spread over.
    #[arg(long, env = "PRODUCE_ORDERS", default_value_t = 1_000)]
    pub orders: u64,
    /// Fraction of events replaced by invalid messages (each kind of rejection in turn).
    #[arg(long, env = "PRODUCE_INVALID_RATIO", default_value_t = 0.01, value_parser = parse_ratio)]
    pub invalid_ratio: f64,
    /// Fraction of events that re-send an earlier event (a producer retry or a stale version).
    #[arg(long, env = "PRODUCE_DUPLICATE_RATIO", default_value_t = 0.02, value_parser = parse_ratio)]
    pub duplicate_ratio: f64,
    /// Seed of the generator: the same seed produces the same events.
    #[arg(long, env = "PRODUCE_SEED", default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ProduceConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topic to publish to.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "orders")]
    pub topic: String,
    /// Number of messages to publish.
    #[arg(long, env = "PRODUCE_EVENTS", default_value_t = 10_000)]
    pub events: u64,
    /// Messages per second; 0 publishes as fast as the broker accepts.
    #[arg(long, env = "PRODUCE_RATE", default_value_t = 0)]
    pub rate: u64,
    /// Create the topic with this many partitions when it does not exist.
    #[arg(long, env = "PRODUCE_PARTITIONS")]
    pub partitions: Option<i32>,
    #[command(flatten)]
    pub synth: SynthConfig,
}

#[derive(Debug, Clone, Args)]
pub struct CheckConfig {
    /// The settings `run` would get, read from the same flags and variables.
    #[command(flatten)]
    pub run: RunConfig,
    /// The most replicas that will run (the ScaledObject's maxReplicaCount): compared with the
    /// topic's partitions and with PostgreSQL's max_connections.
    #[arg(long, env = "CHECK_MAX_REPLICAS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_replicas: Option<u32>,
    /// The pod's terminationGracePeriodSeconds: SHUTDOWN_TIMEOUT must end before it.
    #[arg(long, env = "CHECK_GRACE_PERIOD", value_parser = parse_duration)]
    pub grace_period: Option<Duration>,
    /// Print one JSON document instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LagCommandConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topic whose lag is shown.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "orders")]
    pub topic: String,
    /// Consumer group whose committed offsets are read (the group is not joined).
    #[arg(long, env = "KAFKA_GROUP_ID", default_value = "order-worker")]
    pub group_id: String,
    /// What an uncommitted partition counts as lag: all of it (earliest) or nothing (latest).
    #[arg(long, env = "KAFKA_AUTO_OFFSET_RESET", value_enum, default_value_t = OffsetReset::Earliest)]
    pub auto_offset_reset: OffsetReset,
    /// Print JSON (the same document as the worker's /lag) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DevConfig {
    /// Partitions of the embedded topic.
    #[arg(long, env = "DEV_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
    /// Events published at startup, before the steady stream.
    #[arg(long, env = "DEV_INITIAL_EVENTS", default_value_t = 2_000)]
    pub initial_events: u64,
    /// Events per second published after the initial burst (0: none).
    #[arg(long, env = "DEV_RATE", default_value_t = 50)]
    pub rate: u64,
    /// Stop after this long (for scripted demos); by default run until Ctrl-C.
    #[arg(long, env = "DEV_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub synth: SynthConfig,
    #[command(flatten)]
    pub worker: WorkerConfig,
}

fn parse_since(s: &str) -> Result<time::OffsetDateTime, String> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    let back = humantime::parse_duration(s)
        .map_err(|_| "expected a duration such as 2h or an RFC 3339 time".to_owned())?;
    let back = time::Duration::try_from(back).map_err(|e| e.to_string())?;
    Ok(time::OffsetDateTime::now_utc() - back)
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("expected a number from 0 to 1".into()),
    }
}
