//! Batch writes that do not end, as the probes tell them: a lane whose write waits on a locked
//! row is a stall even while the other lanes make progress, and writes failing as if PostgreSQL
//! were away keep the worker unready even while it answers the ping.

use std::time::{Duration, Instant};

use order_worker::synth::{Expectation, event};
use uuid::Uuid;

use crate::helpers::kafka::{
    Mock, OffsetProbe, message_of, publish, publish_in_background, publish_raw,
};
use crate::helpers::pg::{TestDb, assert_state_is, orders};
use crate::helpers::{Binary, eventually, get, metric, throughout, unique, valid_only};

const SETTLES: Duration = Duration::from_secs(60);

/// A ready worker with a 10 s stall timeout, on a fresh topic of two partitions and a fresh
/// database: (topic, group, broker, database, worker).
pub(crate) async fn watched() -> (String, String, Mock, TestDb, Binary) {
    watched_on(TestDb::create().await).await
}

/// [`watched`] on a database of the caller's.
pub(crate) async fn watched_on(db: TestDb) -> (String, String, Mock, TestDb, Binary) {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 2);
    let worker = Binary::run(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &["--stall-timeout", "10s", "--rebalance-drain-timeout", "2s"],
    );
    worker.ready().await;
    (topic, group, mock, db, worker)
}

/// Waits for `/healthz` to fail, which must not come before the 10 s stall timeout; its body.
pub(crate) async fn liveness_fails_after_the_stall_timeout(worker: &Binary) -> String {
    let started = Instant::now();
    eventually("liveness fails", Duration::from_secs(40), || async {
        get(worker.http, "/healthz").await.0 == 503
    })
    .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "not before the timeout: {waited:?}"
    );
    get(worker.http, "/healthz").await.1
}

async fn version_of(db: &TestDb, order: Uuid) -> Option<i64> {
    orders(&db.pool).await.get(&order).map(|o| o.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_waiting_on_a_locked_row_fails_liveness_while_the_other_lanes_progress() {
    let (topic, group, mock, db, worker) = watched().await;
    let order = Uuid::new_v4();
    publish_raw(&mock.brokers, &topic, &[message_of(&event(order, 1, 0))]);
    eventually("version 1 applied", SETTLES, || async {
        version_of(&db, order).await == Some(1)
    })
    .await;

    // Someone holds the order's row: its next version waits in its lane's write.
    let mut lock = db.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM orders WHERE order_id = $1 FOR UPDATE")
        .bind(order)
        .execute(&mut *lock)
        .await
        .expect("lock the row");
    publish_raw(&mock.brokers, &topic, &[message_of(&event(order, 2, 0))]);
    let stream = valid_only(200, 371);
    let publishing = publish_in_background(&mock.brokers, &topic, &stream, 600, 20);
    let body = liveness_fails_after_the_stall_timeout(&worker).await;
    assert!(body.contains("batch write of lane"), "{body}");
    let applied = metric(worker.http, "order_worker_events_applied_total", &[]).await;
    assert!(
        applied > 50.0,
        "the other lanes kept writing meanwhile: {applied} applied"
    );

    lock.rollback().await.expect("release the row");
    publishing.join().expect("publisher");
    OffsetProbe::new(&mock.brokers, &group, &topic, 2)
        .wait_caught_up_within("drained once the row is free", SETTLES)
        .await;
    assert_eq!(version_of(&db, order).await, Some(2));
    assert_eq!(get(worker.http, "/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_failing_as_if_postgres_were_away_keep_the_worker_unready_while_it_answers() {
    let (topic, group, mock, db, worker) = watched().await;
    // PostgreSQL answers every query but refuses every order, as with a full disk.
    for statement in [
        "CREATE FUNCTION refuse_orders() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END $$",
        "CREATE TRIGGER refuse_orders BEFORE INSERT OR UPDATE ON orders \
         FOR EACH ROW EXECUTE FUNCTION refuse_orders()",
    ] {
        sqlx::query(statement)
            .execute(&db.pool)
            .await
            .expect(statement);
    }
    let spec = valid_only(50, 381);
    publish(&mock.brokers, &topic, &spec, 100);
    let resources = [("kind", "resources")];
    eventually("a write refused for resources", SETTLES, || async {
        metric(worker.http, "order_worker_db_errors_total", &resources).await > 0.0
    })
    .await;

    // Longer than the ping's interval and the stall timeout: unready throughout, and alive (an
    // outage is waited out).
    throughout(Duration::from_secs(15), || async {
        let (status, reason) = get(worker.http, "/readyz").await;
        assert_eq!(status, 503, "ready while every write fails: {reason}");
        // Mostly "postgres unavailable: batch writes failing"; a ping slower than 2 s on a busy
        // machine says the shorter reason.
        assert!(reason.contains("postgres unavailable"), "{reason}");
        assert_eq!(get(worker.http, "/healthz").await.0, 200);
    })
    .await;

    sqlx::query("DROP TRIGGER refuse_orders ON orders")
        .execute(&db.pool)
        .await
        .expect("drop the trigger");
    OffsetProbe::new(&mock.brokers, &group, &topic, 2)
        .wait_caught_up_within("drained once orders are accepted", SETTLES)
        .await;
    assert_state_is(&db.pool, &Expectation::of(&spec, 100)).await;
    assert_eq!(get(worker.http, "/readyz").await.0, 200);
}
