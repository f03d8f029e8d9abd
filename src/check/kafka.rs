//! The Kafka checks: brokers, topic, group and dead-letter topic, through one client that never
//! joins the group, and the dead-letter topic's size limit through an admin client.

use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use super::{Finding, TIMEOUT};
use crate::config::CheckConfig;
use crate::kafka::{client_config, dead_letter_topic::largest_letter};
use crate::lag::{self, Problem, Quiet};

pub(super) async fn check(cfg: &CheckConfig) -> Vec<Finding> {
    let owned = cfg.clone();
    let (mut findings, dead_letter_topic_exists) =
        tokio::task::spawn_blocking(move || read(&owned))
            .await
            .unwrap_or_else(|e| {
                (
                    vec![Finding::fail("kafka", e.to_string(), "report a bug")],
                    false,
                )
            });
    if dead_letter_topic_exists {
        findings.push(dead_letter_size(cfg).await);
    }
    findings
}

/// The brokers, the topic, the group and the dead-letter topic's existence; also says whether
/// the dead-letter topic exists, so its size limit is worth reading.
fn read(cfg: &CheckConfig) -> (Vec<Finding>, bool) {
    let (k, c) = (&cfg.run.kafka, &cfg.run.worker.consumer);
    let reader = match lag::reader(&k.brokers, &k.properties, &c.group_id) {
        Ok(reader) => reader,
        Err(e) => {
            let fix = "check the Kafka properties";
            return (vec![Finding::fail("kafka", e.to_string(), fix)], false);
        }
    };
    let ids = match lag::partitions(&reader, &c.topic, TIMEOUT) {
        Ok(ids) => ids,
        Err(e) => {
            let mut out = unread_topic(cfg, Problem::of(&e, &reader));
            let because = "the topic could not be read";
            out.push(Finding::skipped("group", because));
            if cfg.run.worker.dead_letter_topic.is_some() {
                out.push(Finding::skipped("dead-letter topic", because));
            }
            return (out, false);
        }
    };
    let mut out = vec![
        Finding::ok("kafka", format!("brokers at {} answer", k.brokers)),
        replicas_against_partitions(&c.topic, ids.len(), cfg.max_replicas),
        group(&reader, cfg, &ids),
    ];
    let Some(topic) = &cfg.run.worker.dead_letter_topic else {
        return (out, false);
    };
    let (finding, exists) = dead_letter_topic(&reader, topic);
    out.push(finding);
    (out, exists)
}

/// How librdkafka begins the error of a SASL/OAUTHBEARER token it could not get (from an OIDC
/// token endpoint, or the MSK IAM signer): the brokers were never asked.
const TOKEN_NOT_ACQUIRED: &str = "Failed to acquire SASL OAUTHBEARER token";

/// What the brokers said when the topic's metadata could not be read.
fn unread_topic(cfg: &CheckConfig, problem: Problem) -> Vec<Finding> {
    let (brokers, topic) = (&cfg.run.kafka.brokers, &cfg.run.worker.consumer.topic);
    let kafka_failed = |detail: String, fix: &str| {
        vec![
            Finding::fail("kafka", detail, fix),
            Finding::skipped("topic", "the brokers could not be used"),
        ]
    };
    let fix = match &problem {
        Problem::Credentials(detail) if detail.contains(TOKEN_NOT_ACQUIRED) => {
            let endpoint = (cfg.run.kafka)
                .property("sasl.oauthbearer.token.endpoint.url")
                .map_or_else(String::new, |url| format!(" from {url}"));
            return kafka_failed(
                format!("no login token{endpoint} to present to the brokers: {detail}"),
                "OIDC: check sasl.oauthbearer.token.endpoint.url, the client id and secret, and \
                 egress to the token endpoint; MSK IAM: check the pod's AWS role",
            );
        }
        Problem::Credentials(detail) => {
            return kafka_failed(
                format!("the brokers refused the credentials: {detail}"),
                "check sasl.mechanism, sasl.username and sasl.password (or the mounted secret)",
            );
        }
        Problem::Unreachable => {
            return kafka_failed(
                format!(
                    "no broker at {brokers} answered within {}s",
                    TIMEOUT.as_secs()
                ),
                "check KAFKA_BROKERS, DNS, egress NetworkPolicy, and security.protocol \
                 (a TLS listener does not answer plaintext)",
            );
        }
        Problem::TopicMissing => "create the topic (a KafkaTopic with Strimzi) or set KAFKA_TOPIC",
        Problem::TopicNotAuthorized => "grant the worker's user Describe and Read on the topic",
    };
    vec![
        Finding::ok("kafka", format!("brokers at {brokers} answer")),
        Finding::fail("topic", problem.reason(topic), fix),
    ]
}

/// The group's committed offsets: readable with the group's Describe ACL, without joining it.
fn group(reader: &BaseConsumer<Quiet>, cfg: &CheckConfig, ids: &[i32]) -> Finding {
    let c = &cfg.run.worker.consumer;
    match lag::measure_partitions(
        reader,
        &c.group_id,
        &c.topic,
        ids,
        c.auto_offset_reset,
        TIMEOUT,
    ) {
        Ok(lag) => Finding::ok(
            "group",
            format!(
                "{}: committed offsets readable, lag {}",
                c.group_id,
                lag.total()
            ),
        ),
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
            Finding::fail(
                "group",
                format!("not authorized for group {}", c.group_id),
                "grant the worker's user Read and Describe on the group",
            )
        }
        Err(e) => Finding::fail(
            "group",
            format!("{}: committed offsets not readable: {e}", c.group_id),
            "check the group coordinator's availability and the group's ACLs",
        ),
    }
}

