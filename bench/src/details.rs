//! The report's detailed sections, after the table: the setup (machine, events, broker,
//! PostgreSQL, worker build), then each phase's figures in full, and the variants' table.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::bench::Bench;
use crate::ceiling::CeilingRun;
use crate::cpu::Party;
use crate::e2e::E2eResult;
use crate::latency::{LatencyRun, SLOW_FLUSH_MS, percentile};
use crate::numbers::{flags, ms, rate_str};
use crate::report::{Results, Setup};
use crate::worker::mib;

/// Everything after the table.
pub fn details(b: &Bench, r: &Results) -> String {
    let Results {
        size,
        rounds,
        naive,
        peers,
        sustain,
        latency: lat,
        startup: start,
        startup_plain: start_plain,
        variants,
        replicas,
        setup:
            Setup {
                load_before,
                started,
                payload_bytes,
                per_partition_max,
                pg_settings,
            },
    } = r;
    let ev = b.s.events;
    let mains = r.mains();
    let mut d = String::new();
    let _ = writeln!(d, "## Setup\n");
    let _ = writeln!(
        d,
        "- Run `{}`, {}; load average before: {load_before}, after: {}; wall time {:.0} s.",
        b.run_id,
        machine(),
        load_average(),
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        d,
        "- Events: {} ({} valid, {} duplicates, {} invalid) over {} orders, seed {}; payloads {:.0} bytes on average ({:.1} MiB in all).",
        rate_str(ev as f64),
        rate_str(b.expected.mix.valid as f64),
        rate_str(b.expected.mix.duplicates as f64),
        rate_str(b.expected.mix.invalid_total() as f64),
        rate_str(b.s.spec.orders as f64),
        b.s.spec.seed,
        *payload_bytes as f64 / ev.max(1) as f64,
        mib(*payload_bytes as u64)
    );
    let _ = writeln!(
        d,
        "- Final state (oracle): {} orders, sum of versions {}, {} dead letters.",
        rate_str(b.expected.rows as f64),
        rate_str(b.expected.version_sum as f64),
        rate_str(b.expected.mix.invalid_total() as f64)
    );
    let _ = writeln!(
        d,
        "- Broker: librdkafka mock cluster (1 broker) inside the harness, `group.initial.rebalance.delay.ms={}` (`BENCH_GROUP_DELAY_MS`), {} partitions (at most {} messages in one; low watermarks all 0); backlog published in {:.1} s.",
        b.s.group_delay_ms,
        b.s.partitions,
        per_partition_max,
        b.placement.elapsed.as_secs_f64()
    );
    let _ = writeln!(d, "- PostgreSQL: {}.", pg_settings.join(", "));
    let _ = writeln!(
        d,
        "- Worker: `{}` run ({}), flags: `{}`.",
        b.s.bin.display(),
        source_revision(&b.s.bin),
        flags(&b.s.worker_args)
    );

    let ceiling_runs: Vec<&CeilingRun> = rounds.iter().flat_map(|r| &r.ceiling).collect();
    if !ceiling_runs.is_empty() {
        let _ = writeln!(d, "\n## 1. Ceiling methods\n");
        let _ = writeln!(
            d,
            "| Round | Method | Rows | Time | Rows/s | Rows per CPU-second | Counted | CPU (cores) |"
        );
        let _ = writeln!(d, "|---|---|---|---|---|---|---|---|");
        for r in &ceiling_runs {
            let _ = writeln!(
                d,
                "| {} | {} | {} | {:.2} s | {} | {} | {} | {} |",
                r.round + 1,
                r.method,
                rate_str(r.rows as f64),
                r.elapsed.as_secs_f64(),
                rate_str(r.rate()),
                rate_str(r.rows_per_cpu_second()),
                match (&r.ok, r.candidate) {
                    (Err(e), _) => format!("no: {e}"),
                    (Ok(()), true) => "yes".into(),
                    (Ok(()), false) => "no (other work: shown for scale)".into(),
                },
                r.cpu.summary()
            );
        }
    }

    if !mains.is_empty() {
        let _ = writeln!(d, "\n## 2. End to end\n");
        for e in &mains {
            e2e_details(&mut d, e, ev);
        }
    }
    if let Some(n) = &naive {
        let _ = writeln!(d, "\n## 3. Naive baseline\n");
        let _ = writeln!(
            d,
            "- {} messages in {:.1} s after the first one (group join before it: {:.1} s, not counted) = {} events/s.",
            rate_str(n.result.processed as f64),
            n.result.elapsed.as_secs_f64(),
            n.result.join.as_secs_f64(),
            rate_str(n.result.rate())
        );
        let _ = writeln!(d, "- CPU: {}.", n.cpu.summary());
    }
    if !peers.is_empty() {
        d.push_str(&crate::peers::section(peers, &mains, ev));
    }
    if let Some(su) = sustain {
        d.push_str(&su.details(b.s.sustain_secs));
    }
    if !replicas.is_empty() {
        d.push_str(&crate::replicas::section(replicas, ev));
    }
    if !lat.is_empty() {
        let _ = writeln!(d, "\n## 4. Latency\n");
    }
    for l in lat {
        if lat.len() > 1 {
            let _ = writeln!(d, "- **`{}`** (p99 = {:.1}× p50):", l.label, l.ratio());
        }
        // Under a round's heading, its lines are indented one level.
        let mut lines = String::new();
        latency_lines(&mut lines, b, l);
        let indent = if lat.len() > 1 { "  " } else { "" };
        for line in lines.lines() {
            let _ = writeln!(d, "{indent}{line}");
        }
    }
    if !lat.is_empty() {
        let _ = writeln!(
            d,
            "- `fetch.wait.max.ms`: librdkafka's mock broker, unlike Kafka, does not answer a Fetch \
             early when data arrives: a Fetch that finds nothing new is held for the full \
             `fetch.wait.max.ms` (500 ms by default), so at a steady trickle most messages would \
             wait for the end of such a hold. The latency run therefore passes \
             `BENCH_LATENCY_ARGS` (default `--kafka-property fetch.wait.max.ms=10`) so the \
             broker's hold costs at most 10 ms, close to a real broker's behaviour; set it empty \
             to see the mock's own figure."
        );
        let _ = writeln!(
            d,
            "- Partitions and bursts: the mock broker finds the batch holding a fetched offset by \
             walking the partition's list of produced batches from the start (librdkafka's \
             `rd_kafka_mock_msgset_find`, marked \"FIXME: Maintain an index\"), and it retains \
             5 MiB a partition. So the sustain and latency phases publish on {} partitions, in \
             bursts of {} messages a partition (`BENCH_PACED_BATCH`) stamped with the burst's \
             send time and queued within the producer's 5 ms linger: one batch a partition a \
             burst, of one size at every rate, so a Fetch walks a few hundred batches at most; \
             with smaller batches the broker, not the worker, would set the latency.",
            b.s.latency_partitions, b.s.paced_batch
        );
    }
    if start.is_some() {
        let _ = writeln!(d, "\n## 5. Startup\n");
    }
    for (what, st) in [
        ("default database URL (TLS negotiated)", &start),
        ("`sslmode=disable`", &start_plain),
    ] {
        let Some(st) = st else { continue };
        let list_ms = |v: &[Duration]| {
            v.iter()
                .map(|x| format!("{:.0}", ms(*x)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            d,
            "- {what}: ready after (ms) {}; SIGTERM → exit (ms) {}; idle RSS, fresh start (MiB) {}.",
            list_ms(&st.ready),
            list_ms(&st.stops),
            st.idle_rss
                .iter()
                .map(|x| format!("{:.1}", mib(*x)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(sz) = &size {
        let _ = writeln!(
            d,
            "\n- Binary: {} bytes as built, {} after `strip`.",
            sz.built,
            sz.stripped.map_or("-".into(), |x| x.to_string())
        );
    }
    if !variants.is_empty() {
        let _ = writeln!(d, "\n## Variants (end to end with other worker flags)\n");
        let _ = writeln!(
            d,
            "| Variant | Flags | Events/s | / ceiling | Drain events/s | Events per CPU-s | Peak RSS | Idle RSS | SIGTERM → exit | Worker cores | Others' cores | State |"
        );
        let _ = writeln!(d, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        let c = r.ceiling_rate();
        for v in mains.iter().copied().chain(variants) {
            let r = v.rate(ev);
            let _ = writeln!(
                d,
                "| {} | `{}` | {} | {} | {} | {} | {:.1} MiB | {:.1} MiB | {} | {:.2} | {:.2} | {} |",
                v.label,
                flags(&v.args),
                r.map_or("-".into(), rate_str),
                match (r, c) {
                    (Some(r), Some(c)) => format!("{:.0}%", r / c * 100.0),
                    _ => "-".into(),
                },
                v.drain_rate(ev).map_or("-".into(), rate_str),
                rate_str(v.events_per_cpu_second(ev)),
                mib(v.peak_rss),
                mib(v.idle_rss),
                v.stop_ms.map_or("killed".into(), |ms| format!("{ms} ms")),
                v.cpu.of(Party::Worker) / v.cpu.wall.max(1e-9),
                v.cpu.other() / v.cpu.wall.max(1e-9),
                if v.state.is_ok() { "ok" } else { "WRONG" }
            );
        }
        for v in variants {
            e2e_details(&mut d, v, ev);
        }
    }
    d
}

/// The details of one end-to-end run: when what happened, its memory, batching and CPU.
fn e2e_details(d: &mut String, e: &E2eResult, ev: usize) {
    let _ = writeln!(
        d,
        "- `{}` (flags: `{}`): ready at {}, first durable row at {}, last durable row at {}, every offset committed at {}; final state: {}; {}.",
        e.label,
        flags(&e.args),
        e.ready.map_or("-".into(), |r| format!("{:.0} ms", ms(r))),
        e.first_write.map_or("-".into(), |x| format!("{x:.2} s")),
        e.last_write.map_or("-".into(), |x| format!("{x:.2} s")),
        e.committed
            .map_or("never".into(), |c| format!("{:.2} s", c.as_secs_f64())),
        e.state.as_ref().err().map_or(
            "as the oracle (rows, versions, digest, dead letters)",
            |x| x.as_str()
        ),
        e.stop
    );
    let _ = writeln!(
        d,
        "  - {} events/s end to end, {} drain; RSS peak {:.1} MiB, at the end {:.1} MiB, idle {:.1} MiB; mean batch {:.0} messages, mean batch write {:.1} ms, backpressure pauses {} (partitions paused in {:.0}% of the 250 ms samples; {} messages fetched again after a pause).",
        e.rate(ev).map_or("-".into(), rate_str),
        e.drain_rate(ev).map_or("-".into(), rate_str),
        mib(e.peak_rss),
        mib(e.end_rss),
        mib(e.idle_rss),
        e.batches.mean_batch.unwrap_or(f64::NAN),
        e.batches.mean_write_ms.unwrap_or(f64::NAN),
        e.batches.pauses.map_or("-".into(), |p| format!("{p:.0}")),
        e.paused_share * 100.0,
        rate_str(e.refetched)
    );
    let _ = writeln!(
        d,
        "  - CPU from start to all committed: {}.",
        e.cpu.summary()
    );
    let _ = writeln!(
        d,
        "  - Worker CPU per event by thread: {}.",
        e.cpu.threads_per_event(ev)
    );
}
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|m| m.trim().to_owned()))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} RAM")
}

/// The commit the working tree is on (and whether it has changes), and when the binary was built.
fn source_revision(bin: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "src",
        "build.rs",
        "Cargo.toml",
        "Cargo.lock",
        "migrations",
    ])
    .is_some_and(|s| !s.is_empty());
    let built = std::fs::metadata(bin)
        .and_then(|m| m.modified())
        .ok()
        .map(time::OffsetDateTime::from)
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_default();
    format!(
        "source {head}{}, built {built}",
        if dirty {
            " with uncommitted changes to the worker's sources"
        } else {
            ""
        }
    )
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One latency round's figures, a line each.
fn latency_lines(d: &mut String, b: &Bench, l: &LatencyRun) {
    let _ = writeln!(
        d,
        "- Topic of {} partitions (`BENCH_LATENCY_PARTITIONS`; see below). Worker flags: `{}` (`fetch.wait.max.ms`: see below). Target rate {} events/s, achieved {} events/s; {} messages; {} samples (rows whose last write came from a message sent after the {:.0} s warm-up){}{}.",
        b.s.latency_partitions,
        flags(&l.args),
        rate_str(l.rate),
        rate_str(l.achieved),
        rate_str(l.sent as f64),
        rate_str(l.samples.len() as f64),
        b.s.latency_warmup_secs,
        if l.caught_up {
            ""
        } else {
            "; **the worker did not catch up within 120 s**"
        },
        if l.truncated > 0 {
            format!("; {} partitions truncated by the mock cluster", l.truncated)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        d,
        "- To each row's commit{}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms.",
        if l.to_commit {
            " (`pg_xact_commit_timestamp`)"
        } else {
            " (**not available: `track_commit_timestamp` is off, so these end at the \
                 writing transaction's start**)"
        },
        l.p(0.5),
        l.p(0.9),
        l.p(0.99),
        l.p(0.999),
        l.max()
    );
    let start = |q| percentile(&l.to_start, q);
    let _ = writeln!(
        d,
        "- To the writing transaction's start (`applied_at`, what earlier reports measured): \
             p50 {:.1} ms, p99 {:.1} ms (p99 = {:.1}× p50), max {:.1} ms.",
        start(0.5),
        start(0.99),
        start(0.99) / start(0.5),
        l.to_start.last().copied().unwrap_or(f64::NAN)
    );
    let _ = writeln!(
        d,
        "- The worker's own histogram (every message, bucket upper bounds): p50 ≤ {} ms, p99 ≤ {} ms over {} messages; mean batch {:.0} messages, mean batch write {:.1} ms.",
        l.histogram_p50
            .map_or("-".into(), |x| format!("{:.0}", x * 1000.0)),
        l.histogram_p99
            .map_or("-".into(), |x| format!("{:.0}", x * 1000.0)),
        l.histogram_count.map_or("-".into(), rate_str),
        l.batches.mean_batch.unwrap_or(f64::NAN),
        l.batches.mean_write_ms.unwrap_or(f64::NAN)
    );
    let _ = writeln!(
        d,
        "- Worker peak RSS {:.1} MiB; backpressure pauses {}. CPU while publishing and draining: {}. PostgreSQL checkpoints started meanwhile: {} (after one, the first write of each page carries the whole page in WAL, which slows every write until the pages have been touched; see `max_wal_size` in the setup).",
        mib(l.peak_rss),
        l.batches.pauses.map_or("-".into(), |p| format!("{p:.0}")),
        l.cpu.summary(),
        l.checkpoints.map_or("-".into(), |n| n.to_string())
    );
    let _ = writeln!(
        d,
        "- Worker CPU per event by thread: {}.",
        l.cpu.threads_per_event(l.sent)
    );
    let device = match l.flush_on_pg_disk {
        Some(true) => "on the device of PostgreSQL's data directory",
        Some(false) => "**not on PostgreSQL's device**",
        None => "**not known to be PostgreSQL's device**",
    };
    let _ = match l.flush_worst {
        Some((max, slow)) => writeln!(
            d,
            "- The disk's flush meanwhile (an 8 KiB write and `fdatasync` every 20 ms beside the round, {device}): longest {max:.1} ms, {slow} over {SLOW_FLUSH_MS:.0} ms (each second's longest is in `-seconds.tsv`)."
        ),
        None => writeln!(
            d,
            "- The disk's flush meanwhile: **not timed** (the probe's file could not be written; the harness log says why)."
        ),
    };
}
