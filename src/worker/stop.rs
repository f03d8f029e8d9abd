//! Supervising the running pipeline and its ordered stop.
//!
//! Invariant: the stop ends by its deadline. A failure that ended the run is the outcome
//! whatever the drain does, and it aborts unfinished work first, so nothing that is not durable
//! is committed; past the deadline the processors are aborted without reporting. A panic ends
//! the run here only where panics unwind (tests, debug builds): the release build aborts the
//! process at the panic, which commits nothing either.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::Error;
use crate::health::Health;

/// The running pipeline: its processors, the consumer thread's report, and the token that tells
/// both to stop waiting for work that will never finish.
pub(super) struct Running {
    pub(super) processors: JoinSet<Result<(), Error>>,
    pub(super) consumer_done: oneshot::Receiver<ConsumerEnd>,
    /// The consumer thread's report, once it came.
    pub(super) consumer_end: Option<ConsumerEnd>,
    pub(super) abort: CancellationToken,
}

/// How the consumer thread ended.
#[derive(Debug)]
pub(super) enum ConsumerEnd {
    /// Every message it handed over became durable and was committed.
    Drained,
    /// The stop's deadline came first: what was not durable stays uncommitted.
    NotDrained,
    Failed(Error),
    Panicked,
    /// The thread went away without reporting (its runtime is ending).
    Vanished,
}

impl From<std::thread::Result<Result<bool, Error>>> for ConsumerEnd {
    fn from(outcome: std::thread::Result<Result<bool, Error>>) -> Self {
        match outcome {
            Ok(Ok(true)) => Self::Drained,
            Ok(Ok(false)) => Self::NotDrained,
            Ok(Err(e)) => Self::Failed(e),
            Err(_panic) => Self::Panicked,
        }
    }
}

/// Why the pipeline stopped running.
#[derive(Debug)]
pub(super) enum Ended {
    /// Asked to stop (a signal, `Worker::stop`).
    Asked,
    /// The consumer thread ended on its own.
    Consumer,
    /// A part failed, or the configuration cannot work: nothing unfinished may be committed.
    Failed(Error),
}

/// Runs until asked to stop or until a part ends or fails.
pub(super) async fn supervise(
    running: &mut Running,
    stop: &CancellationToken,
    health: &Health,
) -> Ended {
    tokio::select! {
        () = stop.cancelled() => Ended::Asked,
        Some(joined) = running.processors.join_next() => {
            Ended::Failed(Error::TaskFailed(match joined {
                Ok(Ok(())) => "a processor stopped on its own".into(),
                Ok(Err(e)) => format!("a processor failed: {e}"),
                Err(e) => format!("a processor panicked: {e}"),
            }))
        }
        end = &mut running.consumer_done => {
            running.consumer_end = Some(end.unwrap_or(ConsumerEnd::Vanished));
            Ended::Consumer
        }
        reason = health.failed() => {
            error!(%reason, "stopping: the configuration cannot work");
            Ended::Failed(Error::Config(reason))
        }
    }
}

/// What the stop came to.
#[derive(Debug)]
pub(super) enum Outcome {
    Graceful,
    Failed(Error),
    /// Not everything taken became durable by the deadline.
    TimedOut,
}

impl Outcome {
    pub(super) fn into_result(self, timeout: Duration) -> Result<(), Error> {
        match self {
            Self::Graceful => {
                info!("stopped gracefully: everything consumed is durable and committed");
                Ok(())
            }
            Self::Failed(e) => Err(e),
            Self::TimedOut => Err(Error::DrainTimeout(timeout)),
        }
    }
}

