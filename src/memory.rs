//! Handing freed heap back to the kernel once the pipeline goes idle.
//!
//! Invariant: called only from the consumer thread, when nothing has been consumed for a while
//! and nothing is in flight, at most once per idle period. glibc keeps freed memory in its arenas
//! (librdkafka's prefetch buffers, the lanes, the batches), so without this a worker that drained
//! a backlog would hold its peak RSS for as long as it runs (docs/performance.md).

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
