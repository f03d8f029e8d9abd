//! Which offsets are durable, per partition, and so which offset may be committed.
//!
//! Invariant: the committable offset of a partition is one past the end of the unbroken run of
//! durable offsets that starts at the first offset dispatched in the current assignment (or, with
//! nothing in flight, the consumer's position past records never dispatched: transaction markers,
//! aborted transactions' messages). An offset that was dispatched but is not durable (still
//! queued, in a batch, being retried, or lost with a crashed task) stops the run, however many
//! later offsets are durable. Completions from a previous assignment of a partition (an older
//! generation) are ignored, so a revoke followed by a re-assign can never commit work the new
//! assignment did not see.
//!
//! It also remembers the Kafka timestamp of the newest message below each committable offset, so
//! that once Kafka acknowledges a commit the time lag ("how old is the newest committed message")
//! is known without reading anything back from the broker.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Identifies one assignment of one partition; bumps on every assign.
pub type Generation = u64;

/// Proposed commit offsets remembered with their timestamps until Kafka acknowledges them. A
/// proposal is taken every 100 ms and acknowledged within about a second: a few dozen at most;
/// older checkpoints are dropped first.
const MAX_CHECKPOINTS: usize = 256;
/// A partition's queue of dispatched offsets keeps at most this much room once it empties: the
/// consumer takes a partition's messages in chunks (thousands at a time), and hundreds of
/// partitions each keeping the room of their largest chunk added up to most of the peak memory.
const KEEP_SLOTS: usize = 64;

/// A dispatched message, as the tracker knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub generation: Generation,
    pub offset: i64,
}

/// A message registered but not yet known to be handed over; see [`OffsetTracker::withdraw`].
#[derive(Debug)]
#[must_use = "a registration of a message that was not handed over must be withdrawn"]
pub struct Registration {
    position: Position,
    next_before: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: i64,
    durable: bool,
    /// Kafka timestamp of the message, milliseconds since the epoch.
    timestamp_ms: Option<i64>,
}

#[derive(Debug)]
struct PartitionState {
    generation: Generation,
    /// Dispatched offsets in order. The front is never durable: durable slots at the front are
    /// popped as soon as they are marked.
    in_flight: VecDeque<Slot>,
    /// One past the last dispatched offset: the committable offset when nothing is in flight.
    next: Option<i64>,
    /// Kafka timestamp of the newest durable message below the committable offset.
    durable_timestamp_ms: Option<i64>,
    /// The last offset Kafka acknowledged as committed, and the timestamp of the message before it.
    committed: Option<i64>,
    committed_timestamp_ms: Option<i64>,
    /// (proposed commit offset, timestamp of the newest durable message below it), oldest first.
    checkpoints: VecDeque<(i64, Option<i64>)>,
}

impl PartitionState {
    fn committable(&self) -> Option<i64> {
        self.in_flight.front().map(|s| s.offset).or(self.next)
    }
}

