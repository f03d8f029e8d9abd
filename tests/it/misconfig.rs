//! Misconfiguration: what the log, the probes and the exit code say for each mistake an operator
//! can make with the worker's settings. Each test backs a row of the misconfiguration table in
//! docs/reliability.md: a mistake that may fix itself (a broker or topic not there yet) keeps the
//! worker running and unready with its reason; one that cannot (a password refused, a missing
//! migration, contradictory settings) ends it at once with one line and a non-zero exit.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::kafka::{Mock, OffsetProbe, Tansu, publish};
use crate::helpers::pg::TestDb;
use crate::helpers::{Binary, eventually, free_port, get, metric, unique};

const SETTLES: Duration = Duration::from_secs(60);

/// The worker binary with `args` alone; its exit code and what it wrote to stderr, or `None` if
/// it was still running after `within` (then it is killed).
fn exits_within(args: &[&str], env: &[(&str, &str)], within: Duration) -> Option<(i32, String)> {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_order-worker"))
        .args(args)
        .env("LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(&err).unwrap_or_default();
            return Some((status.code().unwrap_or(-1), text));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// `order-worker run` against `brokers` and `database_url` with `extra` flags, as
/// [`exits_within`] runs it.
fn run_exits_within(
    brokers: &str,
    database_url: &str,
    extra: &[&str],
    within: Duration,
) -> Option<(i32, String)> {
    let (topic, group) = (unique("orders"), unique("group"));
    let mut args = vec!["run", "--brokers", brokers, "--database-url", database_url];
    args.extend([
        "--topic",
        &topic,
        "--group-id",
        &group,
        "--http-addr",
        "127.0.0.1:0",
    ]);
    args.extend(extra);
    exits_within(&args, &[], within)
}

/// The last line of stderr: the one-line error the binary ends with.
fn last_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_reachable_broker_the_worker_is_unready_says_why_and_does_not_flood_the_log() {
    let db = TestDb::create().await;
    let brokers = format!("127.0.0.1:{}", free_port());
    let worker = Binary::run(&brokers, &db.url, &unique("orders"), &unique("group"), &[]);
    worker.unready_because("kafka unreachable").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        get(worker.http, "/healthz").await.0,
        200,
        "alive: a restart fixes nothing"
    );
    assert!(
        get(worker.http, "/readyz")
            .await
            .1
            .contains("kafka unreachable")
    );
    let log = worker.log_text();
    let warnings = log
        .lines()
        .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
        .count();
    assert!(
        warnings <= 12,
        "{warnings} warnings in ~12 s for one condition:\n{log}"
    );
    assert!(
        log.contains("kafka unreachable"),
        "the log says it too:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_keeps_the_worker_unready_naming_the_topic_until_it_exists() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&unique("other"), 1);
    let db = TestDb::create().await;
    let worker = Binary::run(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &["--lag-interval", "1s"],
    );
    let body = worker.unready_because("does not exist").await;
    assert!(body.contains(&topic), "{body}");
    assert!(worker.log_text().contains("does not exist"));

    mock.cluster.create_topic(&topic, 2, 1).unwrap();
    publish(
        &mock.brokers,
        &topic,
        &crate::helpers::valid_only(300, 301),
        200,
    );
    OffsetProbe::new(&mock.brokers, &group, &topic, 2)
        .wait_caught_up_within("consumed once the topic exists", SETTLES)
        .await;
    assert_eq!(get(worker.http, "/readyz").await, (200, "ready\n".into()));
}

#[test]
fn settings_that_would_overflow_or_contradict_each_other_are_refused_in_one_line() {
    let base = [
        "run",
        "--brokers",
        "127.0.0.1:9",
        "--database-url",
        "postgres://u:p@127.0.0.1:9/db",
        "--http-addr",
        "127.0.0.1:0",
    ];
    for (extra, names) in [
        (&["--batch-linger", "100000000000000s"][..], "BATCH_LINGER"),
        (
            &["--rebalance-drain-timeout", "100000000000000s"],
            "REBALANCE_DRAIN_TIMEOUT",
        ),
        (
            &[
                "--rebalance-drain-timeout",
                "400s",
                "--shutdown-timeout",
                "500s",
            ],
            "max.poll.interval.ms",
        ),
        (
            &[
                "--rebalance-drain-timeout",
                "30s",
                "--shutdown-timeout",
                "10s",
            ],
            "SHUTDOWN_TIMEOUT",
        ),
        (&["--topic", "^orders.*"], "KAFKA_TOPIC"),
        (
            &["--kafka-secret-file", "sasl.password=/nonexistent/secret"],
            "KAFKA_SECRET_FILES (sasl.password): cannot read /nonexistent/secret",
        ),
        (
            &["--kafka-properties-file", "/nonexistent/kafka.properties"],
            "KAFKA_PROPERTIES_FILE: cannot read /nonexistent/kafka.properties",
        ),
        (
            &["--kafka-property", "group.id=elsewhere"],
            "group.id cannot be overridden",
        ),
        (
            &["--kafka-property", "auto.offset.reset=error"],
            "auto.offset.reset=error is refused",
        ),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (code, stderr) = exits_within(&args, &[], Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{extra:?} was accepted: the worker kept running"));
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{extra:?}: {stderr}");
        assert!(stderr.contains(names), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{extra:?}: {stderr}");
    }
}

#[test]
fn a_runtime_thread_count_that_is_not_a_positive_number_is_refused_in_one_line() {
    for value in ["two", "0", "-1"] {
        let (code, stderr) = exits_within(
            &["migrate", "--database-url", "postgres://u:p@127.0.0.1:9/db"],
            &[("TOKIO_WORKER_THREADS", value)],
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("TOKIO_WORKER_THREADS={value} was accepted"));
        assert_eq!(code, 2, "{value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{value}: {stderr}");
        assert!(stderr.contains("TOKIO_WORKER_THREADS"), "{value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{value}: {stderr}");
    }
    // Empty is unset: the default, and on to the next mistake (no database there).
    let (code, stderr) = exits_within(
        &["migrate", "--database-url", "postgres://u:p@127.0.0.1:9/db"],
        &[("TOKIO_WORKER_THREADS", "")],
        Duration::from_secs(30),
    )
    .expect("migrate without a database ends");
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains("TOKIO_WORKER_THREADS"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_postgres_password_exits_non_zero_with_one_line() {
    let mock = Mock::with_topic(&unique("orders"), 1);
    let url = crate::helpers::pg::server_url().replacen(":postgres@", ":wrong@", 1);
    assert!(url.contains(":wrong@"), "{url}");
    let (code, stderr) = run_exits_within(&mock.brokers, &url, &[], Duration::from_secs(20))
        .expect("a refused password is not retried for ever");
    assert_eq!(code, 1, "{stderr}");
    assert!(last_line(&stderr).starts_with("order-worker: "), "{stderr}");
    assert!(
        last_line(&stderr).contains("password authentication failed"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong"),
        "the password is never printed: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_without_the_migrations_exits_non_zero_with_one_line() {
    let mock = Mock::with_topic(&unique("orders"), 1);
    let name = format!("ow_test_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&crate::helpers::pg::server_url())
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = crate::helpers::pg::server_url()
        .rsplit_once('/')
        .unwrap()
        .0
        .to_owned()
        + "/"
        + &name;
    let outcome = run_exits_within(&mock.brokers, &url, &[], Duration::from_secs(20));
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    let (code, stderr) = outcome.expect("exits");
    assert_eq!(code, 1, "{stderr}");
    assert!(last_line(&stderr).contains("lacks migration"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sasl_password_exits_non_zero_with_one_line() {
    let tansu = Tansu::start_on(free_port(), &["--authentication"]);
    let db = TestDb::create().await;
    let sasl = "security.protocol=SASL_PLAINTEXT,sasl.mechanism=SCRAM-SHA-512,\
                sasl.username=svc,sasl.password=wrong-secret";
    let (code, stderr) = run_exits_within(
        &tansu.brokers,
        &db.url,
        &["--kafka-property", sasl],
        Duration::from_secs(30),
    )
    .expect("a refused password is not retried for ever");
    assert_eq!(code, 1, "{stderr}");
    assert!(last_line(&stderr).contains("authentication"), "{stderr}");
    assert!(
        !stderr.contains("wrong-secret"),
        "the password is never printed: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_topic_keeps_the_worker_unready_naming_it_and_never_holds_a_partition()
 {
    let (topic, group, dlq) = (unique("orders"), unique("group"), unique("orders-dlq"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    let worker = Binary::run(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &["--dead-letter-topic", &dlq, "--lag-interval", "1s"],
    );
    let body = worker.unready_because("dead-letter topic").await;
    assert!(
        body.contains(&dlq) && body.contains("does not exist"),
        "{body}"
    );
    // A letter for the missing topic is kept in the table and its partition moves on at once
    // (librdkafka alone would hold it 30 s for the topic to appear).
    crate::helpers::kafka::publish_raw(
        &mock.brokers,
        &topic,
        &[(Some(b"k".to_vec()), Some(b"{broken".to_vec()))],
    );
    OffsetProbe::new(&mock.brokers, &group, &topic, 1)
        .wait_caught_up_within("the letter's offset committed", Duration::from_secs(15))
        .await;
    assert_eq!(crate::helpers::pg::count(&db.pool, "dead_letters").await, 1);
    // Refused and counted, or, as the mock broker (like Kafka with auto.create.topics.enable)
    // creates a topic a producer asks about, published there.
    let refused = metric(
        worker.http,
        "order_worker_dead_letter_topic_refusals_total",
        &[],
    )
    .await;
    let partitions = crate::helpers::kafka::partition_count(&mock.brokers, &dlq);
    let published = crate::helpers::kafka::read_topic(&mock.brokers, &dlq, partitions).len();
    assert_eq!(
        refused as usize + published,
        1,
        "{refused} refused, {published} published"
    );
    if published == 0 {
        mock.cluster.create_topic(&dlq, 1, 1).unwrap();
    }
    eventually("ready once it exists", SETTLES, || async {
        get(worker.http, "/readyz").await.0 == 200
    })
    .await;
}
