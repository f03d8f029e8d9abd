use super::*;
use problem::CONSUMER_PROBLEM_QUIET;

fn running() -> Health {
    let h = Health::new(Duration::from_millis(50));
    h.set_db_ok(true);
    h.kafka_ok();
    h.consumer_polled(Instant::now());
    h.group_member(true);
    h
}

#[test]
fn a_fresh_worker_is_not_ready_until_postgres_kafka_and_the_group_are_there() {
    let h = Health::default();
    assert_eq!(h.readiness(), Err("postgres unavailable".into()));
    h.set_db_ok(true);
    assert_eq!(h.readiness(), Err("kafka not reached yet".into()));
    h.kafka_ok();
    assert_eq!(h.readiness(), Err("consumer not running".into()));
    h.consumer_polled(Instant::now());
    assert_eq!(
        h.readiness(),
        Err("consumer has not joined its group yet".into())
    );
    h.group_member(true);
    assert_eq!(h.readiness(), Ok(()));
}

#[test]
fn draining_wins_over_everything() {
    let h = running();
    h.start_draining();
    assert_eq!(h.readiness(), Err("draining".into()));
}

#[test]
fn each_missing_part_gives_its_own_reason() {
    let h = running();
    h.kafka_problem("topic orders does not exist".into());
    assert_eq!(h.readiness(), Err("topic orders does not exist".into()));
    h.kafka_ok();
    h.dead_letter_topic_exists(Some("dead-letter topic dlq does not exist".into()));
    assert_eq!(
        h.readiness(),
        Err("dead-letter topic dlq does not exist".into())
    );
    h.dead_letter_topic_exists(None);
    h.dead_letter_topic_refused("dead-letter topic dlq refused".into());
    assert!(h.readiness().is_err());
    h.dead_letter_topic_exists(None);
    assert!(
        h.readiness().is_err(),
        "no ACL: only an accepted letter tells"
    );
    h.dead_letter_topic_accepted();
    assert_eq!(h.readiness(), Ok(()));
    // The publisher told the topic is missing; the next metadata check finds it created.
    h.dead_letter_topic_exists(Some("dead-letter topic dlq does not exist".into()));
    assert!(h.readiness().is_err());
    h.dead_letter_topic_exists(None);
    assert_eq!(h.readiness(), Ok(()), "created since");
    h.set_db_ok(false);
    assert_eq!(h.readiness(), Err("postgres unavailable".into()));
}

#[test]
fn messages_in_flight_with_no_progress_fail_liveness_after_the_stall_timeout() {
    let h = running();
    h.observe(0, Instant::now());
    h.observe(10, Instant::now());
    assert_eq!(h.liveness(), Ok(()));
    std::thread::sleep(Duration::from_millis(80));
    h.consumer_polled(Instant::now());
    let reason = h.liveness().unwrap_err();
    assert!(reason.contains("10 messages in flight"), "{reason}");
    h.progressed();
    assert_eq!(h.liveness(), Ok(()));
}

#[test]
fn one_write_running_past_the_stall_timeout_fails_liveness_while_other_lanes_progress() {
    let h = running();
    h.observe(0, Instant::now());
    h.observe(10, Instant::now());
    let stuck = h.writing(1);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(20));
        h.progressed();
        h.consumer_polled(Instant::now());
        h.observe(10, Instant::now());
    }
    let reason = h.liveness().unwrap_err();
    assert!(reason.contains("batch write of lane 1"), "{reason}");
    assert!(h.stalled_for() > Duration::from_millis(50));
    drop(stuck);
    assert_eq!(h.liveness(), Ok(()));
}

#[test]
fn a_write_whose_statements_keep_ending_is_slow_not_stuck() {
    let h = running();
    h.observe(10, Instant::now());
    let _write = h.writing(2);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(20));
        h.write_advanced(2);
        h.progressed();
        h.consumer_polled(Instant::now());
        h.observe(10, Instant::now());
    }
    assert_eq!(h.liveness(), Ok(()));
}

#[test]
fn a_write_failing_as_if_postgres_were_away_holds_readiness_until_it_ends() {
    let h = running();
    let write = h.writing(0);
    h.write_failing(0, true);
    // The ping gets an answer between the write's attempts.
    h.set_db_ok(true);
    let unready = Err("postgres unavailable: batch writes failing".into());
    assert_eq!(h.readiness(), unready);
    h.observe(10, Instant::now());
    std::thread::sleep(Duration::from_millis(80));
    h.consumer_polled(Instant::now());
    h.observe(10, Instant::now());
    assert_eq!(h.liveness(), Ok(()), "an outage, not a wedge");
    h.write_failing(0, false);
    assert_eq!(h.readiness(), Ok(()), "it failed otherwise");
    h.write_failing(0, true);
    assert_eq!(h.readiness(), unready);
    drop(write);
    assert_eq!(h.readiness(), Ok(()), "the write ended");
}

#[test]
fn a_lane_waiting_for_the_registry_keeps_the_worker_unready_when_another_gets_its_schema() {
    let h = running();
    h.schema_registry_unavailable(0, Some("schema registry, schema id 7: not found".into()));
    h.schema_registry_unavailable(1, Some("schema registry, schema id 8: timed out".into()));
    h.schema_registry_unavailable(1, None);
    let waits = Err("schema registry, schema id 7: not found".into());
    assert_eq!(h.readiness(), waits);
    h.schema_registry_unavailable(0, None);
    assert_eq!(h.readiness(), Ok(()));
}

#[test]
fn an_outage_or_an_idle_pipeline_is_never_a_stall() {
    let h = running();
    h.observe(0, Instant::now());
    std::thread::sleep(Duration::from_millis(80));
    h.consumer_polled(Instant::now());
    h.observe(0, Instant::now());
    assert_eq!(h.liveness(), Ok(()), "idle");
    h.set_db_ok(false);
    h.observe(10, Instant::now());
    std::thread::sleep(Duration::from_millis(80));
    h.consumer_polled(Instant::now());
    h.observe(10, Instant::now());
    assert_eq!(h.liveness(), Ok(()), "PostgreSQL away");
}

#[test]
fn a_refused_read_ends_with_a_message_or_with_nothing_left_to_read() {
    let h = running();
    let refused = || h.consumer_refused("not authorized to read topic orders".into());
    let quiet_since = Instant::now() + CONSUMER_PROBLEM_QUIET + Duration::from_secs(1);
    h.owned_lag(true);
    refused();
    h.observe(0, quiet_since);
    assert_eq!(
        h.readiness(),
        Err("not authorized to read topic orders".into()),
        "quiet, while messages wait to be read"
    );
    h.owned_lag(false);
    h.observe(0, quiet_since);
    assert_eq!(h.readiness(), Ok(()));
    h.owned_lag(true);
    refused();
    h.consumer_fetched();
    assert_eq!(h.readiness(), Ok(()));
}
