//! CPU accounting from `/proc`: the CPU time of every party sharing the machine (worker,
//! PostgreSQL, this harness with its embedded broker, everything else) between two snapshots.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions; _SC_CLK_TCK is always defined on Linux.
    let t = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of a process or thread, in clock ticks, from a `stat` file.
fn stat_ticks(path: &str) -> Option<u64> {
    stat_fields(path).map(|(ticks, _)| ticks)
}

/// utime + stime (clock ticks) and minor page faults of a process or thread, from a `stat` file.
fn stat_fields(path: &str) -> Option<(u64, u64)> {
    let stat = fs::read_to_string(path).ok()?;
    // The command name may hold spaces or parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // After ")": state is field 3, so minflt (10), utime (14) and stime (15) are at 7, 11, 12.
    Some((field(11)? + field(12)?, field(7)?))
}

/// The entries of a `/proc` directory named by a number (processes, or a process's threads).
fn numbered(dir: &str) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect()
}

/// The command name of a process or thread (`comm`), trimmed.
fn comm(path: &Path) -> String {
    fs::read_to_string(path.join("comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn process_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// Who used the machine's CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    Worker,
    /// PostgreSQL backends serving a benchmark database (and their autovacuum workers).
    PgBench,
    /// PostgreSQL's shared processes: WAL writer, checkpointer, background writer, launchers.
    PgShared,
    /// PostgreSQL backends of other databases (other work on this machine).
    PgOther,
    /// librdkafka's mock cluster threads (the broker), inside this harness.
    Broker,
    /// The rest of this harness: producer, probes, naive consumer, ceiling client.
    Harness,
}

impl Party {
    pub const ALL: [Party; 6] = [
        Party::Worker,
        Party::PgBench,
        Party::PgShared,
        Party::Broker,
        Party::Harness,
        Party::PgOther,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Party::Worker => "worker",
            Party::PgBench => "postgres (bench backends)",
            Party::PgShared => "postgres (wal writer, checkpointer, ...)",
            Party::PgOther => "postgres (other databases)",
            Party::Broker => "broker (mock cluster, in harness)",
            Party::Harness => "harness (client side)",
        }
    }
}

/// What a worker's thread does, told by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerThread {
    /// tokio's workers: the processors (decode, validate, batch writes) and the HTTP server.
    Runtime,
    /// The consumer thread: polls librdkafka, copies messages out, hands them to the lanes.
    Consumer,
    /// librdkafka's own threads (`rdk:*`): fetching, parsing record batches, commits.
    Librdkafka,
    /// Everything else (the lag monitor, metrics upkeep, ...).
    Other,
}

impl WorkerThread {
    pub const ALL: [WorkerThread; 4] = [
        WorkerThread::Runtime,
        WorkerThread::Consumer,
        WorkerThread::Librdkafka,
        WorkerThread::Other,
    ];

    fn of(comm: &str) -> Self {
        match comm {
            "tokio-rt-worker" => Self::Runtime,
            "kafka-consumer" => Self::Consumer,
            c if c.starts_with("rdk:") => Self::Librdkafka,
            _ => Self::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Runtime => "runtime (decode, write)",
            Self::Consumer => "consumer thread",
            Self::Librdkafka => "librdkafka",
            Self::Other => "other",
        }
    }
}

/// A worker thread's CPU ticks, voluntary context switches and minor page faults.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadUse {
    ticks: u64,
    switches: u64,
    faults: u64,
}

/// CPU ticks per process/thread at one moment, and the machine's busy ticks.
pub struct CpuSnapshot {
    at: Instant,
    ticks: HashMap<(u32, u32), (Party, u64)>,
    /// The worker processes' live threads, by thread id.
    threads: HashMap<(u32, u32), (WorkerThread, ThreadUse)>,
    machine_busy: u64,
}

/// CPU used by each party between two snapshots, in CPU seconds.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub wall: f64,
    pub by: Vec<(Party, f64)>,
    pub machine: f64,
    /// The workers' threads by kind (threads alive at the second snapshot; one that ended in
    /// between is in [`Party::Worker`] only).
    pub threads: Vec<ThreadCpu>,
}

/// What one kind of worker thread used between two snapshots.
#[derive(Debug, Clone, Copy)]
pub struct ThreadCpu {
    pub kind: WorkerThread,
    pub seconds: f64,
    /// Voluntary context switches: sleeps that a wake-up ended.
    pub switches: u64,
    /// Minor page faults: mostly memory touched for the first time since it was mapped.
    pub faults: u64,
}

impl CpuUse {
    pub fn of(&self, party: Party) -> f64 {
        self.by
            .iter()
            .find(|(p, _)| *p == party)
            .map_or(0.0, |(_, s)| *s)
    }

    /// The worker's CPU per event, µs (all worker processes together).
    pub fn worker_us_per_event(&self, events: usize) -> f64 {
        us_per_event(self.of(Party::Worker), events)
    }

    /// Busy CPU seconds not accounted for by any party: other processes on the machine.
    pub fn other(&self) -> f64 {
        let ours: f64 = self
            .by
            .iter()
            .filter(|(p, _)| *p != Party::PgOther)
            .map(|(_, s)| s)
            .sum();
        (self.machine - ours).max(0.0)
    }

    /// The CPU per event of one kind of worker thread, µs.
    pub fn thread_us_per_event(&self, kind: WorkerThread, events: usize) -> f64 {
        let seconds = self
            .threads
            .iter()
            .find(|t| t.kind == kind)
            .map_or(0.0, |t| t.seconds);
        us_per_event(seconds, events)
    }

