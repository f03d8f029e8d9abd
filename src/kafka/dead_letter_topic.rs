//! The optional dead-letter topic: every dead letter is also published to Kafka, with the
//! original key, bytes and headers, followed by headers saying why and where it came from (the
//! information Kafka Connect appends in its `__connect.errors.*` headers).
//!
//! Invariant: [`DeadLetterTopic::send`] returns `Ok` only once the broker acknowledged the letter
//! in the form given; every failure is classified as [`Refusal::Transient`] (the same letter may
//! pass later), [`Refusal::TooLarge`] (only a smaller form can pass), [`Refusal::Topic`] (the
//! topic takes no letter as things are) or [`Refusal::Letter`] (never this letter). A letter too large to publish whole has a
//! [`Form::Cut`] that keeps its headers and the first bytes of its value and says what was cut,
//! and each smaller form is strictly smaller, down to an empty value, so shrinking ends.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::KafkaProperty;
use crate::contract::DeadLetterRecord;
use crate::error::Error;
use crate::kafka::{Login, client_config};

/// Header names: `order_worker.errors.<field>`.
pub const HEADER_TOPIC: &str = "order_worker.errors.topic";
pub const HEADER_PARTITION: &str = "order_worker.errors.partition";
pub const HEADER_OFFSET: &str = "order_worker.errors.offset";
pub const HEADER_STAGE: &str = "order_worker.errors.stage";
pub const HEADER_REASON: &str = "order_worker.errors.reason";
pub const HEADER_MESSAGE: &str = "order_worker.errors.message";
pub const HEADER_GROUP: &str = "order_worker.errors.group";
/// Present only on a letter published cut: what was cut, from what size.
pub const HEADER_TRUNCATED: &str = "order_worker.errors.truncated";

/// How long a dead letter may wait for room in librdkafka's queue before the attempt fails (and
/// is retried by the caller).
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long librdkafka keeps trying to deliver a letter before it reports a failure.
const DELIVERY_TIMEOUT_MS: &str = "30000";
/// Longest a metadata refresh waits for the brokers.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// librdkafka's default producer `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Room kept within `message.max.bytes` for the key, the headers and the record's framing of a
/// cut letter: its key and error message are capped below, the other headers are short.
const FRAMING_BYTES: usize = 8 * 1024;
/// A cut letter's key and error message keep at most this many bytes.
const CUT_FIELD_BYTES: usize = 1024;
/// A cut letter keeps the original headers only up to this many bytes (all or none, so a
/// trace context is never half there); with the capped fields it stays within FRAMING_BYTES.
const CUT_ORIGINAL_HEADER_BYTES: usize = 4 * 1024;

/// How much of a letter is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Whole,
    /// The value's first `value_max` bytes, the key and error message capped, the cut said in
    /// a header.
    Cut {
        value_max: usize,
    },
}

/// Why the topic did not take a letter.
#[derive(Debug)]
pub enum Refusal {
    /// The broker is away, slow or busy: the same letter may pass later.
    Transient(KafkaError),
    /// Larger than the producer or the topic accepts: only a smaller form can pass.
    TooLarge(KafkaError),
    /// The topic takes no letter as things are: missing, not authorized.
    Topic(KafkaError),
    /// The topic will never take this letter (an invalid record, a policy), others may pass.
    Letter(KafkaError),
}

impl Refusal {
    pub fn of(e: KafkaError) -> Self {
        use RDKafkaErrorCode as C;
        match e.rdkafka_error_code() {
            Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize) => {
                Self::TooLarge(e)
            }
            Some(
                C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::UnknownPartition
                | C::InvalidTopic
                | C::InvalidRequiredAcks
                | C::Authentication
                | C::SaslAuthenticationFailed,
            ) => Self::Topic(e),
            Some(C::InvalidRecord | C::PolicyViolation) => Self::Letter(e),
            _ => Self::Transient(e),
        }
    }
}

pub struct DeadLetterTopic {
    producer: FutureProducer<Login>,
    topic: String,
    source_topic: String,
    group: String,
    /// The largest value a cut letter carries.
    value_budget: usize,
}

