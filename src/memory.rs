//! Handing freed memory back to the kernel once the pipeline goes idle.
//!
//! Invariant: [`IdleRelease::run`] is called only from the consumer thread, when nothing has been
//! consumed for a while and nothing is in flight, at most once per idle period. The buffers a
//! backlog grew (each pooled PostgreSQL connection keeps a batch-sized send buffer) are shrunk
//! and the histograms' sample blocks freed first, then glibc's arenas are trimmed: glibc keeps
//! freed memory (librdkafka's prefetch buffers, the lanes, the batches), so without this a worker
//! that drained a backlog would hold its peak RSS for as long as it runs (docs/performance.md).
//! [`tune_allocator`], called once at start, keeps large blocks out of the arenas so that
//! trimming them can give memory back, and makes sure the process runs without per-thread caches
//! and with one arena per core: otherwise chunks parked in those caches and spread over many
//! arenas keep a drained worker ~2-3 MiB above a fresh one.

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
        crate::metrics::fold_pending_samples();
        release_free_heap();
    }
}

/// Called first thing in `main`, before any thread starts. Keeps large allocations (a batch's
/// send buffer, a Fetch response) out of the heap arenas: glibc otherwise raises its mmap
/// threshold to the largest block freed, after which such blocks live in the arenas and fragment
/// them, and the arenas cannot be trimmed around live data. Then, unless they are already in
/// place, re-executes the binary (same arguments, same pid, same name) with the settings of
/// `with_tunables` added to `GLIBC_TUNABLES`: glibc reads those only from the environment at
/// process start. If that fails, the worker runs on with glibc's defaults.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes no pointers; it only sets glibc's malloc parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
        if std::env::var_os(REEXECUTED).is_some() {
            // SAFETY: no other thread exists yet (see above), so nothing reads the environment
            // while it changes. The marker must not reach the processes this one starts.
            unsafe { std::env::remove_var(REEXECUTED) };
            return;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        if let Some(tunables) = with_tunables(
            std::env::var("GLIBC_TUNABLES").ok().as_deref(),
            std::env::var_os("MALLOC_ARENA_MAX").is_some(),
            cores,
        ) {
            use std::os::unix::process::CommandExt;
            // The binary's own path, not `/proc/self/exe`: the kernel names a process after the
            // file it executes, and `ps`, `top` or `pkill order-worker` would otherwise see
            // "exe". `/proc/self/exe` is the fallback for a binary replaced on disk meanwhile.
            let own = std::env::current_exe().ok().filter(|path| path.is_file());
            for program in own
                .into_iter()
                .chain([std::path::PathBuf::from("/proc/self/exe")])
            {
                let mut args = std::env::args_os();
                let arg0 = args.next().unwrap_or_default();
                // `exec` returns only if it failed.
                let _failed = std::process::Command::new(program)
                    .arg0(arg0)
                    .args(args)
                    .env("GLIBC_TUNABLES", &tunables)
                    .env(REEXECUTED, "1")
                    .exec();
            }
        }
    }
}

/// Set for the re-executed process, so that it never re-executes again: glibc rewrites
/// `GLIBC_TUNABLES` as it reads it, so the variable itself cannot tell.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const REEXECUTED: &str = "ORDER_WORKER_ALLOCATOR_TUNED";

/// The `GLIBC_TUNABLES` value with the worker's settings appended, or `None` when the operator
/// already set each of them (in `current`, or `MALLOC_ARENA_MAX` for the arenas):
///
/// - no per-thread cache (tcache): a thread keeps up to 7 freed chunks of each size for itself;
///   after a backlog those cached chunks sit all over the arenas, and `malloc_trim` cannot return
///   a page that holds one;
/// - at most one arena per core (glibc's default is eight): live data left after a backlog is
///   then packed into fewer arenas.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn with_tunables(current: Option<&str>, arena_env: bool, cores: usize) -> Option<String> {
    let current = current.unwrap_or("");
    let named = |name: &str| {
        current
            .split(':')
            .any(|entry| entry.split('=').next() == Some(name))
    };
    let mut parts: Vec<String> = Vec::new();
    if !named("glibc.malloc.tcache_count") {
        parts.push("glibc.malloc.tcache_count=0".into());
    }
    if !arena_env && !named("glibc.malloc.arena_max") {
        parts.push(format!("glibc.malloc.arena_max={cores}"));
    }
    if parts.is_empty() {
        return None;
    }
    if !current.is_empty() {
        parts.insert(0, current.to_owned());
    }
    Some(parts.join(":"))
}

/// Blocks of this size and above are mapped on their own and unmapped when freed. 64 KiB rather
/// than 256 KiB takes the mid-sized buffers that come and go with every batch (a batch's vector,
/// the statement's column arrays, a growing queue) out of the arenas too: at 256 KiB the heap
/// crept up through a 1M-event drain (28 -> 44 MiB RSS) while the data in flight stayed flat.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 64 * 1024;

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

#[cfg(test)]
mod tests {
    use super::with_tunables;

    #[test]
    fn a_plain_environment_gets_both_tunables() {
        assert_eq!(
            with_tunables(None, false, 2).as_deref(),
            Some("glibc.malloc.tcache_count=0:glibc.malloc.arena_max=2")
        );
    }

    #[test]
    fn tunables_the_operator_set_are_kept_and_the_missing_one_is_appended() {
        assert_eq!(
            with_tunables(Some("glibc.malloc.tcache_count=7"), false, 4).as_deref(),
            Some("glibc.malloc.tcache_count=7:glibc.malloc.arena_max=4")
        );
        assert_eq!(
            with_tunables(Some("glibc.malloc.check=0"), true, 4).as_deref(),
            Some("glibc.malloc.check=0:glibc.malloc.tcache_count=0")
        );
    }

    #[test]
    fn an_operator_who_set_both_is_not_overridden() {
        let once = with_tunables(None, false, 8).unwrap();
        assert_eq!(with_tunables(Some(&once), false, 8), None);
        assert_eq!(
            with_tunables(Some("glibc.malloc.tcache_count=1"), true, 8),
            None
        );
    }

    #[test]
    fn a_tunable_is_matched_by_its_whole_name() {
        assert_eq!(
            with_tunables(Some("glibc.malloc.tcache_count_x=1"), true, 2).as_deref(),
            Some("glibc.malloc.tcache_count_x=1:glibc.malloc.tcache_count=0")
        );
    }
}
