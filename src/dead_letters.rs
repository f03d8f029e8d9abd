//! The `dead-letters` command: list dead letters, and replay them after a fix.
//!
//! Invariant: replay re-publishes the exact stored bytes (key and value) and marks a dead letter
//! replayed only once the broker acknowledged it; dead letters whose stored bytes are not a whole
//! message (a tombstone has none, an oversized value was cut) are never replayed, while a refused
//! row whose original Kafka no longer had is replayed as its event re-encoded. The
//! worker then handles the re-published message like any other: applied if it is now accepted,
//! dead-lettered again (at its new offset) if not.

use std::fmt::Write as _;
use std::time::Duration;

use futures_util::future::join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde_json::json;
use sqlx::PgPool;

use crate::config::{
    DeadLetterFilter, DeadLetterListConfig, DeadLetterPurgeConfig, DeadLetterReplayConfig,
};
use crate::contract::headers;
use crate::db::dead_letters::{self, DeadLetter, Purge, Selection};
use crate::db::{self};
use crate::error::Error;
use crate::kafka::{Login, client_config};

/// Header on a replayed message naming the dead letter it came from.
pub const HEADER_REPLAY_OF: &str = "order_worker.replay.of";

/// Dead letters published per round before their marks are written.
const CHUNK: usize = 500;

impl From<&DeadLetterFilter> for Selection {
    fn from(f: &DeadLetterFilter) -> Self {
        Selection {
            reason: f.reason.clone(),
            since: f.since,
            ids: f.ids.clone(),
            include_replayed: f.include_replayed,
            limit: f.limit,
        }
    }
}

/// Deletes (or with --dry-run counts) the dead letters created before `--before`.
pub async fn purge(cfg: &DeadLetterPurgeConfig) -> Result<u64, Error> {
    let pool = db::pool(&cfg.db, 1)?;
    let which = Purge {
        before: cfg.before,
        reason: cfg.reason.clone(),
        replayed_only: cfg.replayed_only,
    };
    Ok(dead_letters::purge(&pool, &which, cfg.dry_run).await?)
}

pub async fn list(cfg: &DeadLetterListConfig) -> Result<String, Error> {
    let pool = db::pool(&cfg.db, 1)?;
    let rows = dead_letters::select(&pool, &Selection::from(&cfg.filter)).await?;
    let mut out = String::new();
    if cfg.json {
        for r in &rows {
            let _ = writeln!(out, "{}", as_json(r));
        }
        return Ok(out);
    }
    let _ = writeln!(
        out,
        "{:>8}  {:<20}  {:<26}  {:<9}  {:<24}  {:<20}  ERROR",
        "ID", "CREATED", "REASON", "STAGE", "SOURCE", "REPLAYED"
    );
    for r in &rows {
        let source = format!(
            "{}/{}@{}",
            r.source_topic, r.source_partition, r.source_offset
        );
        let replayed = r.replayed_at.map_or_else(|| "-".to_owned(), short_time);
        let error: String = r.error.chars().take(100).collect();
        let _ = writeln!(
            out,
            "{:>8}  {:<20}  {:<26}  {:<9}  {:<24}  {:<20}  {error}",
            r.id,
            short_time(r.created_at),
            r.reason,
            r.stage,
            source,
            replayed
        );
    }
    let _ = write!(out, "{} dead letter(s)", rows.len());
    Ok(out)
}

fn short_time(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(&f).unwrap_or_default()
}

fn as_json(r: &DeadLetter) -> serde_json::Value {
    let text = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    json!({
        "id": r.id, "source_topic": r.source_topic, "source_partition": r.source_partition,
        "source_offset": r.source_offset, "reason": r.reason, "stage": r.stage, "error": r.error,
        "key": text(&r.message_key), "payload": text(&r.payload), "payload_size": r.payload_size,
        "created_at": r.created_at.unix_timestamp(), "replayed": r.replayed_at.is_some(),
        "headers": r.headers,
    })
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub published: u64,
    pub failed: u64,
    /// (id, why) of the dead letters that cannot be replayed.
    pub skipped: Vec<(i64, &'static str)>,
}

pub async fn replay(cfg: &DeadLetterReplayConfig) -> Result<Replayed, Error> {
    let pool = db::pool(&cfg.db, 1)?;
    let rows = dead_letters::select(&pool, &Selection::from(&cfg.filter)).await?;
    let mut report = Replayed::default();
    let mut ready = Vec::new();
    for r in rows {
        match (&r.payload, r.is_complete()) {
            (None, _) => report
                .skipped
                .push((r.id, "tombstone: there is no value to replay")),
            (Some(_), false) => report.skipped.push((
                r.id,
                "value was cut at MAX_PAYLOAD_BYTES; the original is only in Kafka",
            )),
            (Some(_), true) => ready.push(r),
        }
    }
    if cfg.dry_run {
        report.published = 0;
        report
            .skipped
            .extend(ready.iter().map(|r| (r.id, "dry run")));
        return Ok(report);
    }
    let mut config = client_config(&cfg.kafka.brokers, &cfg.kafka.properties);
    config.set("acks", "all");
    let producer: FutureProducer<Login> = config.create_with_context(Login)?;
    for chunk in ready.chunks(CHUNK) {
        let acked = publish(&producer, cfg.topic.as_deref(), chunk).await;
        report.failed += (chunk.len() - acked.len()) as u64;
        report.published += mark(&pool, &acked).await?;
    }
    Ok(report)
}

/// Publishes a chunk; returns the ids the broker acknowledged.
async fn publish(
    producer: &FutureProducer<Login>,
    topic: Option<&str>,
    rows: &[DeadLetter],
) -> Vec<i64> {
    let sends = rows.iter().map(|r| async move {
        let id = r.id.to_string();
        // The original's headers first, in their order (trace context, ids), then the replay's.
        let original = r
            .headers
            .as_ref()
            .map(headers::from_json)
            .unwrap_or_default();
        let mut headers = OwnedHeaders::new_with_capacity(original.len() + 1);
        for (key, value) in &original {
            headers = headers.insert(Header {
                key: key.as_str(),
                value: value.as_deref(),
            });
        }
        let headers = headers.insert(Header {
            key: HEADER_REPLAY_OF,
            value: Some(id.as_bytes()),
        });
        let mut record =
            FutureRecord::<[u8], [u8]>::to(topic.unwrap_or(&r.source_topic)).headers(headers);
        if let Some(k) = &r.message_key {
            record = record.key(k);
        }
        if let Some(p) = &r.payload {
            record = record.payload(p);
        }
        producer
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map(|_| r.id)
            .map_err(
                |(e, _)| tracing::warn!(id = r.id, error = %e, "replay of a dead letter failed"),
            )
    });
    join_all(sends)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect()
}

async fn mark(pool: &PgPool, ids: &[i64]) -> Result<u64, Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(dead_letters::mark_replayed(pool, ids).await?)
}
