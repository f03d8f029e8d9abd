//! How a processor makes one batch durable: one statement for the whole batch, split when it
//! cannot finish as it is (PostgreSQL cancels it for running too long, or something between
//! cuts its connection while it runs), and, when PostgreSQL refuses a row, the orders written
//! one at a time to find the refused ones.
//!
//! Invariant: the outcome is the one applying the batch's events one at a time would give: an
//! order whose newest version is refused falls back to its next lower version in the batch, and
//! each refused event becomes a dead letter carrying its original bytes (read back from Kafka:
//! its offset is not committed, so Kafka still has it) or, when they cannot be had, its event
//! re-encoded. A transient failure is retried, never skipped; nothing here retries a statement
//! that can never succeed.

use std::future::Future;
use std::pin::Pin;

use tracing::warn;

use crate::contract::DeadLetterRecord;
use crate::contract::{Reason, Rejection};
use crate::db::{FailureKind, OrderRow, WriteFailed, Written};
use crate::error::Error;
use crate::pipeline::processor::Processor;
use crate::pipeline::publish::Publisher;
use crate::pipeline::refused::{OriginalReader, READ_BACK_LIMIT, Refused};
use crate::pipeline::{Decoded, named, plan, versions_by_order};
use crate::retry::{self, Verdict};

enum WriteError {
    /// PostgreSQL refused the data (SQLSTATE classes 22, 23): the same statement always fails.
    Rejected(sqlx::Error),
    /// The statement cannot finish as it is: PostgreSQL cancelled it for running longer than
    /// `statement_timeout`, or its session ended while it ran [`CUTS_BEFORE_SPLIT`] times in a
    /// row while PostgreSQL answered its ping (a pooler's `query_timeout` cuts the connection of
    /// a statement that runs too long).
    TooLong(sqlx::Error),
    Aborted,
}

/// What writing a batch did.
pub(crate) struct Outcome {
    pub stats: Written,
    /// Valid events PostgreSQL refused (now dead letters).
    pub refused: u64,
}

type Boxed<'f> = Pin<Box<dyn Future<Output = Result<Written, WriteError>> + Send + 'f>>;

impl Processor {
    /// Writes the batch; if PostgreSQL refuses it, isolates the refused rows as dead letters.
    /// With a dead-letter topic, the batch's dead letters are then published there too.
    pub(crate) async fn write_durably(&self, batch: &[Decoded]) -> Result<Outcome, Error> {
        let plan = plan(batch);
        let (stats, refusals) = match self.write_split(&plan.orders, &plan.dead).await {
            Ok(stats) => (stats, Vec::new()),
            Err(WriteError::Aborted) => return Err(Error::Aborted),
            Err(WriteError::Rejected(e) | WriteError::TooLong(e)) => {
                self.isolate_refused(batch, &plan.orders, &plan.dead, e)
                    .await?
            }
        };
        if let Some(topic) = &self.dead_letter_topic {
            let mut dead = plan.dead.clone();
            dead.extend(refusals.iter().map(|r| r.dead_letter(batch)));
            if !dead.is_empty() {
                let publisher = Publisher {
                    topic,
                    schedule: self.settings.retry,
                    abort: &self.abort,
                    metrics: &self.metrics,
                    health: &self.health,
                    lane: self.lane,
                };
                publisher.publish(&dead).await?;
            }
        }
        Ok(Outcome {
            stats,
            refused: refusals.len() as u64,
        })
    }

