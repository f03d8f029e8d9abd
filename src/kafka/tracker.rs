//! Which offsets are durable, per partition, and so which offset may be committed.
//!
//! Invariant: the committable offset of a partition is one past the end of the unbroken run of
//! durable offsets that starts at the first offset dispatched in the current assignment. An
//! offset that was dispatched but is not durable (still queued, in a batch, being retried, or lost
//! with a crashed task) stops the run, however many later offsets are durable. Completions from a
//! previous assignment of a partition (an older generation) are ignored, so a revoke followed by
//! a re-assign can never commit work the new assignment did not see.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Identifies one assignment of one partition; bumps on every assign.
pub type Generation = u64;

/// A dispatched message, as the tracker knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub generation: Generation,
    pub offset: i64,
}

#[derive(Debug)]
struct PartitionState {
    generation: Generation,
    /// Dispatched offsets in order, with whether each is durable. The front is never durable:
    /// durable offsets at the front are popped as soon as they are marked.
    in_flight: VecDeque<(i64, bool)>,
    /// One past the last dispatched offset: the committable offset when nothing is in flight.
    next: Option<i64>,
    /// The last offset Kafka acknowledged as committed.
    committed: Option<i64>,
}

impl PartitionState {
    fn committable(&self) -> Option<i64> {
        self.in_flight.front().map(|&(o, _)| o).or(self.next)
    }
}

#[derive(Debug, Default)]
struct Inner {
    partitions: HashMap<i32, PartitionState>,
    last_generation: Generation,
}

#[derive(Debug, Default)]
pub struct OffsetTracker {
    inner: Mutex<Inner>,
    /// Signalled whenever offsets become durable or partitions go away.
    progressed: Condvar,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map half-updated in a way that breaks
        // the invariant (every mutation is a single push/pop/flag), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking newly assigned partitions, each with a fresh generation.
    pub fn assign(&self, partitions: &[i32]) {
        let mut inner = self.lock();
        for &p in partitions {
            inner.last_generation += 1;
            let generation = inner.last_generation;
            inner.partitions.insert(
                p,
                PartitionState {
                    generation,
                    in_flight: VecDeque::new(),
                    next: None,
                    committed: None,
                },
            );
        }
    }

    /// Forgets revoked partitions; their late completions will be ignored.
    pub fn revoke(&self, partitions: &[i32]) {
        let mut inner = self.lock();
        for p in partitions {
            inner.partitions.remove(p);
        }
        self.progressed.notify_all();
    }

    /// The current generation of a partition, if it is assigned.
    pub fn generation(&self, partition: i32) -> Option<Generation> {
        self.lock().partitions.get(&partition).map(|s| s.generation)
    }

    /// Records that a message was handed to a processor. Returns false (and records nothing) when
    /// the message belongs to an assignment that has since been revoked: the caller drops it.
    pub fn register(&self, pos: Position) -> bool {
        let mut inner = self.lock();
        let Some(state) = inner.partitions.get_mut(&pos.partition) else {
            return false;
        };
        if state.generation != pos.generation {
            return false;
        }
        // Offsets arrive in order; a rewind (an offset reset by the broker) is kept sorted so the
        // run logic still holds.
        let at = state.in_flight.partition_point(|&(o, _)| o <= pos.offset);
        state.in_flight.insert(at, (pos.offset, false));
        state.next = Some(state.next.map_or(pos.offset + 1, |n| n.max(pos.offset + 1)));
        true
    }

    /// Marks messages durable. Positions of older generations are ignored.
    pub fn complete(&self, positions: &[Position]) {
        let mut inner = self.lock();
        for pos in positions {
            let Some(state) = inner.partitions.get_mut(&pos.partition) else {
                continue;
            };
            if state.generation != pos.generation {
                continue;
            }
            let q = &mut state.in_flight;
            let start = q.partition_point(|&(o, _)| o < pos.offset);
            if let Some(slot) = (start..q.len())
                .take_while(|&i| q[i].0 == pos.offset)
                .find(|&i| !q[i].1)
            {
                q[slot].1 = true;
            }
            while q.front().is_some_and(|&(_, durable)| durable) {
                q.pop_front();
            }
        }
        self.progressed.notify_all();
    }

