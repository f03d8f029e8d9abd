//! Optional phase, peers: the consumers a team would run instead of order-worker, each draining
//! the same backlog from the same broker into a fresh, migrated database of the same server, as
//! the end-to-end phase does: a hand-written Python consumer (confluent-kafka batches, one
//! multi-row upsert per batch, a synchronous commit) and Quix Streams with its PostgreSQLSink.
//! Their scripts are in `bench/peers/`; the Python they run is `BENCH_PEERS_PYTHON` (a venv that
//! `scripts/bench.sh` builds from PyPI). The clock runs from process start until the group has
//! committed every partition's end offset; the final state is checked against the oracle, and
//! a peer that cannot reach it is reported with what it left, not failed.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::{Bench, DB_PREFIX, TOPIC, log};
use crate::cpu::{CpuSnapshot, CpuUse};
use crate::e2e::E2eResult;
use crate::kafka::Probe;
use crate::numbers::{per_second, rate_str, secs_or};
use crate::pg;
use crate::worker::{Memory, mib};

/// The peers, by phase name: (script, what it is).
pub const PEERS: [(&str, &str, &str); 2] = [
    (
        "python",
        "python_consumer.py",
        "hand-written Python: confluent-kafka consume(500), one multi-row upsert with a version guard + dead letters per batch, synchronous commit",
    ),
    (
        "quix",
        "quix_sink.py",
        "Quix Streams, PostgreSQLSink with upsert_on_primary_key",
    ),
];

pub struct PeerRun {
    pub name: &'static str,
    pub what: &'static str,
    /// Process start → every offset committed; `None` when it did not finish in time.
    pub committed: Option<Duration>,
    pub cpu: CpuUse,
    pub peak_rss: u64,
    /// The final state against the oracle.
    pub state: Result<(), String>,
    pub dead_letters: i64,
}

impl PeerRun {
    pub fn rate(&self, events: usize) -> Option<f64> {
        self.committed.map(|d| per_second(events, d))
    }
}

/// Runs each peer whose phase name is in `BENCH_PHASES`.
/// `digest` is the ceiling's, which every correct final state matches.
pub fn peers(b: &mut Bench, digest: Option<&str>) -> Vec<PeerRun> {
    let chosen: Vec<_> = PEERS.iter().filter(|(name, _, _)| b.s.runs(name)).collect();
    chosen
        .into_iter()
        .map(|(name, script, what)| run(b, (name, script, what), digest))
        .collect()
}

fn run(
    b: &mut Bench,
    (name, script, what): (&'static str, &str, &'static str),
    digest: Option<&str>,
) -> PeerRun {
    let label = format!("peer-{name}");
    let url = b.fresh_db(&label);
    let group = format!("bench-{label}-{}", b.run_id);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
    let log_path = b.log_file(&format!("{label}.log"));
    let log_file = std::fs::File::create(&log_path).expect("peer log");
    b.checkpoint();
    log(format!("{label}: draining the backlog"));
    let started = Instant::now();
    let mut child = Command::new(&b.s.peers_python)
        .arg(dir.join(script))
        .args([&b.brokers, TOPIC, &group, &url])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("peer log"))
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", b.s.peers_python));
    let pid = child.id();
    let before = CpuSnapshot::take(Some(pid), DB_PREFIX);
    let probe = Probe::new(&b.brokers, &group, TOPIC, b.s.partitions);
    let deadline = started + Duration::from_secs(b.s.peers_timeout_secs);
    let mut committed = None;
    while Instant::now() < deadline {
        if probe.caught_up() {
            committed = Some(started.elapsed());
            break;
        }
        if child.try_wait().ok().flatten().is_some() {
            log(format!("{label}: exited early, see {}", log_path.display()));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = CpuSnapshot::take(Some(pid), DB_PREFIX).since(&before);
    let peak_rss = Memory::of(pid).peak;
    let _ = child.kill();
    let _ = child.wait();
    let got = b.rt.block_on(pg::final_state(&url));
    let dead_expected = b.expected.mix.invalid_total() as i64;
    let state = b.check_state(&got).and_then(|()| {
        if digest.is_some_and(|d| d != got.digest) {
            Err("rows differ from the ceiling's (digest)".to_owned())
        } else if got.dead_letters != dead_expected {
            Err(format!(
                "{} dead letters, expected {dead_expected}",
                got.dead_letters
            ))
        } else {
            Ok(())
        }
    });
    b.drop_db(&label);
    log(format!(
        "{label}: {} ; {}",
        secs_or(committed, "did not finish"),
        state
            .as_ref()
            .err()
            .map_or("final state as the oracle's", String::as_str)
    ));
    PeerRun {
        name,
        what,
        committed,
        cpu,
        peak_rss,
        state,
        dead_letters: got.dead_letters,
    }
}

/// The report's section: the worker's end-to-end rounds and each peer, side by side.
pub fn section(peers: &[PeerRun], mains: &[&E2eResult], events: usize) -> String {
    let mut d = String::from("\n## Peers (the same backlog, broker and PostgreSQL)\n\n");
    let _ = writeln!(
        d,
        "| Consumer | Process start → all committed | Events/s | CPU µs/event (its own process) | Peak RSS | Final state |"
    );
    let _ = writeln!(d, "|---|---|---|---|---|---|");
    for e in mains {
        let _ = writeln!(
            d,
            "| order-worker (`{}`) | {} | {} | {:.2} | {:.1} MiB | {} |",
            e.label,
            secs_or(e.committed, "-"),
            e.rate(events).map_or("-".to_owned(), rate_str),
            e.cpu.worker_us_per_event(events),
            mib(e.peak_rss),
            e.state
                .as_ref()
                .err()
                .map_or("as the oracle's", String::as_str)
        );
    }
    for p in peers {
        let _ = writeln!(
            d,
            "| {} ({}) | {} | {} | {:.2} | {:.1} MiB | {} |",
            p.name,
            p.what,
            secs_or(p.committed, "did not finish"),
            p.rate(events).map_or("-".to_owned(), rate_str),
            p.cpu.worker_us_per_event(events),
            mib(p.peak_rss),
            p.state
                .as_ref()
                .err()
                .map_or("as the oracle's".to_owned(), |e| format!(
                    "**{e}** ({} dead letters)",
                    p.dead_letters
                ))
        );
    }
    d
}
