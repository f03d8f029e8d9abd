//! The `dev` command: the whole system on one machine with nothing but PostgreSQL.
//!
//! Invariant: `dev` runs the real worker (the same `Worker` as `run`) against a real
//! Kafka-protocol server (librdkafka's mock cluster, listening on loopback TCP so any client can
//! produce to it); only the broker is embedded. The mock cluster is not `Send`: it lives on the
//! thread that drives this future and is dropped last, after the worker has stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use iso_currency::Currency;
use rdkafka::mocking::MockCluster;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::{DevConfig, KafkaArgs};
use crate::error::Error;
use crate::kafka::{self, producer::Publisher};
use crate::synth::{Generator, SynthSpec};
use crate::worker::Worker;

const STATUS_INTERVAL: Duration = Duration::from_secs(3);

pub async fn dev(cfg: DevConfig, stop: CancellationToken) -> Result<(), Error> {
    let mock = MockCluster::new(1)?;
    let topic = cfg.worker.consumer.topic.clone();
    mock.create_topic(&topic, cfg.partitions, 1)?;
    let brokers = mock.bootstrap_servers();
    println!(
        "embedded Kafka (librdkafka mock cluster) at {brokers}, topic '{topic}' with {} partitions",
        cfg.partitions
    );
    println!(
        "  produce to it with any client, e.g. order-worker produce --brokers {brokers} --events 100"
    );

    let mut worker_cfg = cfg.worker.clone();
    worker_cfg.migrate_on_start = true;
    let worker = Worker::start(&KafkaArgs::local(brokers.clone()), &worker_cfg).await?;
    println!(
        "worker running; http://{}/readyz and /metrics; Ctrl-C stops it",
        worker.http_addr()
    );

    let producing = Arc::new(AtomicBool::new(false));
    let publisher = spawn_publisher(&cfg, &brokers, producing.clone())?;
    let status_pool = crate::db::pool(&cfg.worker.db, 1)?;
    let started = Instant::now();
    let until = cfg.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = sleep_until(until) => break,
            _ = tick.tick() => print_status(&status_pool, started).await,
        }
    }
    producing.store(true, Ordering::Relaxed);
    worker.stop();
    let result = worker.wait().await;
    match tokio::task::spawn_blocking(move || publisher.join()).await {
        Ok(Ok(Ok(sent))) => println!("published {sent} messages in all"),
        Ok(Ok(Err(e))) => warn!(error = %e, "publisher failed"),
        _ => warn!("publisher thread failed"),
    }
    print_status(&status_pool, started).await;
    drop(mock);
    result
}

/// Publishes the initial burst, then a steady stream, until `done` is set.
fn spawn_publisher(
    cfg: &DevConfig,
    brokers: &str,
    done: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<u64, Error>>, Error> {
    let mut publisher = Publisher::new(
        kafka::client_config(brokers, &[]),
        &cfg.worker.consumer.topic,
    )?;
    let spec = SynthSpec::from(&cfg.synth);
    let (initial, rate) = (cfg.initial_events, cfg.rate);
    Ok(std::thread::Builder::new()
        .name("dev-publisher".into())
        .spawn(move || {
            let started = Instant::now();
            let mut stream = Generator::new(spec);
            let mut sent = publisher.publish(stream.by_ref().take(initial as usize), 0, &done)?;
            if rate > 0 {
                sent += publisher.publish(stream, rate, &done)?;
            }
            publisher.finish(Duration::from_secs(10), started)?;
            Ok(sent)
        })?)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn print_status(pool: &PgPool, started: Instant) {
    match status(pool).await {
        Ok(line) => println!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64()),
        Err(e) => println!("[{:>5.1}s] postgres: {e}", started.elapsed().as_secs_f64()),
    }
}

async fn status(pool: &PgPool) -> Result<String, sqlx::Error> {
    let (orders, versions): (i64, i64) =
        sqlx::query_as("SELECT count(*), COALESCE(sum(version), 0)::int8 FROM orders")
            .fetch_one(pool)
            .await?;
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(pool)
        .await?;
    let latest: Option<(uuid::Uuid, i64, String, String, i64)> = sqlx::query_as(
        "SELECT order_id, version, status, currency, total_minor FROM orders \
         ORDER BY applied_at DESC, source_offset DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let latest = latest.map_or_else(String::new, |(id, v, status, currency, total)| {
        format!(
            "; latest: order {id} v{v} {status} {}",
            money(total, &currency)
        )
    });
    Ok(format!(
        "postgres: {orders} orders (sum of versions {versions}), {dead} dead letters{latest}"
    ))
}

/// `12345` minor units of EUR as `EUR 123.45` (JPY has no minor unit: `JPY 12345`).
fn money(minor: i64, currency: &str) -> String {
    let exponent = Currency::from_code(currency.trim())
        .and_then(Currency::exponent)
        .unwrap_or(2) as u32;
    let unit = 10i64.pow(exponent);
    if exponent == 0 {
        format!("{currency} {minor}")
    } else {
        format!(
            "{currency} {}.{:0width$}",
            minor / unit,
            minor % unit,
            width = exponent as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::money;

    #[test]
    fn amounts_are_shown_in_the_currency_s_major_unit() {
        assert_eq!(money(12345, "EUR"), "EUR 123.45");
        assert_eq!(money(12345, "JPY"), "JPY 12345");
        assert_eq!(money(5, "USD"), "USD 0.05");
        assert_eq!(money(1234, "BHD"), "BHD 1.234");
    }
}
