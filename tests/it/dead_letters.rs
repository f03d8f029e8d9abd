//! Dead letters after the fact: listing them, and replaying them once the cause is fixed.

use std::process::Command;

use order_worker::synth::event;
use sqlx::Row;
use uuid::Uuid;

use crate::helpers::kafka::{Mock, OffsetProbe, message_of, publish_raw};
use crate::helpers::pg::{TestDb, orders};
use crate::helpers::{metric, start_worker, unique};

fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_order-worker"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_postgres_refuses_is_dead_lettered_alone_and_replayed_once_after_the_fix() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    // An operator's rule the contract knows nothing about: PostgreSQL refuses the row.
    db.add_check("no_blocked", "customer_id <> 'blocked'").await;
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut blocked = event(b, 1, 1);
    blocked.customer_id = "blocked".into();
    // Laid out as no encoder of the worker would: the dead letter must keep these very bytes.
    let blocked_message = (
        Some(b.to_string().into_bytes()),
        Some(serde_json::to_vec_pretty(&blocked).unwrap()),
    );
    publish_raw(
        &mock.brokers,
        &topic,
        &[
            message_of(&event(a, 1, 0)),
            blocked_message.clone(),
            message_of(&event(c, 1, 2)),
            (Some(b"t".to_vec()), None),
        ],
    );
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    let probe = OffsetProbe::new(&mock.brokers, &group, &topic, 1);
    probe.wait_caught_up("all four committed").await;

    let stored = orders(&db.pool).await;
    assert!(
        stored.contains_key(&a) && stored.contains_key(&c) && !stored.contains_key(&b),
        "only the refused row is missing"
    );
    let row = sqlx::query(
        "SELECT id, reason, stage, error, message_key, payload FROM dead_letters \
         WHERE reason = 'db_rejected'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("stage"), "write");
    assert_eq!(
        (
            row.get::<Option<Vec<u8>>, _>("message_key"),
            row.get::<Option<Vec<u8>>, _>("payload")
        ),
        blocked_message,
        "the dead letter holds the message's original bytes, read back from Kafka"
    );
    assert!(row.get::<String, _>("error").contains("no_blocked"));
    assert_eq!(
        metric(
            worker.http_addr(),
            "order_worker_dead_letters_total",
            &[("reason", "db_rejected")]
        )
        .await,
        1.0
    );
    let id: i64 = row.get("id");

    let listed = cli(&[
        "dead-letters",
        "list",
        "--database-url",
        &db.url,
        "--reason",
        "db_rejected",
    ]);
    assert!(
        listed.contains(&format!("{id:>8}")) && listed.contains("1 dead letter(s)"),
        "{listed}"
    );

    // The fix, then the replay: the event goes through the pipeline again and is applied.
    sqlx::query("ALTER TABLE orders DROP CONSTRAINT no_blocked")
        .execute(&db.pool)
        .await
        .unwrap();
    let replay = [
        "dead-letters",
        "replay",
        "--database-url",
        &db.url,
        "--brokers",
        &mock.brokers,
    ];
    let first = cli(&replay);
    assert!(
        first.contains("replayed 1 dead letter(s); 0 failed"),
        "{first}"
    );
    assert!(
        first.contains("tombstone: there is no value to replay"),
        "{first}"
    );
    probe.wait_caught_up("the replayed message committed").await;
    assert_eq!(
        orders(&db.pool).await[&b].version,
        1,
        "applied after the fix"
    );
    let replayed: Option<time::OffsetDateTime> =
        sqlx::query_scalar("SELECT replayed_at FROM dead_letters WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(replayed.is_some(), "marked replayed");
    assert!(
        cli(&replay).contains("replayed 0 dead letter(s)"),
        "a second replay publishes nothing"
    );
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_only_dead_letters_older_than_asked_and_keeps_unreplayed_ones_when_told() {
    let db = TestDb::create().await;
    let rows = [
        (40, "invalid_json", true),
        (40, "invalid_json", false),
        (40, "db_rejected", false),
        (10, "invalid_json", true),
        (1, "schema_violation", false),
    ];
    insert_dead_letters(&db, &rows).await;
    let left = || async {
        let mut offsets: Vec<i64> = sqlx::query_scalar("SELECT source_offset FROM dead_letters")
            .fetch_all(&db.pool)
            .await
            .unwrap();
        offsets.sort();
        offsets
    };
    let purge = |extra: &[&str]| {
        cli(&[
            &["dead-letters", "purge", "--database-url", &db.url][..],
            extra,
        ]
        .concat())
    };
    let dry = purge(&["--before", "30d", "--dry-run"]);
    assert!(dry.contains("would delete 3 dead letter(s)"), "{dry}");
    assert_eq!(left().await, [0, 1, 2, 3, 4], "a dry run deletes nothing");
    let said = purge(&["--before", "30d", "--replayed-only"]);
    assert!(said.contains("deleted 1 dead letter(s)"), "{said}");
    assert_eq!(left().await, [1, 2, 3, 4]);
    purge(&["--before", "30d", "--reason", "db_rejected"]);
    assert_eq!(left().await, [1, 3, 4]);
    purge(&["--before", "5d"]);
    assert_eq!(
        left().await,
        [4],
        "everything older than 5 days, replayed or not"
    );
}

/// Dead letters of `(age in days, reason, replayed)`, at offsets 0, 1, ... of `orders`/0.
async fn insert_dead_letters(db: &TestDb, rows: &[(i32, &str, bool)]) {
    for (offset, (days, reason, replayed)) in rows.iter().enumerate() {
        sqlx::query(
            "INSERT INTO dead_letters (source_topic, source_partition, source_offset, payload, \
             payload_size, stage, reason, error, created_at, replayed_at) \
             VALUES ('orders', 0, $1, 'x', 1, 'decode', $2, 'e', now() - make_interval(days => $3), \
             CASE WHEN $4 THEN now() END)",
        )
        .bind(offset as i64)
        .bind(reason)
        .bind(days)
        .bind(replayed)
        .execute(&db.pool)
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_exports_how_many_dead_letters_wait_to_be_replayed_by_reason() {
    let db = TestDb::create().await;
    let rows = [
        (1, "invalid_json", false),
        (2, "invalid_json", false),
        (3, "invalid_json", true),
        (1, "db_rejected", false),
    ];
    insert_dead_letters(&db, &rows).await;
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    let http = worker.http_addr();
    let name = "order_worker_dead_letters_unreplayed";
    crate::helpers::eventually(
        "the first count",
        std::time::Duration::from_secs(10),
        || async { metric(http, name, &[("reason", "invalid_json")]).await == 2.0 },
    )
    .await;
    assert_eq!(metric(http, name, &[("reason", "db_rejected")]).await, 1.0);
    assert_eq!(metric(http, name, &[("reason", "tombstone")]).await, 0.0);
    worker.stop();
    worker.wait().await.expect("graceful stop");
}
