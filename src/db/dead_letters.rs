//! Reading and marking dead letters, for the `dead-letters` command.
//!
//! Invariant: a dead letter is marked replayed only after its re-publication was acknowledged,
//! and the selection skips replayed ones unless asked; so a replay run can be repeated after any
//! failure without publishing anything twice except what was in flight when it failed (and the
//! worker applies a re-published event idempotently).

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::contract::Reason;

/// A stored dead letter.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub message_key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub payload_size: i32,
    pub stage: String,
    pub reason: String,
    pub error: String,
    pub kafka_timestamp: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub replayed_at: Option<OffsetDateTime>,
    /// The original's Kafka headers (`contract::headers::from_json` reads them).
    pub headers: Option<serde_json::Value>,
}

impl DeadLetter {
    /// Whether `payload` is a whole message: as it was published, or, for a row PostgreSQL
    /// refused whose original Kafka no longer had, its valid event re-encoded (its size then
    /// differs from `payload_size`, the original's). Only an oversized value is stored cut.
    pub fn is_complete(&self) -> bool {
        self.payload.as_ref().is_some_and(|p| {
            p.len() as i64 == i64::from(self.payload_size)
                || self.reason == Reason::DbRejected.as_str()
        })
    }
}

/// Which dead letters a command works on.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub reason: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub ids: Vec<i64>,
    pub include_replayed: bool,
    pub limit: i64,
}

const SELECT: &str = r#"
SELECT id, source_topic, source_partition, source_offset, message_key, payload, payload_size,
       stage, reason, error, kafka_timestamp, created_at, replayed_at, headers
FROM dead_letters
WHERE ($1::text IS NULL OR reason = $1)
  AND ($2::timestamptz IS NULL OR created_at >= $2)
  AND (cardinality($3::int8[]) = 0 OR id = ANY($3))
  AND ($4 OR replayed_at IS NULL)
ORDER BY id
LIMIT $5
"#;

pub async fn select(pool: &PgPool, s: &Selection) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(SELECT)
        .bind(&s.reason)
        .bind(s.since)
        .bind(&s.ids)
        .bind(s.include_replayed)
        .bind(s.limit)
        .fetch_all(pool)
        .await
}

/// Dead letters deleted per statement: a purge of millions holds no lock for long and never
/// builds one huge transaction.
const PURGE_CHUNK: i64 = 10_000;

const PURGE: &str = r#"
WITH doomed AS (
    SELECT id FROM dead_letters
    WHERE created_at < $1
      AND ($2::text IS NULL OR reason = $2)
      AND (NOT $3 OR replayed_at IS NOT NULL)
    ORDER BY id
    LIMIT $4
)
DELETE FROM dead_letters WHERE id IN (SELECT id FROM doomed)
"#;

const COUNT_PURGE: &str = r#"
SELECT count(*) FROM dead_letters
WHERE created_at < $1
  AND ($2::text IS NULL OR reason = $2)
  AND (NOT $3 OR replayed_at IS NOT NULL)
"#;

/// Which dead letters a purge deletes.
#[derive(Debug, Clone)]
pub struct Purge {
    pub before: OffsetDateTime,
    pub reason: Option<String>,
    pub replayed_only: bool,
}

/// Deletes the dead letters `purge` names, in chunks; returns how many. With `dry_run`, only
/// counts them.
pub async fn purge(pool: &PgPool, purge: &Purge, dry_run: bool) -> Result<u64, sqlx::Error> {
    if dry_run {
        let n: i64 = sqlx::query_scalar(COUNT_PURGE)
            .bind(purge.before)
            .bind(&purge.reason)
            .bind(purge.replayed_only)
            .fetch_one(pool)
            .await?;
        return Ok(n as u64);
    }
    let mut deleted = 0;
    loop {
        let done = sqlx::query(PURGE)
            .bind(purge.before)
            .bind(&purge.reason)
            .bind(purge.replayed_only)
            .bind(PURGE_CHUNK)
            .execute(pool)
            .await?
            .rows_affected();
        deleted += done;
        if done < PURGE_CHUNK as u64 {
            return Ok(deleted);
        }
    }
}

/// How many dead letters wait to be replayed, by reason (read through the partial index
/// `dead_letters_unreplayed_idx`).
pub async fn unreplayed_by_reason(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT reason, count(*) FROM dead_letters WHERE replayed_at IS NULL GROUP BY reason",
    )
    .fetch_all(pool)
    .await
}

pub async fn mark_replayed(pool: &PgPool, ids: &[i64]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("UPDATE dead_letters SET replayed_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
