//! `order-worker validate`: the worker's own decoder and rules applied to events a producer is
//! about to publish (files, standard input) or has published (a sample of a topic), with the
//! verdict the worker would reach: `ok`, or the dead-letter reason and message it would store.
//!
//! Invariant: every verdict comes from `contract::decode`, the function the pipeline calls, with
//! the same payload limit (the worker's `MAX_PAYLOAD_BYTES`); nothing here restates a rule. An
//! event read without a key (a file, a plain line) is judged as if keyed by its own `order_id`,
//! unless `--key` gives one.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use rdkafka::consumer::Consumer;

use crate::config::{TopicSample, ValidateConfig, ValidateSource};
use crate::contract::{self, Headers, Hints, WriterSchema, wire_format};
use crate::error::Error;
use crate::kafka::originals::{Original, Originals, ReadBack};
use crate::registry::SchemaRegistry;

/// How long reading a topic sample may take.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(30);

/// One message to judge: where it came from, its key, its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub source: String,
    pub key: Key,
    pub value: Option<Vec<u8>>,
    /// The message's `content-type` header.
    pub content_type: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Given(Option<Vec<u8>>),
    /// Not known (a file, a plain line): judged as if it were the event's own order id.
    OwnOrderId,
}

/// What the worker would do with one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub source: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The dead-letter reason the worker would store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The dead letter's message, as the worker would store it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The verdict on `sample`; `writer` is the registry's schema for a Confluent-framed value.
pub fn judge(sample: &Sample, max_payload_bytes: usize, writer: Option<&WriterSchema>) -> Verdict {
    let value = sample.value.as_deref();
    let size = value.map_or(0, <[u8]>::len);
    let shown = value.map(|v| &v[..size.min(max_payload_bytes)]);
    let hints = Hints {
        content_type: sample.content_type.as_deref(),
        writer,
    };
    let outcome = match &sample.key {
        Key::Given(key) => {
            contract::decode_with(hints, key.as_deref(), shown, size, max_payload_bytes)
        }
        Key::OwnOrderId => contract::decode_value_with(hints, shown, size, max_payload_bytes),
    };
    let source = sample.source.clone();
    match outcome {
        Ok(event) => Verdict {
            source,
            ok: true,
            order_id: Some(event.order_id),
            version: Some(event.version),
            reason: None,
            detail: None,
        },
        Err(rejection) => Verdict {
            source,
            ok: false,
            order_id: None,
            version: None,
            reason: Some(rejection.reason.as_str()),
            detail: Some(rejection.detail),
        },
    }
}

/// Every verdict of one run, in input order.
#[derive(Debug, Serialize)]
pub struct Report {
    pub verdicts: Vec<Verdict>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.verdicts.iter().filter(|v| !v.ok).count()
    }

    /// One line per message: `source: ok (order ..., version ...)` or `source: reason: detail`.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for v in &self.verdicts {
            match (v.ok, v.order_id, v.version) {
                (true, Some(order), Some(version)) => out.push_str(&format!(
                    "{}: ok (order {order}, version {version})\n",
                    v.source
                )),
                _ => out.push_str(&format!(
                    "{}: {}: {}\n",
                    v.source,
                    v.reason.unwrap_or("?"),
                    v.detail.as_deref().unwrap_or("")
                )),
            }
        }
        out
    }
}

/// Judges what `cfg` names: files (or standard input), or a sample of a topic.
pub async fn validate(cfg: &ValidateConfig) -> Result<Report, Error> {
    let samples = match &cfg.sample {
        Some(ValidateSource::Topic(sample)) => {
            let sample = sample.clone();
            tokio::task::spawn_blocking(move || read_topic(&sample))
                .await
                .map_err(|e| Error::Config(format!("reading the topic: {e}")))??
        }
        None => read_inputs(cfg)?,
    };
    let max = cfg.max_payload_bytes as usize;
    let registry = SchemaRegistry::new(&cfg.schema_registry)?;
    let mut verdicts = Vec::with_capacity(samples.len());
    for sample in &samples {
        let id = sample.value.as_deref().and_then(wire_format::schema_id);
        let writer = match (&registry, id) {
            (Some(registry), Some(id)) => Some(
                registry
                    .writer_schema(id)
                    .await
                    .map_err(|e| Error::SchemaRegistry(e.to_string()))?,
            ),
            _ => None,
        };
        verdicts.push(judge(sample, max, writer.as_deref()));
    }
    Ok(Report { verdicts })
}

fn read_inputs(cfg: &ValidateConfig) -> Result<Vec<Sample>, Error> {
    let stdin = [PathBuf::from("-")];
    let paths = if cfg.files.is_empty() {
        &stdin[..]
    } else {
        &cfg.files[..]
    };
    let given = cfg
        .key
        .as_ref()
        .map(|k| Key::Given(Some(k.clone().into_bytes())));
    let mut samples = Vec::new();
    for path in paths {
        let (name, bytes) = read(path)?;
        if cfg.keyed || cfg.lines {
            samples.extend(lines(&name, &bytes, cfg.keyed, given.as_ref()));
        } else {
            samples.push(Sample {
                source: name,
                key: given.clone().unwrap_or(Key::OwnOrderId),
                value: Some(bytes),
                content_type: None,
            });
        }
    }
    let content_type = cfg.content_type.as_ref().map(|c| c.clone().into_bytes());
    for s in &mut samples {
        s.content_type.clone_from(&content_type);
    }
    Ok(samples)
}

fn read(path: &Path) -> Result<(String, Vec<u8>), Error> {
    let mut bytes = Vec::new();
    let (name, result) = if path == Path::new("-") {
        ("stdin".to_owned(), std::io::stdin().read_to_end(&mut bytes))
    } else {
        let name = path.display().to_string();
        (
            name,
            std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)),
        )
    };
    result.map_err(|e| Error::Config(format!("cannot read {name}: {e}")))?;
    Ok((name, bytes))
}

