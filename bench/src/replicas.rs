//! Phase 7, replicas: the same backlog drained by 1, 2 and 3 workers in one group
//! (`BENCH_REPLICAS`), each count into a fresh database, all started together as a Deployment's
//! pods would be. Shows that adding replicas is not slower: on one 2-core machine it cannot be
//! faster either, since every replica and PostgreSQL share the same cores; what it measures is
//! the cost of the group's rebalances and of N sets of connections and batches.
//!
//! The counts run in turn, `BENCH_REPLICA_ROUNDS` times (1, 2, 3, 1, 2, 3, ...), and each count
//! is compared with one replica of its own round: a single drain moves by ±15% with the
//! machine's other load, more than the difference measured.
//!
//! The clock runs from the first process start until the group has committed every partition's
//! end offset; the final state is checked against the oracle as in the end-to-end phase.
//!
//! Every count runs with the group's initial rebalance delay at Kafka's default,
//! `GROUP_DELAY_MS`, so that the replicas form the group's first generation together. With no
//! delay the first replica takes every partition and each later one joins a live group, which
//! the mock broker holds open for the session timeout (45 s) where Kafka ends the join as soon
//! as every member has rejoined: a cost of the mock, not of the worker.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bench::{Bench, DB_PREFIX, TOPIC, log};
use crate::cpu::{CpuSnapshot, CpuUse};
use crate::kafka::{Broker, Probe};
use crate::numbers::{per_second, rate_str, secs_or};
use crate::pg;
use crate::worker::mib;

pub struct ReplicaRun {
    /// 1-based: the counts of one round run one after the other.
    pub round: usize,
    pub replicas: usize,
    /// First start → every offset committed; `None` when it did not finish in time.
    pub committed: Option<Duration>,
    /// First row written → every offset committed: the drain once the group has formed.
    pub drain: Option<Duration>,
    pub cpu: CpuUse,
    /// The largest peak RSS of any one replica.
    pub peak_rss: u64,
    pub state: Result<(), String>,
}

impl ReplicaRun {
    /// Events per second of the drain (first row → all committed), which leaves out the
    /// group's formation; it is what the ratios compare.
    pub fn rate(&self, events: usize) -> Option<f64> {
        self.drain.map(|d| per_second(events, d))
    }
}

/// Kafka's default `group.initial.rebalance.delay.ms`.
pub const GROUP_DELAY_MS: i32 = 3000;

/// What a run that did not finish shows instead of its times and rate.
const NOT_FINISHED: &str = "did not finish";

/// Every count in `BENCH_REPLICAS`, once per round; the broker's group delay is restored after.
pub fn replicas(b: &mut Bench, broker: &Broker, digest: Option<&str>) -> Vec<ReplicaRun> {
    broker.set_group_delay(GROUP_DELAY_MS);
    let counts = b.s.replicas.clone();
    let mut runs = Vec::new();
    for round in 1..=b.s.replica_rounds {
        for &n in &counts {
            runs.push(run(b, n, round, digest));
        }
    }
    broker.set_group_delay(b.s.group_delay_ms);
    runs
}

