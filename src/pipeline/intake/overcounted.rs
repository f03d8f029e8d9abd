//! Partitions whose position librdkafka has counted past the messages the consumer took.
//!
//! librdkafka reports a partition's fetch error (a refused read, a record it cannot parse) as an
//! error in place of a message, at the offset it was about to fetch. Its batch call counts that
//! offset as taken (2.12's `rd_kafka_q_serve_rkmessages` advances the position by every entry it
//! returns), and a paused partition resumes from that position: without a correction the message
//! at the error's offset is never fetched, and the offsets committed after it pass over it.
//!
//! Invariant: while a partition is listed here at offset F in its current generation, every
//! message of it below F was taken and none at or past F was, so F is where it must resume.

use std::collections::HashMap;

use crate::offsets::Generation;

#[derive(Debug, Default)]
pub(crate) struct Overcounted {
    at: HashMap<i32, (Generation, i64)>,
}

impl Overcounted {
    /// An error was taken in place of a message of `partition` at `offset`.
    pub fn error_at(&mut self, partition: i32, generation: Generation, offset: i64) {
        if offset < 0 {
            // A logical offset (none yet fetched): librdkafka's count did not move past a message.
            return;
        }
        let entry = self.at.entry(partition).or_insert((generation, offset));
        if entry.0 != generation {
            *entry = (generation, offset);
        }
        // A second error before any message: the first offset is still the one not taken.
        entry.1 = entry.1.min(offset);
    }

    /// A message was taken: from its offset on, librdkafka's count is right again.
    pub fn taken(&mut self, partition: i32, offset: i64) {
        if self.at.is_empty() {
            return;
        }
        if self.at.get(&partition).is_some_and(|&(_, f)| offset >= f) {
            self.at.remove(&partition);
        }
    }

    /// Whether librdkafka's position of `partition` may be past what was taken.
    pub fn contains(&self, partition: i32) -> bool {
        self.at.contains_key(&partition)
    }

    /// Where each listed partition must resume. Partitions assigned again since are forgotten
    /// (they resume from their committed offset); the others stay listed until a message at
    /// their offset is taken, since librdkafka's position stays ahead until then.
    pub fn resume_points(
        &mut self,
        generation_of: impl Fn(i32) -> Option<Generation>,
    ) -> Vec<(i32, i64)> {
        self.at
            .retain(|&p, &mut (g, _)| generation_of(p) == Some(g));
        let mut points: Vec<(i32, i64)> = self.at.iter().map(|(&p, &(_, f))| (p, f)).collect();
        points.sort_unstable();
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_lists_its_partition_until_a_message_at_or_past_its_offset_is_taken() {
        let mut o = Overcounted::default();
        o.error_at(3, 1, 40);
        o.taken(3, 39);
        o.taken(4, 90);
        assert!(
            o.contains(3),
            "a message below the error's offset came before it"
        );
        o.taken(3, 40);
        assert!(!o.contains(3));
    }

    #[test]
    fn a_partition_resumes_at_its_first_error_offset_in_its_current_generation_only() {
        let mut o = Overcounted::default();
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
        assert_eq!(o.resume_points(current), [(2, 20)]);
    }
}