    /// Writes each order of a refused batch alone, falling back through the order's lower
    /// versions in the batch while PostgreSQL refuses the higher ones; every refused event
    /// becomes a dead letter, written with the batch's own.
    async fn isolate_refused(
        &self,
        batch: &[Decoded],
        orders: &[OrderRow<'_>],
        dead: &[DeadLetterRecord<'_>],
        err: sqlx::Error,
    ) -> Result<(Written, Vec<Refused>), Error> {
        warn!(error = %err, rows = orders.len(),
              "PostgreSQL refused the batch; writing its orders one by one to isolate the refused ones");
        let versions = versions_by_order(batch);
        let mut stats = Written::default();
        let mut refusals: Vec<(usize, Rejection)> = Vec::new();
        for order in orders {
            for &i in versions.get(&order.event.order_id).into_iter().flatten() {
                let (d, Ok(event)) = (&batch[i], &batch[i].outcome) else {
                    continue;
                };
                let row = OrderRow {
                    event,
                    partition: d.envelope.position.partition,
                    offset: d.envelope.position.offset,
                };
                match self.write_retrying(std::slice::from_ref(&row), &[]).await {
                    Ok(w) => {
                        stats.applied += w.applied;
                        break;
                    }
                    Err(WriteError::Aborted) => return Err(Error::Aborted),
                    Err(WriteError::Rejected(e) | WriteError::TooLong(e)) => {
                        refusals.push((i, Rejection::new(Reason::DbRejected, e.to_string())));
                    }
                }
            }
        }
        if let Some((_, first)) = refusals.first() {
            let at = |i: usize| batch[i].envelope.position;
            let coordinates = named(
                refusals
                    .iter()
                    .map(|&(i, _)| (at(i).partition, at(i).offset)),
            );
            warn!(lane = self.lane, events = refusals.len(), %coordinates, error = %first.detail,
                  "events refused by PostgreSQL; dead-lettering them");
        }
        let reader = OriginalReader {
            originals: &self.originals,
            schedule: self.settings.retry,
            abort: &self.abort,
            lane: self.lane,
            limit: READ_BACK_LIMIT,
        };
        let refusals = reader.read(batch, refusals).await?;
        self.health.write_advanced(self.lane);
        let mut letters = dead.to_vec();
        letters.extend(refusals.iter().map(|r| r.dead_letter(batch)));
        match self.write_split(&[], &letters).await {
            Ok(w) => stats.dead_letters_new = w.dead_letters_new,
            Err(WriteError::Aborted) => return Err(Error::Aborted),
            // Dead letters are bytes and text made storable (`db::store`); PostgreSQL refusing
            // them means the table itself was changed, and stopping (not committing) is the
            // only way to lose nothing.
            Err(WriteError::Rejected(e) | WriteError::TooLong(e)) => {
                return Err(Error::TaskFailed(format!(
                    "PostgreSQL refused dead letters: {e}"
                )));
            }
        }
        Ok((stats, refusals))
    }

    /// Writes orders and dead letters; a statement that cannot finish as it is
    /// ([`WriteError::TooLong`]) is written in two halves instead (each half again, down to
    /// single rows), since the same statement would be cut again at every retry.
    fn write_split<'f>(
        &'f self,
        orders: &'f [OrderRow<'f>],
        dead: &'f [DeadLetterRecord<'f>],
    ) -> Boxed<'f> {
        Box::pin(async move {
            match self.write_retrying(orders, dead).await {
                Err(WriteError::TooLong(e)) => {
                    let Some([first, second]) = halves(orders, dead) else {
                        return Err(WriteError::TooLong(e));
                    };
                    warn!(lane = self.lane, rows = orders.len() + dead.len(), error = %e,
                          "the batch's statement cannot finish (statement_timeout, or its \
                           connection cut as it ran); writing it in two halves");
                    let a = self.write_split(first.0, first.1).await?;
                    let b = self.write_split(second.0, second.1).await?;
                    Ok(Written {
                        applied: a.applied + b.applied,
                        dead_letters_new: a.dead_letters_new + b.dead_letters_new,
                    })
                }
                other => other,
            }
        })
    }

    /// Writes until PostgreSQL commits, retrying transient failures; returns at once when it
    /// refuses the data, and when a statement of more than one row cannot finish as it is
    /// ([`WriteError::TooLong`]; a single row is retried: a lock it waits for is released some
    /// day).
    async fn write_retrying(
        &self,
        orders: &[OrderRow<'_>],
        dead: &[DeadLetterRecord<'_>],
    ) -> Result<Written, WriteError> {
        let rows = orders.len() + dead.len();
        let mut cuts = Cuts::default();
        let result = retry::until_ok(
            self.settings.retry,
            &self.abort,
            || WriteError::Aborted,
            || self.store.write(orders, dead),
            |WriteFailed { error: e, sent }, delay| {
                let kind = FailureKind::of(&e);
                let split = cuts.split_after(sent, kind, self.health.db_ok());
                // Only an outage excuses the stall clock: a statement that keeps failing while
                // PostgreSQL answers (read-only after a failover, a lock timeout) is a wedge. An
                // outage also holds readiness until this write goes on, whatever the ping says.
                self.health.write_failing(self.lane, kind.is_outage());
                self.metrics.db_error(kind).increment(1);
                if !kind.is_transient() {
                    return Verdict::Fail(WriteError::Rejected(e));
                }
                if rows > 1 && (kind == FailureKind::Timeout || split) {
                    return Verdict::Fail(WriteError::TooLong(e));
                }
                self.metrics.db_retries.increment(1);
                warn!(lane = self.lane, error = %e, kind = kind.as_str(),
                      retry_in_ms = delay.as_millis() as u64, "batch write failed; retrying");
                Verdict::Retry
            },
        )
        .await;
        if !matches!(result, Err(WriteError::Aborted)) {
            self.health.write_advanced(self.lane);
        }
        result
    }
}

/// How many times in a row a statement's session may end while it runs before the statement is
/// split. Once is what a restart does to every session; again, on the new connection the retry
/// had, it is the statement's own length (a pooler's `query_timeout`).
const CUTS_BEFORE_SPLIT: u32 = 2;

/// The attempts in a row whose session ended after their statement was sent while PostgreSQL
/// answered its ping. PostgreSQL away ends sent statements too, behind a pooler that accepts
/// connections meanwhile, but then its ping fails as well.
#[derive(Debug, Default)]
struct Cuts(u32);

impl Cuts {
    /// Records a failed attempt; true once the statement should be split.
    fn split_after(&mut self, sent: bool, kind: FailureKind, postgres_answers: bool) -> bool {
        let cut = sent && kind.ends_the_session() && postgres_answers;
        self.0 = if cut { self.0 + 1 } else { 0 };
        self.0 >= CUTS_BEFORE_SPLIT
    }
}

type Part<'x, 'a> = (&'x [OrderRow<'a>], &'x [DeadLetterRecord<'a>]);

