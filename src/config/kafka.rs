//! Kafka settings as the user gives them: `key=value` librdkafka properties from four sources
//! (a properties file, a comma-separated list, one environment variable per property, files
//! holding one secret each), and the ones the worker's guarantees rest on.
//!
//! Invariant: after [`KafkaArgs::resolve`], `properties` holds every source in precedence order
//! (a later one overrides an earlier one); a property that would let librdkafka store or commit
//! offsets on its own, or change the group, is refused before any client exists; a secret's
//! value never reaches a log or an error message.

use std::fmt;
use std::path::{Path, PathBuf};
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
    /// A file of librdkafka properties, one `key=value` per line (`#` starts a comment line).
    /// Values are taken as written, commas included.
    #[arg(long = "kafka-properties-file", env = "KAFKA_PROPERTIES_FILE")]
    pub properties_file: Option<PathBuf>,
    /// A property whose value is the content of a file, `key=path`, comma-separated or repeated:
    /// a mounted Secret, e.g. sasl.password=/etc/kafka-user/password. With the key
    /// sasl.jaas.config, the file holds a Java JAAS line (a Strimzi KafkaUser's) whose username
    /// and password become sasl.username and sasl.password.
    #[arg(long = "kafka-secret-file", env = "KAFKA_SECRET_FILES", value_delimiter = ',',
          value_parser = parse_property)]
    pub secret_files: Vec<KafkaProperty>,
    /// Log in to Amazon MSK with IAM: SASL/OAUTHBEARER tokens signed with the pod's AWS
    /// credentials (IRSA, EKS Pod Identity, AWS_* variables, a profile, instance metadata).
    /// Sets security.protocol=SASL_SSL and sasl.mechanism=OAUTHBEARER unless properties do.
    #[arg(long = "aws-msk-iam", env = "KAFKA_AWS_MSK_IAM",
          value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub aws_msk_iam: bool,
    /// The AWS region of the MSK cluster, which tokens are signed for (with --aws-msk-iam).
    #[arg(long = "aws-region", env = "AWS_REGION")]
    pub aws_region: Option<String>,
}

/// Environment variables named `KAFKA_PROPERTY_<NAME>` each set one property: `_` in the name
/// becomes `.`, `__` becomes `_`, and it is lower-cased (`KAFKA_PROPERTY_SASL_PASSWORD` sets
/// `sasl.password`), so a value may hold any character.
pub const KAFKA_PROPERTY_PREFIX: &str = "KAFKA_PROPERTY_";

impl KafkaArgs {
    /// Folds every source into `properties`, in precedence order: the properties file, then
    /// `--kafka-property`/`KAFKA_PROPERTIES`, then `KAFKA_PROPERTY_*` variables of `env`, then
    /// the secret files. Reads the files now, so a missing one is a configuration error.
    pub fn resolve(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), Error> {
        let mut all = if self.aws_msk_iam {
            vec![
                KafkaProperty::new("security.protocol", "SASL_SSL"),
                KafkaProperty::new("sasl.mechanism", "OAUTHBEARER"),
            ]
        } else {
            Vec::new()
        };
        all.extend(match self.properties_file.take() {
            Some(path) => {
                let text = read("KAFKA_PROPERTIES_FILE", &path)?;
                parse_properties_file(&text).map_err(|line| {
                    config(format!(
                        "KAFKA_PROPERTIES_FILE {}: line {line}: expected key=value",
                        path.display()
                    ))
                })?
            }
            None => Vec::new(),
        });
        all.append(&mut self.properties);
        all.extend(properties_from_env(env)?);
        for secret in std::mem::take(&mut self.secret_files) {
            let path = PathBuf::from(&secret.value);
            let text = read(&format!("KAFKA_SECRET_FILES ({})", secret.key), &path)?;
            all.extend(secret_properties(
                &secret.key,
                text.trim_end_matches(['\r', '\n']),
            )?);
        }
        self.properties = all;
        self.check_aws_msk_iam()
    }

    /// The value a librdkafka property has once every source is folded in (the last one wins).
    pub fn property(&self, key: &str) -> Option<&str> {
        effective(&self.properties, key)
    }

    /// The region MSK IAM tokens are signed for, if that login is on.
    pub fn aws_msk_iam_region(&self) -> Option<&str> {
        self.aws_msk_iam.then_some(self.aws_region.as_deref()?)
    }

    fn check_aws_msk_iam(&self) -> Result<(), Error> {
        if !self.aws_msk_iam {
            return Ok(());
        }
        if self.aws_region.as_deref().is_none_or(str::is_empty) {
            return Err(config(
                "KAFKA_AWS_MSK_IAM needs the cluster's region: set AWS_REGION (or --aws-region)"
                    .into(),
            ));
        }
        let last = |key| self.property(key).map(str::to_ascii_lowercase);
        if last("sasl.mechanism").as_deref() != Some("oauthbearer") {
            return Err(config(
                "KAFKA_AWS_MSK_IAM logs in with sasl.mechanism=OAUTHBEARER; remove the other mechanism".into(),
            ));
        }
        if last("sasl.oauthbearer.method").as_deref() == Some("oidc") {
            return Err(config(
                "KAFKA_AWS_MSK_IAM and sasl.oauthbearer.method=oidc are two different logins; choose one".into(),
            ));
        }
        Ok(())
    }

