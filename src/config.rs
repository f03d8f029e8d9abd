//! Every setting of every subcommand: a flag, an environment variable, a typed value, a default
//! with its reason.
//!
//! Invariant: configuration is parsed and checked once, at the edge ([`Cli`] then `validate`);
//! the rest of the library receives typed values and never reads the environment. A bad value is
//! reported in one line that never echoes a secret.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sqlx::postgres::PgConnectOptions;

use crate::error::Error;
use checks::parse_duration;

#[derive(Debug, Parser)]
#[command(
    name = "order-worker",
    version,
    about = "Consumes order events from Kafka and applies them to PostgreSQL, effectively once.",
    after_help = "Without a command, `run` is assumed: `order-worker --brokers ...` is `order-worker run --brokers ...`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogConfig,
}

impl Cli {
    /// Parses `args` (the program name first), taking `run` when no command is named.
    pub fn parse_with_default<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        let mut args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        // Any subcommand clap knows (help included), or a help/version flag, is left as given.
        let named = args.get(1).and_then(|a| a.to_str()).is_some_and(|a| {
            matches!(a, "help" | "-h" | "--help" | "-V" | "--version")
                || <Self as clap::CommandFactory>::command()
                    .get_subcommands()
                    .any(|c| c.get_name() == a)
        });
        if !named {
            args.insert(1.min(args.len()), "run".into());
        }
        Self::try_parse_from(args)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the topic and apply events to PostgreSQL (the default).
    Run(RunConfig),
    /// Check a deployment's settings against Kafka and PostgreSQL: one line per check with the
    /// fix; exit 0 only if every check passes.
    Check(CheckConfig),
    /// Judge events with the worker's own decoder and rules, from files, standard input or a
    /// sample of a topic: `ok`, or the dead-letter reason and message the worker would store;
    /// exit 1 if any would be dead-lettered.
    Validate(ValidateConfig),
    /// Apply the embedded database migrations and exit.
    Migrate(MigrateConfig),
    /// Publish synthetic order events (valid, invalid, duplicated) and print a summary.
    Produce(ProduceConfig),
    /// Start an embedded Kafka (librdkafka's mock cluster), publish sample orders, run the worker.
    Dev(DevConfig),
    /// Print a consumer group's lag per partition, with the member owning each partition.
    Lag(LagCommandConfig),
    /// List dead letters, replay them to their topic after a fix, or purge old ones.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLettersCommand,
    },
}

impl Command {
    /// Reads what the command line only points at (the Kafka properties' files and
    /// `KAFKA_PROPERTY_*` variables of `env`), then checks what clap cannot express.
    pub fn prepare(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), Error> {
        if let Some(kafka) = self.kafka_mut() {
            kafka.resolve(env)?;
        }
        match self {
            Self::Run(cfg) => cfg.validate(),
            Self::Dev(cfg) => cfg.worker.validate(&[]),
            _ => Ok(()),
        }
    }

    /// The Kafka settings of a command that talks to Kafka with the user's settings.
    pub fn kafka(&self) -> Option<&KafkaArgs> {
        match self {
            Self::Run(cfg) => Some(&cfg.kafka),
            Self::Check(cfg) => Some(&cfg.run.kafka),
            Self::Produce(cfg) => Some(&cfg.kafka),
            Self::Lag(cfg) => Some(&cfg.kafka),
            Self::Validate(cfg) => cfg.sample.as_ref().map(|ValidateSource::Topic(t)| &t.kafka),
            Self::DeadLetters {
                command: DeadLettersCommand::Replay(cfg),
            } => Some(&cfg.kafka),
            Self::Migrate(_) | Self::Dev(_) | Self::DeadLetters { .. } => None,
        }
    }

