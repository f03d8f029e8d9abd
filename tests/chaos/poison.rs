//! The poison scenarios: a stream mixed with messages and rows that will never be accepted, and
//! with the rebalances and outages around them. The oracle is the one of every scenario (0 lost,
//! 0 applied twice or regressed, every partition committed to its end), computed for the stream
//! as sent: an event PostgreSQL refuses, or whose key is not its order id as the contract spells
//! it, is a dead letter, and its order ends at its last acceptable version.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use order_worker::contract::OrderEvent;
use order_worker::synth::{Expectation, Generator, Kind, SynthSpec};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use uuid::Uuid;

use crate::helpers::kafka::{Member, RawMessage, Tansu, publish, publish_raw, read_topic};
use crate::helpers::pg::lock_orders;
use crate::helpers::{TINY_PIPELINE, eventually, free_port, try_get};
use crate::{Scenario, consuming, partitions_for, profile, spec};

/// The messages of a spec's stream with their kinds and, for new valid events, the event.
fn stream(spec: &SynthSpec, events: u64) -> Vec<(RawMessage, Kind, Option<OrderEvent>)> {
    let mut generator = Generator::new(spec.clone());
    (0..events)
        .map(|_| {
            let (m, event) = generator.next_with_event();
            ((m.key, m.payload), m.kind, event)
        })
        .collect()
}

/// The order a valid or duplicate message is about, read from its key.
fn order_of(message: &RawMessage) -> Option<Uuid> {
    let key = std::str::from_utf8(message.0.as_deref()?).ok()?;
    Uuid::parse_str(key).ok()
}

fn add_dead(expected: &mut Expectation, reason: &'static str, n: u64) {
    *expected.mix.invalid.entry(reason).or_default() += n;
}

/// The stream after `poison` rewrote some of its messages, each of which it turned into a dead
/// letter of `reason` (it returns true for those), with the state a correct worker leaves for
/// it and the number rewritten.
fn poisoned(
    messages: Vec<(RawMessage, Kind, Option<OrderEvent>)>,
    reason: &'static str,
    mut poison: impl FnMut(&mut RawMessage, Kind) -> bool,
) -> (Vec<RawMessage>, Expectation, u64) {
    let mut expected = Expectation::default();
    let mut rewritten = 0;
    let mut raw = Vec::with_capacity(messages.len());
    for (mut message, kind, event) in messages {
        if poison(&mut message, kind) {
            rewritten += 1;
        } else {
            expected.mix.add(kind);
            if let Some(e) = event {
                expected.orders.insert(e.order_id, e);
            }
        }
        raw.push(message);
    }
    add_dead(&mut expected, reason, rewritten);
    (raw, expected, rewritten)
}

/// Publishes `raw`, lets one worker consume all of it, and compares with the oracle.
async fn consume_and_finish(s: &Scenario, raw: &[RawMessage], expected: &Expectation, notes: &str) {
    let mock = s.mock();
    publish_raw(&mock.brokers, &s.topic, raw);
    let _worker = s.worker(&mock.brokers, &[]);
    let probe = s.probe(&mock.brokers);
    probe.wait_caught_up("everything committed").await;
    s.finish(&probe, expected, notes).await;
}

