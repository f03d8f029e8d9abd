//! The order-worker benchmark: one run, one set of generated events, one table.
//!
//! Run it with `./scripts/bench.sh` (builds the release binary and this harness, starts
//! PostgreSQL, writes the table to `target/bench/<timestamp>.md`), or directly:
//! `cargo run --release -p order-worker-bench --bin bench` after `cargo build --release`.
//!
//! What it measures, all against the same deterministic stream (`order_worker::synth`: 1-5 line
//! items per order, many orders with several versions each, 1% invalid, 2% re-sent duplicates),
//! numbered as in the report:
//!
//! - 1, **Ceiling**: the stream's rows loaded into an identical, empty `orders` table (a fresh
//!   database migrated by `order-worker migrate`) by the fastest methods PostgreSQL offers here:
//!   the worker's own UNNEST upsert over 2 and 4 connections, and COPY into a staging table +
//!   one INSERT ... SELECT DISTINCT ON. Every method must leave the oracle's final state.
//! - 2, **End to end**: the stream published first as a backlog, then the release binary started
//!   (`order-worker run`, a subprocess); time from process start until the group has committed
//!   every partition's end offset; the worker's CPU per event, peak RSS (VmHWM) and idle RSS.
//! - 3, **Naive baseline**: a hand-written consumer in this process: per message one
//!   `INSERT ... ON CONFLICT DO UPDATE ... WHERE version <` (autocommit) and one synchronous
//!   offset commit, for a fixed window after its first message.
//! - 4a, **Sustainable rate** (`sustain`): the highest paced rate at which a fresh worker's lag
//!   stays flat for a minute, searched in a few steps from half the end-to-end rate.
//! - 4, **Latency**: a fresh worker, the same generator (the backlog's mix and versions per order,
//!   with 10,000 orders in progress at a time, so that each order's last message, the one its
//!   row keeps observable, comes soon after its first, and such messages come at an even rate)
//!   published at half the sustainable rate with each message's send time as its
//!   Kafka timestamp; latency = the commit time of
//!   the transaction that wrote the message's row or dead letter minus that timestamp (with
//!   `track_commit_timestamp` on, which `scripts/bench.sh` sets on the local server; else the
//!   transaction's start, `applied_at` / `created_at`).
//! - 5, **Startup**: process start to the first `/readyz` 200, PostgreSQL and the broker up.
//! - 6, **Peers** (`python`, `quix`): the consumers a team would run instead, on the same backlog.
//! - 7, **Replicas** (`replicas`): 1, 2 and 3 workers in one group on the same backlog, in turn,
//!   3 rounds.
//!
//! The broker is librdkafka's mock cluster, inside this process: its CPU is measured separately
//! (threads named `rdk:mock`), like the worker's, PostgreSQL's and everything else on the machine.
//!
//! Environment (all optional):
//! - `BENCH_GROUP_DELAY_MS` (0): the mock broker's `group.initial.rebalance.delay.ms`, the wait
//!   of a group's first member before its assignment (Kafka's default is 3000; its shipped
//!   `server.properties` sets 0 for development and testing);
//! - `BENCH_EVENTS` (1000000), `BENCH_ORDERS` (events / 5), `BENCH_PARTITIONS` (256),
//!   `BENCH_INVALID_RATIO` (0.01), `BENCH_DUPLICATE_RATIO` (0.02), `BENCH_SEED` (1);
//! - `BENCH_DATABASE_URL` (postgres://postgres:postgres@127.0.0.1:5432/postgres): a server where
//!   the benchmark may create and drop databases named `ow_bench_*`; `BENCH_KEEP_DBS=1` keeps them;
//! - `BENCH_WORKER_BIN` (target/release/order-worker); `BENCH_WORKER_ARGS`: extra flags for every
//!   worker run (e.g. `--processors 8 --batch-max-rows 2000`); `BENCH_WORKER_RUST_LOG` (info);
//! - `BENCH_PHASES` (size,ceiling,e2e,naive,python,quix,sustain,latency,startup,replicas;
//!   `python` and `quix` are the peers of `peers.rs`, run with `BENCH_PEERS_PYTHON` and
//!   `BENCH_PEERS_TIMEOUT_SECS` (600) each): a subset runs only those (latency without e2e needs
//!   `BENCH_LATENCY_RATE`);
//! - `BENCH_REPLICAS` (1,2,3): the worker counts of the replicas phase; `BENCH_REPLICA_ROUNDS`
//!   (3): how many times they run in turn (each count is compared with one replica of its round);
//! - `BENCH_ROUNDS` (3): how many times the ceiling and the end-to-end run alternate (the table
//!   shows medians; each round's ratio is taken against its own ceiling);
//! - `BENCH_CEILING_CONNS` (2,4), `BENCH_CEILING_BATCH` (1000,16000: rows per UNNEST statement;
//!   every connection count is run with every size);
//! - `BENCH_NAIVE_SECS` (20);
//! - `BENCH_SUSTAIN_SECS` (60), `BENCH_SUSTAIN_STEPS` (4), `BENCH_SUSTAIN_START` (half the
//!   end-to-end rate): the sustainable-rate search, each step on a topic, database and worker
//!   of its own;
//! - `BENCH_LATENCY_SECS` (20), `BENCH_LATENCY_RATE` (half the sustainable rate; half the
//!   end-to-end rate when no step held),
//!   `BENCH_LATENCY_PARTITIONS` (16: the mock broker looks a fetched offset up by walking the
//!   partition's list of produced batches, so a steady trickle over many partitions, one batch
//!   per message, makes every Fetch slower the longer the run lasts),
//!   `BENCH_LATENCY_WARMUP_SECS` (3, samples sent before are dropped; keep it well under
//!   `BENCH_LATENCY_SECS`), `BENCH_LATENCY_ARGS` (`--kafka-property fetch.wait.max.ms=10`; set
//!   but empty: none), `BENCH_LATENCY_ROUNDS` (3: the table shows the round with the median
//!   p99 / p50, each on a fresh topic, database and worker), `BENCH_LATENCY_SLICE_MS` (1000:
//!   the slices of the per-round `-seconds.tsv` files);
//! - `BENCH_PACED_BATCH` (64): the sustain and latency phases publish in bursts of this many
//!   messages per partition, each burst stamped with one send time and queued within the
//!   producer's `linger.ms`, so the mock broker's batches keep one size at every rate;
//! - `BENCH_STARTUP_RUNS` (7), `BENCH_STARTUP_COMPARE_TLS` (1: also with `sslmode=disable`),
//!   `BENCH_IDLE_SECS` (5);
//! - `BENCH_VARIANTS`: more end-to-end runs with other worker flags, `label=flags;label=flags`,
//!   e.g. `p8=--processors 8;b5k=--batch-max-rows 5000`, reported in a table of their own;
//! - `BENCH_OUT`: also write the report (Markdown) to this file; `BENCH_LOG_DIR` (target/bench):
//!   where worker logs go.
//!
//! One module per concern: `settings` (the variables above), `stream` (events, oracle, backlog),
//! `bench` (what the phases share), one module per phase (`ceiling` with its `loaders`, `e2e`,
//! `naive`, `peers`, `sustain`, `latency`, `startup`, `replicas`), `report`, `details` and
//! `numbers` (the output); underneath, `kafka`, `pg`, `worker` (the subprocess), `metrics` (its
//! HTTP endpoints), `timeline` and `cpu`. This file runs the phases in order.

