//! Phase 4a, the sustainable rate: the highest paced rate at which a fresh worker's lag stays
//! flat for `BENCH_SUSTAIN_SECS`. A backlog drain folds several versions of an order into one
//! row, a steady stream cannot, so the drain rate overstates what a stream can be fed at; the
//! latency phase runs at half of this rate instead.
//!
//! Each step publishes the latency phase's kind of traffic at one rate to a topic of its own
//! (as many partitions as the latency topic), into a fresh database and worker, and reads the
//! group's lag every second. A step holds when the publisher kept the rate, the mean lag of the
//! window's last quarter exceeds its first quarter's by at most `MAX_GROWTH_SECS` of messages,
//! no sample exceeds `MAX_LAG_SECS` of messages, and the group catches up within `CATCH_UP` of
//! the last send. The search goes up by a quarter from a hold, down by a third from a miss, and
//! bisects once it has one of each.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::bench::{Bench, DB_PREFIX, log, sustain_topic};
use crate::cpu::{CpuSnapshot, CpuUse};
use crate::kafka::{self, Probe};
use crate::numbers::{per_second, rate_str, secs_or};
use crate::stream::generate_in_segments;

/// How much the mean lag may grow from the window's first quarter to its last, in seconds of
/// messages: a steady pipeline's lag is its batching and commit delay, a fraction of a second,
/// and a quarter of a second more over a minute is a queue that is building.
const MAX_GROWTH_SECS: f64 = 0.25;

/// The most lag, in seconds of messages, a step may show at any sample: a queue that grows
/// and shrinks by more than this is not a flat one even if it ends where it began.
const MAX_LAG_SECS: f64 = 1.0;

/// How long after the last send the group must have committed everything.
const CATCH_UP: Duration = Duration::from_secs(10);

pub struct SustainStep {
    pub rate: f64,
    pub achieved: f64,
    /// Mean lag over the first and the last quarter of the measured window, messages.
    pub lag_first: f64,
    pub lag_last: f64,
    pub lag_max: i64,
    /// Last send → every offset committed.
    pub caught_up: Option<Duration>,
    pub holds: bool,
    pub cpu: CpuUse,
    pub sent: usize,
}

impl SustainStep {
    /// Worker CPU per event, µs.
    pub fn worker_us_per_event(&self) -> f64 {
        self.cpu.worker_us_per_event(self.sent)
    }
}

pub struct Sustain {
    pub steps: Vec<SustainStep>,
    /// The highest rate that held, if any did.
    pub rate: Option<f64>,
}

/// Searches from `start` events/s, `BENCH_SUSTAIN_STEPS` steps.
pub fn sustainable_rate(b: &mut Bench, start: f64) -> Sustain {
    let mut steps = Vec::new();
    let (mut held, mut missed): (Option<f64>, Option<f64>) = (None, None);
    let mut rate = start;
    for step in 0..b.s.sustain_steps {
        let s = run_step(b, rate, step);
        if s.holds {
            held = Some(held.map_or(rate, |h| h.max(rate)));
        } else {
            missed = Some(missed.map_or(rate, |m| m.min(rate)));
        }
        steps.push(s);
        rate = match (held, missed) {
            (Some(h), Some(m)) => (h + m) / 2.0,
            (Some(h), None) => h * 1.25,
            (None, Some(m)) => m * (2.0 / 3.0),
            (None, None) => unreachable!("every step holds or misses"),
        };
    }
    Sustain { steps, rate: held }
}

