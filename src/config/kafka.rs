//! Kafka settings as the user gives them: `key=value` librdkafka properties, and the ones the
//! worker's guarantees rest on.
//!
//! Invariant: a property that would let librdkafka store or commit offsets on its own, or change
//! the group, is refused here, before any client exists; a secret's value never reaches a log.

use std::fmt;
use std::time::Duration;

use clap::Args;

use crate::error::Error;

/// Where Kafka is and how to reach it, for every command that talks to Kafka (`dev` provides
/// its own).
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub brokers: String,
    /// Extra librdkafka properties, `key=value`, comma-separated or repeated (TLS, SASL, tuning),
    /// e.g. security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512. They override the defaults,
    /// except the offset-management settings the worker's guarantees rest on.
    #[arg(long = "kafka-property", env = "KAFKA_PROPERTIES", value_delimiter = ',',
          value_parser = parse_property, hide_env_values = true)]
    pub properties: Vec<KafkaProperty>,
}

impl KafkaArgs {
    /// Brokers without extra properties: an embedded or local cluster.
    pub fn local(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            properties: Vec::new(),
        }
    }
}

/// Longest a revoke's commit waits for the coordinator's answer outside a stop. The drain
/// timeout is checked against it: a rebalance blocks the consumer for both.
pub(crate) const REVOKE_COMMIT_WAIT: Duration = Duration::from_secs(5);

/// Properties the worker's guarantees rest on; overriding them is refused.
pub(crate) const GUARDED: [&str; 4] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.commit.interval.ms",
    "group.id",
];

pub(crate) fn check_overrides(properties: &[KafkaProperty]) -> Result<(), Error> {
    match properties
        .iter()
        .find(|p| GUARDED.contains(&p.key.as_str()))
    {
        Some(p) => Err(Error::Config(format!(
            "kafka property {} cannot be overridden: offsets are managed by the worker \
             (use KAFKA_GROUP_ID and COMMIT_INTERVAL)",
            p.key
        ))),
        None => Ok(()),
    }
}

/// One librdkafka property. Its `Debug` hides the value of any key that may hold a secret
/// (`sasl.password`, `ssl.key.password`, `sasl.oauthbearer.client.secret`, ...).
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaProperty {
    pub key: String,
    pub value: String,
}

impl KafkaProperty {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }

    fn is_secret(&self) -> bool {
        ["password", "secret", "key.pem", "jaas", "token"]
            .iter()
            .any(|s| self.key.contains(s))
    }
}

impl fmt::Debug for KafkaProperty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.is_secret() { "***" } else { &self.value };
        write!(f, "{}={}", self.key, value)
    }
}

pub(super) fn parse_property(s: &str) -> Result<KafkaProperty, String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok(KafkaProperty::new(k.trim(), v.trim())),
        _ => Err("expected key=value".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_management_settings_cannot_be_overridden() {
        for key in GUARDED {
            let err = check_overrides(&[KafkaProperty::new(key, "true")]).unwrap_err();
            assert!(err.to_string().contains(key));
        }
        assert!(check_overrides(&[KafkaProperty::new("security.protocol", "SSL")]).is_ok());
    }
}