fn run(b: &mut Bench, n: usize, round: usize, digest: Option<&str>) -> ReplicaRun {
    let label = format!("replicas_{n}_r{round}");
    let url = b.fresh_db(&label);
    b.checkpoint();
    let group = format!("bench-{label}-{}", b.run_id);
    let probe = Probe::new(&b.brokers, &group, TOPIC, b.s.partitions);
    log(format!("{label}: {n} workers draining the backlog"));
    let before = CpuSnapshot::take(None, DB_PREFIX);
    let args = b.s.worker_args.clone();
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let mut workers: Vec<_> = (0..n)
        .map(|i| b.worker(TOPIC, &group, &url, &args, &format!("{label}-{i}")))
        .collect();
    let deadline = started + Duration::from_secs(600);
    let mut committed = None;
    while Instant::now() < deadline && !workers.iter_mut().any(|w| w.exited()) {
        if probe.caught_up() {
            committed = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let pids: Vec<u32> = workers.iter().map(|w| w.pid).collect();
    let cpu = CpuSnapshot::take_all(&pids, DB_PREFIX).since(&before);
    let peak_rss = workers.iter().map(|w| w.memory().peak).max().unwrap_or(0);
    for w in workers {
        let _ = w.stop(Duration::from_secs(40));
    }
    let got = b.rt.block_on(pg::final_state(&url));
    let t0 = started_wall
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let drain = match (committed, b.rt.block_on(pg::write_window(&url))) {
        (Some(c), Some((first, _))) => {
            c.checked_sub(Duration::from_secs_f64((first - t0).max(0.0)))
        }
        _ => None,
    };
    let state = b.check_state(&got).and_then(|()| {
        if digest.is_some_and(|d| d != got.digest) {
            Err("rows differ from the ceiling's (digest)".to_owned())
        } else {
            Ok(())
        }
    });
    b.drop_db(&label);
    let r = ReplicaRun {
        round,
        replicas: n,
        committed,
        drain,
        cpu,
        peak_rss,
        state,
    };
    log(format!(
        "{label}: {}, {} events/s, peak RSS {:.1} MiB per replica, {}",
        secs_or(r.committed, NOT_FINISHED),
        r.rate(b.s.events).map_or("-".to_owned(), rate_str),
        mib(r.peak_rss),
        r.state
            .as_ref()
            .err()
            .map_or("state verified", String::as_str)
    ));
    r
}

/// The drain rate of one replica in `run`'s round, which `run`'s rate is compared with.
fn one_replica_rate(runs: &[ReplicaRun], run: &ReplicaRun, events: usize) -> Option<f64> {
    runs.iter()
        .find(|r| r.round == run.round && r.replicas == 1)
        .and_then(|r| r.rate(events))
}

/// `run`'s drain rate over one replica's of the same round.
fn ratio(runs: &[ReplicaRun], run: &ReplicaRun, events: usize) -> Option<f64> {
    Some(run.rate(events)? / one_replica_rate(runs, run, events)?)
}

/// The summary table's row: each count's rate against one replica's, round by round.
pub fn summary_row(runs: &[ReplicaRun], events: usize) -> String {
    let mut counts: Vec<usize> = runs.iter().map(|r| r.replicas).collect();
    counts.sort_unstable();
    counts.dedup();
    let cells: Vec<String> = counts
        .iter()
        .map(|&n| {
            let of_n: Vec<&ReplicaRun> = runs.iter().filter(|r| r.replicas == n).collect();
            // Rates where no round has one replica to compare with (a count of 1, or
            // `BENCH_REPLICAS` without 1).
            let compared = n != 1
                && of_n
                    .iter()
                    .any(|r| one_replica_rate(runs, r, events).is_some());
            let each: Vec<String> = of_n
                .iter()
                .map(|r| match (r.rate(events), ratio(runs, r, events)) {
                    (None, _) => NOT_FINISHED.to_owned(),
                    (Some(x), _) if !compared => rate_str(x),
                    (Some(_), Some(x)) if x < 1.0 => format!("**{x:.2}**"),
                    (Some(_), Some(x)) => format!("{x:.2}"),
                    (Some(_), None) => "-".to_owned(),
                })
                .collect();
            let unit = if each.iter().all(|c| c == NOT_FINISHED) {
                ""
            } else if compared {
                "×"
            } else {
                "/s"
            };
            format!("{n}: {}{unit}", each.join(" / "))
        })
        .collect();
    let all_ok = runs.iter().all(|r| r.state.is_ok());
    format!(
        "| 7 | Replicas in one group on the same backlog, drain events/s (first row → all committed) against 1 replica of the same round, each round | {}{} | (reference: not slower) | |",
        cells.join("; "),
        if all_ok {
            ""
        } else {
            "; **final state wrong**"
        }
    )
}

/// The report's section: one row per run, with the ratio to one replica of its round.
pub fn section(runs: &[ReplicaRun], events: usize) -> String {
    let mut d = String::from("\n## 7. Replicas (one group, the same backlog)\n\n");
    let _ = writeln!(
        d,
        "Every count includes the group's initial rebalance delay, {GROUP_DELAY_MS} ms (Kafka's default), in which the replicas join together. The counts run in turn, round after round; each is compared with one replica of its own round.\n"
    );
    let _ = writeln!(
        d,
        "| Round | Replicas | First start → all committed | First row → all committed | Events/s (of that) | vs 1 replica | Worker CPU µs/event (all replicas) | Peak RSS (largest replica) | Final state | CPU (cores) |"
    );
    let _ = writeln!(d, "|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let _ = writeln!(
            d,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.1} MiB | {} | {} |",
            r.round,
            r.replicas,
            secs_or(r.committed, NOT_FINISHED),
            secs_or(r.drain, "-"),
            r.rate(events).map_or("-".to_owned(), rate_str),
            ratio(runs, r, events).map_or("-".to_owned(), |x| format!("{x:.2}×")),
            r.cpu.worker_us_per_event(events),
            mib(r.peak_rss),
            r.state
                .as_ref()
                .err()
                .map_or("as the oracle's", String::as_str),
            r.cpu.summary()
        );
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: usize = 1_000_000;

    fn drained(round: usize, replicas: usize, secs: Option<f64>) -> ReplicaRun {
        ReplicaRun {
            round,
            replicas,
            committed: secs.map(|s| Duration::from_secs_f64(s + 4.0)),
            drain: secs.map(Duration::from_secs_f64),
            cpu: CpuUse {
                wall: 0.0,
                by: Vec::new(),
                machine: 0.0,
                threads: Vec::new(),
            },
            peak_rss: 0,
            state: Ok(()),
        }
    }

    #[test]
    fn each_count_is_compared_with_one_replica_of_its_own_round() {
        let runs = [
            drained(1, 1, Some(10.0)),
            drained(1, 2, Some(8.0)),
            drained(2, 1, Some(5.0)),
            drained(2, 2, Some(6.4)),
        ];
        let row = summary_row(&runs, EVENTS);
        assert!(row.contains("1: 100,000 / 200,000/s;"), "{row}");
        assert!(row.contains("2: 1.25 / **0.78**×"), "{row}");
        assert!(section(&runs, EVENTS).contains("| 2 | 2 | 10.4 s | 6.4 s | 156,250 | 0.78× |"));
    }

    #[test]
    fn a_count_without_one_replica_to_compare_with_shows_its_rates() {
        let row = summary_row(
            &[drained(1, 2, Some(8.0)), drained(2, 2, Some(10.0))],
            EVENTS,
        );
        assert!(row.contains("| 2: 125,000 / 100,000/s |"), "{row}");
    }

    #[test]
    fn a_drain_that_did_not_finish_says_so_and_is_compared_with_nothing() {
        let runs = [drained(1, 1, None), drained(1, 3, Some(8.0))];
        let row = summary_row(&runs, EVENTS);
        assert!(row.contains("1: did not finish; 3: 125,000/s"), "{row}");
        assert!(section(&runs, EVENTS).contains("| 1 | 1 | did not finish | - | - | - |"));
    }

    #[test]
    fn a_wrong_final_state_is_called_out_in_the_row() {
        let mut wrong = drained(1, 2, Some(8.0));
        wrong.state = Err("rows differ".to_owned());
        let row = summary_row(&[drained(1, 1, Some(10.0)), wrong], EVENTS);
        assert!(row.contains("2: 1.25×; **final state wrong** |"), "{row}");
    }
}
