//! The batch writes running now, as liveness and readiness need them.
//!
//! Invariant: a write is listed from its start until its [`Writing`] guard drops, whatever way
//! it ends (durable, failed, aborted), so a lane is never reported as writing after it stopped;
//! and a write counts as failing from an outage-class failure until it succeeds, fails
//! otherwise, or ends. Progress is counted per write, not per pod: one lane whose write does not
//! go on (no statement ends) is a stall even while the other lanes make progress.

use std::sync::Mutex;

use super::Health;

impl Health {
    /// A batch write of `lane` starts; it is running until the guard drops.
    pub fn writing(&self, lane: usize) -> Writing<'_> {
        self.writes.start(lane, self.now_ms());
        Writing { health: self, lane }
    }

    /// The running write of `lane` failed as if PostgreSQL were away (`true`: the worker is not
    /// ready, even while the ping gets answers), or failed otherwise (`false`).
    pub fn write_failing(&self, lane: usize, failing: bool) {
        self.writes.set_failing(lane, failing);
    }

    /// The running write of `lane` went on: one of its statements ended (committed or refused)
    /// or its refused rows were read back. Its stall counts from now, and it is not failing: a
    /// write that isolates refused rows one by one is slow, not stuck.
    pub fn write_advanced(&self, lane: usize) {
        self.writes.advance(lane, self.now_ms());
    }
}

/// A batch write in progress (see [`Health::writing`]).
#[must_use = "the write counts as running until this drops"]
pub struct Writing<'a> {
    health: &'a Health,
    lane: usize,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.health.writes.end(self.lane);
    }
}

#[derive(Debug, Clone, Copy)]
struct Running {
    lane: usize,
    /// When the write started or last went on, in the owner's milliseconds.
    since_ms: u64,
    /// Its last attempt failed as if PostgreSQL were away (`FailureKind::is_outage`).
    failing: bool,
}

#[derive(Debug, Default)]
pub(super) struct Writes {
    running: Mutex<Vec<Running>>,
}

impl Writes {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<Running>) -> T) -> T {
        f(&mut self.running.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes the running write of `lane`, if there is one.
    fn of(&self, lane: usize, f: impl FnOnce(&mut Running)) {
        self.with(|running| {
            if let Some(w) = running.iter_mut().find(|w| w.lane == lane) {
                f(w);
            }
        });
    }

    pub(super) fn start(&self, lane: usize, now_ms: u64) {
        self.with(|running| {
            running.push(Running {
                lane,
                since_ms: now_ms,
                failing: false,
            })
        });
    }

    pub(super) fn end(&self, lane: usize) {
        self.with(|running| running.retain(|w| w.lane != lane));
    }

    pub(super) fn set_failing(&self, lane: usize, failing: bool) {
        self.of(lane, |w| w.failing = failing);
    }

    /// The write of `lane` went on at `now_ms`: its stall counts from then, and it is not failing.
    pub(super) fn advance(&self, lane: usize, now_ms: u64) {
        self.of(lane, |w| {
            w.since_ms = now_ms;
            w.failing = false;
        });
    }

    pub(super) fn any_failing(&self) -> bool {
        self.with(|running| running.iter().any(|w| w.failing))
    }

    /// The lane and the time of the write that went on longest ago.
    pub(super) fn oldest(&self) -> Option<(usize, u64)> {
        self.with(|running| {
            running
                .iter()
                .min_by_key(|w| w.since_ms)
                .map(|w| (w.lane, w.since_ms))
        })
    }
}