async fn readyz(s: &crate::helpers::Binary) -> String {
    try_get(s.http, "/readyz")
        .await
        .map(|(status, body)| format!("{status} {body}"))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_oversized_dead_letters_with_a_dead_letter_topic() {
    let p = profile();
    let s = Scenario::new(
        "poison: 1.2 MB dead letters, dead-letter topic",
        partitions_for(p.events, 4),
    )
    .await;
    let mock = s.mock();
    let dlq = format!("{}-dlq", s.topic);
    mock.cluster.create_topic(&dlq, 1, 1).unwrap();
    let spec = spec(11, p.events);
    let mut expected = Expectation::of(&spec, p.events);
    let publisher = crate::helpers::kafka::publish_in_background(
        &mock.brokers,
        &s.topic,
        &spec,
        p.events,
        p.rate,
    );
    let worker = s.worker(&mock.brokers, &["--dead-letter-topic", &dlq]);
    consuming(&worker, 100.0).await;
    // Larger than the producer's message.max.bytes once cut to MAX_PAYLOAD_BYTES: each must be
    // published cut, once, while the stream flows around it. One per partition, so no partition
    // outgrows what the mock broker keeps.
    let big: Producer1M = Producer1M::new(&mock.brokers);
    for partition in 0..3 {
        big.send(&s.topic, partition, &vec![b'x'; 1_200_000]);
    }
    big.flush();
    add_dead(&mut expected, "payload_too_large", 3);
    publisher.join().expect("publisher");
    let probe = s.probe(&mock.brokers);
    probe.wait_caught_up("everything committed").await;
    let letters = read_topic(&mock.brokers, &dlq, 1);
    let wanted = expected.mix.invalid_total() as usize;
    assert_eq!(
        letters.len(),
        wanted,
        "one message per dead letter on the topic"
    );
    s.finish(
        &probe,
        &expected,
        &format!("{} letters on the topic, 3 cut to fit", letters.len()),
    )
    .await;
}

/// A producer that sends values above librdkafka's default 1,000,000-byte limit.
struct Producer1M(BaseProducer);

impl Producer1M {
    fn new(brokers: &str) -> Self {
        let producer = order_worker::kafka::client_config(brokers, &[])
            .set("message.max.bytes", "4000000")
            .create()
            .expect("producer");
        Self(producer)
    }

    fn send(&self, topic: &str, partition: i32, value: &[u8]) {
        let record = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .key(b"oversized")
            .payload(value);
        self.0.send(record).map_err(|(e, _)| e).expect("send");
    }

    fn flush(&self) {
        self.0.flush(Duration::from_secs(30)).expect("flush");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_a_constraint_refusing_the_newest_version_of_some_orders() {
    let p = profile();
    let s = Scenario::new(
        "poison: newest versions refused by a constraint",
        partitions_for(p.events, 4),
    )
    .await;
    s.db.add_check("chaos_refused", "customer_id <> 'refused'")
        .await;
    let spec = spec(12, p.events);
    let messages = stream(&spec, p.events);
    // The newest version of one order in five is refused, in every copy of it (a duplicate is
    // the same message again).
    let mut newest: HashMap<Uuid, OrderEvent> = HashMap::new();
    for (_, _, event) in &messages {
        if let Some(e) = event {
            newest.insert(e.order_id, e.clone());
        }
    }
    let refused: HashMap<Vec<u8>, Vec<u8>> = newest
        .values()
        .filter(|e| e.order_id.as_u128() % 5 == 0)
        .map(|e| {
            let mut marked = e.clone();
            marked.customer_id = "refused".into();
            (e.to_json(), marked.to_json())
        })
        .collect();
    let (raw, expected, copies) = poisoned(messages, "db_rejected", |(_, payload), _| {
        let marked = payload.as_ref().and_then(|v| refused.get(v));
        if let Some(marked) = marked {
            *payload = Some(marked.clone());
        }
        marked.is_some()
    });
    let notes = format!(
        "{} orders' newest version refused, {copies} copies",
        refused.len()
    );
    consume_and_finish(&s, &raw, &expected, &notes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_partitions_revoked_while_paused_and_handed_back() {
    let p = profile();
    let s = Scenario::new(
        "poison: revoked while paused, assigned back",
        partitions_for(p.events, 4),
    )
    .await;
    let mock = s.mock();
    let spec = spec(13, p.events);
    publish(&mock.brokers, &s.topic, &spec, p.events);
    let lock = lock_orders(&s.db.pool).await;
    let worker = s.worker(
        &mock.brokers,
        &[&TINY_PIPELINE[..], &["--rebalance-drain-timeout", "2s"]].concat(),
    );
    let paused = "order_worker_partitions_paused";
    eventually("paused", Duration::from_secs(90), || async {
        worker.sample(paused).await.is_some_and(|n| n > 0.0)
    })
    .await;
    let member = Member::join(&mock.brokers, &s.group, &s.topic);
    eventually(
        "the other member owns partitions",
        Duration::from_secs(90),
        || async { member.assigned() > 0 },
    )
    .await;
    lock.rollback().await.unwrap();
    eventually("the worker resumed", Duration::from_secs(90), || async {
        worker.sample(paused).await == Some(0.0)
    })
    .await;
    drop(member);
    let probe = s.probe(&mock.brokers);
    probe.wait_caught_up("every partition consumed").await;
    s.finish(
        &probe,
        &Expectation::of(&spec, p.events),
        "PostgreSQL locked, a member joins and leaves",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_keys_spelled_in_upper_case() {
    let p = profile();
    let s = Scenario::new("poison: upper-case keys", partitions_for(p.events, 4)).await;
    let spec = spec(14, p.events);
    let messages = stream(&spec, p.events);
    // Every message about one order in ten is keyed by its id in upper case: none of them may
    // be applied, wherever they land.
    let shouting: HashSet<Uuid> = messages
        .iter()
        .filter_map(|(m, kind, _)| match kind {
            Kind::Valid | Kind::Duplicate => order_of(m),
            Kind::Invalid(_) => None,
        })
        .filter(|id| id.as_u128() % 10 == 0)
        .collect();
    let (raw, expected, upper) = poisoned(messages, "key_mismatch", |message, kind| {
        let shouted = matches!(kind, Kind::Valid | Kind::Duplicate)
            && order_of(message).is_some_and(|id| shouting.contains(&id));
        if shouted {
            message.0 = message.0.as_ref().map(|k| k.to_ascii_uppercase());
        }
        shouted
    });
    let notes = format!(
        "{upper} messages of {} orders keyed in upper case",
        shouting.len()
    );
    consume_and_finish(&s, &raw, &expected, &notes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_a_broker_unreachable_at_start_that_appears_later() {
    let p = profile();
    let s = Scenario::new("poison: broker unreachable at start (tansu)", 4).await;
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let worker = s.worker(&brokers, &["--lag-interval", "1s"]);
    eventually(
        "unready: kafka unreachable",
        Duration::from_secs(30),
        || async { readyz(&worker).await.contains("kafka unreachable") },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let tansu = Tansu::start_on(port, &[]);
    let config = order_worker::kafka::client_config(&tansu.brokers, &[]);
    order_worker::kafka::producer::ensure_topic(&config, &s.topic, 4)
        .await
        .expect("topic");
    let spec = spec(15, p.events);
    publish(&tansu.brokers, &s.topic, &spec, p.events);
    let probe = s.probe(&tansu.brokers);
    probe.wait_caught_up("everything committed").await;
    eventually("ready", Duration::from_secs(30), || async {
        readyz(&worker).await.starts_with("200")
    })
    .await;
    s.finish(
        &probe,
        &Expectation::of(&spec, p.events),
        "unready while no broker answered, ready once one did",
    )
    .await;
}
