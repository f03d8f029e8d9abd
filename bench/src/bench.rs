//! What every phase shares: the settings, the runtime, the PostgreSQL server, the broker and the
//! backlog's placement, the oracle's final state; and the helpers the phases have in common
//! (fresh databases, starting a worker, checking a final state against the oracle).

use std::path::PathBuf;
use std::time::Duration;

use crate::kafka::Placement;
use crate::pg::{FinalState, Server};
use crate::settings::Settings;
use crate::stream::Expected;
use crate::worker::{WorkerProc, WorkerSpec};

/// The backlog's topic.
pub const TOPIC: &str = "bench-orders";
/// The latency phase's topic (paced publishing).
const LATENCY_TOPIC: &str = "bench-latency";

/// The latency topic of round `round` (from 0): each round starts on an empty topic of its own.
pub fn latency_topic(round: usize) -> String {
    format!("{LATENCY_TOPIC}-{}", round + 1)
}
/// The topic of the sustainable-rate search's step `step` (from 0).
pub fn sustain_topic(step: usize) -> String {
    format!("bench-sustain-{}", step + 1)
}
/// A topic that stays empty (startup and idle memory).
pub const IDLE_TOPIC: &str = "bench-idle";
/// Every database the harness creates is named `<DB_PREFIX><run id>_<what>`.
pub const DB_PREFIX: &str = "ow_bench_";

pub fn log(line: impl AsRef<str>) {
    eprintln!("[bench] {}", line.as_ref());
}

pub struct Bench {
    pub s: Settings,
    pub rt: tokio::runtime::Runtime,
    pub server: Server,
    pub run_id: String,
    pub brokers: String,
    pub placement: Placement,
    pub expected: Expected,
    /// Every database created, dropped at the end unless `BENCH_KEEP_DBS=1`.
    pub databases: Vec<String>,
}

impl Bench {
    /// Lower case, letters, digits and `_` only, whatever `what` holds (a variant's name, a
    /// ceiling method's): the name goes into SQL unquoted (where PostgreSQL folds it to lower
    /// case) and into the URL as is, so the two must not differ.
    fn db_name(&self, what: &str) -> String {
        let what: String = what
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9') => c,
                _ => '_',
            })
            .collect();
        format!("{DB_PREFIX}{}_{what}", self.run_id)
    }

    /// A new database migrated by the worker binary; its URL.
    pub fn fresh_db(&mut self, what: &str) -> String {
        let name = self.db_name(what);
        self.databases.push(name.clone());
        self.rt
            .block_on(self.server.fresh_database(&name, &self.s.bin))
    }

    /// Writes dirty pages out, so the phase about to start does not pay for the previous one's.
    pub fn checkpoint(&self) {
        self.rt.block_on(self.server.checkpoint());
    }

    /// Drops the database `fresh_db(what)` created, unless `BENCH_KEEP_DBS=1`. Every phase
    /// drops its database once it has read what it measures: a database left behind holds
    /// tables that autovacuum visits later, and in the latency rounds such a vacuum of an
    /// earlier phase's table came with seconds of p99 three to four times the rest
    /// (docs/performance.md).
    pub fn drop_db(&mut self, what: &str) {
        if !self.s.keep_dbs {
            let name = self.db_name(what);
            self.rt.block_on(self.server.drop_database(&name));
            self.databases.retain(|db| *db != name);
        }
    }

    /// Drops every database of this run, unless `BENCH_KEEP_DBS=1`.
    pub fn drop_all_dbs(&mut self) {
        if !self.s.keep_dbs {
            for db in std::mem::take(&mut self.databases) {
                self.rt.block_on(self.server.drop_database(&db));
            }
        }
    }

    /// `<log dir>/<run id>-<name>`: where this run's worker logs and timelines go.
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.s.log_dir.join(format!("{}-{name}", self.run_id))
    }

    /// Starts the worker binary on `topic` as group `group`, writing to `url`; its log goes to
    /// `log_file("<log>.log")`.
    pub fn worker(
        &self,
        topic: &str,
        group: &str,
        url: &str,
        args: &[String],
        log: &str,
    ) -> WorkerProc {
        WorkerProc::spawn(&WorkerSpec {
            bin: &self.s.bin,
            brokers: &self.brokers,
            database_url: url,
            topic,
            group,
            extra_args: args,
            log: self.log_file(&format!("{log}.log")),
        })
    }

    /// A worker for a paced phase (sustain, latency): the latency flags, group
    /// `bench-<label>-<run id>` on `topic`, started and waited for until it is ready and owns every
    /// partition, so that publishing starts into a consumer that is already reading.
    pub fn paced_worker(&self, topic: &str, url: &str, label: &str) -> (WorkerProc, String) {
        let group = format!("bench-{label}-{}", self.run_id);
        let args = self.s.worker_args_with(&self.s.latency_args);
        let mut worker = self.worker(topic, &group, url, &args, label);
        worker
            .wait_ready(Duration::from_secs(30), Duration::from_millis(5))
            .unwrap_or_else(|| panic!("{label}: worker not ready within 30 s"));
        worker
            .wait_assigned(self.s.latency_partitions as usize, Duration::from_secs(60))
            .unwrap_or_else(|| {
                panic!("{label}: worker not assigned {topic}'s partitions within 60 s")
            });
        (worker, group)
    }

    /// Whether `got` has the oracle's row count and sum of versions.
    pub fn check_state(&self, got: &FinalState) -> Result<(), String> {
        let e = &self.expected;
        if got.rows != e.rows || got.version_sum != e.version_sum {
            return Err(format!(
                "final state differs from the oracle: {} rows (sum of versions {}), expected {} ({})",
                got.rows, got.version_sum, e.rows, e.version_sum
            ));
        }
        Ok(())
    }
}