/// One sample per non-empty line; with `keyed`, a line is `key<TAB>value` (an empty key is no
/// key, an empty value no value: a tombstone).
fn lines(name: &str, bytes: &[u8], keyed: bool, given: Option<&Key>) -> Vec<Sample> {
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let source = format!("{name}:{}", i + 1);
        let (key, value) = match (keyed, line.iter().position(|&b| b == b'\t')) {
            (true, Some(tab)) => {
                let (k, v) = (&line[..tab], &line[tab + 1..]);
                let some = |b: &[u8]| (!b.is_empty()).then(|| b.to_vec());
                (Key::Given(some(k)), some(v))
            }
            (true, None) => (Key::Given(None), Some(line.to_vec())),
            (false, _) => (
                given.cloned().unwrap_or(Key::OwnOrderId),
                Some(line.to_vec()),
            ),
        };
        out.push(Sample {
            source,
            key,
            value,
            content_type: None,
        });
    }
    out
}

/// The messages of the sample: from `--from-offset` (at most `--count` per partition) or the
/// last `--last` of each partition, up to each partition's end when the sample was asked for.
fn read_topic(sample: &TopicSample) -> Result<Vec<Sample>, Error> {
    let (kafka, topic) = (&sample.kafka, sample.topic.as_str());
    // Only a name librdkafka needs to assign partitions: nothing joins it or commits for it.
    let group = "order-worker-validate";
    let reader = crate::lag::reader(&kafka.brokers, &kafka.properties, group)?;
    let ids = match sample.partition {
        Some(p) => vec![p],
        None => crate::lag::partitions(&reader, topic, TOPIC_TIMEOUT)?,
    };
    let mut wanted = Vec::new();
    for p in ids {
        let (low, high) = reader.fetch_watermarks(topic, p, TOPIC_TIMEOUT)?;
        let (start, end) = match sample.from_offset {
            Some(from) => (
                from.max(low),
                high.min(from.max(low).saturating_add(sample.count)),
            ),
            None => ((high - sample.last).max(low), high),
        };
        wanted.extend((start..end).map(|o| (p, o)));
    }
    let mut read = ReadBack::new();
    Originals::new(&kafka.brokers, &kafka.properties, topic, group).fetch_into(
        &wanted,
        &mut read,
        TOPIC_TIMEOUT,
        &CancellationToken::new(),
    )?;
    Ok(wanted
        .iter()
        .filter_map(|&(p, o)| match read.remove(&(p, o))? {
            Original::Found {
                key,
                payload,
                headers,
            } => Some(Sample {
                source: format!("{topic}/{p}@{o}"),
                key: Key::Given(key),
                value: payload,
                content_type: Headers::new(&headers)
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(contract::CONTENT_TYPE_HEADER))
                    .and_then(|(_, v)| v.map(<[u8]>::to_vec)),
            }),
            Original::Gone => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = "6f1c2a4e-7a43-4a39-9f7e-2b1d7c1e0a11";

    #[test]
    fn keyed_lines_split_at_the_first_tab_and_empty_parts_are_absent() {
        let text = format!("{ORDER}\t{{\"a\":1}}\n\n\t{{}}\n{ORDER}\t\nno-tab\r\n");
        let got = lines("in", text.as_bytes(), true, None);
        let keys: Vec<_> = got
            .iter()
            .map(|s| (s.source.as_str(), s.key.clone(), s.value.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                (
                    "in:1",
                    Key::Given(Some(ORDER.into())),
                    Some(b"{\"a\":1}".to_vec())
                ),
                ("in:3", Key::Given(None), Some(b"{}".to_vec())),
                ("in:4", Key::Given(Some(ORDER.into())), None),
                ("in:5", Key::Given(None), Some(b"no-tab".to_vec())),
            ]
        );
    }

    #[test]
    fn a_value_judged_without_a_key_is_not_a_key_mismatch_but_a_given_wrong_key_is() {
        let event = crate::synth::event(ORDER.parse().unwrap(), 3, 7);
        let value = serde_json::to_vec(&event).unwrap();
        let unkeyed = Sample {
            source: "f".into(),
            key: Key::OwnOrderId,
            value: Some(value.clone()),
            content_type: None,
        };
        let verdict = judge(&unkeyed, 1 << 20, None);
        assert!(verdict.ok && verdict.version == Some(3), "{verdict:?}");
        let wrong = Sample {
            key: Key::Given(Some(b"other".to_vec())),
            ..unkeyed
        };
        assert_eq!(judge(&wrong, 1 << 20, None).reason, Some("key_mismatch"));
        let tombstone = Sample {
            source: "t".into(),
            key: Key::Given(None),
            value: None,
            content_type: None,
        };
        assert_eq!(judge(&tombstone, 1 << 20, None).reason, Some("tombstone"));
        let big = Sample {
            source: "b".into(),
            key: Key::OwnOrderId,
            value: Some(value),
            content_type: None,
        };
        assert_eq!(judge(&big, 64, None).reason, Some("payload_too_large"));
        let protobuf = Sample {
            source: "p".into(),
            key: Key::OwnOrderId,
            value: Some(event.to_protobuf()),
            content_type: Some(b"application/x-protobuf".to_vec()),
        };
        assert!(judge(&protobuf, 1 << 20, None).ok);
        let unnamed = Sample {
            content_type: None,
            ..protobuf
        };
        assert_eq!(judge(&unnamed, 1 << 20, None).reason, Some("invalid_json"));
    }
}
