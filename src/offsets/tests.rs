use super::*;
use std::time::Duration;

fn tracker_with(partition: i32) -> (OffsetTracker, Generation) {
    let t = OffsetTracker::new();
    t.assign(&[partition]);
    let g = t.generation(partition).unwrap();
    (t, g)
}

impl OffsetTracker {
    /// Registers with a timestamp equal to the offset (in ms), which makes timestamps checkable.
    fn register_at(&self, pos: Position) -> bool {
        self.register(pos, Some(pos.offset)).is_some()
    }
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
        assert!(t.register_at(pos(0, g, o)));
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
        t.register_at(pos(3, g, o));
    }
    t.complete(&[pos(3, g, 40), pos(3, g, 9), pos(3, g, 5)]);
    assert_eq!(t.commit_candidates(None), vec![(3, 41)]);
}

#[test]
fn partitions_progress_independently() {
    let t = OffsetTracker::new();
    t.assign(&[0, 1]);
    let (g0, g1) = (t.generation(0).unwrap(), t.generation(1).unwrap());
    t.register_at(pos(0, g0, 0));
    t.register_at(pos(1, g1, 0));
    t.register_at(pos(1, g1, 1));
    t.complete(&[pos(1, g1, 1), pos(1, g1, 0)]);
    assert_eq!(t.commit_candidates(None), vec![(0, 0), (1, 2)]);
    assert_eq!(t.commit_candidates(Some(&[1])), vec![(1, 2)]);
}

#[test]
fn acknowledged_commits_are_not_proposed_again() {
    let (t, g) = tracker_with(0);
    t.register_at(pos(0, g, 0));
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
    t.register_at(pos(0, g_old, 100));
    t.revoke(&[0]);
    assert!(t.commit_candidates(None).is_empty());
    assert!(
        !t.register_at(pos(0, g_old, 101)),
        "revoked: dispatch is refused"
    );

    t.assign(&[0]);
    let g_new = t.generation(0).unwrap();
    assert_ne!(g_old, g_new);
    t.register_at(pos(0, g_new, 50));
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
    assert!(!t.register_at(pos(7, g_old, 3)));
    assert_eq!(t.in_flight(), 0);
}

#[test]
fn a_rewound_offset_is_tracked_in_order() {
    let (t, g) = tracker_with(0);
    t.register_at(pos(0, g, 10));
    t.register_at(pos(0, g, 4));
    t.complete(&[pos(0, g, 10)]);
    assert_eq!(t.commit_candidates(None), vec![(0, 4)]);
    t.complete(&[pos(0, g, 4)]);
    assert_eq!(t.commit_candidates(None), vec![(0, 11)]);
}

#[test]
fn waiting_for_a_drain_returns_once_the_last_offset_is_durable() {
    let (t, g) = tracker_with(0);
    t.register_at(pos(0, g, 0));
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
    t.register_at(pos(0, g, 0));
    let start = Instant::now();
    assert!(!t.wait_drained(Some(&[0]), start + Duration::from_millis(50)));
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(
        t.wait_drained(Some(&[1]), start),
        "other partitions are not waited for"
    );
}

#[test]
fn an_acknowledged_commit_knows_the_timestamp_of_the_newest_committed_message() {
    let (t, g) = tracker_with(0);
    for o in 0..6 {
        t.register_at(pos(0, g, o));
    }
    t.complete(&[pos(0, g, 0), pos(0, g, 1), pos(0, g, 2)]);
    let proposed = t.commit_candidates(None);
    assert_eq!(proposed, vec![(0, 3)]);
    t.complete(&[pos(0, g, 3), pos(0, g, 4)]);
    // The acknowledgement of the older proposal arrives after the run moved on.
    t.mark_committed(&proposed);
    let p = t.progress();
    assert_eq!(
        (p[0].committed, p[0].committed_timestamp_ms),
        (Some(3), Some(2))
    );
    t.mark_committed(&t.commit_candidates(None));
    assert_eq!(t.progress()[0].committed_timestamp_ms, Some(4));
}

#[test]
fn a_commit_with_no_checkpoint_keeps_the_previous_timestamp() {
    let (t, g) = tracker_with(0);
    t.register_at(pos(0, g, 7));
    t.complete(&[pos(0, g, 7)]);
    t.mark_committed(&t.commit_candidates(None));
    t.mark_committed(&[(0, 9)]);
    assert_eq!(t.progress()[0].committed, Some(9));
    assert_eq!(t.progress()[0].committed_timestamp_ms, Some(7));
}

#[test]
fn shrinking_after_a_burst_frees_room_and_changes_no_answer() {
    let (t, g) = tracker_with(0);
    let burst: Vec<Position> = (0..5_000).map(|o| pos(0, g, o)).collect();
    for &p in &burst {
        t.register_at(p);
    }
    t.complete(&burst[1..]);
    let before = (t.commit_candidates(None), t.in_flight());
    t.shrink();
    assert_eq!((t.commit_candidates(None), t.in_flight()), before);
    assert!(t.lock().partitions[&0].in_flight.capacity() >= 1);

    t.complete(&burst[..1]);
    t.shrink();
    assert_eq!(t.commit_candidates(None), vec![(0, 5_000)]);
    let inner = t.lock();
    assert_eq!(
        inner.partitions[&0].in_flight.capacity(),
        0,
        "the burst's slots are given back"
    );
}

