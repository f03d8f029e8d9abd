//! Batched, idempotent writes of orders and dead letters.
//!
//! Invariant: one call writes a whole batch atomically with one multi-row statement (UNNEST),
//! and writing the same batch twice leaves the database as writing it once: an order row only
//! moves to a strictly higher version, and a dead letter is unique on its source coordinates.

use std::borrow::Cow;

use sqlx::postgres::PgArguments;
use sqlx::{Arguments, Connection, PgPool, Row};
use time::OffsetDateTime;

use super::columns::{ItemsJson, JsonText, column};
use crate::contract::{DeadLetterRecord, OrderEvent};

/// The upsert of a batch of orders, as a literal for `concat!`. An order row only moves to a
/// strictly higher version.
macro_rules! upsert_orders {
    () => {
        r#"
INSERT INTO orders AS o (order_id, version, customer_id, status, currency, total_minor, items,
                         occurred_at, last_event_id, last_event_type,
                         source_topic, source_partition, source_offset, discount_minor, shipping)
SELECT u.order_id, u.version, u.customer_id, u.status, u.currency, u.total_minor, u.items::jsonb,
       u.occurred_at, u.event_id, u.event_type, $1, u.src_partition, u.src_offset,
       u.discount_minor, u.shipping::jsonb
FROM UNNEST($2::uuid[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[],
            $9::timestamptz[], $10::uuid[], $11::text[], $12::int4[], $13::int8[], $14::int8[],
            $15::text[])
     AS u(order_id, version, customer_id, status, currency, total_minor, items,
          occurred_at, event_id, event_type, src_partition, src_offset, discount_minor, shipping)
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
    discount_minor   = EXCLUDED.discount_minor,
    shipping         = EXCLUDED.shipping,
    applied_at       = now()
WHERE o.version < EXCLUDED.version
"#
    };
}

/// The upsert alone: public so the benchmark's ceiling asks PostgreSQL for exactly the same
/// per-row work (bench/src/loaders.rs).
pub const UPSERT_ORDERS: &str = upsert_orders!();

/// A whole batch in one statement: the upsert and the dead letters, each a data-modifying CTE
/// (PostgreSQL runs both to completion, atomically), counting what each changed. One statement
/// is one round trip where a transaction of two statements would be four (BEGIN, two
/// statements, COMMIT), and on a busy machine each round trip waits for the backend to be
/// scheduled again. Either side may be empty arrays. A dead letter is unique on its source coordinates.
const WRITE_BATCH: &str = concat!(
    "WITH applied AS (",
    upsert_orders!(),
    r#"RETURNING 1),
dead AS (
INSERT INTO dead_letters (source_topic, source_partition, source_offset, message_key, payload,
                          payload_size, stage, reason, error, kafka_timestamp, headers)
SELECT $1, u.p, u.o, u.k, u.v, u.size, u.stage, u.reason, u.error, u.ts, u.headers::jsonb
FROM UNNEST($16::int4[], $17::int8[], $18::bytea[], $19::bytea[], $20::int4[], $21::text[],
            $22::text[], $23::text[], $24::timestamptz[], $25::text[])
     AS u(p, o, k, v, size, stage, reason, error, ts, headers)
ON CONFLICT ON CONSTRAINT dead_letters_source_key DO NOTHING
RETURNING 1)
SELECT (SELECT count(*) FROM applied), (SELECT count(*) FROM dead)"#
);

/// A valid event to apply, with the Kafka coordinates it came from.
#[derive(Debug, Clone, Copy)]
pub struct OrderRow<'a> {
    pub event: &'a OrderEvent,
    pub partition: i32,
    pub offset: i64,
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

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes orders and dead letters atomically, in one statement (one round trip).
    /// `orders` must not hold an order id twice (a single INSERT .. ON CONFLICT cannot touch a row
    /// twice); callers keep the highest version.
    pub async fn write(
        &self,
        orders: &[OrderRow<'_>],
        dead: &[DeadLetterRecord<'_>],
    ) -> Result<Written, WriteFailed> {
        if orders.is_empty() && dead.is_empty() {
            return Ok(Written::default());
        }
        let args = batch_arguments(&self.topic, orders, dead).map_err(WriteFailed::unsent)?;
        let mut conn = self.pool.acquire().await.map_err(WriteFailed::unsent)?;
        let result = sqlx::query_with(WRITE_BATCH, args)
            .fetch_one(&mut *conn)
            .await;
        // The send buffer grew to this batch's statement (about 300 bytes a row); kept, every
        // pooled connection would hold one as large as the largest batch it ever sent, through a
        // backlog and after it.
        conn.shrink_buffers();
        let sent = |error| WriteFailed { error, sent: true };
        let row = result.map_err(sent)?;
        let count = |column| Ok::<_, sqlx::Error>(row.try_get::<i64, _>(column)?.max(0) as u64);
        Ok(Written {
            applied: count(0).map_err(sent)?,
            dead_letters_new: count(1).map_err(sent)?,
        })
    }
}

/// A failed [`OrderStore::write`], and whether its statement was sent on a connection: a
/// connection lost after that was cut while the statement ran, where one that could not be had
/// means PostgreSQL is away.
#[derive(Debug)]
pub(crate) struct WriteFailed {
    pub error: sqlx::Error,
    pub sent: bool,
}

impl WriteFailed {
    fn unsent(error: sqlx::Error) -> Self {
        Self { error, sent: false }
    }
}

/// The parameters of one batch write, encoded as PostgreSQL receives them.
///
/// Built as arguments rather than with `Query::bind` so that values borrowed from this call can
/// be encoded, each column straight from the rows (`columns`), and so that the encode buffer is
/// sized once instead of grown by doubling.
fn batch_arguments(
    topic: &str,
    orders: &[OrderRow<'_>],
    dead: &[DeadLetterRecord<'_>],
) -> Result<PgArguments, sqlx::Error> {
    let mut args = PgArguments::default();
    let payloads: usize = dead.iter().map(|d| d.payload.map_or(0, <[u8]>::len)).sum();
    let order_bytes: usize = orders
        .iter()
        .map(|r| ORDER_ROW_BYTES + ITEM_BYTES * r.event.items.len())
        .sum();
    args.reserve(25, order_bytes + dead.len() * 256 + payloads);
    args.add(topic).map_err(sqlx::Error::Encode)?;
    add_orders(&mut args, orders).map_err(sqlx::Error::Encode)?;
    add_dead(&mut args, dead).map_err(sqlx::Error::Encode)?;
    Ok(args)
}

/// About what one order row takes in the encoded arrays: its 14 values with their length
/// headers, plus [`ITEM_BYTES`] per line item in its items' JSON (the benchmark's rows: 331 bytes
/// at 3.03 items). It only sizes the buffer; a larger row (a long sku, v2's shipping) makes it grow.
const ORDER_ROW_BYTES: usize = 160;
const ITEM_BYTES: usize = 64;

/// Encodes a batch's parameters exactly as [`OrderStore::write`] does, without sending them;
/// returns how many parameters there are. For `bench/src/bin/hot_path.rs`, which counts what this
/// costs.
pub fn encode_batch(topic: &str, orders: &[OrderRow<'_>], dead: &[DeadLetterRecord<'_>]) -> usize {
    batch_arguments(topic, orders, dead).map_or(0, |a| a.len())
}

type Encoded = Result<(), sqlx::error::BoxDynError>;

/// The order arrays (`$2` to `$15`; `$1` is the topic).
fn add_orders(args: &mut PgArguments, rows: &[OrderRow<'_>]) -> Encoded {
    args.add(column(rows, |r| r.event.order_id))?;
    args.add(column(rows, |r| r.event.version))?;
    args.add(column(rows, |r| r.event.customer_id.as_str()))?;
    args.add(column(rows, |r| r.event.status.as_str()))?;
    args.add(column(rows, |r| r.event.currency.as_str()))?;
    args.add(column(rows, |r| r.event.total_minor))?;
    args.add(column(rows, |r| ItemsJson(r.event)))?;
    args.add(column(rows, |r| r.event.occurred_at))?;
    args.add(column(rows, |r| r.event.event_id))?;
    args.add(column(rows, |r| r.event.event_type.as_str()))?;
    args.add(column(rows, |r| r.partition))?;
    args.add(column(rows, |r| r.offset))?;
    args.add(column(rows, |r| r.event.discount_minor))?;
    // Contract v2's shipping as JSON, NULL for the rows without one.
    args.add(column(rows, |r| JsonText(r.event.shipping.as_deref())))
}

/// The dead-letter arrays (`$16` to `$25`), after the orders'.
fn add_dead(args: &mut PgArguments, rows: &[DeadLetterRecord<'_>]) -> Encoded {
    args.add(column(rows, |r| r.partition))?;
    args.add(column(rows, |r| r.offset))?;
    args.add(column(rows, |r| r.key))?;
    args.add(column(rows, |r| r.payload))?;
    args.add(column(rows, |r| {
        i32::try_from(r.payload_size).unwrap_or(i32::MAX)
    }))?;
    args.add(column(rows, |r| r.reason.stage().as_str()))?;
    args.add(column(rows, |r| r.reason.as_str()))?;
    args.add(column(rows, |r| {
        storable_error(r.error, kafka_timestamp(r))
    }))?;
    args.add(column(rows, |r| kafka_timestamp(r).and_then(|(_, t)| t)))?;
    args.add(column(rows, |r| r.headers.to_json()))
}

/// A dead letter's Kafka timestamp in milliseconds, with what `timestamptz` makes of it.
fn kafka_timestamp(r: &DeadLetterRecord<'_>) -> Option<(i64, Option<OffsetDateTime>)> {
    r.kafka_timestamp_ms.map(|ms| (ms, storable_timestamp(ms)))
}

/// The first instant `timestamptz` holds: 4714-11-24 BC (astronomical year -4713), midnight UTC.
/// Its last (294276 AD) is beyond any `OffsetDateTime`.
const PG_TIMESTAMP_MIN: OffsetDateTime = time::macros::datetime!(-4713-11-24 0:00 UTC);

/// A Kafka timestamp as `timestamptz`, or `None` when PostgreSQL cannot hold it (a producer
/// may set any 64-bit CreateTime; PostgreSQL refuses the whole statement, SQLSTATE 22008).
fn storable_timestamp(ms: i64) -> Option<OffsetDateTime> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    (t >= PG_TIMESTAMP_MIN).then_some(t)
}

/// A dead letter's `error` as PostgreSQL text: NUL escaped (text cannot hold it; reasons are
/// built from escaped values, this is the last line of defence for text quoted from elsewhere),
/// and a note when the Kafka timestamp could not be stored.
fn storable_error(error: &str, timestamp: Option<(i64, Option<OffsetDateTime>)>) -> Cow<'_, str> {
    let mut text = if error.contains('\0') {
        Cow::Owned(error.replace('\0', "\\0"))
    } else {
        Cow::Borrowed(error)
    };
    if let Some((ms, None)) = timestamp {
        text.to_mut().push_str(&format!(
            " (Kafka timestamp {ms} ms is outside what PostgreSQL stores: kafka_timestamp is NULL)"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kafka_timestamp_before_timestamptz_s_first_day_is_stored_as_null_and_noted() {
        let ancient = -300_000_000_000_000;
        assert_eq!(storable_timestamp(ancient), None);
        assert_eq!(storable_timestamp(i64::MAX), None);
        let first_day = (PG_TIMESTAMP_MIN.unix_timestamp_nanos() / 1_000_000) as i64;
        assert_eq!(storable_timestamp(first_day), Some(PG_TIMESTAMP_MIN));
        assert_eq!(storable_timestamp(first_day - 1), None);
        let noted = storable_error("bad\0json", Some((ancient, None)));
        assert_eq!(
            noted,
            "bad\\0json (Kafka timestamp -300000000000000 ms is outside what PostgreSQL \
             stores: kafka_timestamp is NULL)"
        );
        assert!(matches!(
            storable_error("fine", Some((0, storable_timestamp(0)))),
            Cow::Borrowed("fine")
        ));
    }
}