    /// Brokers without extra properties: an embedded or local cluster.
    pub fn local(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            properties: Vec::new(),
            properties_file: None,
            secret_files: Vec::new(),
            aws_msk_iam: false,
            aws_region: None,
        }
    }
}

/// Longest a revoke's commit waits for the coordinator's answer outside a stop. The drain
/// timeout is checked against it: a rebalance blocks the consumer for both.
pub(crate) const REVOKE_COMMIT_WAIT: Duration = Duration::from_secs(5);

/// Properties the worker's guarantees rest on, each with what to set instead; overriding them is
/// refused.
pub(crate) const GUARDED: [(&str, &str); 4] = [
    ("enable.auto.commit", COMMITS),
    ("enable.auto.offset.store", COMMITS),
    ("auto.commit.interval.ms", COMMITS),
    ("group.id", "set KAFKA_GROUP_ID"),
];
const COMMITS: &str = "offsets are committed by the worker once durable (set COMMIT_INTERVAL)";

/// The value of `key` in `properties`, in which a later entry overrides an earlier one.
pub(crate) fn effective<'a>(properties: &'a [KafkaProperty], key: &str) -> Option<&'a str> {
    properties
        .iter()
        .rev()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

pub(crate) fn check_overrides(properties: &[KafkaProperty]) -> Result<(), Error> {
    if let Some((key, instead)) = properties
        .iter()
        .find_map(|p| GUARDED.iter().find(|(key, _)| *key == p.key))
    {
        return Err(Error::Config(format!(
            "kafka property {key} cannot be overridden: {instead}"
        )));
    }
    // librdkafka's `error` stops a partition whose committed offset left the log (retention
    // after downtime) for good, while every probe stays healthy.
    match effective(properties, "auto.offset.reset") {
        Some(v) if v.trim().eq_ignore_ascii_case("error") => Err(Error::Config(
            "kafka property auto.offset.reset=error is refused: a partition whose committed \
             offset left the log would stop for good; set KAFKA_AUTO_OFFSET_RESET (earliest or \
             latest)"
                .into(),
        )),
        _ => Ok(()),
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

fn config(message: String) -> Error {
    Error::Config(message)
}

fn read(setting: &str, path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|e| config(format!("{setting}: cannot read {}: {e}", path.display())))
}

/// The properties of a properties file's text, or the number of its first malformed line.
fn parse_properties_file(text: &str) -> Result<Vec<KafkaProperty>, usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with(['#', '!']))
        .map(|(i, l)| parse_property(l).map_err(|_| i + 1))
        .collect()
}

/// The properties set by `KAFKA_PROPERTY_*` variables, sorted by name.
fn properties_from_env(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<KafkaProperty>, Error> {
    let mut found: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(KAFKA_PROPERTY_PREFIX))
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|(name, value)| {
            let key = name[KAFKA_PROPERTY_PREFIX.len()..]
                .split("__")
                .map(|part| part.replace('_', "."))
                .collect::<Vec<_>>()
                .join("_")
                .to_lowercase();
            if key.is_empty() || key.starts_with('.') || key.ends_with('.') {
                return Err(config(format!("{name} does not name a property")));
            }
            Ok(KafkaProperty::new(key, value))
        })
        .collect()
}

/// The properties a secret file sets: itself, or for a JAAS line, its username and password.
fn secret_properties(key: &str, content: &str) -> Result<Vec<KafkaProperty>, Error> {
    if key != "sasl.jaas.config" {
        return Ok(vec![KafkaProperty::new(key, content)]);
    }
    let field = |name: &str| {
        let start = content.find(&format!("{name}=\""))? + name.len() + 2;
        let len = content[start..].find('"')?;
        Some(content[start..start + len].to_owned())
    };
    match (field("username"), field("password")) {
        (Some(user), Some(password)) => Ok(vec![
            KafkaProperty::new("sasl.username", user),
            KafkaProperty::new("sasl.password", password),
        ]),
        _ => Err(config(
            "KAFKA_SECRET_FILES (sasl.jaas.config): no username=\"...\" and password=\"...\" in the file".into(),
        )),
    }
}

pub(super) fn parse_property(s: &str) -> Result<KafkaProperty, String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok(KafkaProperty::new(k.trim(), v.trim())),
        _ => Err("expected key=value".into()),
    }
}

#[cfg(test)]
#[path = "kafka_tests.rs"]
mod tests;
