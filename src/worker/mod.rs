//! The worker: wires the consumer thread, the processors, PostgreSQL and the HTTP server, and
//! runs the ordered stop.
//!
//! Invariant: the stop runs in one order whatever triggered it (signal, failed task, a
//! configuration Kafka refuses): readiness turns false, fetching stops, lanes drain, batches
//! flush, the final commit covers exactly what is durable, the member leaves the group; all
//! within the shutdown timeout, after which the processors are aborted without reporting, so
//! nothing that is not durable is ever committed, and nothing waits for the consumer thread.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{KafkaArgs, WorkerConfig};
use crate::db;
use crate::error::Error;
use crate::health::Health;
use crate::http;
use crate::kafka::dead_letter_topic::DeadLetterTopic;
use crate::kafka::originals::Originals;
use crate::kafka::{self, Release, WorkerContext};
use crate::lag::{LagView, Quiet};
use crate::metrics::{self, Metrics};
use crate::offsets::OffsetTracker;
use crate::registry::SchemaRegistry;
use crate::retry::{self, Schedule, Verdict};
use crate::telemetry::Throttle;

mod spawn;
mod stop;

/// How often PostgreSQL is pinged, for readiness and so that an outage is told from a wedged
/// pipeline (STALL_TIMEOUT) within a few seconds.
const DB_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Every how many checks the unreplayed dead letters are counted (once a minute).
const DEAD_LETTER_COUNT_EVERY: u32 = 30;

/// A running worker.
pub struct Worker {
    http_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), Error>>,
}