mod bench;
mod ceiling;
mod cpu;
mod details;
mod e2e;
mod flush;
mod kafka;
mod latency;
mod loaders;
mod metrics;
mod naive;
mod numbers;
mod peers;
mod pg;
mod replicas;
mod report;
mod settings;
mod startup;
mod stream;
mod sustain;
mod timeline;
mod worker;

use std::time::Instant;

use bench::{Bench, IDLE_TOPIC, TOPIC, latency_topic, log, sustain_topic};
use ceiling::{RoundResult, ceiling};
use e2e::{E2eResult, end_to_end};
use pg::Server;
use report::{Results, Setup};
use settings::Settings;
use stream::Expected;

fn main() {
    let s = Settings::from_env();
    std::fs::create_dir_all(&s.log_dir).expect("log dir");
    let run_id = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]_[hour][minute][second]"
        ))
        .expect("run id");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let load_before = details::load_average();
    let started = Instant::now();
    assert!(
        s.bin.exists(),
        "{} not found: build it first (cargo build --release)",
        s.bin.display()
    );

    // The events.
    log(format!(
        "generating {} events over {} orders (seed {})",
        s.events, s.spec.orders, s.spec.seed
    ));
    let (messages, mix) = stream::generate(&s.spec, s.events);
    let payload_bytes: usize = messages
        .iter()
        .map(|m| m.payload.as_ref().map_or(0, Vec::len))
        .sum();
    let expected = Expected::of(&s.spec, s.events, mix);

    // The broker, with the backlog.
    let mock = kafka::Broker::start(s.group_delay_ms);
    for topic in [TOPIC, IDLE_TOPIC] {
        mock.create_topic(topic, s.partitions);
    }
    for round in 0..s.latency_rounds {
        mock.create_topic(&latency_topic(round), s.latency_partitions);
    }
    for step in 0..s.sustain_steps {
        mock.create_topic(&sustain_topic(step), s.latency_partitions);
    }
    let brokers = mock.bootstrap_servers();
    log(format!("mock cluster at {brokers}; publishing the backlog"));
    let (placement, per_partition_max) = stream::publish_backlog(&brokers, &s, &messages);
    let rows = stream::rows(&messages, &placement);

    let server = Server {
        admin_url: s.admin_url.clone(),
    };
    let pg_settings: Vec<String> = [
        "server_version",
        "shared_buffers",
        "synchronous_commit",
        "fsync",
        "max_wal_size",
        "checkpoint_timeout",
        "track_commit_timestamp",
        "log_min_duration_statement",
    ]
    .iter()
    .map(|n| format!("{n}={}", rt.block_on(server.setting(n))))
    .collect();

    let mut b = Bench {
        server,
        s,
        rt,
        run_id,
        brokers,
        placement,
        expected,
        databases: Vec::new(),
    };

    let size =
        b.s.runs("size")
            .then(|| startup::measure_size(&b.s.bin, &b.s.log_dir));
    // Ceiling and end to end, alternating, `BENCH_ROUNDS` times: the machine's other load
    // changes by the minute, and a ceiling measured next to its end-to-end run is what the ratio
    // needs.
    let args = b.s.worker_args.clone();
    let mut digest = None;
    let mut rounds: Vec<RoundResult> = Vec::new();
    for round in 0..b.s.rounds {
        let ceiling = if b.s.runs("ceiling") {
            ceiling(&mut b, &rows, round, &mut digest)
        } else {
            Vec::new()
        };
        let e2e = b.s.runs("e2e").then(|| {
            let label = if b.s.rounds > 1 {
                format!("main-r{}", round + 1)
            } else {
                "main".into()
            };
            end_to_end(&mut b, &label, &args, digest.as_deref())
        });
        rounds.push(RoundResult { ceiling, e2e });
    }
    drop(rows);
    drop(messages);
    let naive = b.s.runs("naive").then(|| naive::naive_baseline(&mut b));
    let peers = peers::peers(&mut b, digest.as_deref());
    let e2e_rate = report::e2e_rate(&rounds, b.s.events);
    // The latency phase runs at half the rate a steady stream can be sustained at (a drain's
    // rate is higher: it folds versions of an order into one row).
    let sustain = match (
        b.s.runs("sustain"),
        b.s.sustain_start.or(e2e_rate.map(|r| r / 2.0)),
    ) {
        (true, Some(start)) => Some(sustain::sustainable_rate(&mut b, start)),
        (true, None) => {
            log("sustain skipped: needs the e2e phase or BENCH_SUSTAIN_START");
            None
        }
        _ => None,
    };
    let latency_rate =
        b.s.latency_rate
            .or(sustain.as_ref().and_then(|s| s.rate).map(|r| r / 2.0))
            .or(e2e_rate.map(|r| r / 2.0));
    // Like the end-to-end runs, `BENCH_LATENCY_ROUNDS` runs: a p99 over one 20 s window is
    // the latency of its worst fifth of a second, which any stretch of the machine's other load
    // sets; the table shows the median round and every round's ratio.
    let latency: Vec<latency::LatencyRun> = match (b.s.runs("latency"), latency_rate) {
        (true, Some(rate)) => (0..b.s.latency_rounds)
            .map(|round| latency::latency(&mut b, rate, round))
            .collect(),
        (true, None) => {
            log("latency skipped: needs the e2e phase or BENCH_LATENCY_RATE");
            Vec::new()
        }
        _ => Vec::new(),
    };
    let startup =
        b.s.runs("startup")
            .then(|| startup::startup(&mut b, "", &[]));
    // The same without TLS to PostgreSQL (the default `sslmode=prefer` negotiates it with a
    // server that has `ssl = on`), to show what the TLS setup costs at startup and in memory.
    let startup_plain = (b.s.runs("startup") && b.s.startup_compare_tls)
        .then(|| startup::startup(&mut b, "_notls", &["?sslmode=disable".to_owned()]));
    let variants: Vec<E2eResult> =
        b.s.variants
            .clone()
            .iter()
            .map(|(label, extra)| {
                let args = b.s.worker_args_with(extra);
                end_to_end(&mut b, label, &args, digest.as_deref())
            })
            .collect();

    let replicas = if b.s.runs("replicas") {
        replicas::replicas(&mut b, &mock, digest.as_deref())
    } else {
        Vec::new()
    };

    let results = Results {
        size,
        rounds,
        naive,
        peers,
        sustain,
        latency,
        startup,
        startup_plain,
        variants,
        replicas,
        setup: Setup {
            load_before,
            started,
            payload_bytes,
            per_partition_max,
            pg_settings,
        },
    };
    let report = report::render(&b, &results);
    println!("{report}");
    if let Some(out) = &b.s.out {
        std::fs::write(out, &report).expect("write the report");
        log(format!("report written to {}", out.display()));
    }
    b.drop_all_dbs();
    drop(mock);
}
