//! The disk's flush time beside a latency round: every 20 ms, on a thread of its own, an 8 KiB
//! write and `fdatasync` of a file in the run's log directory, each timed. A commit waits for
//! PostgreSQL's WAL flush, so a stall of the disk that holds PostgreSQL's WAL holds every commit
//! at once; this shows whether a round's slow second had one. It measures PostgreSQL's disk only
//! when the log directory is on the same device as the server's data directory (the report says).
//! Its own load is 400 KiB/s and 50 flushes a second, against the round's ~30 MB/s of WAL.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::kafka::now_ms;

const EVERY: Duration = Duration::from_millis(20);
const BLOCK: usize = 8 << 10;
/// Blocks the probe cycles through: one 16 MiB file, rewritten in place (never grown, so no
/// flush waits for the file system to allocate).
const BLOCKS: u64 = 2048;

/// One timed flush: when it started (Unix ms) and how long the write and `fdatasync` took (ms).
pub type Flush = (i64, f64);

pub struct FlushProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Flush>>>,
    path: PathBuf,
}

impl FlushProbe {
    /// Starts timing flushes of a file at `path` (created, removed by [`FlushProbe::finish`]).
    /// Without the file, it times nothing and says so once.
    pub fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = match prepared(&path) {
            Ok(file) => {
                let stop = stop.clone();
                Some(std::thread::spawn(move || probe(&file, &stop)))
            }
            Err(e) => {
                crate::bench::log(format!("flush probe off: {}: {e}", path.display()));
                None
            }
        };
        Self { stop, thread, path }
    }

    /// Stops, removes the file and returns every flush timed, in order.
    pub fn finish(mut self) -> Vec<Flush> {
        self.stop.store(true, Ordering::Relaxed);
        let flushes = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let _ = std::fs::remove_file(&self.path);
        flushes
    }
}

/// The probe's file, written through once and flushed, so that the timed writes overwrite
/// blocks the file system has already allocated.
fn prepared(path: &Path) -> std::io::Result<File> {
    let file = File::create(path)?;
    let zeros = vec![0u8; BLOCK];
    for block in 0..BLOCKS {
        file.write_all_at(&zeros, block * BLOCK as u64)?;
    }
    file.sync_all()?;
    Ok(file)
}

fn probe(file: &File, stop: &AtomicBool) -> Vec<Flush> {
    let data = vec![0x5a_u8; BLOCK];
    let mut flushes = Vec::new();
    let mut block = 0;
    while !stop.load(Ordering::Relaxed) {
        let at = now_ms();
        let started = Instant::now();
        let done = file
            .write_all_at(&data, block * BLOCK as u64)
            .and_then(|()| file.sync_data());
        if done.is_err() {
            break;
        }
        flushes.push((at, started.elapsed().as_secs_f64() * 1000.0));
        block = (block + 1) % BLOCKS;
        std::thread::sleep(EVERY.saturating_sub(started.elapsed()));
    }
    flushes
}

/// Whether `a` and `b` are on the same device; `None` when either cannot be read.
pub fn same_device(a: &Path, b: &Path) -> Option<bool> {
    Some(std::fs::metadata(a).ok()?.dev() == std::fs::metadata(b).ok()?.dev())
}

/// The longest flush, and how many took over `over_ms`; `None` when none was timed.
pub fn worst(flushes: &[Flush], over_ms: f64) -> Option<(f64, usize)> {
    let max = flushes.iter().map(|f| f.1).reduce(f64::max)?;
    Some((max, flushes.iter().filter(|f| f.1 > over_ms).count()))
}
