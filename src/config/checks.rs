//! The checks clap cannot express: bounds on durations, topic names, and the settings that
//! must agree with each other.
//!
//! Invariant: a configuration that passes here cannot make the worker overflow a duration,
//! subscribe to a pattern, or wait inside a rebalance longer than the group, the stop or the
//! liveness probe allow; each refusal names the setting in one line.

use std::ffi::OsStr;
use std::num::NonZeroUsize;
use std::time::Duration;

use super::REVOKE_COMMIT_WAIT;
use super::{KafkaProperty, RegistryConfig, WorkerConfig};
use crate::error::Error;

impl WorkerConfig {
    /// Checks what clap cannot express, with the Kafka `properties` the consumer will get.
    pub fn validate(&self, properties: &[KafkaProperty]) -> Result<(), Error> {
        self.db.database_url.connect_options()?;
        let c = &self.consumer;
        if c.group_id.trim().is_empty() {
            return Err(Error::Config("KAFKA_GROUP_ID must not be empty".into()));
        }
        check_topic("KAFKA_TOPIC", &c.topic)?;
        if let Some(topic) = &self.dead_letter_topic {
            check_topic("DEAD_LETTER_TOPIC", topic)?;
        }
        super::check_overrides(properties)?;
        self.schema_registry.validate()?;
        let p = &self.pipeline;
        if p.batch_linger.is_zero() || p.commit_interval.is_zero() {
            return Err(Error::Config(
                "BATCH_LINGER and COMMIT_INTERVAL must be above zero".into(),
            ));
        }
        if self.shutdown_timeout < Duration::from_secs(1) {
            return Err(Error::Config("SHUTDOWN_TIMEOUT must be at least 1s".into()));
        }
        if self.stall_timeout < MIN_STALL_TIMEOUT {
            return Err(Error::Config(format!(
                "STALL_TIMEOUT must be at least {}: an outage of PostgreSQL takes a few seconds \
                 to be noticed, and must never be taken for a stall",
                humantime::format_duration(MIN_STALL_TIMEOUT)
            )));
        }
        self.check_drain_timeout(properties)
    }

    /// A revoked partition's drain, and the commit after it, run inside librdkafka's rebalance
    /// callback, so the consumer does not poll meanwhile: they must end before the group evicts
    /// the member for not polling, and before a stall would be counted; the drain must also fit
    /// in a graceful stop.
    fn check_drain_timeout(&self, properties: &[KafkaProperty]) -> Result<(), Error> {
        let drain = self.pipeline.rebalance_drain_timeout;
        let blocked = drain + REVOKE_COMMIT_WAIT;
        let max_poll_ms = super::kafka::effective(properties, "max.poll.interval.ms").map_or(
            Ok(DEFAULT_MAX_POLL_INTERVAL_MS),
            |v| {
                v.parse::<u64>().map_err(|_| {
                    Error::Config("kafka property max.poll.interval.ms must be a number".into())
                })
            },
        )?;
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        if blocked.as_millis() >= u128::from(max_poll_ms) {
            return Err(Error::Config(format!(
                "REBALANCE_DRAIN_TIMEOUT ({}) plus the {} a revoke's commit may wait must be below \
                 max.poll.interval.ms ({max_poll_ms} ms): the member would be evicted while it drains",
                fmt(drain),
                fmt(REVOKE_COMMIT_WAIT)
            )));
        }
        if drain > self.shutdown_timeout {
            return Err(Error::Config(format!(
                "REBALANCE_DRAIN_TIMEOUT ({}) must not exceed SHUTDOWN_TIMEOUT ({})",
                fmt(drain),
                fmt(self.shutdown_timeout)
            )));
        }
        if blocked >= self.stall_timeout {
            return Err(Error::Config(format!(
                "REBALANCE_DRAIN_TIMEOUT ({}) plus the {} a revoke's commit may wait must be below \
                 STALL_TIMEOUT ({})",
                fmt(drain),
                fmt(REVOKE_COMMIT_WAIT),
                fmt(self.stall_timeout)
            )));
        }
        Ok(())
    }

    /// Connections the pool may open.
    pub fn db_max_connections(&self) -> u32 {
        self.db
            .db_max_connections
            .unwrap_or(u32::from(self.pipeline.processors) + 1)
    }
}

impl RegistryConfig {
    fn validate(&self) -> Result<(), Error> {
        let has_auth = self.schema_registry_basic_auth_file.is_some()
            || self.schema_registry_bearer_token_file.is_some();
        let Some(url) = &self.schema_registry_url else {
            if has_auth {
                return Err(Error::Config(
                    "SCHEMA_REGISTRY_*_FILE is set without SCHEMA_REGISTRY_URL".into(),
                ));
            }
            return Ok(());
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Config(
                "SCHEMA_REGISTRY_URL must start with http:// or https://".into(),
            ));
        }
        if self.schema_registry_basic_auth_file.is_some()
            && self.schema_registry_bearer_token_file.is_some()
        {
            return Err(Error::Config(
                "set one of SCHEMA_REGISTRY_BASIC_AUTH_FILE and SCHEMA_REGISTRY_BEARER_TOKEN_FILE, \
                 not both"
                    .into(),
            ));
        }
        if self.schema_registry_timeout.is_zero() {
            return Err(Error::Config(
                "SCHEMA_REGISTRY_TIMEOUT must be above zero".into(),
            ));
        }
        Ok(())
    }
}

/// Shortest STALL_TIMEOUT: PostgreSQL is pinged every 2 s with a 2 s timeout, so an outage is
/// known within about 4 s.
const MIN_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// librdkafka's default `max.poll.interval.ms`.
const DEFAULT_MAX_POLL_INTERVAL_MS: u64 = 300_000;

/// Longest duration any setting takes: a day covers every sensible value, and keeps the
/// arithmetic on it (a linger times four, a deadline from now) far from overflowing.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > MAX_DURATION {
        return Err("at most 24h".into());
    }
    Ok(d)
}

/// A Kafka topic name, as brokers accept it: 1 to 249 of `a-z A-Z 0-9 . _ -`. librdkafka would
/// read a name starting with `^` as a regular expression and subscribe to whatever matches.
pub(super) fn check_topic(setting: &str, topic: &str) -> Result<(), Error> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if (1..=249).contains(&topic.len()) && topic.chars().all(legal) && topic != "." && topic != ".."
    {
        return Ok(());
    }
    let hint = if topic.starts_with('^') {
        " (patterns are not supported: name one topic)"
    } else {
        ""
    };
    Err(Error::Config(format!(
        "{setting} must be a topic name of 1 to 249 letters, digits, '.', '_' or '-'{hint}"
    )))
}

/// The variable that sets the async runtime's threads.
pub const RUNTIME_THREADS_ENV: &str = "TOKIO_WORKER_THREADS";

/// The async runtime's threads: [`RUNTIME_THREADS_ENV`]'s value, or when it is unset or empty
/// tokio's default, one per core the process may use. Always resolved here and passed to the
/// runtime's builder, since tokio reading the variable itself panics on anything but a
/// positive number (an empty value included).
pub fn runtime_threads(value: Option<&OsStr>) -> Result<NonZeroUsize, Error> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN));
    };
    value
        .to_str()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            Error::Config(format!(
                "{RUNTIME_THREADS_ENV} must be a whole number of threads, at least 1"
            ))
        })
}
