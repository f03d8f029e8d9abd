//! The ceiling loaders: the stream's rows into the identical `orders` table by the fastest
//! methods PostgreSQL offers (the worker's UNNEST upsert over several connections, COPY into a
//! staging table + one merge, COPY of the final rows only).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::time::{Duration, Instant};

use order_worker::contract::OrderEvent;
// The worker's own upsert, so the ceiling pays exactly the per-row work the worker asks for.
use order_worker::db::UPSERT_ORDERS;
use sqlx::{Connection, Executor, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

const COLUMNS: &str = "order_id, version, customer_id, status, currency, total_minor, items, \
     occurred_at, last_event_id, last_event_type, source_topic, source_partition, source_offset";

/// One valid event with the Kafka coordinates it was published at: one row offered to `orders`.
pub struct Row {
    pub event: OrderEvent,
    pub partition: i32,
    pub offset: i64,
}

/// The parameters of one UNNEST upsert, built before the clock starts.
struct Batch {
    ids: Vec<Uuid>,
    versions: Vec<i64>,
    customers: Vec<String>,
    statuses: Vec<&'static str>,
    currencies: Vec<String>,
    totals: Vec<i64>,
    items: Vec<String>,
    occurred: Vec<OffsetDateTime>,
    event_ids: Vec<Uuid>,
    event_types: Vec<&'static str>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    discounts: Vec<Option<i64>>,
    shipping: Vec<Option<String>>,
}

/// The highest version of each order among `rows` (the first one seen on a tie), in no order.
fn latest_per_order<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Vec<&'a Row> {
    let mut best: HashMap<Uuid, &Row> = HashMap::new();
    for r in rows {
        let slot = best.entry(r.event.order_id).or_insert(r);
        if r.event.version > slot.event.version {
            *slot = r;
        }
    }
    best.into_values().collect()
}

/// Like the worker's batch plan: the highest version of each order in the batch, by order id.
fn batch_of(rows: &[&Row]) -> Batch {
    let mut chosen = latest_per_order(rows.iter().copied());
    chosen.sort_unstable_by_key(|r| r.event.order_id);
    let mut b = Batch {
        ids: Vec::new(),
        versions: Vec::new(),
        customers: Vec::new(),
        statuses: Vec::new(),
        currencies: Vec::new(),
        totals: Vec::new(),
        items: Vec::new(),
        occurred: Vec::new(),
        event_ids: Vec::new(),
        event_types: Vec::new(),
        partitions: Vec::new(),
        offsets: Vec::new(),
        discounts: Vec::new(),
        shipping: Vec::new(),
    };
    for r in chosen {
        let e = &r.event;
        b.ids.push(e.order_id);
        b.versions.push(e.version);
        b.customers.push(e.customer_id.to_string());
        b.statuses.push(e.status.as_str());
        b.currencies.push(e.currency.to_string());
        b.totals.push(e.total_minor);
        b.items.push(e.items_json());
        b.occurred.push(e.occurred_at);
        b.event_ids.push(e.event_id);
        b.event_types.push(e.event_type.as_str());
        b.partitions.push(r.partition);
        b.offsets.push(r.offset);
        b.discounts.push(e.discount_minor);
        b.shipping.push(
            e.shipping
                .as_ref()
                .map(|s| serde_json::to_string(s).expect("JSON")),
        );
    }
    b
}

async fn upsert(c: &mut PgConnection, topic: &str, b: &Batch) {
    sqlx::query(UPSERT_ORDERS)
        .bind(topic)
        .bind(b.ids.as_slice())
        .bind(b.versions.as_slice())
        .bind(b.customers.as_slice())
        .bind(b.statuses.as_slice())
        .bind(b.currencies.as_slice())
        .bind(b.totals.as_slice())
        .bind(b.items.as_slice())
        .bind(b.occurred.as_slice())
        .bind(b.event_ids.as_slice())
        .bind(b.event_types.as_slice())
        .bind(b.partitions.as_slice())
        .bind(b.offsets.as_slice())
        .bind(b.discounts.as_slice())
        .bind(b.shipping.as_slice())
        .execute(c)
        .await
        .expect("ceiling upsert");
}

