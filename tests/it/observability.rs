//! What operators and KEDA read: lag equal to what an admin client computes, lag series that
//! follow ownership, counters that agree with PostgreSQL, a scrape promtool accepts, and no
//! secret anywhere in logs or endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use order_worker::MetricKind;
use order_worker::synth::{SynthSpec, event};
use uuid::Uuid;

use crate::helpers::kafka::{Mock, OffsetProbe, RawMessage, message_of, publish, publish_raw};
use crate::helpers::pg::{TestDb, count, lock_orders, server_url};
use crate::helpers::{Binary, eventually, get, metric, start_worker, try_get, unique};

const LAG_EVERY: [&str; 2] = ["--lag-interval", "300ms"];

/// The partitions and values of a per-partition family in a scrape.
fn series(exposition: &str, name: &str) -> BTreeMap<i32, f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| {
            let p = l
                .split("partition=\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()?;
            let v = l.rsplit(' ').next()?.parse().ok()?;
            Some((p, v))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_lag_equals_what_an_admin_client_computes_and_returns_to_zero_after_draining() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 3);
    let db = TestDb::create().await;
    let spec = SynthSpec {
        orders: 5_000,
        invalid_ratio: 0.01,
        duplicate_ratio: 0.0,
        seed: 81,
    };
    publish(&mock.brokers, &topic, &spec, 1_500);
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &LAG_EVERY).await;
    let http = worker.http_addr();
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 3);
    probe.wait_caught_up("the first part committed").await;

    // Writes block from here: the next messages are consumed but not committed.
    let lock = lock_orders(&db.pool).await;
    publish(
        &mock.brokers,
        &topic,
        &SynthSpec {
            seed: 82,
            ..spec.clone()
        },
        1_500,
    );
    let (ends, committed) = (probe.ends(), probe.committed());
    let admin: BTreeMap<i32, f64> = ends
        .iter()
        .map(|(p, end)| (*p, (end - committed[p]) as f64))
        .collect();
    assert!(admin.values().sum::<f64>() == 1_500.0, "{admin:?}");
    eventually(
        "the exported lag equals the admin client's, per partition",
        Duration::from_secs(20),
        || async {
            series(
                &get(http, "/metrics").await.1,
                "order_worker_consumer_lag_messages",
            ) == admin
        },
    )
    .await;
    let (status, body) = get(http, "/lag").await;
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, report["total_lag"].as_i64()), (200, Some(1_500)));
    assert_eq!(report["group"], group.as_str());
    let sum = metric(
        http,
        "order_worker_consumer_lag_sum_messages",
        &[("topic", &topic)],
    )
    .await;
    assert_eq!(sum, 1_500.0);

    // The operator's view: `order-worker lag` reads the same numbers from the broker.
    let out = Command::new(env!("CARGO_BIN_EXE_order-worker"))
        .args([
            "lag",
            "--brokers",
            &mock.brokers,
            "--topic",
            &topic,
            "--group-id",
            &group,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cli_lag: BTreeMap<i32, f64> = cli["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap() as i32,
                p["lag"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(cli_lag, admin);

    lock.commit().await.unwrap();
    probe.wait_caught_up("the backlog committed").await;
    eventually(
        "lag 0 on every partition within seconds",
        Duration::from_secs(5),
        || async {
            let text = get(http, "/metrics").await.1;
            let lag = series(&text, "order_worker_consumer_lag_messages");
            let time_lag = series(&text, "order_worker_consumer_time_lag_seconds");
            lag.len() == 3
                && lag.values().all(|v| *v == 0.0)
                && time_lag.values().all(|v| *v == 0.0)
        },
    )
    .await;
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_partition_s_lag_series_disappears_and_each_partition_is_exported_once() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 4);
    let db = TestDb::create().await;
    let a = Binary::run(&mock.brokers, &db.url, &topic, &group, &LAG_EVERY);
    let lag_partitions = |addr| async move {
        let text = try_get(addr, "/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        series(&text, "order_worker_consumer_lag_messages")
            .into_keys()
            .collect::<BTreeSet<i32>>()
    };
    let all: BTreeSet<i32> = (0..4).collect();
    eventually(
        "the only worker exports all four partitions",
        Duration::from_secs(30),
        || async { lag_partitions(a.http).await == all },
    )
    .await;

    let b = Binary::run(&mock.brokers, &db.url, &topic, &group, &LAG_EVERY);
    eventually(
        "the partitions are split, each exported by exactly one worker",
        Duration::from_secs(40),
        || async {
            let (mine, theirs) = (lag_partitions(a.http).await, lag_partitions(b.http).await);
            !mine.is_empty()
                && !theirs.is_empty()
                && mine.is_disjoint(&theirs)
                && &mine | &theirs == all
        },
    )
    .await;
    let revoked = metric(
        a.http,
        "order_worker_rebalances_total",
        &[("kind", "revoke")],
    )
    .await;
    assert!(revoked >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_agree_with_the_rows_in_postgres() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 2);
    let db = TestDb::create().await;
    // Every valid event is a different order, so each one applied is exactly one row.
    let mut messages: Vec<RawMessage> = (0..2_000u64)
        .map(|i| message_of(&event(Uuid::new_v4(), 1, i)))
        .collect();
    messages.extend((0..37).map(|_| (Some(b"k".to_vec()), Some(b"nope".to_vec()))));
    publish_raw(&mock.brokers, &topic, &messages);
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 2);
    probe.wait_caught_up("everything committed").await;

    let http = worker.http_addr();
    assert_eq!(
        metric(http, "order_worker_events_applied_total", &[]).await,
        count(&db.pool, "orders").await as f64
    );
    assert_eq!(count(&db.pool, "orders").await, 2_000);
    let dead: f64 = metric(
        http,
        "order_worker_dead_letters_total",
        &[("reason", "invalid_json")],
    )
    .await;
    assert_eq!(dead, count(&db.pool, "dead_letters").await as f64);
    assert_eq!(
        metric(http, "order_worker_events_duplicate_total", &[]).await,
        0.0
    );
    let latency = metric(http, "order_worker_end_to_end_latency_seconds_count", &[]).await;
    assert_eq!(
        latency,
        messages.len() as f64,
        "every message's latency is recorded"
    );
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

/// The label names of each series of `sample` (a metric name as it appears on a sample line).
fn label_names<'a>(exposition: &'a str, sample: &str) -> Vec<BTreeSet<&'a str>> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix(sample))
        .filter(|rest| rest.starts_with(['{', ' ']))
        .map(|rest| {
            let inside = rest
                .strip_prefix('{')
                .and_then(|r| r.split_once('}'))
                .map_or("", |(labels, _)| labels);
            inside
                .split(',')
                .filter_map(|pair| pair.split_once('=').map(|(k, _)| k))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_a_live_scrape_with_every_declared_metric_its_type_help_and_labels() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 2);
    let db = TestDb::create().await;
    let spec = SynthSpec {
        orders: 300,
        invalid_ratio: 0.05,
        duplicate_ratio: 0.05,
        seed: 91,
    };
    publish(&mock.brokers, &topic, &spec, 1_000);
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &LAG_EVERY).await;
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 2);
    probe.wait_caught_up("everything committed").await;
    let http = worker.http_addr();
    eventually("lag measured", Duration::from_secs(10), || async {
        get(http, "/lag").await.0 == 200
    })
    .await;
    let (_, scrape) = get(http, "/metrics").await;

    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{promtool}: {e} (./scripts/test.sh installs it)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    for m in order_worker::METRICS {
        let kind = match m.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        assert!(
            scrape.contains(&format!("# HELP {} {}\n", m.name, m.help)),
            "{} has no HELP line with its declared help",
            m.name
        );
        assert!(
            scrape.contains(&format!("# TYPE {} {kind}\n", m.name)),
            "{} is not exported as a {kind}",
            m.name
        );
        let expected: BTreeSet<&str> = m.labels.iter().copied().collect();
        let sample = if m.kind == MetricKind::Histogram {
            format!("{}_count", m.name)
        } else {
            m.name.to_string()
        };
        let seen = label_names(&scrape, &sample);
        assert!(!seen.is_empty(), "{} has no series", m.name);
        for labels in seen {
            assert_eq!(labels, expected, "labels of {}", m.name);
        }
    }
    for family in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(
            scrape.contains(&format!("# HELP {family} ")),
            "{family} has no HELP line"
        );
    }
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_errors_or_http_responses() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    let role = unique("ow_role").replace('-', "_");
    let password = format!("Pw-{}", Uuid::new_v4().simple());
    let kafka_secret = format!("Kafka-{}", Uuid::new_v4().simple());
    for sql in [
        format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        sqlx::query(&sql).execute(&db.pool).await.unwrap();
    }
    let host_db = base_host(&server_url());
    let good = format!("postgres://{role}:{password}@{host_db}/{}", db.name);
    let wrong = format!("postgres://{role}:{password}x@{host_db}/{}", db.name);
    let unreachable = format!("postgres://{role}:{password}@127.0.0.1:1/{}", db.name);
    publish(&mock.brokers, &topic, &SynthSpec::default(), 300);
    let secret_props = format!("sasl.username=svc,sasl.password={kafka_secret}");
    let env = [
        ("RUST_LOG", "debug"),
        ("KAFKA_PROPERTIES", secret_props.as_str()),
    ];

    let mut seen = String::new();
    for url in [&good, &wrong, &unreachable] {
        let mut worker = Binary::run_with_env(&mock.brokers, url, &topic, &group, &[], &env);
        tokio::time::sleep(Duration::from_secs(6)).await;
        // A refused password ends the process at once; the others keep serving.
        for path in ["/metrics", "/readyz", "/healthz", "/lag"] {
            if let Some((_, body)) = try_get(worker.http, path).await {
                seen.push_str(&body);
            }
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(worker.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        worker.exit_within(Duration::from_secs(30)).await;
        seen.push_str(&worker.log_text());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_order-worker"))
        .args(["run", "--brokers", "", "--database-url", &good])
        .output()
        .unwrap();
    seen.push_str(&String::from_utf8_lossy(&out.stderr));

    assert!(
        count(&db.pool, "orders").await > 0,
        "the good run did work, so its paths were logged"
    );
    assert!(
        seen.contains("password authentication failed"),
        "the wrong password was reported"
    );
    assert!(!seen.contains(&password), "the database password leaked");
    assert!(!seen.contains(&kafka_secret), "the Kafka password leaked");
    sqlx::query(&format!("DROP OWNED BY {role}"))
        .execute(&db.pool)
        .await
        .unwrap();
    let admin = sqlx::PgPool::connect(&server_url()).await.unwrap();
    db.pool.close().await;
    drop(db);
    let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
        .execute(&admin)
        .await;
}

/// `host:port` of a `postgres://user:pass@host:port/db` URL.
fn base_host(url: &str) -> String {
    let after_at = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    after_at.split('/').next().unwrap_or(after_at).to_owned()
}
