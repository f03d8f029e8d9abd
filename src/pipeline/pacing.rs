//! When the consumer thread pauses, polls, stores, commits and gives memory back: the intake's
//! state machine, kept apart from librdkafka so that it can be tested on its own.
//!
//! Invariant: the decisions depend only on the clock readings and counts passed in. Partitions
//! are paused only after the pipeline has refused a message for PAUSE_AFTER, and resumed as soon
//! as nothing waits; the periodic chores run at most once per TICK; an idle commit runs at most
//! once per commit interval, and memory is given back at most once per idle period.

use std::time::{Duration, Instant};

/// Longest a poll blocks when there is nothing to hand over.
pub(crate) const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How often durable progress is handed to librdkafka (which commits it every commit interval),
/// and the health and depth figures are refreshed.
const TICK: Duration = Duration::from_millis(100);
/// How long the pipeline may stay full before the partitions are paused. A full lane is the
/// normal state of a backlog (it empties every batch write), and a pause costs the prefetch: it
/// is for a database that stopped keeping up, not for a slow batch.
const PAUSE_AFTER: Duration = Duration::from_millis(500);
/// How long without messages and with nothing in flight before freed memory is given back.
const IDLE_AFTER: Duration = Duration::from_secs(1);

/// What to do with the partitions after the waiting messages were offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Keep,
    Pause,
    Resume,
}

/// What the pipeline holds at a tick.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Load {
    /// Messages polled but not yet handed to a lane.
    pub waiting: usize,
    /// Messages handed over and not yet durable.
    pub in_flight: usize,
    /// Bytes of messages not yet durable.
    pub bytes: u64,
}

/// The chores due at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chores {
    /// Messages the pipeline holds, for the stall check: a lane wedged on messages of partitions
    /// revoked since holds no tracked message, but it holds their bytes, so it counts as one.
    pub holding: usize,
    /// Everything taken is durable and no idle commit ran within the commit interval.
    pub commit: bool,
    /// The pipeline has been idle for IDLE_AFTER and has not given memory back since.
    pub release_memory: bool,
}

#[derive(Debug)]
pub(crate) struct Pacing {
    commit_interval: Duration,
    paused: bool,
    /// Since when the first waiting message has found no room.
    blocked_since: Option<Instant>,
    last_tick: Instant,
    last_message: Instant,
    released: bool,
    last_idle_commit: Option<Instant>,
}

impl Pacing {
    pub fn new(now: Instant, commit_interval: Duration) -> Self {
        Self {
            commit_interval,
            paused: false,
            blocked_since: None,
            last_tick: now,
            last_message: now,
            released: false,
            last_idle_commit: None,
        }
    }

    /// After the waiting messages were offered to the lanes; `waiting` is whether any is left.
    pub fn on_offered(&mut self, now: Instant, waiting: bool) -> Flow {
        if !waiting {
            self.blocked_since = None;
            return self.set_paused(false);
        }
        let since = *self.blocked_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= PAUSE_AFTER {
            return self.set_paused(true);
        }
        Flow::Keep
    }

    fn set_paused(&mut self, pause: bool) -> Flow {
        if self.paused == pause {
            return Flow::Keep;
        }
        self.paused = pause;
        if pause { Flow::Pause } else { Flow::Resume }
    }

    /// How long to poll, or `None` not to poll: a message that waits for room holds the place of
    /// the next ones, and polling on would only pile them up. Paused, nothing arrives, and a poll
    /// without waiting serves librdkafka's callbacks.
    pub fn poll_timeout(&self, waiting: bool) -> Option<Duration> {
        match (waiting, self.paused) {
            (false, _) => Some(POLL_TIMEOUT),
            (true, true) => Some(Duration::ZERO),
            (true, false) => None,
        }
    }

    pub fn on_message(&mut self, now: Instant) {
        self.last_message = now;
        self.released = false;
    }

    /// The chores due at `now`, if a tick has passed since the last ones. `load` is read only
    /// then: it takes the tracker's lock, which a backlog must not pay per message.
    pub fn on_tick(&mut self, now: Instant, load: impl FnOnce() -> Load) -> Option<(Load, Chores)> {
        if now.saturating_duration_since(self.last_tick) < TICK {
            return None;
        }
        self.last_tick = now;
        let load = load();
        let tracked = load.in_flight + load.waiting;
        let holding = if tracked > 0 || load.bytes > 0 {
            tracked.max(1)
        } else {
            0
        };
        let drained = tracked == 0;
        let commit = drained
            && self
                .last_idle_commit
                .is_none_or(|at| now.saturating_duration_since(at) >= self.commit_interval);
        let release_memory = drained
            && !self.released
            && now.saturating_duration_since(self.last_message) >= IDLE_AFTER;
        self.released |= release_memory;
        Some((
            load,
            Chores {
                holding,
                commit,
                release_memory,
            },
        ))
    }

