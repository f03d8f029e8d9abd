//! Liveness and readiness, as the HTTP probes report them.
//!
//! Invariant: readiness is true only while PostgreSQL answers, Kafka answered for the topic (its
//! metadata was read), the consumer joined its group and polls, the dead-letter topic (if any)
//! exists and takes letters, the schema registry (if any) gives the schemas messages name, and
//! the worker is not draining, and no batch write is failing as if PostgreSQL were away. Liveness
//! is false only when the pipeline is wedged: messages in flight and nothing made durable for the
//! stall timeout, or one batch write not advancing that long, while PostgreSQL and Kafka answer (an
//! outage is waited out, a restart would not fix it). State changes are atomic stores or a short
//! lock around a reason's text or the list of running writes, so a probe never blocks on the
//! pipeline.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

mod problem;
mod writes;

use problem::{ConsumerRefusal, Problem};

/// Readiness reasons about Kafka. Several clients see the same condition at once; one text per
/// condition keeps it to one log line.
pub const KAFKA_UNREACHABLE: &str = "kafka unreachable: no broker answers";
pub const KAFKA_CREDENTIALS_REFUSED: &str = "kafka authentication failed";

/// A consumer thread that has not polled for this long is reported as stuck.
const CONSUMER_STALL: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    stall_timeout: Duration,
    db_ok: AtomicBool,
    /// Milliseconds since `epoch` of the consumer's last poll; 0 until it starts.
    consumer_polled_ms: AtomicU64,
    /// Whether the consumer is a member of its group: assigned partitions (or none) by it.
    group_member: AtomicBool,
    draining: AtomicBool,
    /// What the lag monitor's measurements say of Kafka and the topic; it clears them too.
    kafka: Problem,
    /// What only the consumer sees (its fetches refused), cleared by its own evidence.
    consumer: ConsumerRefusal,
    dead_letter_topic_missing: Problem,
    dead_letter_topic_refusing: Problem,
    /// The dead-letter topic failed for a passing reason and letters wait for it.
    dead_letter_topic_unavailable: Problem,
    /// A message waits for a writer schema the registry does not give (an outage, credentials
    /// refused, an id it does not know).
    schema_registry: Problem,
    /// Why each lane that waits for the registry waits; `schema_registry` is the first of them.
    schema_registry_waits: Mutex<BTreeMap<usize, String>>,
    /// Whether Kafka ever answered (a credential refused before that is a configuration error).
    kafka_answered: AtomicBool,
    /// Milliseconds since `epoch` when a batch last became durable.
    progress_ms: AtomicU64,
    /// Milliseconds since `epoch` when the pipeline was last found idle or excused (nothing in
    /// flight, or PostgreSQL or Kafka away): a stall is counted from the later of this and
    /// `progress_ms`.
    excused_ms: AtomicU64,
    in_flight: AtomicU64,
    /// The batch writes running now.
    writes: writes::Writes,
    /// Fired when the worker cannot go on as configured (its Kafka credentials were refused
    /// before Kafka ever answered); the reason is in `fatal_reason`.
    fatal: CancellationToken,
    fatal_reason: Problem,
    /// Whether the failing liveness was logged (once per stall, not once per probe).
    wedge_logged: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(Duration::from_secs(300))
    }
}

