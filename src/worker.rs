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

use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::WorkerConfig;
use crate::db::{self, OrderStore};
use crate::error::Error;
use crate::health::Health;
use crate::http;
use crate::kafka::dead_letter_topic::DeadLetterTopic;
use crate::kafka::originals::Originals;
use crate::kafka::tracker::OffsetTracker;
use crate::kafka::{self, ConsumerLoop, ConsumerSettings, Release, WorkerContext};
use crate::lag::{LagView, Monitor, Quiet};
use crate::memory::IdleRelease;
use crate::metrics::{self, Metrics};
use crate::pipeline::{Dispatcher, InFlight, Processor, ProcessorSettings, lanes};
use crate::retry::{self, Schedule, Verdict};
use crate::telemetry::Throttle;

/// How often PostgreSQL is pinged, for readiness and so that an outage is told from a wedged
/// pipeline (STALL_TIMEOUT) within a few seconds.
const DB_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// A running worker.
pub struct Worker {
    http_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), Error>>,
}

impl Worker {
    /// Validates the configuration, binds the HTTP server and starts the pipeline in the
    /// background. Returns once the HTTP server listens; PostgreSQL may still be down.
    pub async fn start(brokers: &str, cfg: &WorkerConfig) -> Result<Self, Error> {
        cfg.validate()?;
        let prometheus = metrics::install()?;
        let metrics = Metrics::new();
        let health = Arc::new(Health::new(cfg.stall_timeout));
        let addr = cfg.http.http_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Http { addr, source })?;
        let http_addr = listener.local_addr()?;
        let pool = db::pool(&cfg.db, cfg.db_max_connections())?;
        // Created here so that a bad librdkafka property fails the start, not a thread later.
        let tracker = Arc::new(OffsetTracker::new());
        let lag = Arc::new(LagView::new(
            &cfg.consumer.group_id,
            &cfg.consumer.topic,
            tracker.clone(),
        ));
        let stop = CancellationToken::new();
        let stopped_at = Arc::new(OnceLock::new());
        let context = WorkerContext::new(
            cfg.consumer.topic.clone(),
            cfg.consumer.group_id.clone(),
            tracker,
            metrics.clone(),
            health.clone(),
            Release {
                drain_timeout: cfg.pipeline.rebalance_drain_timeout,
                shutdown_timeout: cfg.shutdown_timeout,
                stop: stop.clone(),
                stopped_at: stopped_at.clone(),
            },
        );
        let consumer: BaseConsumer<WorkerContext> =
            kafka::consumer_config(brokers, &cfg.consumer, cfg.pipeline.commit_interval)
                .create_with_context(context)?;
        let c = &cfg.consumer;
        let lag_reader = crate::lag::reader(brokers, &c.properties, &c.group_id)?;

        let dead_letter_topic = cfg
            .dead_letter_topic
            .as_deref()
            .map(|t| DeadLetterTopic::new(brokers, &c.properties, t, &c.topic, &c.group_id))
            .transpose()?
            .map(Arc::new);
        let originals = Originals::new(brokers, &c.properties, &c.topic, &c.group_id);

