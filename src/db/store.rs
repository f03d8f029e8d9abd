//! Batched, idempotent writes of orders and dead letters.
//!
//! Invariant: one call writes a whole batch atomically with multi-row statements (UNNEST), and
//! writing the same batch twice leaves the database as writing it once: an order row only moves
//! to a strictly higher version, and a dead letter is unique on its source coordinates.

use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::contract::{OrderEvent, Reason};

/// The upsert of a batch of orders: public so the benchmark's ceiling asks PostgreSQL for exactly
/// the same per-row work (examples/bench/loaders.rs).
pub const UPSERT_ORDERS: &str = r#"
INSERT INTO orders AS o (order_id, version, customer_id, status, currency, total_minor, items,
                         occurred_at, last_event_id, last_event_type,
                         source_topic, source_partition, source_offset)
SELECT u.order_id, u.version, u.customer_id, u.status, u.currency, u.total_minor, u.items::jsonb,
       u.occurred_at, u.event_id, u.event_type, $1, u.src_partition, u.src_offset
FROM UNNEST($2::uuid[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[],
            $9::timestamptz[], $10::uuid[], $11::text[], $12::int4[], $13::int8[])
     AS u(order_id, version, customer_id, status, currency, total_minor, items,
          occurred_at, event_id, event_type, src_partition, src_offset)
ON CONFLICT (order_id) DO UPDATE SET
    version          = EXCLUDED.version,
    customer_id      = EXCLUDED.customer_id,
    status           = EXCLUDED.status,
    currency         = EXCLUDED.currency,
    total_minor      = EXCLUDED.total_minor,
    items            = EXCLUDED.items,
    occurred_at      = EXCLUDED.occurred_at,
    last_event_id    = EXCLUDED.last_event_id,
    last_event_type  = EXCLUDED.last_event_type,
    source_topic     = EXCLUDED.source_topic,
    source_partition = EXCLUDED.source_partition,
    source_offset    = EXCLUDED.source_offset,
    applied_at       = now()
WHERE o.version < EXCLUDED.version
"#;

const INSERT_DEAD_LETTERS: &str = r#"
INSERT INTO dead_letters (source_topic, source_partition, source_offset, message_key, payload,
                          payload_size, stage, reason, error, kafka_timestamp)
SELECT $1, u.*
FROM UNNEST($2::int4[], $3::int8[], $4::bytea[], $5::bytea[], $6::int4[], $7::text[], $8::text[],
            $9::text[], $10::timestamptz[]) AS u
ON CONFLICT ON CONSTRAINT dead_letters_source_key DO NOTHING
"#;

/// A valid event to apply, with the Kafka coordinates it came from.
#[derive(Debug, Clone, Copy)]
pub struct OrderRow<'a> {
    pub event: &'a OrderEvent,
    pub partition: i32,
    pub offset: i64,
}

/// A message that will not be applied.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetterRow<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub payload_size: usize,
    pub reason: Reason,
    pub error: &'a str,
    pub kafka_timestamp: Option<OffsetDateTime>,
}

/// What a write changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Order rows inserted or moved to a higher version.
    pub applied: u64,
    /// Dead letters stored for the first time (a redelivered one is already there).
    pub dead_letters_new: u64,
}

#[derive(Debug, Clone)]
pub struct OrderStore {
    pool: PgPool,
    topic: String,
}

impl OrderStore {
    pub fn new(pool: PgPool, topic: impl Into<String>) -> Self {
        Self {
            pool,
            topic: topic.into(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes orders and dead letters atomically. `orders` must not hold an order id twice (a
    /// single INSERT .. ON CONFLICT cannot touch a row twice); callers keep the highest version.
    pub async fn write(
        &self,
        orders: &[OrderRow<'_>],
        dead: &[DeadLetterRow<'_>],
    ) -> Result<Written, sqlx::Error> {
        // One statement is atomic by itself; a transaction (two more round trips) is only
        // needed when both tables change.
        let mut written = Written::default();
        match (orders.is_empty(), dead.is_empty()) {
            (true, true) => {}
            (false, true) => written.applied = self.upsert(&self.pool, orders).await?,
            (true, false) => written.dead_letters_new = self.bury(&self.pool, dead).await?,
            (false, false) => {
                let mut tx: Transaction<'_, Postgres> = self.pool.begin().await?;
                written.applied = self.upsert(&mut *tx, orders).await?;
                written.dead_letters_new = self.bury(&mut *tx, dead).await?;
                tx.commit().await?;
            }
        }
        Ok(written)
    }

    async fn upsert<'e, E>(&self, executor: E, rows: &[OrderRow<'_>]) -> Result<u64, sqlx::Error>
    where
        E: sqlx::Executor<'e, Database = Postgres>,
    {
        let n = rows.len();
        let mut ids = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut customers = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut currencies = Vec::with_capacity(n);
        let mut totals = Vec::with_capacity(n);
        let mut items = Vec::with_capacity(n);
        let mut occurred = Vec::with_capacity(n);
        let mut event_ids: Vec<Uuid> = Vec::with_capacity(n);
        let mut event_types = Vec::with_capacity(n);
        let mut partitions = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n);
        for r in rows {
            let e = r.event;
            ids.push(e.order_id);
            versions.push(e.version);
            customers.push(e.customer_id.as_str());
            statuses.push(e.status.as_str());
            currencies.push(e.currency.as_str());
            totals.push(e.total_minor);
            items.push(e.items_json());
            occurred.push(e.occurred_at);
            event_ids.push(e.event_id);
            event_types.push(e.event_type.as_str());
            partitions.push(r.partition);
            offsets.push(r.offset);
        }
        let done = sqlx::query(UPSERT_ORDERS)
            .bind(&self.topic)
            .bind(ids)
            .bind(versions)
            .bind(customers)
            .bind(statuses)
            .bind(currencies)
            .bind(totals)
            .bind(items)
            .bind(occurred)
            .bind(event_ids)
            .bind(event_types)
            .bind(partitions)
            .bind(offsets)
            .execute(executor)
            .await?;
        Ok(done.rows_affected())
    }

    async fn bury<'e, E>(&self, executor: E, rows: &[DeadLetterRow<'_>]) -> Result<u64, sqlx::Error>
    where
        E: sqlx::Executor<'e, Database = Postgres>,
    {
        let n = rows.len();
        let mut partitions = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut sizes = Vec::with_capacity(n);
        let mut stages = Vec::with_capacity(n);
        let mut reasons = Vec::with_capacity(n);
        let mut errors = Vec::with_capacity(n);
        let mut timestamps = Vec::with_capacity(n);
        for r in rows {
            partitions.push(r.partition);
            offsets.push(r.offset);
            keys.push(r.key);
            payloads.push(r.payload);
            sizes.push(i32::try_from(r.payload_size).unwrap_or(i32::MAX));
            stages.push(r.reason.stage().as_str());
            reasons.push(r.reason.as_str());
            // PostgreSQL text cannot hold NUL; reasons are built from escaped values, this is the
            // last line of defence for messages quoted from elsewhere.
            errors.push(r.error.replace('\0', "\\0"));
            timestamps.push(r.kafka_timestamp);
        }
        let done = sqlx::query(INSERT_DEAD_LETTERS)
            .bind(&self.topic)
            .bind(partitions)
            .bind(offsets)
            .bind(keys)
            .bind(payloads)
            .bind(sizes)
            .bind(stages)
            .bind(reasons)
            .bind(errors)
            .bind(timestamps)
            .execute(executor)
            .await?;
        Ok(done.rows_affected())
    }
}