#[test]
fn a_partition_that_empties_gives_back_the_room_of_its_chunk() {
    let (t, g) = tracker_with(0);
    let chunk: Vec<Position> = (0..5_000).map(|o| pos(0, g, o)).collect();
    for &p in &chunk {
        t.register_at(p);
    }
    t.complete(&chunk[..4_999]);
    assert!(
        t.lock().partitions[&0].in_flight.capacity() >= 5_000,
        "room is kept while offsets are in flight"
    );
    t.complete(&chunk[4_999..]);
    assert_eq!(t.commit_candidates(None), vec![(0, 5_000)]);
    assert!(t.lock().partitions[&0].in_flight.capacity() <= KEEP_SLOTS);
}

#[test]
fn checkpoints_are_taken_per_proposal_not_per_completion() {
    let (t, g) = tracker_with(0);
    for o in 0..1_000 {
        t.register_at(pos(0, g, o));
        t.complete(&[pos(0, g, o)]);
    }
    assert!(t.lock().partitions[&0].checkpoints.is_empty());
    let proposed = t.commit_candidates(None);
    assert_eq!(
        t.commit_candidates(None),
        proposed,
        "proposing again adds nothing"
    );
    assert_eq!(t.lock().partitions[&0].checkpoints.len(), 1);
    t.mark_committed(&proposed);
    assert_eq!(t.progress()[0].committed_timestamp_ms, Some(999));
}

#[test]
fn a_withdrawn_registration_leaves_the_partition_as_it_was() {
    let (t, g) = tracker_with(0);
    assert!(t.register_at(pos(0, g, 10)));
    t.complete(&[pos(0, g, 10)]);
    let registered = t.register(pos(0, g, 11), Some(11)).unwrap();
    assert_eq!(t.in_flight(), 1);
    t.withdraw(registered);
    assert_eq!(t.in_flight(), 0);
    assert_eq!(t.commit_candidates(None), vec![(0, 11)]);
    // Offered again later, it is tracked as if it had never been withdrawn.
    assert!(t.register_at(pos(0, g, 11)));
    t.complete(&[pos(0, g, 11)]);
    assert_eq!(t.commit_candidates(None), vec![(0, 12)]);
}

#[test]
fn withdrawing_the_first_registration_of_an_assignment_leaves_nothing_committable() {
    let (t, g) = tracker_with(0);
    let registered = t.register(pos(0, g, 5), None).unwrap();
    t.withdraw(registered);
    assert!(t.commit_candidates(None).is_empty());
}

#[test]
fn withdrawing_after_the_partition_was_reassigned_touches_nothing_of_the_new_assignment() {
    let (t, g) = tracker_with(0);
    let registered = t.register(pos(0, g, 5), None).unwrap();
    t.revoke(&[0]);
    t.assign(&[0]);
    let g2 = t.generation(0).unwrap();
    assert!(t.register_at(pos(0, g2, 5)));
    t.withdraw(registered);
    assert_eq!(t.in_flight(), 1);
}

#[test]
fn an_idle_partition_ends_where_librdkafka_counts_past_records_never_handed_over() {
    let (t, g) = tracker_with(0);
    t.assign(&[1]);
    let g1 = t.generation(1).unwrap();
    for o in 0..3 {
        assert!(t.register_at(pos(0, g, o)));
    }
    t.complete(&[pos(0, g, 0), pos(0, g, 1), pos(0, g, 2)]);
    // Offset 3 is a transaction's commit marker; partition 1 holds only markers so far.
    t.advance_idle(&[pos(0, g, 4), pos(1, g1, 2)]);
    assert_eq!(t.commit_candidates(None), vec![(0, 4), (1, 2)]);
    t.mark_committed(&[(0, 4)]);
    assert_eq!(
        t.progress()[0].committed_timestamp_ms,
        Some(2),
        "the newest committed message is still the last one dispatched"
    );
}

#[test]
fn a_partition_with_messages_in_flight_or_of_an_older_generation_is_not_advanced() {
    let (t, g) = tracker_with(0);
    assert!(t.register_at(pos(0, g, 7)));
    t.advance_idle(&[pos(0, g, 9)]);
    assert_eq!(t.commit_candidates(None), vec![(0, 7)]);
    assert_eq!(t.idle(), vec![]);
    t.complete(&[pos(0, g, 7)]);
    assert_eq!(t.idle(), vec![(0, g)]);
    t.advance_idle(&[pos(0, g + 1, 20), pos(0, g, 5)]);
    assert_eq!(
        t.commit_candidates(None),
        vec![(0, 8)],
        "an older generation's position, or one behind, changes nothing"
    );
}
