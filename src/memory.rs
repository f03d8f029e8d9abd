//! Handing freed memory back to the kernel once the pipeline goes idle.
//!
//! Invariant: [`IdleRelease::run`] is called only from the consumer thread, when nothing has been
//! consumed for a while and nothing is in flight, at most once per idle period. The buffers a
//! backlog grew (each pooled PostgreSQL connection keeps a batch-sized send buffer) are shrunk
//! first, then glibc's arenas are trimmed: glibc keeps freed memory (librdkafka's prefetch
//! buffers, the lanes, the batches), so without this a worker that drained a backlog would hold
//! its peak RSS for as long as it runs (docs/performance.md). [`tune_allocator`], called once at
//! start, keeps large blocks out of the arenas so that trimming them can give memory back.

use sqlx::PgPool;
use tokio::runtime::Handle;

use crate::db;

/// What an idle worker gives back, and the runtime the pool's connections return through.
pub(crate) struct IdleRelease {
    pub pool: PgPool,
    pub runtime: Handle,
}

impl IdleRelease {
    pub fn run(&self) {
        // A pooled connection returns to the pool through a spawned task.
        let _in_runtime = self.runtime.enter();
        db::shrink_idle_connections(&self.pool);
        release_free_heap();
    }
}

/// Keeps large allocations (a batch's send buffer, a Fetch response) out of the heap arenas:
/// glibc otherwise raises its mmap threshold to the largest block freed, after which such blocks
/// live in the arenas and fragment them, and the arenas cannot be trimmed around live data.
/// Called once, before any thread starts.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes no pointers; it only sets glibc's malloc parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Blocks of this size and above are mapped on their own and unmapped when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Returns the free pages of every malloc arena to the kernel. A no-op where the C library is not
/// glibc.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it walks glibc's own arenas under their locks and is
    // safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
