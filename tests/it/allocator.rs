//! The binary's allocator settings (src/memory.rs): glibc reads them only at process start, so
//! the worker re-executes itself once to get them, and leaves alone the ones an operator set.

use std::time::Duration;

use crate::helpers::pg::TestDb;
use crate::helpers::{Binary, eventually, try_get, unique};

/// Starts the binary with `env` and waits until it serves HTTP (so `main` is long past the
/// re-execution). No broker listens on the address: the worker keeps running, not ready.
async fn started(db: &TestDb, env: &[(&str, &str)]) -> Binary {
    let (topic, group) = (unique("orders"), unique("group"));
    let worker = Binary::run_with_env("127.0.0.1:9", &db.url, &topic, &group, &[], env);
    let http = worker.http;
    eventually(
        "the worker serves /healthz",
        Duration::from_secs(20),
        || async move { try_get(http, "/healthz").await.is_some() },
    )
    .await;
    worker
}

fn entry<'a>(environ: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    environ.iter().find_map(|e| e.strip_prefix(prefix.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_start_runs_on_as_the_same_process_with_the_tunables_added() {
    let db = TestDb::create().await;
    let worker = started(&db, &[("GLIBC_TUNABLES", "")]).await;
    let environ = worker.environ().expect("the worker runs");
    // The block of the second execve: the marker, and our tunables first in GLIBC_TUNABLES
    // (glibc rewrites this block as it parses it, so only the start of the value is checked).
    assert_eq!(entry(&environ, "ORDER_WORKER_ALLOCATOR_TUNED"), Some("1"));
    let tunables = entry(&environ, "GLIBC_TUNABLES").expect("GLIBC_TUNABLES is set");
    assert!(
        tunables.starts_with("glibc.malloc.tcache_count=0"),
        "GLIBC_TUNABLES={tunables}"
    );
    // The kernel names a process after the file it executed: `ps` and `pkill` must still find
    // an order-worker, not an "exe".
    assert_eq!(worker.comm().as_deref(), Some("order-worker"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunables_an_operator_set_are_left_as_they_are() {
    let db = TestDb::create().await;
    let mine = "glibc.malloc.tcache_count=7:glibc.malloc.arena_max=3";
    let worker = started(&db, &[("GLIBC_TUNABLES", mine)]).await;
    let environ = worker.environ().expect("the worker runs");
    assert_eq!(
        entry(&environ, "ORDER_WORKER_ALLOCATOR_TUNED"),
        None,
        "not re-executed"
    );
    let tunables = entry(&environ, "GLIBC_TUNABLES").expect("GLIBC_TUNABLES is set");
    assert!(
        tunables.starts_with("glibc.malloc.tcache_count=7"),
        "GLIBC_TUNABLES={tunables}"
    );
}