impl Health {
    pub fn new(stall_timeout: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            stall_timeout,
            db_ok: AtomicBool::new(false),
            consumer_polled_ms: AtomicU64::new(0),
            group_member: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            kafka: Problem::new("kafka not reached yet"),
            consumer: ConsumerRefusal::default(),
            dead_letter_topic_missing: Problem::default(),
            dead_letter_topic_refusing: Problem::default(),
            dead_letter_topic_unavailable: Problem::default(),
            schema_registry: Problem::default(),
            schema_registry_waits: Mutex::default(),
            kafka_answered: AtomicBool::new(false),
            progress_ms: AtomicU64::new(0),
            excused_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            writes: writes::Writes::default(),
            fatal: CancellationToken::new(),
            fatal_reason: Problem::default(),
            wedge_logged: AtomicBool::new(false),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn now_ms(&self) -> u64 {
        self.ms(Instant::now())
    }

    pub fn set_db_ok(&self, ok: bool) {
        self.db_ok.store(ok, Ordering::Relaxed);
    }

    pub fn db_ok(&self) -> bool {
        self.db_ok.load(Ordering::Relaxed)
    }

    /// Kafka answered for the topic: its metadata was read.
    pub fn kafka_ok(&self) {
        self.kafka_answered.store(true, Ordering::Relaxed);
        self.kafka.set(None, "kafka");
    }

    /// Kafka is unreachable, refuses the credentials, or lacks the topic.
    pub fn kafka_problem(&self, reason: String) {
        self.kafka.set(Some(reason), "kafka");
    }

    /// The consumer's own requests are refused (its Fetch not authorized) although Kafka
    /// answers the lag monitor.
    pub fn consumer_refused(&self, reason: String) {
        self.consumer.refused(reason, self.now_ms());
    }

    /// The lag monitor's measurement: whether a partition this pod owns has messages left to
    /// read.
    pub fn owned_lag(&self, behind: bool) {
        self.consumer.owned_lag(behind);
    }

    /// The consumer received a message: whatever refused it before does not any more.
    pub fn consumer_fetched(&self) {
        self.consumer.fetched();
    }

    /// Kafka refused the worker's credentials (`detail`: librdkafka's sentence). Before Kafka
    /// ever answered that is a configuration error, and the worker stops with it; afterwards
    /// (credentials rotated under a running worker) it is a reason to be unready until they are
    /// accepted again.
    pub fn kafka_refused_credentials(&self, detail: &str) {
        if self.kafka_answered.load(Ordering::Relaxed) {
            self.kafka_problem(KAFKA_CREDENTIALS_REFUSED.into());
        } else if !self.fatal.is_cancelled() {
            // The first report is kept: it is librdkafka's own sentence, the later ones only
            // repeat the error code.
            let reason = format!("{KAFKA_CREDENTIALS_REFUSED}: {detail}");
            self.fatal_reason.set(Some(reason), "kafka credentials");
            self.fatal.cancel();
        }
    }

    /// Resolves with the reason once the worker cannot go on as configured.
    pub async fn failed(&self) -> String {
        self.fatal.cancelled().await;
        self.fatal_reason.get().unwrap_or_default()
    }

    /// Whether the dead-letter topic exists and may be used (`None`) or why not: from its
    /// metadata, or from the publisher being told it does not exist. The next metadata check
    /// that finds it clears this.
    pub fn dead_letter_topic_exists(&self, problem: Option<String>) {
        self.dead_letter_topic_missing
            .set(problem, "dead-letter topic");
    }

    /// Whether the dead-letter topic is known to be missing or forbidden.
    pub fn dead_letter_topic_missing(&self) -> bool {
        self.dead_letter_topic_missing.is_set()
    }

    /// The dead-letter topic, which exists, refused every letter for good (no Write ACL); only
    /// a letter it takes later ends that.
    pub fn dead_letter_topic_refused(&self, reason: String) {
        self.dead_letter_topic_refusing
            .set(Some(reason), "dead-letter topic publishing");
    }

    /// The dead-letter topic took a letter.
    pub fn dead_letter_topic_accepted(&self) {
        self.dead_letter_topic_refusing
            .set(None, "dead-letter topic publishing");
        self.dead_letter_topic_unavailable
            .set(None, "dead-letter topic");
    }

    /// Letters wait for the dead-letter topic, which failed for a passing reason (no leader,
    /// too few replicas, a timeout): unready, and not a stall, while they do (`None` once no
    /// letter waits).
    pub fn dead_letter_topic_unavailable(&self, reason: Option<String>) {
        self.dead_letter_topic_unavailable
            .set(reason, "dead-letter topic");
    }

    /// A message of `lane` waits for the schema registry (`Some(reason)`), or no longer does
    /// (`None`): unready, and not a stall, while any lane waits. Another lane's schema arriving
    /// does not end this one's wait.
    pub fn schema_registry_unavailable(&self, lane: usize, reason: Option<String>) {
        let mut waiting = self
            .schema_registry_waits
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match reason {
            Some(reason) => {
                waiting.insert(lane, reason);
            }
            None => {
                waiting.remove(&lane);
            }
        }
        let first = waiting.values().next().cloned();
        self.schema_registry.set(first, "schema registry");
    }

    /// Whether the dead-letter topic refused the last letters it was given for good.
    pub fn dead_letter_topic_refusing(&self) -> bool {
        self.dead_letter_topic_refusing.is_set()
    }

    /// The consumer polled at `now` (the caller's clock reading: it has one at hand).
    pub fn consumer_polled(&self, now: Instant) {
        let ms = self.ms(now).max(1);
        if self.consumer_polled_ms.swap(ms, Ordering::Relaxed) == 0 {
            // A stall is counted from the consumer's start, not the process's.
            self.excused_ms.store(ms, Ordering::Relaxed);
        }
    }

    pub fn group_member(&self, member: bool) {
        self.group_member.store(member, Ordering::Relaxed);
    }

    pub fn consumer_stopped(&self) {
        self.consumer_polled_ms.store(0, Ordering::Relaxed);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A batch became durable.
    pub fn progressed(&self) {
        self.progress_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// PostgreSQL answers the ping and no batch write fails as if it were away.
    fn postgres_usable(&self) -> bool {
        self.db_ok() && !self.writes.any_failing()
    }

    /// The consumer's periodic report of the messages in flight. A stall is only counted while
    /// there are some and both PostgreSQL and Kafka answer.
    pub fn observe(&self, in_flight: usize, now: Instant) {
        self.in_flight.store(in_flight as u64, Ordering::Relaxed);
        let kafka_away = self.kafka.is_set()
            || self.dead_letter_topic_unavailable.is_set()
            || self.schema_registry.is_set();
        if in_flight == 0 || !self.postgres_usable() || kafka_away {
            self.excused_ms.store(self.ms(now), Ordering::Relaxed);
        }
        self.consumer.observe(self.ms(now));
    }

    /// How long messages have been in flight with nothing becoming durable, or one batch write
    /// has not advanced, while PostgreSQL and Kafka answered; zero when the pipeline progresses,
    /// is idle, or has not started.
    pub fn stalled_for(&self) -> Duration {
        let (pipeline, write) = self.stalls();
        longest(pipeline, write)
    }

    /// The pipeline's stall, and the lane and stall of the write that advanced longest ago.
    fn stalls(&self) -> (Duration, Option<(usize, Duration)>) {
        if self.consumer_polled_ms.load(Ordering::Relaxed) == 0 || self.is_draining() {
            return (Duration::ZERO, None);
        }
        let (now, excused) = (self.now_ms(), self.excused_ms.load(Ordering::Relaxed));
        let since = self.progress_ms.load(Ordering::Relaxed).max(excused);
        let stall = |since: u64| Duration::from_millis(now.saturating_sub(since));
        let write = self
            .writes
            .oldest()
            .map(|(lane, started)| (lane, stall(started.max(excused))));
        (stall(since), write)
    }

    /// `Ok` while alive, otherwise the reason `/healthz` reports. The first failing answer of a
    /// stall is logged: it is why Kubernetes restarts the pod.
    pub fn liveness(&self) -> Result<(), String> {
        let verdict = self.wedged();
        match &verdict {
            Err(reason) if !self.wedge_logged.swap(true, Ordering::Relaxed) => {
                tracing::error!(%reason, "liveness fails: the pipeline is wedged");
            }
            Ok(()) if self.wedge_logged.swap(false, Ordering::Relaxed) => {
                info!("liveness: the pipeline progresses again");
            }
            _ => {}
        }
        verdict
    }

    fn wedged(&self) -> Result<(), String> {
        let (pipeline, write) = self.stalls();
        let stalled = longest(pipeline, write);
        if stalled <= self.stall_timeout {
            return Ok(());
        }
        let polled = self.consumer_polled_ms.load(Ordering::Relaxed);
        let silent = Duration::from_millis(self.now_ms().saturating_sub(polled));
        if silent > self.stall_timeout {
            return Err(format!(
                "consumer thread stalled: no poll for {}s",
                silent.as_secs()
            ));
        }
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        match write {
            Some((lane, stuck)) if stuck > pipeline => Err(format!(
                "pipeline stalled: the batch write of lane {lane} has not advanced for {}s while \
                 PostgreSQL and Kafka answer ({in_flight} messages in flight)",
                stuck.as_secs()
            )),
            _ => Err(format!(
                "pipeline stalled: {in_flight} messages in flight and nothing durable for {}s \
                 while PostgreSQL and Kafka answer",
                pipeline.as_secs()
            )),
        }
    }

    /// `Ok` when ready, otherwise the short reason `/readyz` reports.
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_draining() {
            return Err("draining".into());
        }
        if !self.db_ok() {
            return Err("postgres unavailable".into());
        }
        if self.writes.any_failing() {
            return Err("postgres unavailable: batch writes failing".into());
        }
        if let Some(reason) = self.kafka.get().or_else(|| self.consumer.get()) {
            return Err(reason);
        }
        let polled = self.consumer_polled_ms.load(Ordering::Relaxed);
        if polled == 0 {
            return Err("consumer not running".into());
        }
        if self.now_ms().saturating_sub(polled) > CONSUMER_STALL.as_millis() as u64 {
            return Err("consumer stalled".into());
        }
        if !self.group_member.load(Ordering::Relaxed) {
            return Err("consumer has not joined its group yet".into());
        }
        for problem in [
            &self.dead_letter_topic_missing,
            &self.dead_letter_topic_refusing,
            &self.dead_letter_topic_unavailable,
            &self.schema_registry,
        ] {
            if let Some(reason) = problem.get() {
                return Err(reason);
            }
        }
        Ok(())
    }
}

/// The longer of the pipeline's stall and its stuck write's.
fn longest(pipeline: Duration, write: Option<(usize, Duration)>) -> Duration {
    pipeline.max(write.map_or(Duration::ZERO, |(_, d)| d))
}

#[cfg(test)]
mod tests;
