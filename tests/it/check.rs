//! `order-worker check` against real parts: the mock cluster or an authenticating tansu, and
//! PostgreSQL. Each misconfiguration an operator meets in a rollout fails exactly its own check,
//! with the fix, and the command exits non-zero; a healthy setup passes every check.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::helpers::kafka::{Mock, Tansu};
use crate::helpers::pg::TestDb;
use crate::helpers::registry::TestRegistry;
use crate::helpers::{unique, worker_bin};

type Findings = BTreeMap<String, (String, String)>;

/// Runs `check --json` against `brokers`, `db` and `topic` with `extra` flags and `env`, and
/// returns its exit code and each check's status and finding (detail and fix), by name.
fn check(
    brokers: &str,
    db: &TestDb,
    topic: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (i32, Findings) {
    let out = Command::new(worker_bin())
        .args([
            "check",
            "--json",
            "--brokers",
            brokers,
            "--database-url",
            &db.url,
        ])
        .args(["--topic", topic])
        .args(extra)
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
            let status = c["status"].as_str().unwrap().to_owned();
            (c["check"].as_str().unwrap().to_owned(), (status, said))
        })
        .collect();
    assert_eq!(report["passed"], out.status.success(), "{stdout}");
    (out.status.code().expect("exit code"), findings)
}

/// The command failed, `name` is the only failing check, and its finding says `says`.
fn only_fails(outcome: &(i32, Findings), name: &str, says: &str) {
    let (code, findings) = outcome;
    assert_eq!(*code, 1, "{findings:?}");
    let failed: Vec<&str> = findings
        .iter()
        .filter(|(_, (status, _))| status == "fail")
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(failed, [name], "{findings:?}");
    assert!(findings[name].1.contains(says), "{findings:?}");
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
    let extra = [
        "--dead-letter-topic",
        &dead_letters,
        "--max-replicas",
        "4",
        "--grace-period",
        "35s",
    ];
    let (code, findings) = check(&mock.brokers, &db, &topic, &extra, &[]);
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
    let outcome = check(&mock.brokers, &db, "missing-orders", &[], &[]);
    only_fails(&outcome, "topic", "missing-orders does not exist");
    assert_eq!(outcome.1["group"].0, "skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_topic_fails_its_check() {
    let topic = unique("orders");
    let mock = Mock::with_topic(&topic, 2);
    let db = TestDb::create().await;
    let extra = ["--dead-letter-topic", "orders.missing-dlq"];
    let outcome = check(&mock.brokers, &db, &topic, &extra, &[]);
    only_fails(&outcome, "dead-letter topic", "DEAD_LETTER_TOPIC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_registry_that_does_not_answer_fails_its_check() {
    let topic = unique("orders");
    let mock = Mock::with_topic(&topic, 2);
    let db = TestDb::create().await;
    let mut registry = TestRegistry::start().await;
    let url = registry.url.clone();
    let extra = ["--schema-registry-url", url.as_str()];
    let (code, findings) = check(&mock.brokers, &db, &topic, &extra, &[]);
    assert_eq!(code, 0, "{findings:?}");
    assert_eq!(findings["schema registry"].0, "ok");
    registry.stop();
    let outcome = check(&mock.brokers, &db, &topic, &extra, &[]);
    only_fails(&outcome, "schema registry", "SCHEMA_REGISTRY_URL");
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
    let outcome = check(&mock.brokers, &db, &topic, &[], &[]);
    only_fails(&outcome, "migrations", "order-worker migrate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_the_kafka_check_as_refused_credentials() {
    let topic = unique("orders");
    let tansu = Tansu::with_scram_user("order-worker", "right", &topic, 2);
    let db = TestDb::create().await;
    let env = [
        ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        ("KAFKA_PROPERTY_SASL_MECHANISM", "SCRAM-SHA-512"),
        ("KAFKA_PROPERTY_SASL_USERNAME", "order-worker"),
        ("KAFKA_PROPERTY_SASL_PASSWORD", "wrong"),
    ];
    let outcome = check(&tansu.brokers, &db, &topic, &[], &env);
    only_fails(&outcome, "kafka", "refused the credentials");
    // The fix names the setting to look at.
    only_fails(&outcome, "kafka", "sasl.password");
    assert_eq!(outcome.1["topic"].0, "skipped", "{:?}", outcome.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_oidc_token_endpoint_is_named_not_taken_for_refused_credentials() {
    let topic = unique("orders");
    let mock = Mock::with_topic(&topic, 2);
    let db = TestDb::create().await;
    // Nothing listens on port 1: the token request fails before any broker is asked.
    let endpoint = "http://127.0.0.1:1/realms/kafka/protocol/openid-connect/token";
    let env = [
        ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        ("KAFKA_PROPERTY_SASL_MECHANISM", "OAUTHBEARER"),
        ("KAFKA_PROPERTY_SASL_OAUTHBEARER_METHOD", "oidc"),
        ("KAFKA_PROPERTY_SASL_OAUTHBEARER_CLIENT_ID", "order-worker"),
        ("KAFKA_PROPERTY_SASL_OAUTHBEARER_CLIENT_SECRET", "secret"),
        (
            "KAFKA_PROPERTY_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
            endpoint,
        ),
    ];
    let outcome = check(&mock.brokers, &db, &topic, &[], &env);
    only_fails(
        &outcome,
        "kafka",
        &format!("no login token from {endpoint}"),
    );
    only_fails(&outcome, "kafka", "sasl.oauthbearer.token.endpoint.url");
    assert!(!outcome.1["kafka"].1.contains("refused"), "{:?}", outcome.1);
}
