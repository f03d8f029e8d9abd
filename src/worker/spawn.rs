//! Starting the pipeline: one processor per lane, the consumer thread that feeds them, the lag
//! monitor; then supervising it and running the ordered stop (see [`super::stop`]).
//!
//! Invariant: every part started here is owned by the returned [`Running`] (or by the consumer
//! thread), so the stop reaches all of them.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::Parts;
use super::stop::{ConsumerEnd, Ended, Running, drain, supervise};
use crate::db::OrderStore;
use crate::error::Error;
use crate::kafka::WorkerContext;
use crate::lag::{Monitor, Quiet};
use crate::offsets::OffsetTracker;
use crate::pipeline::{
    ConsumerLoop, ConsumerSettings, Dispatcher, Envelope, InFlight, Processor, ProcessorSettings,
    lanes,
};
use crate::retry::Schedule;

impl Parts {
    pub(super) async fn pipeline(
        &self,
        consumer: BaseConsumer<WorkerContext>,
        lag_reader: BaseConsumer<Quiet>,
    ) -> Result<(), Error> {
        let mut running = self.spawn(consumer, lag_reader)?;
        let ended = supervise(&mut running, &self.stop, &self.health).await;
        if let Ended::Failed(e) = &ended {
            error!(error = %e, "pipeline failure: stopping without committing unfinished work");
            running.abort.cancel();
        }
        self.health.start_draining();
        self.stop.cancel();
        let began = *self.stopped_at.get_or_init(Instant::now);
        let outcome = drain(running, ended, began + self.cfg.shutdown_timeout).await;
        outcome.into_result(self.cfg.shutdown_timeout)
    }

    /// Starts the processors, one per lane, and the consumer thread that feeds them.
    fn spawn(
        &self,
        consumer: BaseConsumer<WorkerContext>,
        lag_reader: BaseConsumer<Quiet>,
    ) -> Result<Running, Error> {
        let p = &self.cfg.pipeline;
        let tracker = consumer.context().tracker.clone();
        let in_flight = Arc::new(InFlight::new(p.max_in_flight_bytes));
        let (senders, receivers) = lanes(usize::from(p.processors), p.channel_capacity as usize);
        let abort = CancellationToken::new();
        let processors = self.spawn_processors(receivers, &tracker, &in_flight, &abort);
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
            _lag_monitor: self.lag_monitor(lag_reader).spawn()?,
            settings: ConsumerSettings {
                max_payload_bytes: p.max_payload_bytes as usize,
                commit_interval: p.commit_interval,
            },
            stop: self.stop.clone(),
            abort: abort.clone(),
        };
        // The thread reports its end through a channel, never a join: a thread still inside
        // librdkafka when the stop's deadline passes must not hold the process.
        let (done, consumer_done) = oneshot::channel();
        std::thread::Builder::new()
            .name("kafka-consumer".into())
            .spawn(move || {
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| consumer_loop.run()));
                let _ = done.send(ConsumerEnd::from(outcome));
            })?;
        info!(topic = %self.cfg.consumer.topic, group = %self.cfg.consumer.group_id,
              processors = p.processors, "worker started");
        Ok(Running {
            processors,
            consumer_done,
            consumer_end: None,
            abort,
        })
    }

    fn spawn_processors(
        &self,
        receivers: Vec<flume::Receiver<Envelope>>,
        tracker: &Arc<OffsetTracker>,
        in_flight: &Arc<InFlight>,
        abort: &CancellationToken,
    ) -> JoinSet<Result<(), Error>> {
        let p = &self.cfg.pipeline;
        let store = OrderStore::new(self.pool.clone(), self.cfg.consumer.topic.clone());
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
                registry: self.registry.clone(),
                abort: abort.clone(),
            };
            processors.spawn(processor.run());
        }
        processors
    }

    fn lag_monitor(&self, reader: BaseConsumer<Quiet>) -> Monitor {
        Monitor {
            reader,
            view: self.lag.clone(),
            reset: self.cfg.consumer.auto_offset_reset,
            interval: self.cfg.lag_interval,
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            dead_letter_topic: self.cfg.dead_letter_topic.clone(),
        }
    }
}
