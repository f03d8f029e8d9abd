//! The worker: wires the consumer thread, the processors, PostgreSQL and the HTTP server, and
//! runs the ordered stop.
//!
//! Invariant: the stop runs in one order whatever triggered it (signal, failed task): readiness
//! turns false, fetching stops, lanes drain, batches flush, the final commit covers exactly what
//! is durable, the member leaves the group; all within the shutdown timeout, after which the
//! processors are aborted without reporting, so nothing that is not durable is ever committed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
use crate::kafka::{self, ConsumerLoop, ConsumerSettings, WorkerContext};
use crate::lag::{LagView, Monitor, Quiet};
use crate::memory::IdleRelease;
use crate::metrics::{self, Metrics};
use crate::pipeline::{Dispatcher, InFlight, Processor, ProcessorSettings, lanes};
use crate::retry::{self, Schedule, Verdict};

/// How often PostgreSQL is pinged for readiness when no batch says otherwise.
const DB_CHECK_INTERVAL: Duration = Duration::from_secs(5);

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
        let health = Arc::new(Health::new());
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
        let context = WorkerContext::new(
            cfg.consumer.topic.clone(),
            tracker,
            metrics.clone(),
            cfg.pipeline.rebalance_drain_timeout,
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

        let stop = CancellationToken::new();
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
}

impl Parts {
    async fn run(
        self,
        consumer: BaseConsumer<WorkerContext>,
        lag_reader: BaseConsumer<Quiet>,
    ) -> Result<(), Error> {
        if !self.wait_for_database().await {
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

    /// Retries until PostgreSQL answers; false if the stop came first.
    async fn wait_for_database(&self) -> bool {
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
                // The reason tells a wrong password from a server that is down.
                let error = e.map(|e| e.to_string()).unwrap_or_default();
                warn!(%error, retry_in_ms = delay.as_millis() as u64, "waiting for PostgreSQL");
                Verdict::Retry
            },
        )
        .await;
        self.health.set_db_ok(reached.is_ok());
        reached.is_ok()
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
            }
            .spawn()?,
            idle_release: IdleRelease {
                pool: self.pool.clone(),
                runtime: tokio::runtime::Handle::current(),
            },
            settings: ConsumerSettings {
                max_payload_bytes: p.max_payload_bytes as usize,
                shutdown_timeout: self.cfg.shutdown_timeout,
                commit_interval: p.commit_interval,
            },
            stop: self.stop.clone(),
            abort: abort.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("kafka-consumer".into())
            .spawn(move || consumer_loop.run())?;
        let mut consumer_done = tokio::task::spawn_blocking(move || thread.join());
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
        }
        if let Some(e) = &failure {
            error!(error = %e, "pipeline failure: stopping without committing unfinished work");
            abort.cancel();
        }
        self.health.start_draining();
        self.stop.cancel();

        // The ordered stop, bounded by the shutdown timeout.
        let timeout = self.cfg.shutdown_timeout;
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
        let consumer = match tokio::time::timeout(timeout, drain).await {
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
            Err(e) => return Err(Error::TaskFailed(format!("consumer thread join: {e}"))),
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
    loop {
        tick.tick().await;
        let ok = db::ping(&pool, Duration::from_secs(2)).await;
        if let Err(e) = &ok {
            warn!(error = %e, "PostgreSQL health check failed");
        }
        health.set_db_ok(ok.is_ok());
    }
}
