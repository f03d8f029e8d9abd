//! The scenarios. Each streams a known set of events through one kind of fault.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use order_worker::synth::Expectation;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::helpers::Binary;
use crate::helpers::kafka::{Tansu, publish, publish_in_background};
use crate::helpers::pg::{PrivatePostgres, TestDb};
use crate::{Scenario, consuming, partitions_for, profile, spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_again_and_again_during_one_stream() {
    let p = profile();
    let s = Scenario::new(
        &format!("kill -9, {} times", p.kills),
        partitions_for(p.kill_events, 4),
    )
    .await;
    let mock = s.mock();
    let spec = spec(1, p.kill_events);
    let rate = p.kill_events * 1_000 / (p.kills as u64 * 9_000 + 6_000);
    let publisher = publish_in_background(&mock.brokers, &s.topic, &spec, p.kill_events, rate);
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..p.kills {
        let worker = s.worker(&mock.brokers, &[]);
        consuming(&worker, 1.0).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..2_500))).await;
        worker.signal(Signal::SIGKILL);
    }
    let _last = s.worker(&mock.brokers, &[]);
    publisher.join().expect("publisher");
    let probe = s.probe(&mock.brokers);
    probe
        .wait_caught_up("everything committed after the kills")
        .await;
    s.finish(
        &probe,
        &Expectation::of(&spec, p.kill_events),
        &format!("{} kills at random moments", p.kills),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_stream_for_longer_than_the_first_retries() {
    let p = profile();
    let pg = PrivatePostgres::start();
    let s = Scenario::on(
        "PostgreSQL down 8 s, restarted",
        partitions_for(p.events, 4),
        TestDb::create_on(&pg.server_url()).await,
    )
    .await;
    let mock = s.mock();
    let spec = spec(2, p.events);
    let publisher = publish_in_background(&mock.brokers, &s.topic, &spec, p.events, p.rate);
    let _worker = s.worker(&mock.brokers, &[]);
    consuming(&_worker, 100.0).await;
    pg.stop_server();
    tokio::time::sleep(Duration::from_secs(8)).await;
    pg.start_server();
    publisher.join().expect("publisher");
    let probe = s.probe(&mock.brokers);
    probe
        .wait_caught_up("everything committed after the outage")
        .await;
    s.finish(
        &probe,
        &Expectation::of(&spec, p.events),
        "fast shutdown; backoff 0.1 s doubling",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_goes_down_and_comes_back_mid_stream() {
    let p = profile();
    let s = Scenario::new("broker down 6 s (mock)", partitions_for(p.events, 4)).await;
    let mock = s.mock();
    let spec = spec(3, p.events);
    let publisher = publish_in_background(&mock.brokers, &s.topic, &spec, p.events, p.rate);
    let worker = s.worker(&mock.brokers, &[]);
    consuming(&worker, 100.0).await;
    mock.cluster.broker_down(1).expect("broker down");
    tokio::time::sleep(Duration::from_secs(6)).await;
    mock.cluster.broker_up(1).expect("broker up");
    publisher.join().expect("publisher");
    let probe = s.probe(&mock.brokers);
    probe
        .wait_caught_up("everything committed after the outage")
        .await;
    s.finish(
        &probe,
        &Expectation::of(&spec, p.events),
        "broker_down/broker_up",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_process_is_killed_and_restarted_on_its_storage() {
    let p = profile();
    let mut tansu = Tansu::start();
    let s = Scenario::new("broker process kill -9 (tansu)", 4).await;
    let config = order_worker::kafka::client_config(&tansu.brokers, &[]);
    order_worker::kafka::producer::ensure_topic(&config, &s.topic, 4)
        .await
        .expect("topic");
    let spec = spec(4, p.events);
    let publisher = publish_in_background(&tansu.brokers, &s.topic, &spec, p.events, p.rate);
    let worker = s.worker(&tansu.brokers, &[]);
    consuming(&worker, 100.0).await;
    tansu.restart(Duration::from_secs(3));
    publisher.join().expect("publisher");
    let probe = s.probe(&tansu.brokers);
    probe
        .wait_caught_up("everything committed after the restart")
        .await;
    s.finish(
        &probe,
        &Expectation::of(&spec, p.events),
        "SIGKILL, 3 s down, same storage",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_one_killed_one_added_mid_stream() {
    let p = profile();
    let s = Scenario::new("3 workers, 1 killed, 1 added", partitions_for(p.events, 6)).await;
    let mock = s.mock();
    let spec = spec(5, p.events);
    let publisher = publish_in_background(&mock.brokers, &s.topic, &spec, p.events, p.rate);
    let a = s.worker(&mock.brokers, &[]);
    let b = s.worker(&mock.brokers, &[]);
    let c = s.worker(&mock.brokers, &[]);
    for w in [&a, &b, &c] {
        consuming(w, 1.0).await;
    }
    b.signal(Signal::SIGKILL);
    let _d = s.worker(&mock.brokers, &[]);
    publisher.join().expect("publisher");
    let probe = s.probe(&mock.brokers);
    probe
        .wait_caught_up("everything committed by the group")
        .await;
    s.finish(
        &probe,
        &Expectation::of(&spec, p.events),
        "cooperative-sticky rebalances",
    )
    .await;
    drop((a, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_at_full_speed_drains_in_time_and_loses_nothing() {
    let p = profile();
    let s = Scenario::new(
        "SIGTERM at full speed",
        partitions_for(p.sigterm_backlog, 4),
    )
    .await;
    let mock = s.mock();
    let spec = spec(6, p.sigterm_backlog);
    publish(&mock.brokers, &s.topic, &spec, p.sigterm_backlog);
    let mut first = s.worker(&mock.brokers, &["--shutdown-timeout", "10s"]);
    consuming(&first, (p.sigterm_backlog / 4) as f64).await;
    let signalled = Instant::now();
    first.signal(Signal::SIGTERM);
    let status = first.exit_within(Duration::from_secs(20)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    let _second = s.worker(&mock.brokers, &[]);
    let probe = s.probe(&mock.brokers);
    probe.wait_caught_up("the restart finishes").await;
    let notes = format!("exit 0 in {:.2} s (timeout 10 s)", took.as_secs_f64());
    s.finish(&probe, &Expectation::of(&spec, p.sigterm_backlog), &notes)
        .await;
}

/// The documented memory bound (docs/reliability.md). What grows with load is bounded by
/// configuration: librdkafka's prefetch queue (`KAFKA_QUEUE_MAX_KBYTES`), the lanes and the
/// batches.
/// The backlog itself is 75 MB (short profile) to 500 MB (long), so a worker that buffered it,
/// or leaked per message, would cross the bound.
const RSS_BOUND_MIB: u64 = 96;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_backlog_drains_with_flat_memory() {
    let p = profile();
    let s = Scenario::new(
        &format!("{}-event backlog", p.rss_backlog),
        partitions_for(p.rss_backlog, 4),
    )
    .await;
    let mock = s.mock();
    let spec = spec(8, p.rss_backlog);
    publish(&mock.brokers, &s.topic, &spec, p.rss_backlog);
    let started = Instant::now();
    let worker = s.worker(&mock.brokers, &[]);
    let probe = s.probe(&mock.brokers);
    let deadline = started + Duration::from_secs(900);
    // Idle for a second, the worker hands freed heap back (src/memory.rs); glibc alone keeps
    // freed memory, so without that the heap would stay near its peak.
    let heap_mib = |w: &Binary| w.anon_rss_bytes().expect("worker still running") / (1 << 20);
    let mut busy_heap = 0;
    while !probe.caught_up() {
        assert!(Instant::now() < deadline, "backlog not drained in time");
        busy_heap = busy_heap.max(heap_mib(&worker));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let peak_mib = worker.peak_rss_bytes().expect("worker still running") / (1 << 20);
    let drained = started.elapsed().as_secs_f64();
    tokio::time::sleep(IDLE_SETTLE).await;
    let idle_heap = heap_mib(&worker);
    let notes = format!(
        "peak RSS {peak_mib} MiB (bound {RSS_BOUND_MIB} MiB), heap {busy_heap} MiB at most while \
         draining, {idle_heap} MiB once idle, drained at {:.0}/s",
        p.rss_backlog as f64 / drained
    );
    s.finish(&probe, &Expectation::of(&spec, p.rss_backlog), &notes)
        .await;
    assert!(peak_mib <= RSS_BOUND_MIB, "{notes}");
    assert!(
        idle_heap * 4 <= busy_heap * 3,
        "an idle worker gives a quarter of its busiest heap back or more: {notes}"
    );
}

/// Longer than the worker's idle threshold (1 s) plus a store interval.
const IDLE_SETTLE: Duration = Duration::from_secs(3);
