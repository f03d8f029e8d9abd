//! `order-worker check` against real parts: the mock cluster or an authenticating tansu, and
//! PostgreSQL. Each misconfiguration an operator meets in a rollout fails exactly its own check,
//! with the fix, and the command exits non-zero; a healthy setup passes every check.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::helpers::kafka::{Mock, Tansu};
use crate::helpers::pg::TestDb;
use crate::helpers::{unique, worker_bin};

/// Runs `check --json` with `args` and returns its exit code and each check's status and
/// finding, by name.
fn check(args: &[&str], env: &[(&str, &str)]) -> (i32, BTreeMap<String, (String, String)>) {
    let out = Command::new(worker_bin())
        .arg("check")
        .args(args)
        .arg("--json")
        .envs(env.iter().copied())
        .output()
        .expect("run order-worker check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    let findings = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            let said = format!("{} {}", c["detail"], c["fix"]);
            (
                c["check"].as_str().unwrap().to_owned(),
                (c["status"].as_str().unwrap().to_owned(), said),
            )
        })
        .collect::<BTreeMap<_, _>>();
    assert_eq!(report["passed"], out.status.success(), "{stdout}");
    (out.status.code().expect("exit code"), findings)
}

fn failed(findings: &BTreeMap<String, (String, String)>) -> Vec<&str> {
    findings
        .iter()
        .filter(|(_, (status, _))| status == "fail")
        .map(|(name, _)| name.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes_every_check() {
    let topic = unique("orders");
    let dead_letters = format!("{topic}.dlq");
    let mock = Mock::with_topic(&topic, 4);
    mock.cluster
        .create_topic(&dead_letters, 1, 1)
        .expect("dead-letter topic");
    let db = TestDb::create().await;
    let (code, findings) = check(
        &[
            "--brokers",
            &mock.brokers,
            "--database-url",
            &db.url,
            "--topic",
            &topic,
            "--dead-letter-topic",
            &dead_letters,
            "--max-replicas",
            "4",
            "--grace-period",
            "35s",
        ],
        &[],
    );
    assert_eq!(code, 0, "{findings:?}");
    let names: Vec<&str> = findings.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "connections",
            "dead-letter size",
            "dead-letter topic",
            "group",
            "kafka",
            "migrations",
            "postgres",
            "settings",
            "topic"
        ]
    );
    assert!(
        findings.values().all(|(status, _)| status == "ok"),
        "{findings:?}"
    );
    assert!(
        findings["topic"]
            .1
            .contains("4 partitions, enough for 4 replicas"),
        "{findings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_fails_the_topic_check_and_skips_the_group() {
    let mock = Mock::with_topic(&unique("other"), 1);
    let db = TestDb::create().await;
    let (code, findings) = check(
        &[
            "--brokers",
            &mock.brokers,
            "--database-url",
            &db.url,
            "--topic",
            "missing-orders",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(failed(&findings), ["topic"]);
    assert!(
        findings["topic"]
            .1
            .contains("missing-orders does not exist"),
        "{findings:?}"
    );
    assert_eq!(findings["group"].0, "skipped");
    assert_eq!(findings["kafka"].0, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_topic_fails_its_check() {
    let topic = unique("orders");
    let mock = Mock::with_topic(&topic, 2);
    let db = TestDb::create().await;
    let (code, findings) = check(
        &[
            "--brokers",
            &mock.brokers,
            "--database-url",
            &db.url,
            "--topic",
            &topic,
            "--dead-letter-topic",
            "orders.missing-dlq",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(failed(&findings), ["dead-letter topic"]);
    assert!(
        findings["dead-letter topic"]
            .1
            .contains("DEAD_LETTER_TOPIC"),
        "{findings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_one_migration_behind_fails_the_migrations_check() {
    let topic = unique("orders");
    let mock = Mock::with_topic(&topic, 2);
    let db = TestDb::create().await;
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let (code, findings) = check(
        &[
            "--brokers",
            &mock.brokers,
            "--database-url",
            &db.url,
            "--topic",
            &topic,
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(failed(&findings), ["migrations"]);
    assert!(
        findings["migrations"].1.contains("order-worker migrate"),
        "{findings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_the_kafka_check_as_refused_credentials() {
    let topic = unique("orders");
    let tansu = Tansu::with_scram_user("order-worker", "right", &topic, 2);
    let db = TestDb::create().await;
    let (code, findings) = check(
        &[
            "--brokers",
            &tansu.brokers,
            "--database-url",
            &db.url,
            "--topic",
            &topic,
        ],
        &[
            ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("KAFKA_PROPERTY_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("KAFKA_PROPERTY_SASL_USERNAME", "order-worker"),
            ("KAFKA_PROPERTY_SASL_PASSWORD", "wrong"),
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(failed(&findings), ["kafka"]);
    assert!(
        findings["kafka"].1.contains("refused the credentials"),
        "{findings:?}"
    );
    assert!(
        findings["kafka"].1.contains("sasl.password"),
        "the fix names the setting"
    );
}