    /// "runtime (decode, write) 2.01 µs, ...; per 1,000 events, voluntary context switches:
    /// ...; minor page faults: ..."
    pub fn threads_per_event(&self, events: usize) -> String {
        let per_thousand = |n: u64| n as f64 / events.max(1) as f64 * 1e3;
        let each = |value: &dyn Fn(&ThreadCpu) -> String| {
            let parts: Vec<String> = self
                .threads
                .iter()
                .map(|t| format!("{} {}", t.kind.label(), value(t)))
                .collect();
            parts.join(", ")
        };
        format!(
            "{}; per 1,000 events, voluntary context switches: {}; minor page faults: {}",
            each(&|t| format!("{:.2} µs", us_per_event(t.seconds, events))),
            each(&|t| format!("{:.1}", per_thousand(t.switches))),
            each(&|t| format!("{:.0}", per_thousand(t.faults))),
        )
    }

    /// "worker 0.93, postgres ... " in cores (CPU seconds per wall second).
    pub fn summary(&self) -> String {
        let wall = self.wall.max(1e-9);
        let mut parts: Vec<String> = Party::ALL
            .iter()
            .filter(|p| **p != Party::PgOther)
            .map(|p| format!("{} {:.2}", p.label(), self.of(*p) / wall))
            .collect();
        parts.push(format!("everything else {:.2}", self.other() / wall));
        format!(
            "{} (cores, of 2; machine busy {:.2})",
            parts.join(", "),
            self.machine / wall
        )
    }
}

impl CpuSnapshot {
    pub fn take(worker: Option<u32>, bench_db_prefix: &str) -> Self {
        Self::take_all(worker.as_slice(), bench_db_prefix)
    }

    /// As [`CpuSnapshot::take`], with every process in `workers` counted as the worker.
    pub fn take_all(workers: &[u32], bench_db_prefix: &str) -> Self {
        let mut ticks = HashMap::new();
        let me = std::process::id();
        for (tid, path) in numbered(&format!("/proc/{me}/task")) {
            let party = if comm(&path) == "rdk:mock" {
                Party::Broker
            } else {
                Party::Harness
            };
            if let Some(t) = stat_ticks(&format!("/proc/{me}/task/{tid}/stat")) {
                ticks.insert((me, tid), (party, t));
            }
        }
        let mut threads = HashMap::new();
        for &pid in workers {
            if let Some(t) = process_ticks(pid) {
                ticks.insert((pid, 0), (Party::Worker, t));
            }
            for (tid, path) in numbered(&format!("/proc/{pid}/task")) {
                let stat = stat_fields(&format!("/proc/{pid}/task/{tid}/stat"));
                let switches = voluntary_switches(&path);
                if let (Some((ticks, faults)), Some(switches)) = (stat, switches) {
                    let kind = WorkerThread::of(&comm(&path));
                    let used = ThreadUse {
                        ticks,
                        switches,
                        faults,
                    };
                    threads.insert((pid, tid), (kind, used));
                }
            }
        }
        for (pid, path) in numbered("/proc") {
            if comm(&path) != "postgres" {
                continue;
            }
            let title = fs::read(path.join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let party = if title.contains(bench_db_prefix) {
                Party::PgBench
            } else if title.contains('(') || title.contains("autovacuum worker") {
                // "postgres: 15/main: user db 127.0.0.1(port) state": a client backend.
                Party::PgOther
            } else {
                Party::PgShared
            };
            if let Some(t) = process_ticks(pid) {
                ticks.insert((pid, 0), (party, t));
            }
        }
        Self {
            at: Instant::now(),
            ticks,
            threads,
            machine_busy: machine_busy_ticks(),
        }
    }

    /// What each party used since `start` (processes that ended in between are not counted).
    pub fn since(&self, start: &CpuSnapshot) -> CpuUse {
        let hz = clock_ticks();
        let mut sums: HashMap<Party, u64> = HashMap::new();
        for (key, (party, t)) in &self.ticks {
            let before = start.ticks.get(key).map_or(0, |(_, b)| *b);
            *sums.entry(*party).or_default() += t.saturating_sub(before);
        }
        let mut by: Vec<(Party, f64)> = sums.into_iter().map(|(p, t)| (p, t as f64 / hz)).collect();
        by.sort_by_key(|(p, _)| *p);
        let mut threads: HashMap<WorkerThread, ThreadUse> = HashMap::new();
        for (key, (kind, now)) in &self.threads {
            let before = start.threads.get(key).map(|(_, b)| *b).unwrap_or_default();
            let sum = threads.entry(*kind).or_default();
            sum.ticks += now.ticks.saturating_sub(before.ticks);
            sum.switches += now.switches.saturating_sub(before.switches);
            sum.faults += now.faults.saturating_sub(before.faults);
        }
        let threads = WorkerThread::ALL
            .iter()
            .filter_map(|k| {
                let u = threads.get(k)?;
                Some(ThreadCpu {
                    kind: *k,
                    seconds: u.ticks as f64 / hz,
                    switches: u.switches,
                    faults: u.faults,
                })
            })
            .collect();
        CpuUse {
            wall: self.at.duration_since(start.at).as_secs_f64(),
            by,
            machine: self.machine_busy.saturating_sub(start.machine_busy) as f64 / hz,
            threads,
        }
    }
}

/// CPU seconds spread over `events`, in µs per event.
fn us_per_event(seconds: f64, events: usize) -> f64 {
    seconds / events.max(1) as f64 * 1e6
}

/// `voluntary_ctxt_switches` of a thread, from its `status` file.
fn voluntary_switches(task: &Path) -> Option<u64> {
    fs::read_to_string(task.join("status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
        .trim()
        .parse()
        .ok()
}

/// Busy ticks of all CPUs (everything but idle and iowait), from `/proc/stat`.
fn machine_busy_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle)
}