/// A write cut in two non-empty parts that together hold every row once, orders kept in their
/// (id) order; `None` for a single row.
fn halves<'x, 'a>(
    orders: &'x [OrderRow<'a>],
    dead: &'x [DeadLetterRecord<'a>],
) -> Option<[Part<'x, 'a>; 2]> {
    if orders.len() > 1 {
        let (a, b) = orders.split_at(orders.len() / 2);
        Some([(a, dead), (b, &[])])
    } else if dead.len() > 1 {
        let (a, b) = dead.split_at(dead.len() / 2);
        Some([(orders, a), (&[], b)])
    } else if !orders.is_empty() && !dead.is_empty() {
        Some([(orders, &[]), (&[], dead)])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{self, SynthSpec};

    #[test]
    fn a_statement_is_split_at_its_second_cut_in_a_row_while_postgres_answers() {
        use FailureKind::{Connection, Shutdown, Timeout};
        let mut cuts = Cuts::default();
        assert!(!cuts.split_after(true, Shutdown, true), "once: a restart");
        assert!(
            cuts.split_after(true, Connection, true),
            "again: its own length"
        );

        let mut cuts = Cuts::default();
        assert!(!cuts.split_after(true, Connection, true));
        assert!(
            !cuts.split_after(false, Connection, true),
            "no connection: away"
        );
        assert!(!cuts.split_after(true, Connection, true), "counted afresh");

        let mut cuts = Cuts::default();
        assert!(!cuts.split_after(true, Connection, false));
        assert!(
            !cuts.split_after(true, Connection, false),
            "ping failing: away"
        );
        assert!(!cuts.split_after(true, Timeout, true), "not a cut");
        assert!(!cuts.split_after(true, Connection, true));
    }

    #[test]
    fn halving_a_write_keeps_every_row_once_and_ends_at_single_rows() {
        let events: Vec<_> = (0..5)
            .map(|n| synth::event(synth::order_id(&SynthSpec::default(), n), 1, n))
            .collect();
        let orders: Vec<OrderRow<'_>> = events
            .iter()
            .enumerate()
            .map(|(i, event)| OrderRow {
                event,
                partition: 0,
                offset: i as i64,
            })
            .collect();
        let dead: Vec<DeadLetterRecord<'_>> = (0..3)
            .map(|i| DeadLetterRecord {
                partition: 0,
                offset: 100 + i,
                key: None,
                payload: None,
                payload_size: 0,
                reason: Reason::Tombstone,
                error: "",
                kafka_timestamp_ms: None,
                headers: Default::default(),
            })
            .collect();
        let mut parts = vec![(&orders[..], &dead[..])];
        let mut singles = Vec::new();
        while let Some((o, d)) = parts.pop() {
            match halves(o, d) {
                Some([a, b]) => {
                    assert!(!a.0.is_empty() || !a.1.is_empty());
                    assert!(!b.0.is_empty() || !b.1.is_empty());
                    parts.extend([a, b]);
                }
                None => singles.push((o.len(), d.len())),
            }
        }
        assert_eq!(singles.len(), 8, "every row alone in the end");
        assert!(singles.iter().all(|&(o, d)| o + d == 1));
    }
}
