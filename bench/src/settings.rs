//! The harness's settings, read once from the environment (`BENCH_*`; the list with defaults is
//! in the header of `main.rs`).

use std::path::PathBuf;

use order_worker::synth::SynthSpec;

use crate::kafka::Pace;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not valid")),
        _ => default,
    }
}

pub struct Settings {
    pub events: usize,
    pub spec: SynthSpec,
    pub partitions: i32,
    pub group_delay_ms: i32,
    pub admin_url: String,
    pub bin: PathBuf,
    pub worker_args: Vec<String>,
    pub latency_args: Vec<String>,
    pub phases: Vec<String>,
    pub rounds: usize,
    pub ceiling_conns: Vec<usize>,
    /// Rows per UNNEST statement in the ceiling's loads: each size is a method of its own.
    pub ceiling_batches: Vec<usize>,
    pub naive_secs: u64,
    pub latency_secs: f64,
    pub latency_rate: Option<f64>,
    pub latency_partitions: i32,
    pub latency_warmup_secs: f64,
    pub latency_rounds: usize,
    /// Messages a partition gets in one paced burst (on average: keys pick the partition).
    pub paced_batch: usize,
    /// Steps of the sustainable-rate search, and each step's measured window, s.
    pub sustain_steps: usize,
    pub sustain_secs: f64,
    /// Where the search starts; else half the end-to-end rate.
    pub sustain_start: Option<f64>,
    /// The Python the peers run with, and how long each may take.
    pub peers_python: String,
    pub peers_timeout_secs: u64,
    /// The worker counts of the replicas phase, and how many times they all run in turn.
    pub replicas: Vec<usize>,
    pub replica_rounds: usize,
    /// Width of the slices of `<run>-latency-*-seconds.tsv`, ms.
    pub latency_slice_ms: i64,
    pub startup_runs: usize,
    pub startup_compare_tls: bool,
    pub idle_secs: u64,
    pub variants: Vec<(String, Vec<String>)>,
    pub out: Option<PathBuf>,
    pub log_dir: PathBuf,
    pub keep_dbs: bool,
}

impl Settings {
    pub fn from_env() -> Self {
        let events: usize = env_or("BENCH_EVENTS", 1_000_000);
        let orders: u64 = env_or("BENCH_ORDERS", (events as u64 / 5).max(1));
        let split = |s: String| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
        let list = |name: &str, default: &str| -> Vec<String> {
            env_or(name, default.to_owned())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        // A list of positive counts; entries that are not one are left out.
        let counts = |name: &str, default: &str| -> Vec<usize> {
            list(name, default)
                .iter()
                .filter_map(|c| c.parse().ok())
                .filter(|c| *c > 0)
                .collect()
        };
        let variants = env_or("BENCH_VARIANTS", String::new())
            .split(';')
            .filter_map(|v| {
                let (label, args) = v.split_once('=')?;
                Some((label.trim().to_owned(), split(args.to_owned())))
            })
            .collect();
        let rate: f64 = env_or("BENCH_LATENCY_RATE", 0.0);
        let sustain_start: f64 = env_or("BENCH_SUSTAIN_START", 0.0);
        Self {
            events,
            spec: SynthSpec {
                orders,
                invalid_ratio: env_or("BENCH_INVALID_RATIO", 0.01),
                duplicate_ratio: env_or("BENCH_DUPLICATE_RATIO", 0.02),
                seed: env_or("BENCH_SEED", 1),
            },
            partitions: env_or("BENCH_PARTITIONS", 256),
            group_delay_ms: env_or("BENCH_GROUP_DELAY_MS", 0),
            admin_url: env_or(
                "BENCH_DATABASE_URL",
                "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned(),
            ),
            bin: env_or("BENCH_WORKER_BIN", "target/release/order-worker".to_owned()).into(),
            worker_args: split(env_or("BENCH_WORKER_ARGS", String::new())),
            // Set but empty means none.
            latency_args: split(
                std::env::var("BENCH_LATENCY_ARGS")
                    .unwrap_or("--kafka-property fetch.wait.max.ms=10".to_owned()),
            ),
            phases: list(
                "BENCH_PHASES",
                "size,ceiling,e2e,naive,python,quix,sustain,latency,startup,replicas",
            ),
            rounds: env_or("BENCH_ROUNDS", 3).max(1),
            ceiling_conns: counts("BENCH_CEILING_CONNS", "2,4"),
            ceiling_batches: counts("BENCH_CEILING_BATCH", "1000,16000"),
            naive_secs: env_or("BENCH_NAIVE_SECS", 20),
            latency_secs: env_or("BENCH_LATENCY_SECS", 20.0),
            latency_rate: (rate > 0.0).then_some(rate),
            latency_partitions: env_or("BENCH_LATENCY_PARTITIONS", 16),
            latency_warmup_secs: env_or("BENCH_LATENCY_WARMUP_SECS", 3.0),
            latency_rounds: env_or("BENCH_LATENCY_ROUNDS", 3).max(1),
            paced_batch: env_or("BENCH_PACED_BATCH", 64).max(1),
            sustain_steps: env_or("BENCH_SUSTAIN_STEPS", 4).max(1),
            sustain_secs: env_or("BENCH_SUSTAIN_SECS", 60.0),
            sustain_start: (sustain_start > 0.0).then_some(sustain_start),
            peers_python: env_or("BENCH_PEERS_PYTHON", "python3".to_owned()),
            peers_timeout_secs: env_or("BENCH_PEERS_TIMEOUT_SECS", 600),
            replicas: counts("BENCH_REPLICAS", "1,2,3"),
            replica_rounds: env_or("BENCH_REPLICA_ROUNDS", 3).max(1),
            latency_slice_ms: env_or("BENCH_LATENCY_SLICE_MS", 1000).max(1),
            startup_runs: env_or("BENCH_STARTUP_RUNS", 7).max(1),
            startup_compare_tls: env_or("BENCH_STARTUP_COMPARE_TLS", 1u8) == 1,
            idle_secs: env_or("BENCH_IDLE_SECS", 5),
            variants,
            out: std::env::var("BENCH_OUT").ok().map(PathBuf::from),
            log_dir: env_or("BENCH_LOG_DIR", "target/bench".to_owned()).into(),
            keep_dbs: env_or("BENCH_KEEP_DBS", 0u8) == 1,
        }
    }

    pub fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }

    /// How the sustain and latency phases publish at `rate`: a burst every
    /// `paced_batch × latency_partitions / rate` seconds.
    pub fn paced(&self, rate: f64) -> Pace {
        Pace::Paced {
            rate,
            burst: self.paced_batch * self.latency_partitions.max(1) as usize,
        }
    }

    /// `BENCH_WORKER_ARGS` followed by `extra`: the flags of one worker run.
    pub fn worker_args_with(&self, extra: &[String]) -> Vec<String> {
        let mut args = self.worker_args.clone();
        args.extend(extra.iter().cloned());
        args
    }
}
