//! Liveness and readiness, as the HTTP probes report them.
//!
//! Invariant: readiness is true only while PostgreSQL answers, the consumer thread is polling,
//! and the worker is not draining; every state change is a single atomic store, so a probe never
//! blocks on the pipeline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A consumer thread that has not polled for this long is reported as stuck.
const CONSUMER_STALL: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    db_ok: AtomicBool,
    /// Milliseconds since `epoch` of the consumer's last poll; 0 until it starts.
    consumer_polled_ms: AtomicU64,
    draining: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            db_ok: AtomicBool::new(false),
            consumer_polled_ms: AtomicU64::new(0),
            draining: AtomicBool::new(false),
        }
    }
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_db_ok(&self, ok: bool) {
        self.db_ok.store(ok, Ordering::Relaxed);
    }

    /// The consumer polled at `now` (the caller's clock reading: it has one at hand).
    pub fn consumer_polled(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.consumer_polled_ms.store(ms.max(1), Ordering::Relaxed);
    }

    pub fn consumer_stopped(&self) {
        self.consumer_polled_ms.store(0, Ordering::Relaxed);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// `Ok` when ready, otherwise the short reason `/readyz` reports.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.is_draining() {
            return Err("draining");
        }
        if !self.db_ok.load(Ordering::Relaxed) {
            return Err("postgres unavailable");
        }
        let polled = self.consumer_polled_ms.load(Ordering::Relaxed);
        if polled == 0 {
            return Err("consumer not running");
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        if now.saturating_sub(polled) > CONSUMER_STALL.as_millis() as u64 {
            return Err("consumer stalled");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_worker_is_not_ready_until_postgres_and_the_consumer_are_up() {
        let h = Health::new();
        assert_eq!(h.readiness(), Err("postgres unavailable"));
        h.set_db_ok(true);
        assert_eq!(h.readiness(), Err("consumer not running"));
        h.consumer_polled(Instant::now());
        assert_eq!(h.readiness(), Ok(()));
    }

    #[test]
    fn draining_wins_over_everything() {
        let h = Health::new();
        h.set_db_ok(true);
        h.consumer_polled(Instant::now());
        h.start_draining();
        assert_eq!(h.readiness(), Err("draining"));
    }

    #[test]
    fn losing_postgres_makes_the_worker_unready() {
        let h = Health::new();
        h.consumer_polled(Instant::now());
        h.set_db_ok(true);
        h.set_db_ok(false);
        assert_eq!(h.readiness(), Err("postgres unavailable"));
    }
}
