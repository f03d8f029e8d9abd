//! Migrations across builds: a database migrated by an earlier build keeps migrating when a
//! released migration's comments were reworded (the only edit `migrate` accepts) and any other
//! change to an applied migration is refused; every migration only adds to the schema, so a
//! build also runs on a database a newer build migrated (an image rolls back on its own).

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_a_newer_build_migrated_is_accepted_by_this_one() {
    let db = TestDb::create().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29991231000001, 'from a newer build', true, '\\x00', 0)",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let applied = db::migrate(&db.pool)
        .await
        .expect("migrate accepts migrations it does not know");

    assert!(applied.is_empty(), "{applied:?}");
    db::check_schema(&db.pool)
        .await
        .expect("run accepts the database too");
}

/// The statements a migration may hold, so that a build runs on a database migrated by any
/// later build of the same major version (an image rolls back without the database): new
/// tables, indexes and comments, nullable or defaulted new columns, and storage or planner
/// settings. Dropping, renaming, retyping or tightening what exists is a breaking change.
fn only_adds(statement: &str) -> bool {
    let s = statement.to_uppercase();
    let starts = |prefix: &str| s.starts_with(prefix);
    if starts("CREATE TABLE ")
        || starts("CREATE INDEX ")
        || starts("CREATE UNIQUE INDEX ")
        || starts("COMMENT ON ")
    {
        return true;
    }
    let Some(clauses) = s.strip_prefix("ALTER TABLE ") else {
        return false;
    };
    let clauses = clauses.split_once(' ').map_or("", |(_, rest)| rest);
    clauses.split(',').map(str::trim).all(|clause| {
        (clause.starts_with("ADD COLUMN ")
            && (!clause.contains("NOT NULL") || clause.contains("DEFAULT")))
            || clause.starts_with("SET (")
            || (clause.starts_with("ALTER COLUMN ") && clause.contains(" SET STATISTICS "))
    })
}

/// The statements of a migration, comments dropped, whitespace collapsed; a `;` or `--` inside a
/// quoted string belongs to the string.
fn statements(sql: &str) -> Vec<String> {
    let (mut out, mut current, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '-' if !quoted && chars.peek() == Some(&'-') => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        break;
                    }
                }
                current.push(' ');
                continue;
            }
            ';' if !quoted => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn every_migration_only_adds_to_the_schema() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for statement in statements(&text) {
            assert!(
                only_adds(&statement),
                "{}: not additive: {statement}",
                path.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 8, "read {seen} statements");
    for breaking in [
        "DROP TABLE orders",
        "ALTER TABLE orders DROP COLUMN items",
        "ALTER TABLE orders RENAME COLUMN status TO state",
        "ALTER TABLE orders ALTER COLUMN version TYPE integer",
        "ALTER TABLE orders ALTER COLUMN customer_id SET NOT NULL",
        "ALTER TABLE orders ADD COLUMN region text NOT NULL",
    ] {
        assert!(!only_adds(breaking), "{breaking}");
    }
    assert!(only_adds(
        "ALTER TABLE orders ADD COLUMN region text NOT NULL DEFAULT 'eu'"
    ));
}
