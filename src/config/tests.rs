use super::checks::check_topic;
use super::*;

#[test]
fn debug_output_hides_the_database_password() {
    let url = DatabaseUrl::from_str("postgres://app:s3cr3t@db.internal:5433/orders").unwrap();
    let shown = format!("{url:?}");
    assert_eq!(shown, "postgres://app:***@db.internal:5433/orders");
}

#[test]
fn debug_output_hides_secret_kafka_properties() {
    let props = [
        KafkaProperty::new("sasl.password", "hunter2"),
        KafkaProperty::new("ssl.key.password", "hunter3"),
        KafkaProperty::new("security.protocol", "SASL_SSL"),
    ];
    let shown = format!("{props:?}");
    assert!(!shown.contains("hunter"), "{shown}");
    assert!(shown.contains("security.protocol=SASL_SSL"), "{shown}");
}

fn run_config(extra: &[&str]) -> Result<RunConfig, String> {
    let mut args = vec![
        "order-worker",
        "--brokers",
        "b:9092",
        "--database-url",
        "postgres://a@b/c",
    ];
    args.extend(extra);
    match Cli::parse_with_default(args)
        .map_err(|e| e.to_string())?
        .command
    {
        Command::Run(run) => Ok(run),
        _ => unreachable!(),
    }
}

#[test]
fn durations_beyond_a_day_are_refused_when_parsed() {
    for flag in [
        "--batch-linger",
        "--commit-interval",
        "--rebalance-drain-timeout",
        "--lag-interval",
        "--shutdown-timeout",
        "--stall-timeout",
    ] {
        let err = run_config(&[flag, "100000000000000s"]).unwrap_err();
        assert!(err.contains("at most 24h"), "{flag}: {err}");
    }
    assert!(run_config(&["--batch-linger", "24h"]).is_ok());
}

#[test]
fn a_drain_timeout_must_fit_the_poll_interval_the_stop_and_the_stall_timeout() {
    let check = |extra: &[&str]| {
        run_config(extra)
            .unwrap()
            .validate()
            .map_err(|e| e.to_string())
    };
    assert!(check(&[]).is_ok());
    let err = check(&["--kafka-property", "max.poll.interval.ms=7000"]).unwrap_err();
    assert!(err.contains("max.poll.interval.ms (7000 ms)"), "{err}");
    // The revoke's commit may wait 5 s after the drain: 2 s + 5 s is still too long.
    let err = check(&[
        "--kafka-property",
        "max.poll.interval.ms=7000",
        "--rebalance-drain-timeout",
        "2s",
    ])
    .unwrap_err();
    assert!(err.contains("plus the 5s"), "{err}");
    assert!(
        check(&[
            "--kafka-property",
            "max.poll.interval.ms=7000",
            "--rebalance-drain-timeout",
            "1s"
        ])
        .is_ok()
    );
    let err = check(&[
        "--rebalance-drain-timeout",
        "30s",
        "--shutdown-timeout",
        "10s",
    ])
    .unwrap_err();
    assert!(err.contains("SHUTDOWN_TIMEOUT (10s)"), "{err}");
    let err = check(&["--stall-timeout", "10s"]).unwrap_err();
    assert!(err.contains("STALL_TIMEOUT"), "{err}");
    let err = check(&["--stall-timeout", "5s", "--rebalance-drain-timeout", "2s"]).unwrap_err();
    assert!(err.contains("STALL_TIMEOUT must be at least 10s"), "{err}");
}

#[test]
fn a_topic_must_be_one_legal_topic_name() {
    for topic in [
        "^orders.*",
        "",
        "a b",
        "orders,other",
        ".",
        &"x".repeat(250),
    ] {
        let err = check_topic("KAFKA_TOPIC", topic).unwrap_err().to_string();
        assert!(err.contains("KAFKA_TOPIC"), "{topic}: {err}");
    }
    assert!(
        check_topic("KAFKA_TOPIC", "^orders")
            .unwrap_err()
            .to_string()
            .contains("patterns")
    );
    for topic in ["orders", "orders.v1", "team_a-orders"] {
        assert!(check_topic("KAFKA_TOPIC", topic).is_ok(), "{topic}");
    }
}

#[test]
fn a_run_command_is_assumed_when_none_is_named() {
    let cli = Cli::parse_with_default([
        "order-worker",
        "--brokers",
        "b:9092",
        "--database-url",
        "postgres://a@b/c",
    ])
    .unwrap();
    assert!(matches!(cli.command, Command::Run(ref r) if r.kafka.brokers == "b:9092"));
    let cli = Cli::parse_with_default(["order-worker", "lag", "--brokers", "b:9092"]).unwrap();
    assert!(matches!(cli.command, Command::Lag(_)));
}

#[test]
fn the_runtime_thread_count_is_one_per_core_unless_a_positive_number_is_set() {
    use std::ffi::OsStr;
    let threads = |v: Option<&str>| runtime_threads(v.map(OsStr::new)).map(|n| n.get());
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(threads(None).unwrap(), cores);
    assert_eq!(threads(Some("")).unwrap(), cores);
    assert_eq!(threads(Some("3")).unwrap(), 3);
    for wrong in ["0", "-1", "two", "1.5"] {
        let e = threads(Some(wrong)).unwrap_err().to_string();
        assert!(e.contains(RUNTIME_THREADS_ENV), "{wrong}: {e}");
    }
}