/// What the tracker knows of one assigned partition, for lag reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub partition: i32,
    /// The last committed offset Kafka acknowledged to this instance.
    pub committed: Option<i64>,
    /// Kafka timestamp of the newest message below `committed`.
    pub committed_timestamp_ms: Option<i64>,
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
                    durable_timestamp_ms: None,
                    committed: None,
                    committed_timestamp_ms: None,
                    checkpoints: VecDeque::new(),
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

    /// Records that a message is being handed to a processor. Returns `None` (and records
    /// nothing) when the message belongs to an assignment that has since been revoked: the caller
    /// drops it. The registration can be [withdrawn](Self::withdraw) if the hand-over fails.
    pub fn register(&self, pos: Position, timestamp_ms: Option<i64>) -> Option<Registration> {
        let mut inner = self.lock();
        let state = inner.partitions.get_mut(&pos.partition)?;
        if state.generation != pos.generation {
            return None;
        }
        // Offsets arrive in order; a rewind (an offset reset by the broker) is kept sorted so the
        // run logic still holds.
        let at = state.in_flight.partition_point(|s| s.offset <= pos.offset);
        let slot = Slot {
            offset: pos.offset,
            durable: false,
            timestamp_ms,
        };
        state.in_flight.insert(at, slot);
        let next_before = state.next;
        state.next = Some(state.next.map_or(pos.offset + 1, |n| n.max(pos.offset + 1)));
        Some(Registration {
            position: pos,
            next_before,
        })
    }

    /// Undoes the latest registration, for a message that was not handed over after all. Only
    /// the registering thread calls this, before it registers anything else, so nothing else
    /// has moved the partition's end meanwhile; a registration of a revoked generation is gone
    /// already.
    pub fn withdraw(&self, registration: Registration) {
        let Registration {
            position: pos,
            next_before,
        } = registration;
        let mut inner = self.lock();
        let Some(state) = inner.partitions.get_mut(&pos.partition) else {
            return;
        };
        if state.generation != pos.generation {
            return;
        }
        let q = &mut state.in_flight;
        let start = q.partition_point(|s| s.offset < pos.offset);
        let end = start
            + q.range(start..)
                .take_while(|s| s.offset == pos.offset)
                .count();
        if let Some(i) = (start..end).rev().find(|&i| !q[i].durable) {
            q.remove(i);
            state.next = next_before;
        }
        self.progressed.notify_all();
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
            let start = q.partition_point(|s| s.offset < pos.offset);
            if let Some(slot) = (start..q.len())
                .take_while(|&i| q[i].offset == pos.offset)
                .find(|&i| !q[i].durable)
            {
                q[slot].durable = true;
            }
            let mut newest = None;
            while q.front().is_some_and(|s| s.durable) {
                newest = q.pop_front();
            }
            if q.is_empty() && q.capacity() > KEEP_SLOTS {
                q.shrink_to(KEEP_SLOTS);
            }
            if let Some(popped) = newest {
                state.durable_timestamp_ms = popped.timestamp_ms;
            }
        }
        self.progressed.notify_all();
    }

    /// Assigned partitions with nothing in flight, with their generations.
    pub fn idle(&self) -> Vec<(i32, Generation)> {
        self.lock()
            .partitions
            .iter()
            .filter(|(_, s)| s.in_flight.is_empty())
            .map(|(&p, s)| (p, s.generation))
            .collect()
    }

    /// Moves the end of idle partitions up to librdkafka's position of each, which also counts
    /// the records it never hands over: transaction markers and aborted transactions' messages.
    /// Without it, a partition whose last record is a marker stays one short of its end for as
    /// long as nothing follows. The caller vouches that every message below each position was
    /// dispatched; a partition with something in flight, or of another generation, is left alone.
    pub fn advance_idle(&self, positions: &[Position]) {
        let mut inner = self.lock();
        for pos in positions {
            let Some(state) = inner.partitions.get_mut(&pos.partition) else {
                continue;
            };
            if state.generation == pos.generation
                && state.in_flight.is_empty()
                && state.next.is_none_or(|n| n < pos.offset)
            {
                state.next = Some(pos.offset);
            }
        }
    }

    /// Offsets worth committing: per partition, the committable offset where it is ahead of
    /// what Kafka has acknowledged. `only` restricts to some partitions. Each one is remembered
    /// with its timestamp, for when Kafka acknowledges it.
    pub fn commit_candidates(&self, only: Option<&[i32]>) -> Vec<(i32, i64)> {
        let mut inner = self.lock();
        let mut out: Vec<(i32, i64)> = inner
            .partitions
            .iter_mut()
            .filter(|(p, _)| only.is_none_or(|o| o.contains(p)))
            .filter_map(|(&p, s)| {
                let c = s.committable()?;
                if s.committed.is_some_and(|done| c <= done) {
                    return None;
                }
                if s.checkpoints.back().is_none_or(|&(at, _)| at != c) {
                    if s.checkpoints.len() == MAX_CHECKPOINTS {
                        s.checkpoints.pop_front();
                    }
                    s.checkpoints.push_back((c, s.durable_timestamp_ms));
                }
                Some((p, c))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Records offsets Kafka acknowledged. Older acknowledgements never move `committed` back.
    pub fn mark_committed(&self, offsets: &[(i32, i64)]) {
        let mut inner = self.lock();
        for &(p, o) in offsets {
            let Some(s) = inner.partitions.get_mut(&p) else {
                continue;
            };
            if s.committed.is_some_and(|c| c >= o) {
                continue;
            }
            s.committed = Some(o);
            while let Some(&(at, ts)) = s.checkpoints.front() {
                if at > o {
                    break;
                }
                if at == o {
                    s.committed_timestamp_ms = ts;
                }
                s.checkpoints.pop_front();
            }
        }
    }

    /// Per assigned partition, what was committed and how old the newest committed message is.
    pub fn progress(&self) -> Vec<Progress> {
        let inner = self.lock();
        let mut out: Vec<Progress> = inner
            .partitions
            .iter()
            .map(|(&partition, s)| Progress {
                partition,
                committed: s.committed,
                committed_timestamp_ms: s.committed_timestamp_ms,
            })
            .collect();
        out.sort_unstable_by_key(|p| p.partition);
        out
    }

    /// Messages dispatched and not yet durable, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.lock()
            .partitions
            .values()
            .map(|s| s.in_flight.len())
            .sum()
    }

    /// Gives back the room a burst left behind: each partition's queues keep the capacity of
    /// their longest backlog (thousands of slots on each of hundreds of partitions) otherwise.
    /// Contents and answers are unchanged.
    pub fn shrink(&self) {
        for state in self.lock().partitions.values_mut() {
            state.in_flight.shrink_to_fit();
            state.checkpoints.shrink_to_fit();
        }
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
mod tests;
