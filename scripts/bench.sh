#!/usr/bin/env bash
# The benchmark: starts the local PostgreSQL (idempotently), builds the release binary and the
# harness (the `bench` binary of the bench/ crate), runs it, and writes the report to stdout and to
# target/bench/<timestamp>.md (worker logs and drain timelines next to it, in
# target/bench/<timestamp>/).
#
# What it measures and how: docs/performance.md. Everything is configured by environment
# variables, all optional (defaults in brackets):
#   BENCH_WORKER_BIN [the image's build: target/<arch>-unknown-linux-gnu/release/order-worker]
#   BENCH_EVENTS [1000000]       events in the backlog (the mock broker keeps 100k messages or
#   BENCH_PARTITIONS [256]       5 MiB per partition: keep events/partitions well under that)
#   BENCH_ORDERS [events/5]      distinct orders (several versions each)
#   BENCH_INVALID_RATIO [0.01], BENCH_DUPLICATE_RATIO [0.02], BENCH_SEED [1]
#   BENCH_GROUP_DELAY_MS [0]     the mock broker's group.initial.rebalance.delay.ms (Kafka's
#                                default 3000 adds 3 s to every end-to-end run's group join)
#   BENCH_ROUNDS [3]             ceiling + end-to-end pairs (the table shows medians)
#   BENCH_CEILING_CONNS [2,4], BENCH_CEILING_BATCH [1000,16000] (rows per UNNEST statement;
#                                the ceiling loads with every count x every size)
#   BENCH_NAIVE_SECS [20]        measuring window of the naive consumer
#   BENCH_SUSTAIN_SECS [60], BENCH_SUSTAIN_STEPS [4], BENCH_SUSTAIN_START [half the end-to-end
#                                rate]: the search for the highest paced rate at which lag stays
#                                flat for BENCH_SUSTAIN_SECS (each step a fresh topic and worker)
#   BENCH_LATENCY_SECS [20], BENCH_LATENCY_RATE [half the sustainable rate],
#   BENCH_LATENCY_WARMUP_SECS [3], BENCH_LATENCY_ARGS [--kafka-property fetch.wait.max.ms=10]
#   BENCH_LATENCY_PARTITIONS [16] partitions of the latency topic (the mock broker's Fetch cost
#                                grows with the produced batches a partition holds)
#   BENCH_LATENCY_ROUNDS [3]     latency runs, each on a fresh topic, database and worker (the
#                                table shows the round with the median p99/p50, and each ratio)
#   BENCH_LATENCY_SLICE_MS [1000] slices of <run>-latency-*-seconds.tsv (e.g. 100 to see a
#                                stall's shape)
#   BENCH_PACED_BATCH [64]       messages per partition in each burst of the sustain and latency
#                                phases (one send time, queued within linger.ms: the mock broker's
#                                batches keep one size at every rate)
#   BENCH_STARTUP_RUNS [7], BENCH_STARTUP_COMPARE_TLS [1], BENCH_IDLE_SECS [5]
#   BENCH_WORKER_ARGS            extra flags for every worker run, e.g. "--processors 8";
#                                NAME=value words are environment variables of the worker and
#                                ?name=value words are added to its database URL; an @path
#                                word runs that build of the worker instead
#   BENCH_VARIANTS               more end-to-end runs: "label=flags;label=flags"
#   BENCH_WORKER_RUST_LOG [info] the workers' RUST_LOG, e.g. "info,librdkafka=debug" together
#                                with BENCH_WORKER_ARGS="--kafka-property debug=fetch"
#   BENCH_PHASES [size,ceiling,e2e,naive,python,quix,sustain,latency,startup,replicas]; python
#                                and quix are the peers (bench/peers/), run with a venv this
#                                script builds from PyPI (BENCH_PEERS_PYTHON to use another Python)
#   BENCH_REPLICAS [1,2,3]       worker counts of the replicas phase (one group, same backlog)
#   BENCH_REPLICA_ROUNDS [3]     times the counts run in turn (each compared with 1 replica of
#                                its own round)
#   BENCH_PEERS_TIMEOUT_SECS [600] how long a peer may take to drain the backlog
#   BENCH_DATABASE_URL [postgres://postgres:postgres@127.0.0.1:5432/postgres]: the benchmark
#                                creates and drops databases named ow_bench_* there. Unset,
#                                the local server is started and configured once (lib.sh's
#                                configure_bench_postgres: track_commit_timestamp, so latency
#                                ends at each row's commit, else at its transaction's start and
#                                the report says so; max_wal_size, checkpoint_timeout and
#                                shared_buffers sized for the write rate; statements over
#                                100 ms and autovacuums logged)
#   BENCH_KEEP_DBS [0]           1 keeps them
# Example: BENCH_EVENTS=200000 BENCH_VARIANTS="p8=--processors 8" ./scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ -z "${BENCH_DATABASE_URL:-}" ]; then
  ensure_postgres
  configure_bench_postgres
  export BENCH_DATABASE_URL
  BENCH_DATABASE_URL=$(pg_url postgres)
fi

ensure_cmake
phases=${BENCH_PHASES:-python,quix}
if [ -z "${BENCH_PEERS_PYTHON:-}" ] && [[ ",$phases," =~ ,(python|quix), ]]; then
  ensure_bench_peers
fi
echo "==> building the release binary and the benchmark harness" >&2
release_env
cargo build --release --locked --bin order-worker
cargo build --release --locked -p order-worker-bench --bin bench

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "target/bench/$stamp"
export BENCH_OUT="target/bench/$stamp.md"
export BENCH_LOG_DIR="target/bench/$stamp"
export BENCH_WORKER_BIN=${BENCH_WORKER_BIN:-$RELEASE_DIR/order-worker}

echo "==> running the benchmark (several minutes; progress on stderr)" >&2
"$RELEASE_DIR/bench"
echo "==> report: $BENCH_OUT; worker logs and drain timelines: $BENCH_LOG_DIR/" >&2
