//! Migrations once released: a database migrated by an earlier build keeps migrating when a
//! released migration's comments were reworded (the only edit `migrate` accepts), and any other
//! change to an applied migration is still refused.

use order_worker::db::{self, MIGRATOR};

use crate::helpers::pg::TestDb;

/// The migrations whose comments changed after release, and SHA-384 of their released text
/// (`git show <release>:migrations/<file> | sha384sum`).
const REWORDED: [(i64, &str); 2] = [
    (
        20261130000001,
        "6c69d460b6563f3b070f961eb06e13a1168c944da1ed766b6a006b2b8b5e021dd1cd6a96554f14912d5fff7142ace3c9",
    ),
    (
        20261130000002,
        "bcf76e48073594af94187e749bdccb3fbfde4386ce9543d55f0f313bd13f19c65c36700930599c8eeff17c1790c321f0",
    ),
];

async fn stored_checksum(db: &TestDb, version: i64) -> Vec<u8> {
    sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = $1")
        .bind(version)
        .fetch_one(&db.pool)
        .await
        .expect("the migration is applied")
}

async fn store_checksum(db: &TestDb, version: i64, checksum_hex: &str) {
    sqlx::query("UPDATE _sqlx_migrations SET checksum = decode($2, 'hex') WHERE version = $1")
        .bind(version)
        .bind(checksum_hex)
        .execute(&db.pool)
        .await
        .expect("checksum stored");
}

fn current_checksum(version: i64) -> Vec<u8> {
    MIGRATOR
        .iter()
        .find(|m| m.version == version)
        .expect("embedded")
        .checksum
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_a_release_migrates_after_its_comments_were_reworded() {
    let db = TestDb::create().await;
    for (version, released) in REWORDED {
        store_checksum(&db, version, released).await;
    }

    let applied = db::migrate(&db.pool)
        .await
        .expect("migrate accepts the reworded migrations");

    assert!(applied.is_empty(), "nothing to apply: {applied:?}");
    for (version, _) in REWORDED {
        assert_eq!(
            stored_checksum(&db, version).await,
            current_checksum(version)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_other_change_to_an_applied_migration_is_refused() {
    let db = TestDb::create().await;
    let (version, _) = REWORDED[0];
    store_checksum(&db, version, &"ab".repeat(48)).await;

    let refused = db::migrate(&db.pool)
        .await
        .expect_err("a changed migration is refused");

    assert!(
        refused
            .to_string()
            .contains("previously applied but has been modified"),
        "{refused}"
    );
    assert_eq!(stored_checksum(&db, version).await, vec![0xab; 48]);
}
