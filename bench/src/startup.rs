//! Phase 5, startup: process start to the first `/readyz` 200 (PostgreSQL and the broker up),
//! the idle RSS of a fresh worker that owns its partitions, the graceful stop; and the release
//! binary's size, as built and stripped.

use std::path::Path;
use std::time::Duration;

use crate::bench::{Bench, IDLE_TOPIC, log};

pub struct SizeResult {
    pub built: u64,
    pub stripped: Option<u64>,
}

pub fn measure_size(bin: &Path, dir: &Path) -> SizeResult {
    let built = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    let copy = dir.join("order-worker.stripped");
    let stripped = std::fs::copy(bin, &copy)
        .ok()
        .and_then(|_| std::process::Command::new("strip").arg(&copy).status().ok())
        .filter(|s| s.success())
        .and_then(|_| std::fs::metadata(&copy).ok())
        .map(|m| m.len());
    let _ = std::fs::remove_file(&copy);
    SizeResult { built, stripped }
}

pub struct StartupRun {
    pub ready: Vec<Duration>,
    pub idle_rss: Vec<u64>,
    pub stops: Vec<Duration>,
}

pub fn startup(b: &mut Bench, label: &str, extra: &[String]) -> StartupRun {
    let db = format!("startup{label}");
    let url = b.fresh_db(&db);
    let mut out = StartupRun {
        ready: Vec::new(),
        idle_rss: Vec::new(),
        stops: Vec::new(),
    };
    let args = b.s.worker_args_with(extra);
    for i in 0..b.s.startup_runs {
        let group = format!("bench-startup{label}-{i}-{}", b.run_id);
        let mut worker = b.worker(
            IDLE_TOPIC,
            &group,
            &url,
            &args,
            &format!("startup{label}-{i}"),
        );
        let ready = worker
            .wait_ready(Duration::from_secs(30), Duration::from_millis(1))
            .expect("worker ready");
        out.ready.push(ready);
        // The first three runs also wait for the group and stay idle: the idle RSS of a fresh worker.
        if i < 3
            && worker
                .wait_assigned(b.s.partitions as usize, Duration::from_secs(60))
                .is_some()
        {
            std::thread::sleep(Duration::from_secs(b.s.idle_secs));
            out.idle_rss.push(worker.memory().rss);
        }
        let (_, took) = worker.stop(Duration::from_secs(40));
        out.stops.push(took);
        log(format!(
            "startup{label} {i}: ready in {:.1} ms",
            ready.as_secs_f64() * 1000.0
        ));
    }
    b.drop_db(&db);
    out
}
