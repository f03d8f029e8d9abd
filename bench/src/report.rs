//! The report: the summary table, one row per measure with its target and status (the detailed
//! sections follow it, from `details.rs`), and the formatting helpers both use.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::bench::Bench;
use crate::ceiling::{CeilingRun, RoundResult};
use crate::cpu::WorkerThread;
use crate::details::details;
use crate::e2e::E2eResult;
use crate::latency::{LatencyRun, median_round};
use crate::naive::NaiveRun;
use crate::numbers::{median, median_f64, ms, rate_str, secs_or};
use crate::peers::PeerRun;
use crate::replicas::ReplicaRun;
use crate::startup::{SizeResult, StartupRun};
use crate::sustain::Sustain;
use crate::worker::mib;

/// Everything the phases measured, and what the report says about the run itself.
pub struct Results {
    pub size: Option<SizeResult>,
    /// Ceiling and end to end, round by round.
    pub rounds: Vec<RoundResult>,
    pub naive: Option<NaiveRun>,
    /// The peers that ran (`python`, `quix` in `BENCH_PHASES`).
    pub peers: Vec<PeerRun>,
    /// The sustainable-rate search.
    pub sustain: Option<Sustain>,
    /// The latency rounds (`BENCH_LATENCY_ROUNDS`), in order.
    pub latency: Vec<LatencyRun>,
    pub startup: Option<StartupRun>,
    /// Startup again with `sslmode=disable`.
    pub startup_plain: Option<StartupRun>,
    /// `BENCH_VARIANTS`: end to end with other worker flags.
    pub variants: Vec<E2eResult>,
    /// The replicas phase, one run per worker count.
    pub replicas: Vec<ReplicaRun>,
    pub setup: Setup,
}

/// The run's circumstances, for the report's Setup section.
pub struct Setup {
    pub load_before: String,
    pub started: Instant,
    pub payload_bytes: usize,
    /// The most messages in one partition of the backlog.
    pub per_partition_max: i64,
    pub pg_settings: Vec<String>,
}

impl Results {
    /// The main end-to-end runs, one per round.
    pub fn mains(&self) -> Vec<&E2eResult> {
        self.rounds.iter().filter_map(|r| r.e2e.as_ref()).collect()
    }

    /// The median over the rounds of the fastest verified ceiling load.
    pub fn ceiling_rate(&self) -> Option<f64> {
        median_f64(
            self.rounds
                .iter()
                .filter_map(|r| r.best())
                .map(|c| c.rate()),
        )
    }
}

/// The median over the rounds of the end-to-end rate.
pub fn e2e_rate(rounds: &[RoundResult], events: usize) -> Option<f64> {
    median_f64(rounds.iter().filter_map(|r| r.e2e.as_ref()?.rate(events)))
}

/// `f` of each round's end-to-end run and best ceiling load, for the rounds that have both.
fn per_round(
    rounds: &[RoundResult],
    f: impl Fn(&E2eResult, &CeilingRun) -> Option<f64>,
) -> Vec<f64> {
    rounds
        .iter()
        .filter_map(|r| f(r.e2e.as_ref()?, r.best()?))
        .collect()
}

/// The whole report, Markdown.
pub fn render(b: &Bench, r: &Results) -> String {
    let t = table(b, r);
    let d = details(b, r);
    format!("# order-worker benchmark, run {}\n\n{t}\n{d}", b.run_id)
}

