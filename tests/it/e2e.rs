//! End to end: a tansu broker process, the built binary as producer and as worker, PostgreSQL.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use order_worker::synth::{Expectation, SynthSpec};

use crate::helpers::kafka::{CAUGHT_UP, OffsetProbe, Tansu};
use crate::helpers::pg::{TestDb, assert_state_is, count};
use crate::helpers::{Binary, eventually, unique};

const PARTITIONS: i32 = 4;

/// More orders than events, so that a lost event shows in the final state (see faults.rs).
fn spec() -> SynthSpec {
    SynthSpec {
        orders: 60_000,
        invalid_ratio: 0.01,
        duplicate_ratio: 0.02,
        seed: 7,
    }
}

/// `order-worker produce`, creating the topic, as a child process.
fn produce(brokers: &str, topic: &str, events: u64, rate: u64) -> Child {
    let s = spec();
    Command::new(env!("CARGO_BIN_EXE_order-worker"))
        .args(["produce", "--brokers", brokers, "--topic", topic])
        .args([
            "--partitions",
            &PARTITIONS.to_string(),
            "--events",
            &events.to_string(),
        ])
        .args([
            "--rate",
            &rate.to_string(),
            "--orders",
            &s.orders.to_string(),
        ])
        .args(["--invalid-ratio", &s.invalid_ratio.to_string()])
        .args([
            "--duplicate-ratio",
            &s.duplicate_ratio.to_string(),
            "--seed",
            &s.seed.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn order-worker produce")
}

fn finish_producing(child: Child, events: u64) {
    let out = child.wait_with_output().expect("producer output");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "produce failed: {summary}");
    assert!(
        summary.contains(&format!("{events} acknowledged, 0 failed")),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_events_with_one_percent_invalid_flow_through_a_broker_process() {
    let tansu = Tansu::start();
    let (topic, group) = (unique("orders"), unique("group"));
    let db = TestDb::create().await;
    let events = 50_000;
    finish_producing(produce(&tansu.brokers, &topic, events, 0), events);
    let expected = Expectation::of(&spec(), events);
    assert!(
        expected.mix.invalid_total() > 400,
        "about 1% invalid: {:?}",
        expected.mix
    );

    let mut worker = Binary::run(&tansu.brokers, &db.url, &topic, &group, &[]);
    let probe = OffsetProbe::new(&tansu.brokers, &group, &topic, PARTITIONS);
    probe
        .wait_caught_up("committed offsets at the end of every partition")
        .await;
    assert_eq!(probe.committed(), probe.ends());
    assert_state_is(&db.pool, &expected).await;

    worker.signal(Signal::SIGTERM);
    assert!(worker.exit_within(Duration::from_secs(30)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_exits_zero_in_time_and_a_restart_finishes_the_exact_state() {
    let tansu = Tansu::start();
    let (topic, group) = (unique("orders"), unique("group"));
    let db = TestDb::create().await;
    let events = 40_000;
    let producer = produce(&tansu.brokers, &topic, events, 4_000);
    let shutdown = ["--shutdown-timeout", "10s"];

    let mut first = Binary::run(&tansu.brokers, &db.url, &topic, &group, &shutdown);
    eventually("the first worker applies orders", CAUGHT_UP, || async {
        count(&db.pool, "orders").await > 500
    })
    .await;
    let signalled = Instant::now();
    first.signal(Signal::SIGTERM);
    let status = first.exit_within(Duration::from_secs(15)).await;
    let took = signalled.elapsed();
    let log = first.log_text();
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(
        took < Duration::from_secs(10),
        "stopped in {took:?}, within the 10 s timeout"
    );
    assert!(
        log.contains("final offsets committed") && log.contains("left the consumer group"),
        "{log}"
    );
    let orders_at_stop = count(&db.pool, "orders").await;

    let _second = Binary::run(&tansu.brokers, &db.url, &topic, &group, &shutdown);
    finish_producing(producer, events);
    let probe = OffsetProbe::new(&tansu.brokers, &group, &topic, PARTITIONS);
    probe
        .wait_caught_up("the restarted worker commits everything")
        .await;
    assert!(count(&db.pool, "orders").await >= orders_at_stop);
    assert_state_is(&db.pool, &Expectation::of(&spec(), events)).await;
}
