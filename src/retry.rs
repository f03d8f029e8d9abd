//! Retrying transient failures with exponential backoff.
//!
//! Invariant: an operation is retried for as long as its error is transient, until it succeeds
//! or the abort token fires; it is never skipped. Permanent errors are the caller's to judge and
//! return at once. This is the only module that
//! knows the `backoff` crate (RUSTSEC-2025-0012 lists it as unmaintained), so swapping it for
//! `backon` touches nothing else.

use std::future::Future;
use std::time::Duration;

use backoff::backoff::Backoff;
use tokio_util::sync::CancellationToken;

/// The schedule: 100 ms, doubling, up to 10 s between attempts, with 30% jitter so that many
/// processors do not hammer a recovering database in step.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// What the caller learns about a failed attempt before the next one.
pub enum Verdict<E> {
    /// Try again after the backoff delay.
    Retry,
    /// Give up and return this error.
    Fail(E),
}

/// The delays between attempts, growing from `schedule.initial` to `schedule.max`, jittered: for
/// a caller whose attempts carry state of their own between them.
pub struct Delays(backoff::ExponentialBackoff);

impl Delays {
    pub fn new(schedule: Schedule) -> Self {
        Self(backoff::ExponentialBackoff {
            initial_interval: schedule.initial,
            current_interval: schedule.initial,
            max_interval: schedule.max,
            multiplier: 2.0,
            randomization_factor: 0.3,
            max_elapsed_time: None,
            ..Default::default()
        })
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        self.0.next_backoff().unwrap_or(self.0.max_interval)
    }

    /// Sleeps the next delay; false if `abort` fired first.
    pub async fn sleep(&mut self, abort: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            biased;
            () = abort.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// Runs `op` until it succeeds, `judge` says the error is permanent, or `abort` fires (then
/// `on_abort` is returned). `judge` sees each error once: the place to log and count it, and to
/// turn it into the error the caller returns.
pub async fn until_ok<T, E, F, Op, Fut, J>(
    schedule: Schedule,
    abort: &CancellationToken,
    on_abort: impl FnOnce() -> F,
    mut op: Op,
    mut judge: J,
) -> Result<T, F>
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    J: FnMut(E, Duration) -> Verdict<F>,
{
    let mut delays = Delays::new(schedule);
    loop {
        let attempt = tokio::select! {
            biased;
            () = abort.cancelled() => return Err(on_abort()),
            r = op() => r,
        };
        let err = match attempt {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let delay = delays.next_delay();
        match judge(err, delay) {
            Verdict::Fail(e) => return Err(e),
            Verdict::Retry => {}
        }
        tokio::select! {
            biased;
            () = abort.cancelled() => return Err(on_abort()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> Schedule {
        Schedule {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
        }
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_until_it_succeeds() {
        let attempts = AtomicU32::new(0);
        let never = CancellationToken::new();
        let r: Result<u32, &str> = until_ok(
            fast(),
            &never,
            || "aborted",
            || async {
                let n = attempts.fetch_add(1, Ordering::SeqCst);
                if n < 5 { Err("down") } else { Ok(n) }
            },
            |_, _| Verdict::Retry,
        )
        .await;
        assert_eq!(r, Ok(5));
    }

    #[tokio::test]
    async fn a_permanent_failure_is_returned_at_once() {
        let attempts = AtomicU32::new(0);
        let never = CancellationToken::new();
        let r: Result<(), &str> = until_ok(
            fast(),
            &never,
            || "aborted",
            || async {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err("bad row")
            },
            |e, _| Verdict::Fail(e),
        )
        .await;
        assert_eq!(r, Err("bad row"));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_delays_grow_but_stay_under_the_cap() {
        let mut delays = Vec::new();
        let never = CancellationToken::new();
        let _: Result<(), &str> = until_ok(
            fast(),
            &never,
            || "aborted",
            || async { Err("down") },
            |e, d| {
                delays.push(d);
                if delays.len() < 8 {
                    Verdict::Retry
                } else {
                    Verdict::Fail(e)
                }
            },
        )
        .await;
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(6)),
            "{delays:?}"
        );
        assert!(delays.last() > delays.first(), "{delays:?}");
    }

    #[tokio::test]
    async fn abort_stops_an_endless_retry() {
        let abort = CancellationToken::new();
        let trigger = abort.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            trigger.cancel();
        });
        let r: Result<(), &str> = until_ok(
            fast(),
            &abort,
            || "aborted",
            || async { Err("down") },
            |_, _| Verdict::Retry,
        )
        .await;
        assert_eq!(r, Err("aborted"));
    }
}