    /// Offsets worth committing: per partition, the committable offset where it is ahead of
    /// what Kafka has acknowledged. `only` restricts to some partitions.
    pub fn commit_candidates(&self, only: Option<&[i32]>) -> Vec<(i32, i64)> {
        let inner = self.lock();
        let mut out: Vec<(i32, i64)> = inner
            .partitions
            .iter()
            .filter(|(p, _)| only.is_none_or(|o| o.contains(p)))
            .filter_map(|(&p, s)| {
                let c = s.committable()?;
                (s.committed.is_none_or(|done| c > done)).then_some((p, c))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Records offsets Kafka acknowledged. Older acknowledgements never move `committed` back.
    pub fn mark_committed(&self, offsets: &[(i32, i64)]) {
        let mut inner = self.lock();
        for &(p, o) in offsets {
            if let Some(s) = inner.partitions.get_mut(&p) {
                s.committed = Some(s.committed.map_or(o, |c| c.max(o)));
            }
        }
    }

    /// Messages dispatched and not yet durable, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.lock()
            .partitions
            .values()
            .map(|s| s.in_flight.len())
            .sum()
    }

    /// Assigned partitions, sorted.
    pub fn partitions(&self) -> Vec<i32> {
        let mut p: Vec<i32> = self.lock().partitions.keys().copied().collect();
        p.sort_unstable();
        p
    }

    /// Waits until none of `partitions` (all, if `None`) has a message in flight, or `deadline`.
    /// Returns whether they drained.
    pub fn wait_drained(&self, partitions: Option<&[i32]>, deadline: Instant) -> bool {
        let busy = |inner: &Inner| {
            inner
                .partitions
                .iter()
                .any(|(p, s)| partitions.is_none_or(|o| o.contains(p)) && !s.in_flight.is_empty())
        };
        let mut inner = self.lock();
        while busy(&inner) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            inner = self
                .progressed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tracker_with(partition: i32) -> (OffsetTracker, Generation) {
        let t = OffsetTracker::new();
        t.assign(&[partition]);
        let g = t.generation(partition).unwrap();
        (t, g)
    }

    fn pos(partition: i32, generation: Generation, offset: i64) -> Position {
        Position {
            partition,
            generation,
            offset,
        }
    }

    #[test]
    fn nothing_is_committable_before_anything_is_dispatched() {
        let (t, _) = tracker_with(0);
        assert!(t.commit_candidates(None).is_empty());
    }

    #[test]
    fn the_committable_offset_stops_at_the_first_offset_not_yet_durable() {
        let (t, g) = tracker_with(0);
        for o in 10..15 {
            assert!(t.register(pos(0, g, o)));
        }
        assert_eq!(t.commit_candidates(None), vec![(0, 10)]);
        t.complete(&[pos(0, g, 11), pos(0, g, 12), pos(0, g, 14)]);
        assert_eq!(
            t.commit_candidates(None),
            vec![(0, 10)],
            "10 still in flight"
        );
        t.complete(&[pos(0, g, 10)]);
        assert_eq!(
            t.commit_candidates(None),
            vec![(0, 13)],
            "13 still in flight"
        );
        t.complete(&[pos(0, g, 13)]);
        assert_eq!(t.commit_candidates(None), vec![(0, 15)]);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn gaps_in_the_offsets_do_not_block_the_run() {
        // Compacted topics and transaction markers leave holes the consumer never sees.
        let (t, g) = tracker_with(3);
        for o in [5, 9, 40] {
            t.register(pos(3, g, o));
        }
        t.complete(&[pos(3, g, 40), pos(3, g, 9), pos(3, g, 5)]);
        assert_eq!(t.commit_candidates(None), vec![(3, 41)]);
    }

    #[test]
    fn partitions_progress_independently() {
        let t = OffsetTracker::new();
        t.assign(&[0, 1]);
        let (g0, g1) = (t.generation(0).unwrap(), t.generation(1).unwrap());
        t.register(pos(0, g0, 0));
        t.register(pos(1, g1, 0));
        t.register(pos(1, g1, 1));
        t.complete(&[pos(1, g1, 1), pos(1, g1, 0)]);
        assert_eq!(t.commit_candidates(None), vec![(0, 0), (1, 2)]);
        assert_eq!(t.commit_candidates(Some(&[1])), vec![(1, 2)]);
    }

    #[test]
    fn acknowledged_commits_are_not_proposed_again() {
        let (t, g) = tracker_with(0);
        t.register(pos(0, g, 0));
        t.complete(&[pos(0, g, 0)]);
        t.mark_committed(&[(0, 1)]);
        assert!(t.commit_candidates(None).is_empty());
        t.mark_committed(&[(0, 0)]);
        assert!(
            t.commit_candidates(None).is_empty(),
            "a late ack never moves back"
        );
    }

    #[test]
    fn a_revoked_partition_is_forgotten_and_its_late_completions_ignored() {
        let (t, g_old) = tracker_with(0);
        t.register(pos(0, g_old, 100));
        t.revoke(&[0]);
        assert!(t.commit_candidates(None).is_empty());
        assert!(
            !t.register(pos(0, g_old, 101)),
            "revoked: dispatch is refused"
        );

        t.assign(&[0]);
        let g_new = t.generation(0).unwrap();
        assert_ne!(g_old, g_new);
        t.register(pos(0, g_new, 50));
        t.complete(&[pos(0, g_old, 50), pos(0, g_old, 100)]);
        assert_eq!(
            t.commit_candidates(None),
            vec![(0, 50)],
            "old generation is ignored"
        );
    }

    #[test]
    fn a_message_from_a_previous_assignment_is_refused_after_reassign() {
        let (t, g_old) = tracker_with(7);
        t.revoke(&[7]);
        t.assign(&[7]);
        assert!(!t.register(pos(7, g_old, 3)));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_rewound_offset_is_tracked_in_order() {
        let (t, g) = tracker_with(0);
        t.register(pos(0, g, 10));
        t.register(pos(0, g, 4));
        t.complete(&[pos(0, g, 10)]);
        assert_eq!(t.commit_candidates(None), vec![(0, 4)]);
        t.complete(&[pos(0, g, 4)]);
        assert_eq!(t.commit_candidates(None), vec![(0, 11)]);
    }

    #[test]
    fn waiting_for_a_drain_returns_once_the_last_offset_is_durable() {
        let (t, g) = tracker_with(0);
        t.register(pos(0, g, 0));
        let t = std::sync::Arc::new(t);
        let t2 = t.clone();
        let worker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            t2.complete(&[pos(0, g, 0)]);
        });
        assert!(t.wait_drained(None, Instant::now() + Duration::from_secs(5)));
        worker.join().unwrap();
    }

    #[test]
    fn waiting_for_a_drain_gives_up_at_the_deadline() {
        let (t, g) = tracker_with(0);
        t.register(pos(0, g, 0));
        let start = Instant::now();
        assert!(!t.wait_drained(Some(&[0]), start + Duration::from_millis(50)));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(
            t.wait_drained(Some(&[1]), start),
            "other partitions are not waited for"
        );
    }
}