    fn kafka_mut(&mut self) -> Option<&mut KafkaArgs> {
        match self {
            Self::Run(cfg) => Some(&mut cfg.kafka),
            Self::Check(cfg) => Some(&mut cfg.run.kafka),
            Self::Produce(cfg) => Some(&mut cfg.kafka),
            Self::Lag(cfg) => Some(&mut cfg.kafka),
            Self::Validate(cfg) => cfg
                .sample
                .as_mut()
                .map(|ValidateSource::Topic(t)| &mut t.kafka),
            Self::DeadLetters {
                command: DeadLettersCommand::Replay(cfg),
            } => Some(&mut cfg.kafka),
            Self::Migrate(_) | Self::Dev(_) | Self::DeadLetters { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// Log format: json (default when stderr is not a terminal) or pretty. Filter with RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A PostgreSQL URL. Its `Debug` hides the password, so it can sit in any config struct.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn connect_options(&self) -> Result<PgConnectOptions, Error> {
        PgConnectOptions::from_str(&self.0)
            .map_err(|e| Error::Config(format!("DATABASE_URL is not a valid PostgreSQL URL: {e}")))
    }

    /// The URL as given; only for building connections, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.connect_options() {
            Ok(o) => write!(
                f,
                "postgres://{}:***@{}:{}/{}",
                o.get_username(),
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("")
            ),
            Err(_) => f.write_str("<invalid database url>"),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DbConfig {
    /// PostgreSQL connection URL, e.g. postgres://user:pass@host:5432/db?sslmode=require.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: DatabaseUrl,
    /// Maximum PostgreSQL connections. Default: one per processor, plus one for health checks.
    #[arg(long, env = "DB_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub db_max_connections: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct ConsumerConfig {
    /// Topic to consume.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "orders")]
    pub topic: String,
    /// Consumer group id. Every replica uses the same one; scale is up to the partition count.
    #[arg(long, env = "KAFKA_GROUP_ID", default_value = "order-worker")]
    pub group_id: String,
    /// Where a group with no committed offset starts.
    #[arg(long, env = "KAFKA_AUTO_OFFSET_RESET", value_enum, default_value_t = OffsetReset::Earliest)]
    pub auto_offset_reset: OffsetReset,
    /// Partition assignment strategy. cooperative-sticky moves only the partitions that must move
    /// when replicas come and go, so scaling does not stop the whole group.
    #[arg(
        long,
        env = "KAFKA_ASSIGNMENT_STRATEGY",
        default_value = "cooperative-sticky"
    )]
    pub assignment_strategy: String,
    /// Bound of librdkafka's prefetch queue in KiB (queued.max.messages.kbytes). librdkafka's own
    /// default is 64 MiB; 1 MiB (about 2k events of 0.5 KB) keeps the processors fed at the smallest
    /// peak: 4 MiB holds 10-12 MiB more for drain rates within the same spread, half of it
    /// starves the processors
    /// (docs/performance.md#decisions).
    #[arg(long, env = "KAFKA_QUEUE_MAX_KBYTES", default_value_t = 1_024,
          value_parser = clap::value_parser!(u32).range(1..=2_097_151))]
    pub queue_max_kbytes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OffsetReset {
    Earliest,
    Latest,
}

impl OffsetReset {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct PipelineConfig {
    /// Number of async processors, each with its own channel and PostgreSQL connection. Events
    /// are routed by order id, so one order is always handled by one processor. Fewer processors
    /// with larger batches drain faster than more with smaller ones at the same memory
    /// (docs/performance.md#decisions).
    #[arg(long, env = "WORKER_PROCESSORS", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub processors: u16,
    /// Capacity (messages) of each processor's bounded channel. When a channel stays full the
    /// consumer pauses its partitions instead of buffering more. The channel holds what arrives
    /// while its processor writes a batch; in a backlog the next batch starts from it, so it
    /// (with the write time) sets how large a backlog's batches grow, and with them the peak
    /// memory (docs/performance.md#decisions).
    #[arg(long, env = "WORKER_CHANNEL_CAPACITY", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub channel_capacity: u32,
    /// Largest batch written in one transaction. Larger batches drain a backlog faster
    /// (PostgreSQL's cost per row falls as statements grow) but hold more memory, up to about
    /// 1 KiB per row in flight; 4,000 with 3 processors keeps a drain near 30 MiB
    /// (docs/performance.md#decisions). Below backlog rates batches stay small: the linger ends
    /// them.
    #[arg(long, env = "BATCH_MAX_ROWS", default_value_t = 4_000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_max_rows: u32,
    /// How long a processor waits to fill a batch before writing what it has, counted from the
    /// batch's first message; it keeps filling while its previous batch is still being written.
    /// In a backlog (the batch before was full, or the channel is) it waits 4 times as long.
    /// Short enough to keep latency low, long enough to fill batches in a backlog
    /// (docs/performance.md#decisions).
    #[arg(long, env = "BATCH_LINGER", default_value = "10ms", value_parser = parse_duration)]
    pub batch_linger: Duration,
    /// Largest accepted message value; larger ones are dead-lettered (and stored truncated).
    #[arg(long, env = "MAX_PAYLOAD_BYTES", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u32).range(64..=104_857_600))]
    pub max_payload_bytes: u32,
    /// Bound on the bytes of messages taken from Kafka and not yet durable. Together with the
    /// librdkafka queue bound this caps the worker's memory whatever the backlog.
    #[arg(long, env = "MAX_IN_FLIGHT_BYTES", default_value_t = 64 * 1_048_576,
          value_parser = clap::value_parser!(u64).range(1_024..))]
    pub max_in_flight_bytes: u64,
    /// How often durable progress is committed to Kafka. Lag tools (KEDA) read these commits.
    #[arg(long, env = "COMMIT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub commit_interval: Duration,
    /// How long a revoked partition's in-flight messages may take to become durable before the
    /// partition is released anyway (its uncommitted messages are then redelivered elsewhere).
    /// With the 5 s its commit may wait, it must stay below max.poll.interval.ms and
    /// STALL_TIMEOUT, and it may not exceed SHUTDOWN_TIMEOUT.
    #[arg(long, env = "REBALANCE_DRAIN_TIMEOUT", default_value = "10s",
          value_parser = parse_duration)]
    pub rebalance_drain_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// Address of the HTTP server for /healthz, /readyz, /metrics and /lag.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub http_addr: SocketAddr,
}

