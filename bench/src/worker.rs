//! The worker binary as a subprocess: started with a clean environment on a free loopback port,
//! waited for (`/readyz`, partitions assigned), stopped with SIGTERM, and its resident memory
//! read from `/proc`.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::metrics::{http_get, metric};

/// A free loopback port (bound, then released; the worker binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The allocator settings the image gives the worker (the Dockerfile's `ENV GLIBC_TUNABLES`), so
/// that the benchmark measures what a deployment runs. A `GLIBC_TUNABLES=...` word in the extra
/// arguments replaces them.
fn image_tunables() -> String {
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
    let text = fs::read_to_string(&dockerfile).expect("the repository's Dockerfile");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ENV GLIBC_TUNABLES="))
        .expect("the Dockerfile sets GLIBC_TUNABLES")
        .trim_matches('"')
        .to_owned()
}

/// The worker binary, running.
pub struct WorkerProc {
    child: Child,
    pub pid: u32,
    pub http: SocketAddr,
    pub started: Instant,
    pub started_wall: SystemTime,
    pub log: PathBuf,
}

pub struct WorkerSpec<'a> {
    pub bin: &'a Path,
    pub brokers: &'a str,
    pub database_url: &'a str,
    pub topic: &'a str,
    pub group: &'a str,
    pub extra_args: &'a [String],
    pub log: PathBuf,
}

impl WorkerProc {
    /// Starts `order-worker run` with a clean environment: only the flags given here and in
    /// `extra_args` configure it, never a variable left in the caller's shell. `NAME=value` words
    /// of `extra_args` (upper case name) are environment variables, as in a shell:
    /// `MALLOC_ARENA_MAX=2 --processors 8`; `?name=value` words are added to the database URL's
    /// query (`?sslmode=disable`); an `@path` word runs that build of the worker instead of
    /// `bin` (two builds side by side in one run).
    pub fn spawn(spec: &WorkerSpec<'_>) -> Self {
        let is_env = |a: &String| {
            a.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
        };
        let (env, rest): (Vec<&String>, Vec<&String>) =
            spec.extra_args.iter().partition(|a| is_env(a));
        // `?sslmode=disable`-style words are appended to the database URL.
        let (query, rest): (Vec<&String>, Vec<&String>) =
            rest.into_iter().partition(|a| a.starts_with('?'));
        let (builds, flags): (Vec<&String>, Vec<&String>) =
            rest.into_iter().partition(|a| a.starts_with('@'));
        let bin = builds.last().map_or(spec.bin, |b| Path::new(&b[1..]));
        let mut database_url = spec.database_url.to_owned();
        for q in query {
            let sep = if database_url.contains('?') { '&' } else { '?' };
            database_url.push(sep);
            database_url.push_str(&q[1..]);
        }
        let port = free_port();
        let http: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = fs::File::create(&spec.log).expect("worker log file");
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GLIBC_TUNABLES", image_tunables())
            .env("LOG_FORMAT", "json")
            .env(
                "RUST_LOG",
                std::env::var("BENCH_WORKER_RUST_LOG").unwrap_or("info".into()),
            )
            .arg("run")
            .args(["--brokers", spec.brokers])
            .args(["--database-url", &database_url])
            .args(["--topic", spec.topic])
            .args(["--group-id", spec.group])
            .args(["--http-addr", &http.to_string()])
            .envs(env.iter().filter_map(|e| e.split_once('=')))
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let started_wall = SystemTime::now();
        let started = Instant::now();
        let child = cmd.spawn().expect("start the worker binary");
        Self {
            pid: child.id(),
            child,
            http,
            started,
            started_wall,
            log: spec.log.clone(),
        }
    }

    /// Polls `/readyz` every `every` until it answers 200; the time since the process started.
    pub fn wait_ready(&mut self, timeout: Duration, every: Duration) -> Option<Duration> {
        let deadline = self.started + timeout;
        while Instant::now() < deadline {
            if let Some((200, _)) = http_get(self.http, "/readyz", Duration::from_millis(500)) {
                return Some(self.started.elapsed());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!(
                    "worker exited before ready ({status}); see {}",
                    self.log.display()
                );
                return None;
            }
            std::thread::sleep(every);
        }
        None
    }

    /// Whether the process already exited (a refused flag, a crash): nothing left to wait for.
    pub fn exited(&mut self) -> bool {
        let gone = matches!(self.child.try_wait(), Ok(Some(_)));
        if gone {
            eprintln!("worker exited early; see {}", self.log.display());
        }
        gone
    }

    pub fn metrics(&self) -> String {
        http_get(self.http, "/metrics", Duration::from_secs(5))
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// Waits until the worker owns `partitions` partitions (group joined).
    pub fn wait_assigned(&self, partitions: usize, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let owned = metric(&self.metrics(), "order_worker_partitions_assigned", "");
            if owned.is_some_and(|n| n as usize >= partitions) {
                return Some(self.started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn memory(&self) -> Memory {
        Memory::of(self.pid)
    }

    /// SIGTERM, then waits for the graceful stop (SIGKILL after `timeout`).
    pub fn stop(mut self, timeout: Duration) -> (Option<ExitStatus>, Duration) {
        let asked = Instant::now();
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        while asked.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (Some(status), asked.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        (None, asked.elapsed())
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss: u64,
    /// VmHWM: the peak resident set since the process started.
    pub peak: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Self {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Self {
            rss: field("VmRSS:"),
            peak: field("VmHWM:"),
        }
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}