impl Worker {
    /// Binds the HTTP server and starts the pipeline in the background, with a configuration
    /// that passed [`WorkerConfig::validate`]. Returns once the HTTP server listens; PostgreSQL
    /// may still be down.
    pub async fn start(kafka: &KafkaArgs, cfg: &WorkerConfig) -> Result<Self, Error> {
        let prometheus = metrics::install()?;
        let addr = cfg.http.http_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Http { addr, source })?;
        let http_addr = listener.local_addr()?;
        let (parts, clients) = Parts::new(kafka, cfg)?;
        let http_stop = CancellationToken::new();
        let state = http::AppState {
            health: parts.health.clone(),
            prometheus,
            lag: parts.lag.clone(),
            sampler: Arc::new(http::Sampler::new(
                parts.pool.clone(),
                parts.metrics.clone(),
            )),
        };
        let server = http::serve(listener, state, http_stop.clone());
        let stop = parts.stop.clone();
        let task = tokio::spawn(async move {
            let result = parts.run(clients).await;
            http_stop.cancel();
            let _ = server.await;
            result
        });
        info!(%http_addr, "http server listening");
        Ok(Self {
            http_addr,
            stop,
            task,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// A token that begins the graceful stop when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits for the worker to end: `Ok` after a complete graceful stop.
    pub async fn wait(mut self) -> Result<(), Error> {
        (&mut self.task)
            .await
            .map_err(|e| Error::TaskFailed(format!("worker task: {e}")))?
    }
}

impl Drop for Worker {
    /// A worker dropped without `wait` still stops gracefully in the background, so its consumer
    /// thread never outlives the runtime it reports to.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Parts {
    cfg: WorkerConfig,
    pool: PgPool,
    health: Arc<Health>,
    metrics: Metrics,
    lag: Arc<LagView>,
    dead_letter_topic: Option<Arc<DeadLetterTopic>>,
    originals: Originals,
    registry: Option<Arc<SchemaRegistry>>,
    stop: CancellationToken,
    /// When the stop began (shared with the consumer thread, which counts from it too).
    stopped_at: Arc<OnceLock<Instant>>,
}

/// The Kafka clients the pipeline takes over when it starts.
struct Clients {
    consumer: BaseConsumer<WorkerContext>,
    lag_reader: BaseConsumer<Quiet>,
}

impl Parts {
    /// Creates every client, so that a bad librdkafka property or database URL fails the start,
    /// not a thread later.
    fn new(kafka: &KafkaArgs, cfg: &WorkerConfig) -> Result<(Self, Clients), Error> {
        let (brokers, properties) = (kafka.brokers.as_str(), kafka.properties.as_slice());
        let metrics = Metrics::new();
        let health = Arc::new(Health::new(cfg.stall_timeout));
        let pool = db::pool(&cfg.db, cfg.db_max_connections())?;
        let c = &cfg.consumer;
        let tracker = Arc::new(OffsetTracker::new());
        let lag = Arc::new(LagView::new(&c.group_id, &c.topic, tracker.clone()));
        let stop = CancellationToken::new();
        let stopped_at = Arc::new(OnceLock::new());
        let release = Release {
            drain_timeout: cfg.pipeline.rebalance_drain_timeout,
            shutdown_timeout: cfg.shutdown_timeout,
            stop: stop.clone(),
            stopped_at: stopped_at.clone(),
        };
        let context = WorkerContext::new(
            c.topic.clone(),
            c.group_id.clone(),
            tracker,
            metrics.clone(),
            health.clone(),
            release,
        );
        let consumer = kafka::consumer_config(brokers, properties, c, cfg.pipeline.commit_interval)
            .create_with_context(context)?;
        let lag_reader = crate::lag::reader(brokers, properties, &c.group_id)?;
        let dead_letter_topic = cfg
            .dead_letter_topic
            .as_deref()
            .map(|t| DeadLetterTopic::new(brokers, properties, t, &c.topic, &c.group_id))
            .transpose()?
            .map(Arc::new);
        let parts = Self {
            cfg: cfg.clone(),
            pool,
            health,
            metrics,
            lag,
            dead_letter_topic,
            originals: Originals::new(brokers, properties, &c.topic, &c.group_id),
            registry: SchemaRegistry::new(&cfg.schema_registry)?,
            stop,
            stopped_at,
        };
        Ok((
            parts,
            Clients {
                consumer,
                lag_reader,
            },
        ))
    }

    async fn run(self, clients: Clients) -> Result<(), Error> {
        if !self.wait_for_database().await? {
            return Ok(());
        }
        if self.cfg.migrate_on_start {
            let applied = db::migrate(&self.pool).await?;
            info!(?applied, "migrations applied at startup");
        } else {
            db::check_schema(&self.pool).await?;
        }
        let monitor = tokio::spawn(monitor_database(
            self.pool.clone(),
            self.health.clone(),
            self.metrics.clone(),
        ));
        let result = self.pipeline(clients.consumer, clients.lag_reader).await;
        monitor.abort();
        result
    }

    /// Retries until PostgreSQL answers; false if the stop came first. Credentials or a database
    /// name PostgreSQL refuses are a configuration error, returned at once: retrying cannot fix
    /// them.
    async fn wait_for_database(&self) -> Result<bool, Error> {
        let schedule = Schedule {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
        };
        let reached = retry::until_ok(
            schedule,
            &self.stop,
            || None,
            || async {
                db::ping(&self.pool, Duration::from_secs(3))
                    .await
                    .map_err(Some)
            },
            |e, delay| {
                if e.as_ref().is_some_and(db::is_misconfigured) {
                    return Verdict::Fail(e);
                }
                let error = e.map(|e| e.to_string()).unwrap_or_default();
                warn!(%error, retry_in_ms = delay.as_millis() as u64, "waiting for PostgreSQL");
                Verdict::Retry
            },
        )
        .await;
        match reached {
            Ok(()) => {
                self.health.set_db_ok(true);
                Ok(true)
            }
            Err(Some(e)) => Err(Error::Database(e)),
            Err(None) => Ok(false),
        }
    }
}

/// Pings PostgreSQL for readiness, and counts the dead letters waiting to be replayed. A count
/// that fails keeps the last figures (the ping says whether PostgreSQL is there).
async fn monitor_database(pool: PgPool, health: Arc<Health>, metrics: Metrics) {
    let mut tick = tokio::time::interval(DB_CHECK_INTERVAL);
    let throttle = Throttle::new(Duration::from_secs(30));
    for round in 0u32.. {
        tick.tick().await;
        let ok = db::ping(&pool, Duration::from_secs(2)).await;
        if let Err(e) = &ok
            && let Some(held) = throttle.admit(&e.to_string())
        {
            warn!(error = %e, repeated = held, "PostgreSQL health check failed");
        }
        health.set_db_ok(ok.is_ok());
        if ok.is_ok() && round % DEAD_LETTER_COUNT_EVERY == 0 {
            // Bounded like the ping: a hung count must not hold readiness at its last value.
            let count = db::dead_letters::unreplayed_by_reason(&pool);
            match tokio::time::timeout(Duration::from_secs(5), count).await {
                Ok(Ok(counts)) => metrics.set_unreplayed(&counts),
                Ok(Err(e)) => warn!(error = %e, "could not count the unreplayed dead letters"),
                Err(_) => warn!("counting the unreplayed dead letters took over 5 s; skipped"),
            }
        }
    }
}
