//! What the integration tests share: real PostgreSQL, real brokers, the worker in-process or as
//! the built binary, and reading its metrics the way Prometheus does.

pub mod confluent;
pub mod kafka;
pub mod pg;
pub mod registry;
pub mod tls;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use order_worker::Worker;
use order_worker::config::{Cli, Command as Sub, RunConfig};

/// A port that was free a moment ago (for processes that must be told their port).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Flags for a pipeline that fills at once: one processor, lanes and batches of 4 messages.
/// A write that stalls then leaves the lane full within a few messages, and the consumer pauses.
pub const TINY_PIPELINE: [&str; 6] = [
    "--processors",
    "1",
    "--channel-capacity",
    "4",
    "--batch-max-rows",
    "4",
];

/// A stream of valid, distinct events only: no invalid message, no duplicate.
pub fn valid_only(orders: u64, seed: u64) -> order_worker::synth::SynthSpec {
    order_worker::synth::SynthSpec {
        orders,
        invalid_ratio: 0.0,
        duplicate_ratio: 0.0,
        seed,
    }
}

/// A name no other test uses (topics, groups).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Waits until `check` holds, polling; fails the test with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `check` (which asserts) every 500 ms for `period`: what must hold throughout.
pub async fn throughout<F, Fut>(period: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let started = Instant::now();
    while started.elapsed() < period {
        check().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Settings every test worker shares: loopback HTTP on any port, quick group membership.
const TEST_FLAGS: &[&str] = &[
    "--http-addr",
    "127.0.0.1:0",
    "--kafka-property",
    "session.timeout.ms=6000,heartbeat.interval.ms=1000",
    "--commit-interval",
    "200ms",
];

/// A worker configuration built the way the binary builds it: from command-line flags, then
/// validated.
pub fn worker_config(
    brokers: &str,
    db_url: &str,
    topic: &str,
    group: &str,
    extra: &[&str],
) -> RunConfig {
    let mut args = vec![
        "order-worker",
        "run",
        "--brokers",
        brokers,
        "--database-url",
        db_url,
    ];
    args.extend(["--topic", topic, "--group-id", group]);
    args.extend(TEST_FLAGS);
    args.extend(extra);
    match Cli::parse_with_default(args)
        .expect("test flags parse")
        .command
    {
        Sub::Run(run) => {
            run.validate().expect("test flags are valid");
            run
        }
        other => panic!("expected run, got {other:?}"),
    }
}

pub async fn start_worker(
    brokers: &str,
    db_url: &str,
    topic: &str,
    group: &str,
    extra: &[&str],
) -> Worker {
    let cfg = worker_config(brokers, db_url, topic, group, extra);
    Worker::start(&cfg.kafka, &cfg.worker)
        .await
        .expect("worker starts")
}

/// An HTTP GET of the worker's endpoints.
async fn http_get(addr: SocketAddr, path: &str) -> reqwest::Result<reqwest::Response> {
    reqwest::get(format!("http://{addr}{path}")).await
}

/// Like [`get`], but `None` while nothing listens yet (a process still starting).
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let r = http_get(addr, path).await.ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = http_get(addr, path).await.expect("http get");
    (r.status().as_u16(), r.text().await.expect("body"))
}

/// A sample's value in a Prometheus text exposition, for a metric name and label pairs.
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let all = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        (metric == name && all).then(|| value.parse().ok())?
    })
}

pub async fn metric(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, text) = get(addr, "/metrics").await;
    sample(&text, name, labels).unwrap_or_else(|| panic!("{name}{labels:?} is not exported"))
}

/// The worker binary: `ORDER_WORKER_BIN` (e.g. a release build, for memory figures), else the
/// binary cargo built for these tests.
pub fn worker_bin() -> PathBuf {
    std::env::var_os("ORDER_WORKER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_order-worker").into())
}

/// The built `order-worker` binary running as a child process.
pub struct Binary {
    child: Child,
    pub http: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Binary {
    /// Runs `order-worker run` with the test flags plus `extra`, logging to a file.
    pub fn run(brokers: &str, db_url: &str, topic: &str, group: &str, extra: &[&str]) -> Self {
        Self::run_with_env(brokers, db_url, topic, group, extra, &[])
    }

    /// Like [`Binary::run`], with environment variables added (they win over the defaults).
    pub fn run_with_env(
        brokers: &str,
        db_url: &str,
        topic: &str,
        group: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("worker.log");
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut args: Vec<String> = ["run", "--brokers", brokers, "--database-url", db_url]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--topic", topic, "--group-id", group].map(String::from));
        args.extend(TEST_FLAGS.iter().map(|s| s.to_string()));
        args.extend(extra.iter().map(|s| s.to_string()));
        let http_flag = args
            .iter()
            .position(|a| a == "127.0.0.1:0")
            .expect("http flag");
        args[http_flag] = http.to_string();
        let child = Command::new(worker_bin())
            .args(&args)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn order-worker");
        Self {
            child,
            http,
            log,
            _dir: dir,
        }
    }

    /// A gauge or counter of its `/metrics`; `None` while it does not answer.
    pub async fn sample(&self, name: &str) -> Option<f64> {
        let (_, text) = try_get(self.http, "/metrics").await?;
        sample(&text, name, &[])
    }

    /// Waits until `/readyz` answers 503 with a reason containing `reason`; returns the body.
    pub async fn unready_because(&self, reason: &str) -> String {
        let mut last = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some((status, body)) = try_get(self.http, "/readyz").await {
                if status == 503 && body.contains(reason) {
                    return body;
                }
                last = format!("{status} {body}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "/readyz never said {reason:?}; last answer {last:?}; log:\n{}",
            self.log_text()
        );
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self) {
        eventually("/readyz 200", Duration::from_secs(60), || async {
            try_get(self.http, "/readyz")
                .await
                .is_some_and(|(status, _)| status == 200)
        })
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal the worker");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn exit_within(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker did not exit within {timeout:?}; log: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process's peak resident set size so far in bytes (VmHWM, the kernel's high-water
    /// mark, so no sampling can miss a spike), if it still runs.
    #[allow(dead_code)] // used by the chaos suite
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.status_bytes("VmHWM:")
    }

    /// The heap and stacks the process holds now in bytes (RssAnon: its resident memory without
    /// the pages of its binary and libraries), if it still runs.
    #[allow(dead_code)] // used by the chaos suite
    pub fn anon_rss_bytes(&self) -> Option<u64> {
        self.status_bytes("RssAnon:")
    }

    fn status_bytes(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb = status
            .lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?;
        kb.parse::<u64>().ok().map(|kb| kb * 1024)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
