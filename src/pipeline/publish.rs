//! Publishing a batch's dead letters to the dead-letter topic.
//!
//! Invariant: [`Publisher::publish`] returns once every letter was acknowledged by the topic
//! (whole, or cut to a size it takes) or refused for good; a transient failure is retried,
//! re-sending only the letters not yet acknowledged, for at most GIVE_UP_AFTER (then the letters
//! count as refused), and meanwhile the worker is unready and the wait is not counted as a
//! stall. A letter refused
//! for good is already durable in the `dead_letters` table: it is counted and logged with its
//! coordinates, a topic that refuses every letter makes the worker unready, and neither ever
//! holds its partition.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::contract::DeadLetterRecord;
use crate::error::Error;
use crate::health::Health;
use crate::kafka::dead_letter_topic::{DeadLetterTopic, Form, Refusal};
use crate::metrics::Metrics;
use crate::pipeline::named;
use crate::retry::{Delays, Schedule};

/// How long letters are sent again after failures that look passing before the topic counts as
/// refusing them: far above a leader election, so that a topic that never recovers holds its
/// partitions no longer than this.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// Where a processor's dead letters go besides PostgreSQL, and what it reports to.
pub(crate) struct Publisher<'a> {
    pub topic: &'a DeadLetterTopic,
    pub schedule: Schedule,
    pub abort: &'a CancellationToken,
    pub metrics: &'a Metrics,
    pub health: &'a Health,
    pub lane: usize,
}

/// What became of a call's letters.
#[derive(Default)]
struct Sent {
    delivered: u64,
    cut: u64,
    /// Letters refused for good, by index, and whether the topic refuses every letter.
    refused: Vec<(usize, KafkaError, bool)>,
}

impl Publisher<'_> {
    pub async fn publish(&self, letters: &[DeadLetterRecord<'_>]) -> Result<(), Error> {
        let topic = self.topic;
        // While the topic is in trouble, it is looked at afresh first. librdkafka would hold each
        // letter for a topic that does not exist for topic.metadata.propagation.max.ms (30 s)
        // before refusing it: such letters are refused at once.
        let troubled =
            self.health.dead_letter_topic_missing() || self.health.dead_letter_topic_refusing();
        if troubled && !topic.refresh().await {
            let all: Vec<usize> = (0..letters.len()).collect();
            let reason = format!("dead-letter topic {} does not exist", topic.topic());
            self.refused(letters, &all, &reason);
            self.health.dead_letter_topic_exists(Some(reason));
            return Ok(());
        }
        let sent = self.send_all(letters).await?;
        self.health.dead_letter_topic_unavailable(None);
        self.metrics.dead_letters_cut.increment(sent.cut);
        if sent.delivered > 0 {
            self.health.dead_letter_topic_accepted();
        }
        if let Some((_, e, _)) = sent.refused.first() {
            let which: Vec<usize> = sent.refused.iter().map(|(i, _, _)| *i).collect();
            let reason = format!("dead-letter topic {} refuses letters: {e}", topic.topic());
            self.refused(letters, &which, &reason);
            // A letter refused for its own content says nothing of the next one.
            if let Some((_, e, _)) = sent.refused.iter().find(|(_, _, topic)| *topic) {
                let missing = matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
                    )
                );
                if missing {
                    let reason = format!("dead-letter topic {} does not exist", topic.topic());
                    self.health.dead_letter_topic_exists(Some(reason));
                } else {
                    self.health.dead_letter_topic_refused(reason);
                }
            }
        }
        Ok(())
    }

    /// Sends every letter until each is acknowledged or refused for good: a letter refused as
    /// too large is sent again at once, smaller; a transient failure waits and is retried.
    async fn send_all(&self, letters: &[DeadLetterRecord<'_>]) -> Result<Sent, Error> {
        let topic = self.topic;
        let mut pending: Vec<(usize, Form)> = letters
            .iter()
            .enumerate()
            .map(|(i, r)| (i, topic.first_form(r)))
            .collect();
        let mut sent = Sent::default();
        let mut delays = Delays::new(self.schedule);
        let started = Instant::now();
        while !pending.is_empty() {
            let sends = pending
                .iter()
                .map(|&(i, form)| async move { (i, form, topic.send(&letters[i], form).await) });
            let outcomes = tokio::select! {
                biased;
                () = self.abort.cancelled() => return Err(Error::Aborted),
                outcomes = join_all(sends) => outcomes,
            };
            let mut transient = None;
            let mut next = Vec::new();
            for (i, form, outcome) in outcomes {
                match outcome {
                    Ok(was_cut) => {
                        sent.delivered += 1;
                        sent.cut += u64::from(was_cut);
                    }
                    Err(Refusal::TooLarge(e)) => {
                        match DeadLetterTopic::smaller(&letters[i], form) {
                            Some(smaller) => next.push((i, smaller)),
                            None => sent.refused.push((i, e, false)),
                        }
                    }
                    Err(Refusal::Topic(e)) => sent.refused.push((i, e, true)),
                    Err(Refusal::Letter(e)) => sent.refused.push((i, e, false)),
                    Err(Refusal::Transient(e)) => {
                        next.push((i, form));
                        transient.get_or_insert(e);
                    }
                }
            }
            pending = next;
            if let Some(e) = &transient
                && started.elapsed() >= GIVE_UP_AFTER
            {
                // Every retry failed for this long: the letters stay in the table only, and the
                // partition moves on; the topic is reported as refusing until it takes a letter.
                warn!(lane = self.lane, topic = topic.topic(), error = %e, letters = pending.len(),
                      "the dead-letter topic failed for {}s; giving up on these letters",
                      GIVE_UP_AFTER.as_secs());
                let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
                sent.refused
                    .extend(pending.drain(..).map(|(i, _)| (i, e.clone(), true)));
                break;
            }
            if let Some(e) = transient {
                self.metrics.dead_letter_publish_failures.increment(1);
                self.health.dead_letter_topic_unavailable(Some(format!(
                    "dead-letter topic {} unavailable: {e}",
                    topic.topic()
                )));
                warn!(lane = self.lane, topic = topic.topic(), error = %e, letters = pending.len(),
                      "publishing dead letters failed; their offsets stay uncommitted, retrying");
                if !delays.sleep(self.abort).await {
                    return Err(Error::Aborted);
                }
            }
        }
        Ok(sent)
    }

    /// Counts and logs letters the topic refused for good.
    fn refused(&self, letters: &[DeadLetterRecord<'_>], which: &[usize], reason: &str) {
        self.metrics
            .dead_letter_topic_refusals
            .increment(which.len() as u64);
        let coordinates = named(
            which
                .iter()
                .map(|&i| (letters[i].partition, letters[i].offset)),
        );
        error!(lane = self.lane, topic = self.topic.topic(), %reason, letters = which.len(),
               %coordinates,
               "the dead-letter topic refused dead letters for good; they are kept in the \
                dead_letters table only");
    }
}
