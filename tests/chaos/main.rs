//! The chaos suite: the worker streamed through crashes, outages, rebalances and poison
//! (`poison.rs`), each scenario ending with a comparison against the oracle computed from what
//! was produced.
//!
//! Every scenario prints one row: produced, applied, dead-lettered, **lost** and **applied twice
//! or regressed**, and fails unless both of the latter are 0. "Applied twice or regressed" is
//! read from an audit trigger on `orders` (test-only, in the scenario's own database) that logs
//! every row change: any change whose version is not strictly above the order's previous one
//! counts. Profiles: `CHAOS_PROFILE=short` (default, part of the test command) or `long`
//! (`scripts/chaos.sh long`). `ORDER_WORKER_BIN` points the suite at another build (release, for
//! memory figures).

#[allow(dead_code)]
#[path = "../it/helpers/mod.rs"]
mod helpers;

mod poison;
mod scenarios;

use std::time::{Duration, Instant};

use order_worker::synth::{Expectation, SynthSpec};
use sqlx::PgPool;

use helpers::kafka::{Mock, OffsetProbe};
use helpers::pg::{TestDb, dead_letters_by_reason, orders};
use helpers::{Binary, try_get, unique};

/// How hard a run pushes.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub name: &'static str,
    /// Worker kills during the kill -9 stream, and that stream's size and rate.
    pub kills: usize,
    pub kill_events: u64,
    /// Size and rate of the streams of the outage and rebalance scenarios.
    pub events: u64,
    pub rate: u64,
    /// Backlog drained at full speed (SIGTERM scenario) and for the memory figure.
    pub sigterm_backlog: u64,
    pub rss_backlog: u64,
}

pub fn profile() -> Profile {
    match std::env::var("CHAOS_PROFILE").as_deref() {
        Ok("long") => Profile {
            name: "long",
            kills: 12,
            kill_events: 150_000,
            events: 40_000,
            rate: 1_000,
            sigterm_backlog: 400_000,
            rss_backlog: 1_000_000,
        },
        _ => Profile {
            name: "short",
            kills: 3,
            kill_events: 30_000,
            events: 8_000,
            rate: 800,
            sigterm_backlog: 60_000,
            rss_backlog: 150_000,
        },
    }
}

/// More orders than events: most events are the last version of their order, so a lost event
/// changes the final state; 2% duplicates, 1% invalid of every kind.
pub fn spec(seed: u64, events: u64) -> SynthSpec {
    SynthSpec {
        orders: events * 2,
        invalid_ratio: 0.01,
        duplicate_ratio: 0.02,
        seed,
    }
}

/// Enough partitions (at least `at_least`) that none holds more than 5,000 events (~3 MiB):
/// librdkafka's mock cluster keeps only the newest 5 MiB or 100k messages of a partition
/// (`rdkafka_mock.c`), so a bigger partition would lose its head before the worker reads it.
pub fn partitions_for(events: u64, at_least: i32) -> i32 {
    at_least.max(events.div_ceil(5_000) as i32)
}

/// One scenario's world: a topic on the mock cluster, a database with the audit trigger.
pub struct Scenario {
    pub name: String,
    pub topic: String,
    pub group: String,
    pub partitions: i32,
    pub db: TestDb,
    pub started: Instant,
}

impl Scenario {
    pub async fn new(name: &str, partitions: i32) -> Self {
        Self::on(name, partitions, TestDb::create().await).await
    }

    pub async fn on(name: &str, partitions: i32, db: TestDb) -> Self {
        audit(&db.pool).await;
        let started = Instant::now();
        Self {
            name: name.into(),
            topic: unique("orders"),
            group: unique("group"),
            partitions,
            db,
            started,
        }
    }

    pub fn mock(&self) -> Mock {
        Mock::with_topic(&self.topic, self.partitions)
    }

    pub fn worker(&self, brokers: &str, extra: &[&str]) -> Binary {
        Binary::run(brokers, &self.db.url, &self.topic, &self.group, extra)
    }

    pub fn probe(&self, brokers: &str) -> OffsetProbe {
        OffsetProbe::new(brokers, &self.group, &self.topic, self.partitions)
    }

    /// Compares PostgreSQL with the oracle, prints the row, fails on any loss or double effect.
    pub async fn finish(&self, probe: &OffsetProbe, expected: &Expectation, notes: &str) {
        let truncated = probe.truncated();
        assert!(
            truncated.is_empty(),
            "{}: the broker dropped the head of partitions {truncated:?}; raise the partition count",
            self.name
        );
        let row = measure(&self.db.pool, expected).await;
        println!(
            "CHAOS-ROW|{}|{}|{}|{}|{}|{}|{}|{:.0}|{notes}",
            profile().name,
            self.name,
            expected.mix.total(),
            row.applied,
            row.dead,
            row.lost,
            row.twice,
            self.started.elapsed().as_secs_f64()
        );
        assert_eq!(row.lost, 0, "{}: lost events", self.name);
        assert_eq!(
            row.twice, 0,
            "{}: events applied twice or regressed",
            self.name
        );
    }
}

struct Counts {
    applied: u64,
    dead: u64,
    lost: u64,
    twice: u64,
}

async fn measure(pool: &PgPool, expected: &Expectation) -> Counts {
    let stored = orders(pool).await;
    let applied = expected
        .orders
        .iter()
        .filter(|(id, e)| {
            stored
                .get(id)
                .is_some_and(|s| s.version == e.version && s.total_minor == e.total_minor)
        })
        .count() as u64;
    let dead = dead_letters_by_reason(pool).await;
    let mut lost = expected.orders.len() as u64 - applied;
    let mut twice = stored
        .keys()
        .filter(|id| !expected.orders.contains_key(id))
        .count() as u64;
    for (reason, n) in &expected.mix.invalid {
        let got = dead.get(*reason).copied().unwrap_or(0);
        lost += n.saturating_sub(got);
        twice += got.saturating_sub(*n);
    }
    let repeated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT version <= lag(version) OVER (PARTITION BY order_id ORDER BY seq) \
         AS bad FROM chaos_audit) t WHERE bad",
    )
    .fetch_one(pool)
    .await
    .expect("read the audit");
    twice += repeated as u64;
    Counts {
        applied,
        dead: dead.values().sum(),
        lost,
        twice,
    }
}

/// Logs every change of an order row, in order.
async fn audit(pool: &PgPool) {
    for sql in [
        "CREATE TABLE chaos_audit (seq bigserial PRIMARY KEY, order_id uuid NOT NULL, version bigint NOT NULL)",
        "CREATE FUNCTION chaos_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         INSERT INTO chaos_audit (order_id, version) VALUES (NEW.order_id, NEW.version); RETURN NULL; END $$",
        "CREATE TRIGGER chaos_audit AFTER INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION chaos_audit()",
    ] {
        sqlx::query(sql).execute(pool).await.expect("audit trigger");
    }
}

/// Waits until a worker process has consumed something (it owns partitions and works).
pub async fn consuming(worker: &Binary, at_least: f64) {
    helpers::eventually("the worker consumes", Duration::from_secs(90), || async {
        try_get(worker.http, "/metrics")
            .await
            .and_then(|(_, text)| {
                helpers::sample(&text, "order_worker_messages_consumed_total", &[])
            })
            .is_some_and(|n| n >= at_least)
    })
    .await;
}