/// Where Confluent-framed messages find their writer schemas (Avro, Protobuf, JSON).
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryConfig {
    /// Confluent Schema Registry (or a compatible one: Apicurio's ccompat API, Redpanda,
    /// Karapace) resolving the schema ids of framed messages, e.g. `http://schema-registry:8081`.
    /// Without it a framed value is read as JSON or Protobuf by its first bytes, and Avro is
    /// not read.
    #[arg(long, env = "SCHEMA_REGISTRY_URL", global = true)]
    pub schema_registry_url: Option<String>,
    /// File holding `user:password` for HTTP Basic authentication (Confluent Cloud: API key and
    /// secret), read at each schema fetch so a rotated Secret applies without a restart.
    #[arg(long, env = "SCHEMA_REGISTRY_BASIC_AUTH_FILE", global = true)]
    pub schema_registry_basic_auth_file: Option<std::path::PathBuf>,
    /// File holding a bearer token, read at each schema fetch (a projected token rotates).
    #[arg(long, env = "SCHEMA_REGISTRY_BEARER_TOKEN_FILE", global = true)]
    pub schema_registry_bearer_token_file: Option<std::path::PathBuf>,
    /// Longest one schema fetch may take; a failed fetch is retried with backoff.
    #[arg(long, env = "SCHEMA_REGISTRY_TIMEOUT", default_value = "10s", value_parser = parse_duration,
          global = true)]
    pub schema_registry_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct RunConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub worker: WorkerConfig,
}

/// Everything the worker needs besides where Kafka is (which `dev` provides itself).
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub db: DbConfig,
    #[command(flatten)]
    pub consumer: ConsumerConfig,
    #[command(flatten)]
    pub pipeline: PipelineConfig,
    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub schema_registry: RegistryConfig,
    /// Apply pending migrations at startup instead of refusing to start (true/false, 1/0).
    #[arg(long, env = "MIGRATE_ON_START", value_parser = clap::builder::BoolishValueParser::new())]
    pub migrate_on_start: bool,
    /// Also publish every dead letter to this Kafka topic (original key and bytes, reasons in
    /// `order_worker.errors.*` headers). Source offsets then wait for the topic's acknowledgement.
    #[arg(long, env = "DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// How often consumer lag is measured from the broker (for /metrics and /lag). Each
    /// measurement is three batched requests, whatever the partition count.
    #[arg(long, env = "LAG_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub lag_interval: Duration,
    /// Time allowed for a graceful stop (drain, flush, final commit, leaving the group); the
    /// process exits by then whatever Kafka and PostgreSQL do. Keep it below the pod's
    /// terminationGracePeriodSeconds (Kubernetes' default is 30 s).
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// How long messages may stay in flight with nothing becoming durable, or one batch write go
    /// without a statement ending, while PostgreSQL and Kafka answer, before /healthz fails and
    /// Kubernetes restarts the pod. An outage does not count. Far above any batch write, so only
    /// a wedged pipeline reaches it: a batch whose refused rows are read back from Kafka may take
    /// a minute. At least 10s.
    #[arg(long, env = "STALL_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub stall_timeout: Duration,
}

impl RunConfig {
    /// Checks what clap cannot express.
    pub fn validate(&self) -> Result<(), Error> {
        if self.kafka.brokers.trim().is_empty() {
            return Err(Error::Config(
                "KAFKA_BROKERS (--brokers) is required".into(),
            ));
        }
        self.worker.validate(&self.kafka.properties)
    }
}

mod checks;
mod commands;
mod kafka;

pub use commands::{
    CheckConfig, DeadLetterFilter, DeadLetterListConfig, DeadLetterPurgeConfig,
    DeadLetterReplayConfig, DeadLettersCommand, DevConfig, LagCommandConfig, MigrateConfig,
    ProduceConfig, SynthConfig, TopicSample, ValidateConfig, ValidateSource,
};

pub use checks::{RUNTIME_THREADS_ENV, runtime_threads};
pub use kafka::{KAFKA_PROPERTY_PREFIX, KafkaArgs, KafkaProperty};
pub(crate) use kafka::{REVOKE_COMMIT_WAIT, check_overrides};
#[cfg(test)]
mod tests;