/// The largest record the dead-letter producer of `config` sends: its `message.max.bytes`.
pub fn largest_letter(config: &ClientConfig) -> usize {
    config
        .get("message.max.bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
}

impl DeadLetterTopic {
    pub fn new(
        brokers: &str,
        properties: &[KafkaProperty],
        topic: &str,
        source_topic: &str,
        group: &str,
    ) -> Result<Self, Error> {
        let mut config = client_config(brokers, properties);
        // One letter per record batch: a broker refuses a whole batch larger than the topic's
        // max.message.bytes, which would shrink letters that fit alone.
        config
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", "1");
        // A letter the topic cannot take for a while (no leader) fails after this instead of
        // librdkafka's 5 minutes, so the worker says so (unready) rather than look wedged.
        if config.get("message.timeout.ms").is_none() {
            config.set("message.timeout.ms", DELIVERY_TIMEOUT_MS);
        }
        let message_max = largest_letter(&config);
        Ok(Self {
            producer: config.create_with_context(Login)?,
            topic: topic.to_owned(),
            source_topic: source_topic.to_owned(),
            group: group.to_owned(),
            value_budget: message_max.saturating_sub(FRAMING_BYTES),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Reads the topic's metadata again and says whether the topic exists (`false` only when
    /// the brokers answer that it does not). librdkafka keeps a topic's error (not authorized,
    /// unknown) until its next periodic refresh, minutes away: after a refusal, the next letters
    /// must meet the topic as it is now, not as it was.
    pub async fn refresh(&self) -> bool {
        let (producer, topic) = (self.producer.clone(), self.topic.clone());
        let answer = tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
                .ok()?;
            let error = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)?
                .error()?;
            Some(RDKafkaErrorCode::from(error))
        })
        .await;
        !matches!(answer, Ok(Some(RDKafkaErrorCode::UnknownTopicOrPartition)))
    }

    /// The form to try first: whole, unless the producer would refuse it for its size.
    pub fn first_form(&self, row: &DeadLetterRecord<'_>) -> Form {
        let size = row.payload.map_or(0, <[u8]>::len)
            + row.key.map_or(0, <[u8]>::len)
            + row.error.len()
            + row.headers.as_bytes().len();
        if size <= self.value_budget {
            Form::Whole
        } else {
            Form::Cut {
                value_max: self.value_budget,
            }
        }
    }

    /// The next smaller form after `form` was refused as too large; `None` once the value is
    /// empty (the letter cannot be made smaller).
    pub fn smaller(row: &DeadLetterRecord<'_>, form: Form) -> Option<Form> {
        let len = row.payload.map_or(0, <[u8]>::len);
        let current = match form {
            Form::Whole => len,
            Form::Cut { value_max } => value_max.min(len),
        };
        match form {
            Form::Cut { .. } if current == 0 => None,
            _ => Some(Form::Cut {
                value_max: current / 2,
            }),
        }
    }

    /// Publishes one letter in `form` and waits for the broker's acknowledgement; says whether
    /// the letter published was cut.
    pub async fn send(&self, row: &DeadLetterRecord<'_>, form: Form) -> Result<bool, Refusal> {
        let (partition, offset) = (row.partition.to_string(), row.offset.to_string());
        let Parts {
            key,
            value,
            message,
            originals,
            truncated,
        } = cut(row, form);
        let mut headers = OwnedHeaders::new_with_capacity(9 + row.headers.iter().count());
        for (key, value) in row.headers.iter().filter(|_| originals) {
            headers = headers.insert(Header { key, value });
        }
        for (key, value) in [
            (HEADER_TOPIC, self.source_topic.as_str()),
            (HEADER_PARTITION, &partition),
            (HEADER_OFFSET, &offset),
            (HEADER_STAGE, row.reason.stage().as_str()),
            (HEADER_REASON, row.reason.as_str()),
            (HEADER_MESSAGE, message),
            (HEADER_GROUP, &self.group),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        if let Some(truncated) = &truncated {
            headers = headers.insert(Header {
                key: HEADER_TRUNCATED,
                value: Some(truncated.as_str()),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        let was_cut = truncated.is_some();
        self.producer
            .send(record, Timeout::After(QUEUE_TIMEOUT))
            .await
            .map(|_| was_cut)
            .map_err(|(e, _)| Refusal::of(e))
    }
}

/// What of a letter is published in a form.
struct Parts<'a> {
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    message: &'a str,
    /// Whether the original's headers go with it.
    originals: bool,
    /// What was cut, if anything.
    truncated: Option<String>,
}

/// A letter's key, value, error message and original headers in `form`, and what was cut.
fn cut<'a>(row: &DeadLetterRecord<'a>, form: Form) -> Parts<'a> {
    let (value, key, message) = match form {
        Form::Whole => (row.payload, row.key, row.error),
        Form::Cut { value_max } => (
            row.payload.map(|v| &v[..v.len().min(value_max)]),
            row.key.map(|k| &k[..k.len().min(CUT_FIELD_BYTES)]),
            prefix(row.error, CUT_FIELD_BYTES),
        ),
    };
    let mut said = Vec::new();
    // Below the message's own size also when the worker kept only MAX_PAYLOAD_BYTES of it.
    let shown = value.map_or(0, <[u8]>::len);
    if value.is_some() && shown < row.payload_size {
        said.push(format!(
            "value cut to {shown} of {} bytes",
            row.payload_size
        ));
    }
    if let (Some(cut), Some(whole)) = (key, row.key)
        && cut.len() < whole.len()
    {
        said.push(format!("key cut to {} of {} bytes", cut.len(), whole.len()));
    }
    if message.len() < row.error.len() {
        said.push(format!("message cut to {} bytes", message.len()));
    }
    let originals =
        form == Form::Whole || row.headers.as_bytes().len() <= CUT_ORIGINAL_HEADER_BYTES;
    if !originals {
        said.push("original headers left out".to_owned());
    }
    Parts {
        key,
        value,
        message,
        originals,
        truncated: (!said.is_empty()).then(|| said.join("; ")),
    }
}

/// The longest prefix of `text` within `max` bytes that ends on a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Reason;

    fn row<'a>(key: &'a [u8], payload: &'a [u8], error: &'a str) -> DeadLetterRecord<'a> {
        DeadLetterRecord {
            partition: 0,
            offset: 7,
            key: Some(key),
            payload: Some(payload),
            payload_size: payload.len() + 1_000,
            reason: Reason::PayloadTooLarge,
            error,
            kafka_timestamp_ms: None,
            headers: Default::default(),
        }
    }

    #[test]
    fn each_smaller_form_is_strictly_smaller_down_to_an_empty_value() {
        let payload = vec![b'x'; 1_000];
        let r = row(b"k", &payload, "e");
        let mut form = Form::Whole;
        let mut sizes = Vec::new();
        while let Some(next) = DeadLetterTopic::smaller(&r, form) {
            sizes.push(cut(&r, next).value.map_or(0, <[u8]>::len));
            form = next;
        }
        assert_eq!(sizes.first(), Some(&500));
        assert_eq!(sizes.last(), Some(&0));
        assert!(sizes.windows(2).all(|w| w[1] < w[0]), "{sizes:?}");
        assert!(sizes.len() <= 11);
    }

    #[test]
    fn a_cut_letter_says_what_was_cut_and_keeps_a_prefix_of_each_part() {
        let payload = vec![b'v'; 5_000];
        let key = vec![b'k'; 3_000];
        let error = "é".repeat(1_000);
        let r = row(&key, &payload, &error);
        let Parts {
            key: k,
            value: v,
            message: m,
            truncated: said,
            ..
        } = cut(&r, Form::Cut { value_max: 100 });
        assert_eq!(v, Some(&payload[..100]));
        assert_eq!(k.map(<[u8]>::len), Some(CUT_FIELD_BYTES));
        assert!(m.len() <= CUT_FIELD_BYTES && error.starts_with(m));
        let said = said.expect("the cut is said");
        assert!(said.contains("value cut to 100 of 6000 bytes"), "{said}");
        assert!(said.contains("key cut to 1024 of 3000 bytes"), "{said}");
        assert!(said.contains("message cut to"), "{said}");
        let within = row(b"k", b"v", "e");
        assert_eq!(
            cut(&within, Form::Whole).truncated.as_deref(),
            Some("value cut to 1 of 1001 bytes")
        );
        let whole = DeadLetterRecord {
            payload_size: 1,
            ..within
        };
        assert_eq!(cut(&whole, Form::Whole).truncated, None);
        assert_eq!(
            cut(&whole, Form::Cut { value_max: 10 }).truncated,
            None,
            "nothing to cut"
        );
    }

    #[test]
    fn a_cut_letter_keeps_small_original_headers_and_says_when_it_leaves_large_ones_out() {
        use crate::contract::Headers;
        use crate::contract::headers::HeaderWriter;
        let (mut small, mut large) = (Vec::new(), Vec::new());
        HeaderWriter::default().push(&mut small, b"traceparent", Some(b"00-1-2-01"));
        HeaderWriter::default().push(&mut large, b"blob", Some(&[b'x'; 5_000]));
        let payload = vec![b'v'; 5_000];
        let with = |h: &'static [u8]| DeadLetterRecord {
            headers: Headers::new(h),
            ..row(b"k", &payload, "e")
        };
        let small: &'static [u8] = small.leak();
        let large: &'static [u8] = large.leak();
        let kept = cut(&with(small), Form::Cut { value_max: 10 });
        assert!(kept.originals);
        let left_out = cut(&with(large), Form::Cut { value_max: 10 });
        assert!(!left_out.originals);
        assert!(
            left_out
                .truncated
                .unwrap()
                .ends_with("original headers left out")
        );
        assert!(cut(&with(large), Form::Whole).originals);
    }

    #[test]
    fn size_refusals_shrink_topic_and_letter_refusals_are_permanent_and_outages_retry() {
        use RDKafkaErrorCode as C;
        let of = |c| Refusal::of(KafkaError::MessageProduction(c));
        assert!(matches!(of(C::MessageSizeTooLarge), Refusal::TooLarge(_)));
        for c in [C::TopicAuthorizationFailed, C::UnknownTopicOrPartition] {
            assert!(matches!(of(c), Refusal::Topic(_)), "{c:?}");
        }
        for c in [C::InvalidRecord, C::PolicyViolation] {
            assert!(matches!(of(c), Refusal::Letter(_)), "{c:?}");
        }
        for c in [
            C::MessageTimedOut,
            C::QueueFull,
            C::NotEnoughReplicas,
            C::AllBrokersDown,
        ] {
            assert!(matches!(of(c), Refusal::Transient(_)), "{c:?}");
        }
    }
}
