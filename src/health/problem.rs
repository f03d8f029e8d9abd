//! Readiness reasons: what is missing, as `/readyz` and the log say it.
//!
//! Invariant: a reason is logged once when it appears, changes or goes, however often the
//! condition is seen; a refusal only the consumer sees ends only on evidence that reading works
//! (a message), or after a quiet period with nothing left to read on the partitions the pod owns.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tracing::{info, warn};

/// A refusal only the consumer sees (its Fetch not authorized) is over at the next message, or
/// once it has not been reported for this long while the partitions this pod owns hold nothing
/// to read. librdkafka reports a refused Fetch once per partition, so quiet alone is no sign
/// that reading works again.
pub(super) const CONSUMER_PROBLEM_QUIET: Duration = Duration::from_secs(30);

/// Why something the worker needs is not there.
#[derive(Debug, Default)]
pub(super) struct Problem(Mutex<Option<String>>);

impl Problem {
    pub(super) fn new(reason: &str) -> Self {
        Self(Mutex::new(Some(reason.to_owned())))
    }

    pub(super) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Records `now` (a problem, or `None` when it is gone); logs only when the text changes,
    /// so a condition seen every second is one line.
    pub(super) fn set(&self, now: Option<String>, what: &str) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if *slot == now {
            return;
        }
        match &now {
            Some(reason) => warn!(reason = %reason, "not ready: {what}"),
            None => info!("{what}: ready"),
        }
        *slot = now;
    }
}

/// What only the consumer sees (its fetches or its group refused), cleared by its own evidence.
#[derive(Debug, Default)]
pub(super) struct ConsumerRefusal {
    problem: Problem,
    /// Milliseconds since the health's epoch when the consumer last reported it; 0 when none.
    reported_ms: AtomicU64,
    /// Whether the lag monitor's last measurement found messages left to read on a partition
    /// this pod owns.
    owned_lag: AtomicBool,
}

impl ConsumerRefusal {
    pub(super) fn refused(&self, reason: String, now_ms: u64) {
        // Never 0, which means "none".
        self.reported_ms.store(now_ms.max(1), Ordering::Relaxed);
        self.problem.set(Some(reason), "kafka consumer");
    }

    pub(super) fn owned_lag(&self, behind: bool) {
        self.owned_lag.store(behind, Ordering::Relaxed);
    }

    /// A message arrived: whatever refused the consumer before does not any more.
    pub(super) fn fetched(&self) {
        // A load first: this runs for every batch of messages taken, and a refusal is rare.
        if self.reported_ms.load(Ordering::Relaxed) != 0
            && self.reported_ms.swap(0, Ordering::Relaxed) != 0
        {
            self.problem.set(None, "kafka consumer");
        }
    }

    /// Ends the refusal once it has been quiet long enough with nothing left to read.
    pub(super) fn observe(&self, now_ms: u64) {
        let reported = self.reported_ms.load(Ordering::Relaxed);
        let quiet = CONSUMER_PROBLEM_QUIET.as_millis() as u64;
        if reported != 0
            && now_ms.saturating_sub(reported) > quiet
            && !self.owned_lag.load(Ordering::Relaxed)
        {
            self.fetched();
        }
    }

    pub(super) fn get(&self) -> Option<String> {
        self.problem.get()
    }
}
