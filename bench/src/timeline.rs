//! The drain timeline: the worker sampled every 250 ms on a thread of its own while a phase runs
//! (`/metrics` and `/proc`), written as a TSV file next to the worker's log.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::{http_get, metric_sum};
use crate::worker::{Memory, WorkerProc, mib};

/// One look at the worker while it drains: from `/metrics` and `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since the worker process started.
    pub t: f64,
    pub consumed: f64,
    /// Messages made durable: applied, duplicate or dead-lettered.
    pub done: f64,
    pub paused: f64,
    pub in_flight: f64,
    pub queued: f64,
    pub rss: u64,
}

/// A worker being sampled.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Samples `worker` every 250 ms until [`Sampler::finish`].
    pub fn start(worker: &WorkerProc) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = sample_worker(
            worker.http,
            worker.pid,
            worker.started,
            Duration::from_millis(250),
            stop.clone(),
        );
        Self { stop, thread }
    }

    /// Stops sampling, writes the timeline to `tsv` and returns it.
    pub fn finish(self, tsv: &Path) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let timeline = self.thread.join().unwrap_or_default();
        write_timeline(tsv, &timeline);
        timeline
    }
}

/// Samples the worker every `every` until `stop` is set, on a thread of its own.
fn sample_worker(
    http: SocketAddr,
    pid: u32,
    started: Instant,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some((200, m)) = http_get(http, "/metrics", Duration::from_secs(2)) {
                out.push(Sample {
                    t: started.elapsed().as_secs_f64(),
                    consumed: metric_sum(&m, "order_worker_messages_consumed_total"),
                    done: metric_sum(&m, "order_worker_events_applied_total")
                        + metric_sum(&m, "order_worker_events_duplicate_total")
                        + metric_sum(&m, "order_worker_dead_letters_total"),
                    paused: metric_sum(&m, "order_worker_partitions_paused"),
                    in_flight: metric_sum(&m, "order_worker_in_flight_messages"),
                    queued: metric_sum(&m, "order_worker_channel_depth_messages"),
                    rss: Memory::of(pid).rss,
                });
            }
            std::thread::sleep(every);
        }
        out
    })
}

/// The drain timeline as a TSV file.
fn write_timeline(path: &Path, timeline: &[Sample]) {
    let mut tsv = String::from(
        "t_s\tconsumed\tdurable\tpaused_partitions\tin_flight\tqueued_in_lanes\trss_mib\n",
    );
    for x in timeline {
        let _ = writeln!(
            tsv,
            "{:.2}\t{:.0}\t{:.0}\t{:.0}\t{:.0}\t{:.0}\t{:.1}",
            x.t,
            x.consumed,
            x.done,
            x.paused,
            x.in_flight,
            x.queued,
            mib(x.rss)
        );
    }
    let _ = std::fs::write(path, tsv);
}