/// Every row, in stream order, as UNNEST upserts of `batch_rows` rows over `connections`
/// connections (rows routed by order id, as the worker routes them to its processors).
/// Returns the time from the first statement to the last commit, and the connections (still
/// open, so their backends' CPU time can be read).
pub async fn load_unnest(
    url: &str,
    topic: &str,
    rows: &[Row],
    connections: usize,
    batch_rows: usize,
) -> (Duration, Vec<PgConnection>) {
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let mut lanes: Vec<Vec<&Row>> = vec![Vec::new(); connections];
    for r in rows {
        lanes[(hasher.hash_one(r.event.order_id) % connections as u64) as usize].push(r);
    }
    let plans: Vec<Vec<Batch>> = lanes
        .iter()
        .map(|lane| lane.chunks(batch_rows).map(batch_of).collect())
        .collect();
    let mut conns = Vec::new();
    for _ in 0..connections {
        conns.push(PgConnection::connect(url).await.expect("connect"));
    }
    // Prepare the statement on every connection first (the worker's connections are warm too).
    for c in &mut conns {
        let _ = c.prepare(UPSERT_ORDERS).await;
    }
    let started = Instant::now();
    let topic = topic.to_owned();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut c, plan) in conns.into_iter().zip(plans) {
        let topic = topic.clone();
        tasks.spawn(async move {
            for b in &plan {
                upsert(&mut c, &topic, b).await;
            }
            c
        });
    }
    let mut done = Vec::new();
    while let Some(c) = tasks.join_next().await {
        done.push(c.expect("ceiling task"));
    }
    (started.elapsed(), done)
}

/// COPY text format: backslash, tab, newline and carriage return escaped.
fn copy_text(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn copy_lines(rows: &[&Row], topic: &str) -> Vec<String> {
    use std::fmt::Write;
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let mut chunks = Vec::new();
    let mut buf = String::with_capacity(1 << 20);
    for r in rows {
        let e = &r.event;
        let _ = write!(buf, "{}\t{}\t", e.order_id, e.version);
        copy_text(&mut buf, &e.customer_id);
        let _ = write!(buf, "\t{}\t", e.status.as_str());
        copy_text(&mut buf, &e.currency);
        let _ = write!(buf, "\t{}\t", e.total_minor);
        copy_text(&mut buf, &e.items_json());
        let occurred = e.occurred_at.format(rfc3339).expect("format timestamp");
        let _ = write!(
            buf,
            "\t{occurred}\t{}\t{}\t",
            e.event_id,
            e.event_type.as_str()
        );
        copy_text(&mut buf, topic);
        let _ = writeln!(buf, "\t{}\t{}", r.partition, r.offset);
        if buf.len() >= 1 << 20 {
            chunks.push(std::mem::replace(&mut buf, String::with_capacity(1 << 20)));
        }
    }
    if !buf.is_empty() {
        chunks.push(buf);
    }
    chunks
}

async fn copy_in(c: &mut PgConnection, table: &str, chunks: &[String]) -> u64 {
    let mut copy = c
        .copy_in_raw(&format!("COPY {table} ({COLUMNS}) FROM STDIN"))
        .await
        .expect("start COPY");
    for chunk in chunks {
        copy.send(chunk.as_bytes()).await.expect("COPY data");
    }
    copy.finish().await.expect("finish COPY")
}

/// Every row COPYed into a temporary staging table (no WAL, no index), then the highest version
/// of each order moved into `orders` in one INSERT ... SELECT DISTINCT ON. Same final state.
pub async fn load_copy_merge(
    url: &str,
    topic: &str,
    rows: &[Row],
) -> (Duration, Vec<PgConnection>) {
    let all: Vec<&Row> = rows.iter().collect();
    let chunks = copy_lines(&all, topic);
    let mut c = PgConnection::connect(url).await.expect("connect");
    let started = Instant::now();
    c.execute("CREATE TEMP TABLE staging (LIKE orders INCLUDING DEFAULTS)")
        .await
        .expect("staging table");
    copy_in(&mut c, "staging", &chunks).await;
    c.execute(
        format!(
            "INSERT INTO orders ({COLUMNS}) \
             SELECT DISTINCT ON (order_id) {COLUMNS} FROM staging \
             ORDER BY order_id, version DESC, source_partition, source_offset"
        )
        .as_str(),
    )
    .await
    .expect("merge staging");
    (started.elapsed(), vec![c])
}

/// Only the final row of each order (deduplicated here, untimed), COPYed straight into `orders`.
/// Not the same work as the stream (a streaming consumer cannot know a newer version is coming):
/// shown for scale. Returns the number of rows, the time and the (open) connection.
pub async fn load_copy_final(
    url: &str,
    topic: &str,
    rows: &[Row],
) -> (usize, Duration, Vec<PgConnection>) {
    let finals = latest_per_order(rows);
    let chunks = copy_lines(&finals, topic);
    let mut c = PgConnection::connect(url).await.expect("connect");
    let started = Instant::now();
    copy_in(&mut c, "orders", &chunks).await;
    (finals.len(), started.elapsed(), vec![c])
}
