//! Publishing a batch's dead letters to the dead-letter topic.
//!
//! Invariant: [`publish`] returns once every letter was acknowledged by the topic (whole, or cut
//! to a size it takes) or refused for good; a transient failure is retried, re-sending only the
//! letters not yet acknowledged, until it passes or the processor aborts. A letter refused for
//! good is already durable in the `dead_letters` table: it is counted, logged with its
//! coordinates and makes the worker unready, but it never holds its partition.

use futures_util::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::db::DeadLetterRow;
use crate::error::Error;
use crate::health::Health;
use crate::kafka::dead_letter_topic::{DeadLetterTopic, Form, Refusal};
use crate::metrics::Metrics;
use crate::retry::{Delays, Schedule};

/// Coordinates named in the log line of a refusal; the rest are counted.
const NAMED: usize = 10;

/// Where a processor's dead letters go besides PostgreSQL, and what it reports to.
pub(crate) struct Publisher<'a> {
    pub topic: &'a DeadLetterTopic,
    pub schedule: Schedule,
    pub abort: &'a CancellationToken,
    pub metrics: &'a Metrics,
    pub health: &'a Health,
    pub lane: usize,
}

impl Publisher<'_> {
    pub async fn publish(&self, letters: &[DeadLetterRow<'_>]) -> Result<(), Error> {
        let topic = self.topic;
        // While the topic is in trouble, it is looked at afresh first. librdkafka would hold each
        // letter for a topic that does not exist for topic.metadata.propagation.max.ms (30 s)
        // before refusing it: such letters are refused at once.
        let troubled = self.health.dead_letter_topic_missing().is_some()
            || self.health.dead_letter_topic_refusing();
        if troubled && !topic.refresh().await {
            let all: Vec<usize> = (0..letters.len()).collect();
            let reason = format!("dead-letter topic {} does not exist", topic.topic());
            self.refused(letters, &all, &reason, true);
            return Ok(());
        }
        let mut pending: Vec<(usize, Form)> = letters
            .iter()
            .enumerate()
            .map(|(i, r)| (i, topic.first_form(r)))
            .collect();
        let mut refused: Vec<(usize, KafkaError)> = Vec::new();
        let (mut delivered, mut cut) = (0u64, 0u64);
        let mut delays = Delays::new(self.schedule);
        while !pending.is_empty() {
            if self.abort.is_cancelled() {
                return Err(Error::Aborted);
            }
            let sends = pending
                .iter()
                .map(|&(i, form)| async move { (i, form, topic.send(&letters[i], form).await) });
            let mut transient = None;
            let mut next = Vec::new();
            for (i, form, outcome) in join_all(sends).await {
                match outcome {
                    Ok(()) => {
                        delivered += 1;
                        cut += u64::from(form != Form::Whole);
                    }
                    Err(Refusal::TooLarge(e)) => {
                        match DeadLetterTopic::smaller(&letters[i], form) {
                            Some(smaller) => next.push((i, smaller)),
                            None => refused.push((i, e)),
                        }
                    }
                    Err(Refusal::Permanent(e)) => refused.push((i, e)),
                    Err(Refusal::Transient(e)) => {
                        next.push((i, form));
                        transient.get_or_insert(e);
                    }
                }
            }
            pending = next;
            // A letter refused as too large is sent again at once, smaller; an outage waits.
            if let Some(e) = transient {
                self.metrics.dead_letter_publish_failures.increment(1);
                warn!(lane = self.lane, topic = topic.topic(), error = %e, letters = pending.len(),
                      "publishing dead letters failed; their offsets stay uncommitted, retrying");
                if !delays.sleep(self.abort).await {
                    return Err(Error::Aborted);
                }
            }
        }
        self.metrics.dead_letters_cut.increment(cut);
        if delivered > 0 {
            self.health.dead_letter_topic_accepted();
        }
        if let Some((_, e)) = refused.first() {
            let missing = matches!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
            );
            let which: Vec<usize> = refused.iter().map(|(i, _)| *i).collect();
            let reason = format!("dead-letter topic {} refuses letters: {e}", topic.topic());
            self.refused(letters, &which, &reason, missing);
        }
        Ok(())
    }

    /// Counts, logs and reports letters the topic refused for good.
    fn refused(&self, letters: &[DeadLetterRow<'_>], which: &[usize], reason: &str, missing: bool) {
        self.metrics
            .dead_letter_topic_refusals
            .increment(which.len() as u64);
        self.health
            .dead_letter_topic_refused(reason.to_owned(), missing);
        let named: Vec<String> = which
            .iter()
            .take(NAMED)
            .map(|&i| format!("{}@{}", letters[i].partition, letters[i].offset))
            .collect();
        error!(lane = self.lane, topic = self.topic.topic(), %reason, letters = which.len(),
               coordinates = %named.join(","),
               "the dead-letter topic refused dead letters for good; they are kept in the \
                dead_letters table only");
    }
}