/// Whether the dead-letter topic exists and may be used; true with it when it does.
fn dead_letter_topic(reader: &BaseConsumer<Quiet>, topic: &str) -> (Finding, bool) {
    let name = "dead-letter topic";
    let error = reader.fetch_metadata(Some(topic), TIMEOUT).map(|m| {
        m.topics()
            .iter()
            .find(|t| t.name() == topic)
            .and_then(|t| t.error())
            .map(RDKafkaErrorCode::from)
    });
    let (detail, fix) = match error {
        Ok(None) => return (Finding::ok(name, format!("{topic} exists")), true),
        Ok(Some(RDKafkaErrorCode::UnknownTopicOrPartition)) => (
            format!("{topic} does not exist"),
            "create it (a KafkaTopic with Strimzi), or unset DEAD_LETTER_TOPIC",
        ),
        Ok(Some(RDKafkaErrorCode::TopicAuthorizationFailed)) => (
            format!("not authorized for {topic}"),
            "grant the worker's user Describe and Write on it",
        ),
        Ok(Some(code)) => (
            format!("{topic}: {code}"),
            "wait for the topic's partitions to have leaders, then check again",
        ),
        Err(e) => (format!("{topic}: {e}"), "check the brokers' availability"),
    };
    (Finding::fail(name, detail, fix), false)
}

/// Replicas past the partition count get nothing to consume.
fn replicas_against_partitions(
    topic: &str,
    partitions: usize,
    max_replicas: Option<u32>,
) -> Finding {
    match max_replicas {
        Some(max) if max as usize > partitions => Finding::fail(
            "topic",
            format!(
                "{topic} has {partitions} partitions, fewer than {max} replicas: {} would idle",
                max as usize - partitions
            ),
            "lower maxReplicaCount to the partition count, or add partitions",
        ),
        Some(max) => Finding::ok(
            "topic",
            format!("{topic} has {partitions} partitions, enough for {max} replicas"),
        ),
        None => Finding::ok("topic", format!("{topic} has {partitions} partitions")),
    }
}

/// Whether the dead-letter topic takes the largest letter the worker sends; a larger one would
/// be refused and then published cut.
async fn dead_letter_size(cfg: &CheckConfig) -> Finding {
    let Some(topic) = cfg.run.worker.dead_letter_topic.as_deref() else {
        return Finding::skipped("dead-letter size", "no dead-letter topic");
    };
    let config = client_config(&cfg.run.kafka.brokers, &cfg.run.kafka.properties);
    let largest = largest_letter(&config);
    let topic_max = async {
        let admin = crate::kafka::admin(&config).map_err(|e| e.to_string())?;
        let options = AdminOptions::new().request_timeout(Some(TIMEOUT));
        let described = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
            .await
            .map_err(|e| e.to_string())?;
        let resource = described
            .into_iter()
            .next()
            .ok_or("no answer")?
            .map_err(|e| e.to_string())?;
        resource
            .get("max.message.bytes")
            .and_then(|entry| entry.value.as_deref()?.parse::<usize>().ok())
            .ok_or_else(|| "max.message.bytes not in the answer".to_owned())
    };
    letter_size_verdict(topic, largest, topic_max.await)
}

fn letter_size_verdict(topic: &str, largest: usize, topic_max: Result<usize, String>) -> Finding {
    match topic_max {
        Ok(max) if max < largest => Finding::fail(
            "dead-letter size",
            format!(
                "{topic} takes records of up to {max} bytes; the worker sends letters of up to {largest}, larger ones would be cut"
            ),
            format!(
                "set the topic's max.message.bytes to at least {largest}, or lower the Kafka property message.max.bytes"
            ),
        ),
        Ok(max) => Finding::ok(
            "dead-letter size",
            format!("{topic} takes records of up to {max} bytes, the largest letter is {largest}"),
        ),
        // The worker itself never needs DescribeConfigs: not reading it is no failure.
        Err(why) => Finding::ok(
            "dead-letter size",
            format!(
                "{topic}'s max.message.bytes could not be read ({why}); the largest letter is {largest} bytes"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn replicas_beyond_the_partition_count_fail_and_say_how_many_would_idle() {
        let f = replicas_against_partitions("orders", 4, Some(6));
        assert_eq!(f.status, Status::Fail);
        assert!(f.detail.contains("2 would idle"), "{}", f.detail);
        assert_eq!(
            replicas_against_partitions("orders", 4, Some(4)).status,
            Status::Ok
        );
        assert_eq!(
            replicas_against_partitions("orders", 4, None).status,
            Status::Ok
        );
    }

    #[test]
    fn a_dead_letter_topic_that_takes_less_than_the_largest_letter_fails() {
        assert_eq!(
            letter_size_verdict("dlq", 1_000_000, Ok(500_000)).status,
            Status::Fail
        );
        assert_eq!(
            letter_size_verdict("dlq", 1_000_000, Ok(1_048_588)).status,
            Status::Ok
        );
        // A topic configuration the worker's user may not read is no reason to fail.
        assert_eq!(
            letter_size_verdict("dlq", 1_000_000, Err("not authorized".into())).status,
            Status::Ok
        );
    }
}
