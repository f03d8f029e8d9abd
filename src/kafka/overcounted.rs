//! Partitions whose position librdkafka has counted past the messages the consumer took.
//!
//! librdkafka reports a partition's fetch error (a refused read, a record it cannot parse) as an
//! error in place of a message, at the offset it was about to fetch. Its batch call counts that
//! offset as taken (2.12's `rd_kafka_q_serve_rkmessages` advances the position by every entry it
//! returns), and a paused partition resumes from that position: the worker's own pause for a
//! full pipeline, and librdkafka's around every incremental rebalance. Without a correction the
//! message at the error's offset is never fetched, and the offsets committed after it pass it.
//!
//! Invariant: while a partition is listed at offset F in its current generation, every message
//! of it below F was taken and none at or past F was since, so F is where it must resume.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::offsets::Generation;

#[derive(Debug, Default)]
pub(crate) struct Overcounted {
    /// Whether anything is listed: the check every message taken makes, without the lock.
    any: AtomicBool,
    at: Mutex<HashMap<i32, (Generation, i64)>>,
}

impl Overcounted {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, (Generation, i64)>> {
        // Every change is one insert or removal: a panic cannot leave the map half-updated.
        self.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn settle(&self, at: &HashMap<i32, (Generation, i64)>) {
        self.any.store(!at.is_empty(), Ordering::Relaxed);
    }

    /// An error was taken in place of a message of `partition` at `offset`.
    pub fn error_at(&self, partition: i32, generation: Generation, offset: i64) {
        if offset < 0 {
            // A logical offset (none fetched yet): librdkafka's count did not pass a message.
            return;
        }
        let mut at = self.lock();
        let entry = at.entry(partition).or_insert((generation, offset));
        if entry.0 != generation {
            *entry = (generation, offset);
        }
        // A second error before any message: the first offset is still the one not taken.
        entry.1 = entry.1.min(offset);
        self.settle(&at);
    }

    /// A message was taken. At or past the listed offset, librdkafka's count is right again;
    /// below it (librdkafka rewound the partition), the resume point follows the message.
    pub fn taken(&self, partition: i32, offset: i64) {
        if !self.any.load(Ordering::Relaxed) {
            return;
        }
        let mut at = self.lock();
        match at.get_mut(&partition) {
            Some((_, f)) if offset >= *f => {
                at.remove(&partition);
            }
            Some((_, f)) => *f = offset + 1,
            None => {}
        }
        self.settle(&at);
    }

    /// Whether librdkafka's position of `partition` may be past what was taken.
    pub fn contains(&self, partition: i32) -> bool {
        self.any.load(Ordering::Relaxed) && self.lock().contains_key(&partition)
    }

    /// Where each listed partition must resume. Partitions assigned again since are forgotten
    /// (they resume from their committed offset); the others stay listed until a message at
    /// their offset is taken, since librdkafka's position stays ahead until then.
    pub fn resume_points(
        &self,
        generation_of: impl Fn(i32) -> Option<Generation>,
    ) -> Vec<(i32, i64)> {
        if !self.any.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let mut at = self.lock();
        at.retain(|&p, &mut (g, _)| generation_of(p) == Some(g));
        self.settle(&at);
        let mut points: Vec<(i32, i64)> = at.iter().map(|(&p, &(_, f))| (p, f)).collect();
        points.sort_unstable();
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_lists_its_partition_until_a_message_at_or_past_its_offset_is_taken() {
        let o = Overcounted::default();
        o.error_at(3, 1, 40);
        o.taken(4, 90);
        assert!(o.contains(3));
        o.taken(3, 40);
        assert!(!o.contains(3));
    }

    #[test]
    fn a_message_below_the_listed_offset_moves_the_resume_point_after_it() {
        let o = Overcounted::default();
        o.error_at(3, 1, 40);
        o.taken(3, 12);
        assert_eq!(o.resume_points(|_| Some(1)), [(3, 13)]);
    }

    #[test]
    fn a_partition_resumes_at_its_first_error_offset_in_its_current_generation_only() {
        let o = Overcounted::default();
        o.error_at(0, 1, 7);
        o.error_at(0, 1, 9);
        o.error_at(1, 1, 5);
        o.error_at(2, 2, 12);
        o.error_at(2, 3, 20);
        o.error_at(5, 1, -1001);
        let current = |p| match p {
            0 | 2 => Some(p as u64 + 1),
            _ => Some(9),
        };
        assert_eq!(o.resume_points(current), [(0, 7), (2, 20)]);
        assert!(o.contains(0) && !o.contains(1) && !o.contains(5));
        o.taken(0, 7);
        o.taken(2, 20);
        assert!(o.resume_points(current).is_empty());
        assert!(!o.contains(2));
    }
}
