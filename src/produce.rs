//! The `produce` command: publish a synthetic stream and say what was published.
//!
//! Invariant: the summary reports what the broker acknowledged, and the mix of kinds of the
//! messages actually sent (not of the whole requested stream when stopped early).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::config::ProduceConfig;
use crate::error::Error;
use crate::kafka::{self, producer::Published, producer::Publisher};
use crate::synth::{Generator, Mix, SynthSpec};

/// How long the final flush may wait for acknowledgements.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ProduceReport {
    pub topic: String,
    pub mix: Mix,
    pub published: Published,
}

/// Publishes `cfg.events` synthetic messages, or fewer if `stop` is set.
pub async fn produce(cfg: &ProduceConfig, stop: Arc<AtomicBool>) -> Result<ProduceReport, Error> {
    let config = kafka::client_config(&cfg.kafka.brokers, &cfg.kafka.properties);
    if let Some(partitions) = cfg.partitions {
        kafka::producer::ensure_topic(&config, &cfg.topic, partitions).await?;
    }
    let spec = SynthSpec::from(&cfg.synth);
    let (topic, events, rate) = (cfg.topic.clone(), cfg.events, cfg.rate);
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut publisher = Publisher::new(config, &topic)?;
        let mut mix = Mix::default();
        let stream = Generator::new(spec)
            .take(events as usize)
            .inspect(|m| mix.add(m.kind));
        publisher.publish(stream, rate, &stop)?;
        let published = publisher.finish(FLUSH_TIMEOUT, started)?;
        Ok(ProduceReport {
            topic,
            mix,
            published,
        })
    })
    .await
    .map_err(|e| Error::TaskFailed(format!("producer: {e}")))?
}

impl fmt::Display for ProduceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.published;
        let secs = p.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "published {} messages to '{}' in {:.2}s ({:.0} msg/s): {} acknowledged, {} failed",
            p.sent,
            self.topic,
            secs,
            p.sent as f64 / secs,
            p.delivered,
            p.failed
        )?;
        let invalid: Vec<String> = self
            .mix
            .invalid
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        writeln!(
            f,
            "mix: {} valid, {} duplicates, {} invalid ({})",
            self.mix.valid,
            self.mix.duplicates,
            self.mix.invalid_total(),
            invalid.join(" ")
        )?;
        let ends: Vec<String> = p.ends.iter().map(|(p, o)| format!("{p}:{o}")).collect();
        write!(f, "end offsets (partition:offset): {}", ends.join(" "))
    }
}