        let http_stop = CancellationToken::new();
        let state = http::AppState {
            health: health.clone(),
            prometheus,
            lag: lag.clone(),
            sampler: Arc::new(http::Sampler::new(pool.clone(), metrics.clone())),
        };
        let server = http::serve(listener, state, http_stop.clone());
        let parts = Parts {
            cfg: cfg.clone(),
            pool,
            health,
            metrics,
            lag,
            dead_letter_topic,
            originals,
            stop: stop.clone(),
            stopped_at,
        };
        let task = tokio::spawn(async move {
            let result = parts.run(consumer, lag_reader).await;
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
    stop: CancellationToken,
    /// When the stop began (shared with the consumer thread, which counts from it too).
    stopped_at: Arc<OnceLock<Instant>>,
}

impl Parts {
    async fn run(
        self,
        consumer: BaseConsumer<WorkerContext>,
        lag_reader: BaseConsumer<Quiet>,
    ) -> Result<(), Error> {
        if !self.wait_for_database().await? {
            return Ok(());
        }
        if self.cfg.migrate_on_start {
            let applied = db::migrate(&self.pool).await?;
            info!(?applied, "migrations applied at startup");
        } else {
            db::check_schema(&self.pool).await?;
        }
        let monitor = tokio::spawn(monitor_database(self.pool.clone(), self.health.clone()));
        let result = self.pipeline(consumer, lag_reader).await;
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

    async fn pipeline(
        &self,
        consumer: BaseConsumer<WorkerContext>,
        lag_reader: BaseConsumer<Quiet>,
    ) -> Result<(), Error> {
        let p = &self.cfg.pipeline;
        let tracker = consumer.context().tracker.clone();
        let in_flight = Arc::new(InFlight::new(p.max_in_flight_bytes));
        let (senders, receivers) = lanes(usize::from(p.processors), p.channel_capacity as usize);
        let store = OrderStore::new(self.pool.clone(), self.cfg.consumer.topic.clone());
        let abort = CancellationToken::new();
        let settings = ProcessorSettings {
            batch_max_rows: p.batch_max_rows as usize,
            linger: p.batch_linger,
            max_payload_bytes: p.max_payload_bytes as usize,
            retry: Schedule::default(),
        };
        let mut processors = JoinSet::new();
        for (lane, rx) in receivers.into_iter().enumerate() {
            let processor = Processor {
                lane,
                rx,
                store: store.clone(),
                tracker: tracker.clone(),
                in_flight: in_flight.clone(),
                health: self.health.clone(),
                metrics: self.metrics.clone(),
                settings,
                dead_letter_topic: self.dead_letter_topic.clone(),
                originals: self.originals.clone(),
                abort: abort.clone(),
            };
            processors.spawn(processor.run());
        }

        consumer.subscribe(&[&self.cfg.consumer.topic])?;
        let consumer_loop = ConsumerLoop {
            consumer,
            dispatcher: Dispatcher::new(senders, in_flight.clone()),
            tracker,
            in_flight,
            health: self.health.clone(),
            metrics: self.metrics.clone(),
            lane_depths: self
                .metrics
                .lanes(usize::from(p.processors), p.channel_capacity as usize),
            _lag_monitor: Monitor {
                reader: lag_reader,
                view: self.lag.clone(),
                reset: self.cfg.consumer.auto_offset_reset,
                interval: self.cfg.lag_interval,
                metrics: self.metrics.clone(),
                health: self.health.clone(),
                dead_letter_topic: self.cfg.dead_letter_topic.clone(),
            }
            .spawn()?,
            idle_release: IdleRelease {
                pool: self.pool.clone(),
                runtime: tokio::runtime::Handle::current(),
            },
            settings: ConsumerSettings {
                max_payload_bytes: p.max_payload_bytes as usize,
                commit_interval: p.commit_interval,
            },
            stop: self.stop.clone(),
            abort: abort.clone(),
        };
        // The thread reports its end through a channel, never a join: a thread still inside
        // librdkafka when the stop's deadline passes must not hold the process.
        let (done, mut consumer_done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("kafka-consumer".into())
            .spawn(move || {
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| consumer_loop.run()));
                let _ = done.send(outcome);
            })?;
        info!(topic = %self.cfg.consumer.topic, group = %self.cfg.consumer.group_id,
              processors = p.processors, "worker started");

        // Run until asked to stop or until a part fails.
        let mut failure: Option<Error> = None;
        let mut consumer_result = None;
        tokio::select! {
            () = self.stop.cancelled() => {}
            Some(joined) = processors.join_next() => {
                failure = Some(Error::TaskFailed(match joined {
                    Ok(Ok(())) => "a processor stopped on its own".into(),
                    Ok(Err(e)) => format!("a processor failed: {e}"),
                    Err(e) => format!("a processor panicked: {e}"),
                }));
            }
            joined = &mut consumer_done => consumer_result = Some(joined),
            reason = self.health.failed() => {
                error!(%reason, "stopping: the configuration cannot work");
                failure = Some(Error::Config(reason));
            }
        }
        if let Some(e) = &failure {
            error!(error = %e, "pipeline failure: stopping without committing unfinished work");
            abort.cancel();
        }
        self.health.start_draining();
        self.stop.cancel();

        // The ordered stop, bounded by the shutdown timeout.
        let timeout = self.cfg.shutdown_timeout;
        let began = *self.stopped_at.get_or_init(Instant::now);
        let drain = async {
            let consumer = match consumer_result.take() {
                Some(r) => r,
                None => (&mut consumer_done).await,
            };
            while let Some(joined) = processors.join_next().await {
                match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "processor ended with an error while draining"),
                    Err(e) => warn!(error = %e, "processor panicked while draining"),
                }
            }
            consumer
        };
        let deadline = tokio::time::Instant::from_std(began + timeout);
        let consumer = match tokio::time::timeout_at(deadline, drain).await {
            Ok(consumer) => consumer,
            Err(_) => {
                abort.cancel();
                processors.shutdown().await;
                return Err(failure.unwrap_or(Error::DrainTimeout(timeout)));
            }
        };
        let drained = match consumer {
            Ok(Ok(Ok(drained))) => drained,
            Ok(Ok(Err(e))) => return Err(failure.unwrap_or(e)),
            Ok(Err(_panic)) => {
                return Err(
                    failure.unwrap_or(Error::TaskFailed("the consumer thread panicked".into()))
                );
            }
            Err(_) => {
                return Err(failure.unwrap_or(Error::TaskFailed(
                    "the consumer thread ended without a word".into(),
                )));
            }
        };
        match failure {
            Some(e) => Err(e),
            None if !drained => Err(Error::DrainTimeout(timeout)),
            None => {
                info!("stopped gracefully: everything consumed is durable and committed");
                Ok(())
            }
        }
    }
}

async fn monitor_database(pool: PgPool, health: Arc<Health>) {
    let mut tick = tokio::time::interval(DB_CHECK_INTERVAL);
    let throttle = Throttle::new(Duration::from_secs(30));
    loop {
        tick.tick().await;
        let ok = db::ping(&pool, Duration::from_secs(2)).await;
        if let Err(e) = &ok
            && let Some(held) = throttle.admit(&e.to_string())
        {
            warn!(error = %e, repeated = held, "PostgreSQL health check failed");
        }
        health.set_db_ok(ok.is_ok());
    }
}