/// The ordered stop, by `deadline`: the consumer thread drains the lanes and commits, the
/// processors write what they hold; past the deadline the processors are aborted. A failure
/// that ended the run is the outcome whatever the drain does.
pub(super) async fn drain(mut running: Running, ended: Ended, deadline: Instant) -> Outcome {
    let drained = async {
        let consumer = match running.consumer_end.take() {
            Some(end) => end,
            None => (&mut running.consumer_done)
                .await
                .unwrap_or(ConsumerEnd::Vanished),
        };
        while let Some(joined) = running.processors.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "processor ended with an error while draining"),
                Err(e) => warn!(error = %e, "processor panicked while draining"),
            }
        }
        consumer
    };
    let consumer = tokio::time::timeout_at(deadline.into(), drained).await;
    if consumer.is_err() {
        running.abort.cancel();
        running.processors.shutdown().await;
    }
    match (ended, consumer) {
        (Ended::Failed(e), _) => Outcome::Failed(e),
        (_, Err(_elapsed)) => Outcome::TimedOut,
        (_, Ok(ConsumerEnd::Drained)) => Outcome::Graceful,
        (_, Ok(ConsumerEnd::NotDrained)) => Outcome::TimedOut,
        (_, Ok(ConsumerEnd::Failed(e))) => Outcome::Failed(e),
        (_, Ok(ConsumerEnd::Panicked)) => {
            Outcome::Failed(Error::TaskFailed("the consumer thread panicked".into()))
        }
        (_, Ok(ConsumerEnd::Vanished)) => Outcome::Failed(Error::TaskFailed(
            "the consumer thread ended without a word".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(processors: JoinSet<Result<(), Error>>) -> (Running, oneshot::Sender<ConsumerEnd>) {
        let (tx, consumer_done) = oneshot::channel();
        let running = Running {
            processors,
            consumer_done,
            consumer_end: None,
            abort: CancellationToken::new(),
        };
        (running, tx)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(2)
    }

    #[tokio::test]
    async fn a_panicking_processor_ends_the_run_as_a_failure_that_the_drain_keeps() {
        let mut processors = JoinSet::new();
        processors.spawn(async { panic!("boom") });
        let (mut running, consumer) = running(processors);
        let health = Health::new(Duration::from_secs(60));
        let ended = supervise(&mut running, &CancellationToken::new(), &health).await;
        assert!(
            matches!(&ended, Ended::Failed(Error::TaskFailed(m)) if m.contains("a processor panicked")),
            "{ended:?}"
        );
        // Even a consumer that reports everything drained cannot turn it into a clean stop.
        consumer.send(ConsumerEnd::Drained).unwrap();
        let outcome = drain(running, ended, soon()).await;
        assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    }

    #[tokio::test]
    async fn a_stop_with_everything_drained_is_graceful() {
        let mut processors = JoinSet::new();
        processors.spawn(async { Ok(()) });
        let (running, consumer) = running(processors);
        consumer.send(ConsumerEnd::Drained).unwrap();
        let outcome = drain(running, Ended::Asked, soon()).await;
        assert!(matches!(outcome, Outcome::Graceful), "{outcome:?}");
    }

    #[tokio::test]
    async fn a_consumer_that_could_not_drain_in_time_is_a_timeout() {
        let (running, consumer) = running(JoinSet::new());
        consumer.send(ConsumerEnd::NotDrained).unwrap();
        let outcome = drain(running, Ended::Asked, soon()).await;
        assert!(matches!(outcome, Outcome::TimedOut), "{outcome:?}");
    }

    #[tokio::test]
    async fn a_processor_still_writing_at_the_deadline_is_aborted_and_the_stop_times_out() {
        let mut processors = JoinSet::new();
        processors.spawn(std::future::pending());
        let (running, consumer) = running(processors);
        let abort = running.abort.clone();
        consumer.send(ConsumerEnd::Drained).unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        let outcome = drain(running, Ended::Asked, deadline).await;
        assert!(matches!(outcome, Outcome::TimedOut), "{outcome:?}");
        assert!(abort.is_cancelled());
    }

    #[tokio::test]
    async fn a_consumer_thread_gone_without_a_report_is_a_failure() {
        let (running, consumer) = running(JoinSet::new());
        drop(consumer);
        let outcome = drain(running, Ended::Asked, soon()).await;
        assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    }
}