/// The summary table.
fn table(b: &Bench, r: &Results) -> String {
    let Results {
        size,
        rounds,
        naive,
        peers,
        sustain,
        latency: lat,
        startup: start,
        startup_plain: start_plain,
        replicas,
        ..
    } = r;
    let ev = b.s.events;
    let best: Vec<&CeilingRun> = rounds.iter().filter_map(|r| r.best()).collect();
    let ceiling_rate = r.ceiling_rate();
    let e2e_rate = e2e_rate(rounds, ev);
    let mains = r.mains();
    let ratios = per_round(rounds, |e, c| Some(e.rate(ev)? / c.rate()));
    let all_ok = mains.iter().all(|e| e.state.is_ok());
    let n_rounds = rounds.len();
    let of_rounds = if n_rounds > 1 {
        format!(", median of {n_rounds} rounds")
    } else {
        String::new()
    };
    let mut t = String::new();
    let _ = writeln!(t, "| # | Measure | Result | Target | Status |");
    let _ = writeln!(t, "|---|---|---|---|---|");
    if let Some(c) = ceiling_rate {
        let mut methods: Vec<String> = best.iter().map(|c| c.method.clone()).collect();
        methods.sort();
        methods.dedup();
        let _ = writeln!(
            t,
            "| 1 | Ceiling: the stream's {} valid rows into an identical empty `orders` by the fastest method (`{}`){} | {} rows/s | (reference) | |",
            rate_str(best.first().map_or(0.0, |c| c.rows as f64)),
            methods.join("`, `"),
            of_rounds,
            rate_str(c)
        );
    }
    if let Some(rate) = e2e_rate {
        let committed: Vec<String> = mains
            .iter()
            .map(|e| {
                e.committed
                    .map_or("-".into(), |c| format!("{:.1}", c.as_secs_f64()))
            })
            .collect();
        let _ = writeln!(
            t,
            "| 2 | End to end: {}-event backlog, process start → every offset committed{}{} | {} events/s ({} s) | | |",
            rate_str(ev as f64),
            of_rounds,
            if all_ok {
                ""
            } else {
                " (**final state wrong**)"
            },
            rate_str(rate),
            committed.join(" / ")
        );
    }
    if let Some(ratio) = median_f64(ratios.iter().copied()) {
        let each: Vec<String> = ratios
            .iter()
            .map(|r| format!("{:.0}%", r * 100.0))
            .collect();
        let _ = writeln!(
            t,
            "| 2/1 | End to end / ceiling{} | {:.0}%{} | ≥ 95% in every round | {} |",
            if n_rounds > 1 {
                " (each round against its own ceiling)"
            } else {
                ""
            },
            ratio * 100.0,
            if n_rounds > 1 {
                format!(" ({})", each.join(", "))
            } else {
                String::new()
            },
            status(ratios.iter().all(|r| *r >= 0.95) && all_ok)
        );
    }
    let us: Vec<f64> = mains
        .iter()
        .map(|e| e.cpu.worker_us_per_event(ev))
        .collect();
    if let Some(med) = median_f64(us.iter().copied()) {
        let each: Vec<String> = us.iter().map(|u| format!("{u:.2}")).collect();
        let _ = writeln!(
            t,
            "| 2 | Worker CPU per event while draining (worker CPU seconds / events{of_rounds}; each: {}) | {med:.2} µs | ≤ 3 µs | {} |",
            each.join(", "),
            status(us.iter().all(|u| *u <= 3.0))
        );
        let kinds = [
            WorkerThread::Runtime,
            WorkerThread::Consumer,
            WorkerThread::Librdkafka,
        ];
        let split: Vec<String> = mains
            .iter()
            .map(|e| {
                let parts: Vec<String> = kinds
                    .iter()
                    .map(|k| format!("{:.2}", e.cpu.thread_us_per_event(*k, ev)))
                    .collect();
                parts.join(" / ")
            })
            .collect();
        let names: Vec<&str> = kinds.iter().map(|k| k.label()).collect();
        let _ = writeln!(
            t,
            "| | (of it, by thread, each round: {}) | {} µs | (info) | |",
            names.join(" / "),
            split.join("; ")
        );
    }
    let drain = per_round(rounds, |e, c| Some(e.drain_rate(ev)? / c.rate()));
    if let Some(d) = median_f64(drain.iter().copied()) {
        let _ = writeln!(
            t,
            "| | (drain only: first durable row → all committed, without startup and group join) | {:.0}% of ceiling | (info) | |",
            d * 100.0
        );
    }
    let per_cpu = per_round(rounds, |e, c| {
        Some(e.events_per_cpu_second(ev) / c.rows_per_cpu_second())
    });
    if let Some(x) = median_f64(per_cpu.iter().copied()) {
        let _ = writeln!(
            t,
            "| | (CPU-normalized: events per CPU-second of worker + PostgreSQL / rows per CPU-second of PostgreSQL + loader) | {:.0}% | (info) | |",
            x * 100.0
        );
    }
    if let Some(n) = &naive {
        let _ = writeln!(
            t,
            "| 3 | Naive baseline: 1 upsert + 1 commit + 1 sync offset commit per message ({:.0} s) | {} events/s | (reference) | |",
            n.result.elapsed.as_secs_f64(),
            rate_str(n.result.rate())
        );
        if let Some(r) = e2e_rate {
            let x = r / n.result.rate();
            let _ = writeln!(
                t,
                "| 2/3 | End to end / naive | {x:.0}× | ≥ 10× | {} |",
                status(x >= 10.0)
            );
        }
    }
    for p in peers {
        let _ = writeln!(
            t,
            "| 6 | Peer: {} ({}): process start → all committed / CPU per event / peak RSS | {} / {:.2} µs / {:.1} MiB{} | (reference) | |",
            p.name,
            p.what,
            secs_or(p.committed, "did not finish"),
            p.cpu.worker_us_per_event(ev),
            mib(p.peak_rss),
            if p.state.is_ok() {
                ""
            } else {
                "; **final state wrong**"
            }
        );
    }
    if !replicas.is_empty() {
        let _ = writeln!(t, "{}", crate::replicas::summary_row(replicas, ev));
    }
    if !mains.is_empty() {
        let peak = mains.iter().map(|e| e.peak_rss).max().unwrap_or(0);
        let idle = mains.iter().map(|e| e.idle_rss).max().unwrap_or(0);
        let worst = if n_rounds > 1 { ", worst round" } else { "" };
        let _ = writeln!(
            t,
            "| 2 | Worker peak RSS while draining (VmHWM{worst}) | {:.1} MiB | ≤ 32 MiB | {} |",
            mib(peak),
            status(peak > 0 && mib(peak) <= 32.0)
        );
        let _ = writeln!(
            t,
            "| 2 | Worker idle RSS after the backlog ({} s without messages{worst}) | {:.1} MiB | ≤ 16 MiB | {} |",
            b.s.idle_secs,
            mib(idle),
            status(idle > 0 && mib(idle) <= 16.0)
        );
    }
    if let Some(st) = &start
        && let Some(idle) = median(&st.idle_rss)
    {
        let _ = writeln!(
            t,
            "| 5 | Worker idle RSS, fresh start ({} partitions assigned, {} s idle; median of {}) | {:.1} MiB | ≤ 16 MiB | {} |",
            b.s.partitions,
            b.s.idle_secs,
            st.idle_rss.len(),
            mib(idle),
            status(mib(idle) <= 16.0)
        );
    }
    if let Some(su) = sustain {
        let tried: Vec<String> = su
            .steps
            .iter()
            .map(|st| {
                format!(
                    "{} {}",
                    rate_str(st.rate),
                    if st.holds { "holds" } else { "no" }
                )
            })
            .collect();
        let _ = writeln!(
            t,
            "| 4a | Sustainable rate: the highest paced rate with flat lag for {:.0} s (steps: {}) | {} | (reference) | |",
            b.s.sustain_secs,
            tried.join(", "),
            su.rate.map_or("none held".to_owned(), |r| format!(
                "{} events/s",
                rate_str(r)
            ))
        );
    }
    if let Some(l) = median_round(lat) {
        let (p50, p99, max) = (l.p(0.5), l.p(0.99), l.max());
        let of_rounds = if lat.len() > 1 {
            let each: Vec<String> = lat.iter().map(|r| format!("{:.1}×", r.ratio())).collect();
            format!(
                ", the median of {} rounds by p99 / p50 (each: {})",
                lat.len(),
                each.join(", ")
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "| 4 | Latency, event time → {}, at {} events/s ({}; `fetch.wait.max.ms=10`, see below){of_rounds}: p50 / p99 / max | {:.0} / {:.0} / {:.0} ms (p99 = {:.1}× p50) | p99 ≤ 2× p50 in every round | {} |",
            if l.to_commit {
                "the row's commit"
            } else {
                "the row's transaction start (no commit times)"
            },
            rate_str(l.rate),
            latency_basis(b, sustain.as_ref()),
            p50,
            p99,
            max,
            l.ratio(),
            status(lat.iter().all(LatencyRun::passes))
        );
    }
    if let Some(st) = &start
        && let Some(med) = median(&st.ready)
    {
        let min = st.ready.iter().min().copied().unwrap_or_default();
        let max = st.ready.iter().max().copied().unwrap_or_default();
        let _ = writeln!(
            t,
            "| 5 | Startup: process start → /readyz 200 (median of {}; min {:.0}, max {:.0} ms) | {:.0} ms | ≤ 200 ms | {} |",
            st.ready.len(),
            ms(min),
            ms(max),
            ms(med),
            status(med <= Duration::from_millis(200))
        );
    }
    if let Some(sp) = &start_plain
        && let (Some(med), Some(idle)) = (median(&sp.ready), median(&sp.idle_rss))
    {
        let _ = writeln!(
            t,
            "| 5 | (same without TLS to PostgreSQL, `sslmode=disable`: startup median / idle RSS) | {:.0} ms / {:.1} MiB | (info) | |",
            ms(med),
            mib(idle)
        );
    }
    if let Some(sz) = &size {
        let bytes = sz.stripped.unwrap_or(sz.built);
        let _ = writeln!(
            t,
            "| | Release binary, stripped{} | {:.1} MB ({:.1} MiB) | ≤ 15 MB | {} |",
            if sz.stripped.is_some() {
                ""
            } else {
                " (strip not found: as built)"
            },
            bytes as f64 / 1e6,
            mib(bytes),
            status(bytes as f64 <= 15e6)
        );
    }

    t
}

/// What the latency phase's rate is: set, half of 4a, or half of 2 when no step held.
fn latency_basis(b: &Bench, sustain: Option<&Sustain>) -> &'static str {
    if b.s.latency_rate.is_some() {
        "BENCH_LATENCY_RATE"
    } else if sustain.and_then(|s| s.rate).is_some() {
        "half of 4a"
    } else {
        "half of 2: no sustainable rate measured"
    }
}

pub fn status(pass: bool) -> &'static str {
    if pass { "PASS" } else { "**MISS**" }
}
