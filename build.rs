//! Embeds the git revision for the `order_worker_build_info` metric: `GIT_REVISION` when set (an
//! image build has no .git), else `git rev-parse`, else "unknown". Generates the Protobuf types
//! of the contract from `schema/order_event.proto`, the file producers use, so the two cannot
//! differ (compiled by protox, in Rust: no `protoc` to install). Links the binary with packed
//! relative relocations where glibc can load them, and (release) without unwind tables and
//! with the code a worker runs placed first.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GIT_REVISION");
    // `sqlx::migrate!` embeds migrations/ at compile time; without this a migration added since
    // the last build would be missing from an incremental build (sqlx's documented advice).
    println!("cargo:rerun-if-changed=migrations");
    for watched in [".git/HEAD", ".git/refs/heads"] {
        if Path::new(watched).exists() {
            println!("cargo:rerun-if-changed={watched}");
        }
    }
    let revision = std::env::var("GIT_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ORDER_WORKER_REVISION={revision}");

    protobuf_types();

    // A position-independent binary carries one 24-byte record per pointer to patch at load
    // (~400 KB here); the loader reads them all, so they stay resident. Packed (DT_RELR) they
    // take a few KB, but only glibc >= 2.36 can load them, and the linker then makes the binary
    // require it: so only for a native build on such a glibc (Debian 12, Ubuntu 22.10 and later).
    let var = |key: &str| std::env::var(key).unwrap_or_default();
    let native = var("HOST") == var("TARGET") && var("TARGET").ends_with("-linux-gnu");
    if native && host_glibc().is_some_and(|version| version >= (2, 36)) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // The release profile aborts on a panic (Cargo.toml); build scripts are not told the
    // strategy (`CARGO_CFG_PANIC` is the target's default), so the profile stands for it.
    // `ORDER_WORKER_UNWIND_TABLES=keep` keeps the tables, for profilers that walk stacks with
    // them (`perf record --call-graph dwarf`, heaptrack).
    println!("cargo:rerun-if-env-changed=ORDER_WORKER_UNWIND_TABLES");
    let keep = var("ORDER_WORKER_UNWIND_TABLES") == "keep";
    if var("PROFILE") == "release" && var("TARGET").ends_with("-linux-gnu") {
        // GNU ld for both scripts below: lld keeps either every `.eh_frame` input or none.
        println!("cargo:rustc-link-arg-bins=-fuse-ld=bfd");
        if !keep {
            without_unwind_tables();
        }
        hot_text_first();
    }
}

/// The code a worker runs, listed per architecture in `link/hot-text-<arch>.ld`
/// (scripts/hot-text.sh), is linked into one run before the rest of `.text`: the kernel maps code
/// in 64 KiB runs around each page touched, so the same code spread over the 11.5 MB of `.text`
/// holds ~5 MiB more of every RSS figure (docs/performance.md). The link map beside the build is
/// what the script reads to regenerate the list. An architecture without a list (its symbol
/// names differ) links in the default order.
fn hot_text_first() {
    println!("cargo:rerun-if-changed=link");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let map = out.join("order-worker.map");
    println!("cargo:rustc-link-arg-bins=-Wl,-Map={}", map.display());
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let list = Path::new("link").join(format!("hot-text-{arch}.ld"));
    if list.exists() {
        let list = std::fs::canonicalize(&list).expect("an existing path resolves");
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", list.display());
    }
}

/// Where a panic aborts, nothing unwinds (the C libraries are C, not C++), yet the binary would
/// carry 1.4 MB of unwind tables: the standard library ships compiled to unwind, and LTO keeps
/// its tables for everything it inlines into. They are dropped at link, except the unwinder's
/// own: libgcc's unwinder aborts if it cannot find its own frame, and a backtrace (anyhow
/// captures one when `RUST_BACKTRACE` is set) then simply ends at it. A stripped binary names no
/// frame anyway.
fn without_unwind_tables() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = out.join("no-unwind-tables.ld");
    std::fs::write(
        &script,
        "SECTIONS { /DISCARD/ : { EXCLUDE_FILE(*libgcc_eh.a:*) *(.eh_frame) } } INSERT AFTER .text;\n",
    )
    .expect("OUT_DIR is writable");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
}

/// `$OUT_DIR/order_worker.contract.rs`, included by `src/contract/protobuf.rs`, and the compiled
/// descriptors (`order_event.fds`), which tools that build message types at run time read.
fn protobuf_types() {
    const PROTO: &str = "schema/order_event.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["schema"])
        .unwrap_or_else(|e| panic!("{PROTO} does not compile: {e}"));
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(
        out.join("order_event.fds"),
        prost::Message::encode_to_vec(&descriptors),
    )
    .expect("OUT_DIR is writable");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .unwrap_or_else(|e| panic!("generating the types of {PROTO}: {e}"));
}

/// The glibc version this build runs on, from `getconf GNU_LIBC_VERSION` ("glibc 2.36").
fn host_glibc() -> Option<(u32, u32)> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    let minor = minor.split('.').next()?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}
