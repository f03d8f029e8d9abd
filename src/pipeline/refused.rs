//! A valid message PostgreSQL refused at write time, with the bytes its dead letter stores.
//!
//! Invariant: a refused row's dead letter carries the message's original key and bytes, read
//! back from Kafka (the message's offset is not committed, so Kafka still has it), or, only when
//! Kafka no longer has the message, its event re-encoded with an `error` that says so. Reading
//! back is retried until it succeeds or the processor aborts, like every other write step.

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::contract::{OrderEvent, Rejection};
use crate::db::DeadLetterRow;
use crate::error::Error;
use crate::kafka::originals::{Original, Originals};
use crate::pipeline::Decoded;
use crate::retry::{self, Schedule, Verdict};

/// How long one attempt to read refused messages back from Kafka may take.
const READ_BACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A valid message PostgreSQL refused, with the bytes its dead letter stores.
pub(crate) struct Refused {
    index: usize,
    rejection: Rejection,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

impl Refused {
    fn new(batch: &[Decoded], index: usize, mut rejection: Rejection, original: Original) -> Self {
        let (key, payload) = match original {
            Original::Found { key, payload } => (key, payload),
            Original::Gone => {
                let at = batch[index].envelope.position;
                warn!(
                    partition = at.partition,
                    offset = at.offset,
                    "refused message no longer in Kafka; dead-lettering its event re-encoded"
                );
                rejection.detail.push_str(
                    " (the message was no longer in Kafka: the payload is its event re-encoded)",
                );
                let event = batch[index].outcome.as_ref().ok();
                (
                    event.map(|e| e.order_id.to_string().into_bytes()),
                    event.map(OrderEvent::to_json),
                )
            }
        };
        Self {
            index,
            rejection,
            key,
            payload,
        }
    }

    pub fn dead_letter<'a>(&'a self, batch: &'a [Decoded]) -> DeadLetterRow<'a> {
        batch[self.index].dead_letter_with(
            &self.rejection,
            self.key.as_deref(),
            self.payload.as_deref(),
        )
    }
}

/// Reads the refused messages back from Kafka until the brokers answer. A message Kafka no
/// longer has (retention, compaction) is dead-lettered with its event re-encoded, and its
/// error says so.
pub(crate) async fn read_back(
    originals: &Originals,
    schedule: Schedule,
    abort: &CancellationToken,
    lane: usize,
    batch: &[Decoded],
    refusals: Vec<(usize, Rejection)>,
) -> Result<Vec<Refused>, Error> {
    if refusals.is_empty() {
        return Ok(Vec::new());
    }
    let coordinates: Vec<(i32, i64)> = refusals
        .iter()
        .map(|(i, _)| {
            let at = batch[*i].envelope.position;
            (at.partition, at.offset)
        })
        .collect();
    let originals = retry::until_ok(
        schedule,
        abort,
        || Error::Aborted,
        || {
            let (originals, coordinates) = (originals.clone(), coordinates.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    originals.fetch(&coordinates, READ_BACK_TIMEOUT)
                })
                .await
                .map_err(|e| Error::TaskFailed(e.to_string()))?
                .map_err(Error::Kafka)
            }
        },
        |err, delay| {
            warn!(lane, error = %err, retry_in_ms = delay.as_millis() as u64,
                  "reading refused messages back from Kafka failed; retrying");
            Verdict::Retry
        },
    )
    .await?;
    Ok(refusals
        .into_iter()
        .zip(originals)
        .map(|((index, rejection), original)| Refused::new(batch, index, rejection, original))
        .collect())
}