fn run_step(b: &mut Bench, rate: f64, step: usize) -> SustainStep {
    let label = format!("sustain-s{}", step + 1);
    let topic = sustain_topic(step);
    let warmup = b.s.latency_warmup_secs;
    let secs = b.s.sustain_secs;
    let count = (rate * (warmup + secs)).ceil() as usize;
    let events_per_order = b.s.events as f64 / b.s.spec.orders as f64;
    let messages = generate_in_segments(&b.s.spec, events_per_order, count);
    let url = b.fresh_db(&label);
    b.checkpoint();
    let (worker, group) = b.paced_worker(&topic, &url, &label);
    log(format!(
        "{label}: {count} messages at {rate:.0}/s ({:.0} s)",
        warmup + secs
    ));
    let before = CpuSnapshot::take(Some(worker.pid), DB_PREFIX);
    let brokers = b.brokers.clone();
    let pace = b.s.paced(rate);
    let spawned = Instant::now();
    let publisher = {
        let topic = topic.clone();
        std::thread::spawn(move || kafka::publish(&brokers, &topic, &messages, pace))
    };
    let probe = Probe::new(&b.brokers, &group, &topic, b.s.latency_partitions);
    let started = Instant::now();
    let mut samples: Vec<(f64, i64)> = Vec::new();
    while !publisher.is_finished() {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(lag) = probe.lag() {
            samples.push((started.elapsed().as_secs_f64(), lag));
        }
    }
    let placement = publisher.join().expect("publisher");
    // The last acknowledgement, not this join: the loop above notices the end a second late.
    let sent_at = spawned + placement.elapsed;
    let mut caught_up = None;
    while sent_at.elapsed() < CATCH_UP {
        if probe.caught_up() {
            caught_up = Some(sent_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = CpuSnapshot::take(Some(worker.pid), DB_PREFIX).since(&before);
    let _ = worker.stop(Duration::from_secs(40));
    b.drop_db(&label);

    let achieved = per_second(count, placement.elapsed);
    let window: Vec<(f64, i64)> = samples.into_iter().filter(|(t, _)| *t >= warmup).collect();
    let quarter = (window.len() / 4).max(1);
    let mean =
        |s: &[(f64, i64)]| s.iter().map(|(_, l)| *l as f64).sum::<f64>() / s.len().max(1) as f64;
    let lag_first = mean(&window[..quarter.min(window.len())]);
    let lag_last = mean(&window[window.len().saturating_sub(quarter)..]);
    let lag_max = window.iter().map(|(_, l)| *l).max().unwrap_or(0);
    let holds = achieved >= rate * 0.97
        && lag_last - lag_first <= rate * MAX_GROWTH_SECS
        && lag_max as f64 <= rate * MAX_LAG_SECS
        && caught_up.is_some()
        && placement.failed == 0;
    log(format!(
        "{label}: {} at {achieved:.0}/s: lag {lag_first:.0} → {lag_last:.0} (max {lag_max}), caught up {}",
        if holds { "holds" } else { "does not hold" },
        caught_up.map_or("no".to_owned(), |d| format!(
            "after {:.1} s",
            d.as_secs_f64()
        ))
    ));
    SustainStep {
        rate,
        achieved,
        lag_first,
        lag_last,
        lag_max,
        caught_up,
        holds,
        cpu,
        sent: count,
    }
}

impl Sustain {
    /// The report's section: one line per step.
    pub fn details(&self, secs: f64) -> String {
        let mut d = String::from("\n## 4a. Sustainable rate\n\n");
        let _ = writeln!(
            d,
            "Each step: a fresh worker, database and topic (partitioned as the latency phase's), the latency phase's traffic paced for {secs:.0} s after the warm-up; lag read every second. Holds: the publisher kept the rate, the last quarter's mean lag exceeds the first quarter's by at most {MAX_GROWTH_SECS} s of messages, no sample exceeds {MAX_LAG_SECS} s of messages (which also keeps the lag within what the mock broker retains: a step past it would skip truncated messages, and its catch-up time means nothing), and every offset is committed within {} s of the last send.\n",
            CATCH_UP.as_secs()
        );
        let _ = writeln!(
            d,
            "| Rate | Achieved | Lag, first → last quarter (max) | Caught up after | Worker µs/event | CPU | Holds |"
        );
        let _ = writeln!(d, "|---|---|---|---|---|---|---|");
        for st in &self.steps {
            let _ = writeln!(
                d,
                "| {} | {} | {:.0} → {:.0} ({}) | {} | {:.2} | {} | {} |",
                rate_str(st.rate),
                rate_str(st.achieved),
                st.lag_first,
                st.lag_last,
                st.lag_max,
                secs_or(st.caught_up, "-"),
                st.worker_us_per_event(),
                st.cpu.summary(),
                if st.holds { "yes" } else { "no" }
            );
        }
        d
    }
}