    /// An idle commit was sent (or failed): the next waits a commit interval.
    pub fn on_idle_commit(&mut self, now: Instant) {
        self.last_idle_commit = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn tick(p: &mut Pacing, now: Instant, load: Load) -> Option<Chores> {
        p.on_tick(now, || load).map(|(_, chores)| chores)
    }

    fn pacing() -> (Pacing, Instant) {
        let t0 = Instant::now();
        (Pacing::new(t0, Duration::from_secs(5)), t0)
    }

    #[test]
    fn a_full_pipeline_pauses_only_after_refusing_for_half_a_second() {
        let (mut p, t0) = pacing();
        assert_eq!(p.on_offered(t0, true), Flow::Keep);
        assert_eq!(p.on_offered(t0 + 499 * MS, true), Flow::Keep);
        assert_eq!(p.on_offered(t0 + 500 * MS, true), Flow::Pause);
        assert_eq!(p.on_offered(t0 + 600 * MS, true), Flow::Keep, "paused once");
        assert!(p.paused);
    }

    #[test]
    fn partitions_resume_as_soon_as_nothing_waits_and_the_wait_starts_over() {
        let (mut p, t0) = pacing();
        p.on_offered(t0, true);
        assert_eq!(p.on_offered(t0 + 500 * MS, true), Flow::Pause);
        assert_eq!(p.on_offered(t0 + 510 * MS, false), Flow::Resume);
        assert_eq!(p.on_offered(t0 + 520 * MS, false), Flow::Keep);
        assert_eq!(p.on_offered(t0 + 900 * MS, true), Flow::Keep);
        assert_eq!(p.on_offered(t0 + 1399 * MS, true), Flow::Keep);
        assert_eq!(p.on_offered(t0 + 1400 * MS, true), Flow::Pause);
    }

    #[test]
    fn a_waiting_message_stops_polling_unless_paused() {
        let (mut p, t0) = pacing();
        assert_eq!(p.poll_timeout(false), Some(POLL_TIMEOUT));
        assert_eq!(p.poll_timeout(true), None);
        p.on_offered(t0, true);
        p.on_offered(t0 + PAUSE_AFTER, true);
        assert_eq!(p.poll_timeout(true), Some(Duration::ZERO));
    }

    #[test]
    fn chores_run_once_per_tick() {
        let (mut p, t0) = pacing();
        assert_eq!(tick(&mut p, t0 + 99 * MS, Load::default()), None);
        assert!(tick(&mut p, t0 + 100 * MS, Load::default()).is_some());
        assert_eq!(tick(&mut p, t0 + 150 * MS, Load::default()), None);
        assert!(tick(&mut p, t0 + 200 * MS, Load::default()).is_some());
    }

    #[test]
    fn bytes_held_with_no_tracked_message_count_as_one_held() {
        let (mut p, t0) = pacing();
        let load = Load {
            bytes: 10,
            ..Load::default()
        };
        assert_eq!(tick(&mut p, t0 + TICK, load).unwrap().holding, 1);
        let load = Load {
            waiting: 2,
            in_flight: 3,
            bytes: 0,
        };
        assert_eq!(tick(&mut p, t0 + 2 * TICK, load).unwrap().holding, 5);
        assert_eq!(
            tick(&mut p, t0 + 3 * TICK, Load::default())
                .unwrap()
                .holding,
            0
        );
    }

    #[test]
    fn an_idle_commit_runs_when_drained_and_at_most_once_per_commit_interval() {
        let (mut p, t0) = pacing();
        let busy = Load {
            in_flight: 1,
            ..Load::default()
        };
        assert!(!tick(&mut p, t0 + TICK, busy).unwrap().commit);
        let at = t0 + 2 * TICK;
        assert!(tick(&mut p, at, Load::default()).unwrap().commit);
        p.on_idle_commit(at);
        assert!(!tick(&mut p, at + TICK, Load::default()).unwrap().commit);
        let later = at + Duration::from_secs(5);
        assert!(tick(&mut p, later, Load::default()).unwrap().commit);
    }

    #[test]
    fn memory_is_given_back_once_per_idle_period() {
        let (mut p, t0) = pacing();
        assert!(
            !tick(&mut p, t0 + 900 * MS, Load::default())
                .unwrap()
                .release_memory
        );
        assert!(
            tick(&mut p, t0 + IDLE_AFTER, Load::default())
                .unwrap()
                .release_memory
        );
        assert!(
            !tick(&mut p, t0 + 2 * IDLE_AFTER, Load::default())
                .unwrap()
                .release_memory
        );
        let message = t0 + 3 * IDLE_AFTER;
        p.on_message(message);
        assert!(
            !tick(&mut p, message + TICK, Load::default())
                .unwrap()
                .release_memory
        );
        let idle = message + IDLE_AFTER + TICK;
        assert!(tick(&mut p, idle, Load::default()).unwrap().release_memory);
    }

    #[test]
    fn memory_is_not_given_back_while_anything_is_in_flight() {
        let (mut p, t0) = pacing();
        let busy = Load {
            waiting: 1,
            ..Load::default()
        };
        assert!(
            !tick(&mut p, t0 + 2 * IDLE_AFTER, busy)
                .unwrap()
                .release_memory
        );
    }
}
