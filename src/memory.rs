//! Handing freed memory back to the kernel once the pipeline goes idle.
//!
//! Invariant: [`release_free_heap`] only returns pages that hold no live data; it is called from
//! the consumer thread when nothing has been consumed for a while and nothing is in flight. glibc
//! keeps freed memory (librdkafka's prefetch buffers, the lanes, the batches), so without this a
//! worker that drained a backlog would hold its peak RSS for as long as it runs.
//!
//! Trimming returns much more when the allocator is set up for it, which glibc reads only from
//! the environment at start: the image sets `GLIBC_TUNABLES` (see the Dockerfile) to
//! `glibc.malloc.tcache_count=0` (no per-thread caches, whose chunks pin pages all over the
//! arenas) and `glibc.malloc.arena_max=2` (live data packed into fewer arenas). Its
//! `glibc.malloc.mmap_threshold=1048576` keeps fetch responses and batch buffers in the heap,
//! which this trim returns once idle; docs/performance.md#decisions has the measurements.

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
