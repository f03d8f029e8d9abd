#!/usr/bin/env bash
# Regenerates link/hot-text-<arch>.ld for this machine's architecture: the list of the code a
# worker runs, which the release build links first (build.rs). Run it after changing dependencies
# or the toolchain, whose symbol names the list holds (scripts/check-deploy.sh fails when the
# list no longer matches the build).
#
# Builds the release binary as the image does, runs the benchmark's drain (50,000 events, with
# dead letters and duplicates) and startup phases with that binary under valgrind's exp-bbv
# tool, which records every basic block executed, and maps those addresses to input sections
# with the linker's map (scripts/hot_text.py). Needs valgrind. About 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

command -v valgrind >/dev/null || { echo "hot-text.sh: needs valgrind" >&2; exit 1; }
ensure_cmake
release_env
cargo build --release --locked

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Copies: the benchmark rebuilds the release binary, and the map must be of the binary that ran.
cp "$RELEASE_DIR/order-worker" "$work/order-worker"
cp "$(ls -t "$RELEASE_DIR"/build/order-worker-*/out/order-worker.map | head -1)" "$work/order-worker.map"
cat >"$work/worker" <<EOF
#!/bin/sh
exec valgrind --tool=exp-bbv --interval-size=1000000000 --bb-out-file="$work/bb.%p" \
  --pc-out-file="$work/pc.%p" "$work/order-worker" "\$@"
EOF
chmod +x "$work/worker"

BENCH_WORKER_BIN="$work/worker" BENCH_EVENTS=50000 BENCH_ROUNDS=1 BENCH_STARTUP_RUNS=2 \
  BENCH_PHASES=e2e,startup ./scripts/bench.sh >"$work/bench.log" 2>&1 ||
  { tail -20 "$work/bench.log" >&2; exit 1; }

# One pc file per worker process that exited: the drain and four starts at least. A worker
# killed instead of stopped writes none, and the list would miss what it ran.
runs=$(find "$work" -name 'pc.*' | wc -l)
if [ "$runs" -lt 5 ]; then
  echo "hot-text.sh: $runs valgrind pc files, expected 5 or more (see the benchmark's log):" >&2
  tail -20 "$work/bench.log" >&2
  exit 1
fi
entry=$(readelf -h "$work/order-worker" | awk '/Entry point address/ {print $4}')
list=link/hot-text-$(uname -m).ld
python3 scripts/hot_text.py "$work/order-worker.map" "$entry" "$work"/pc.* >"$work/hot-text.ld"
mv "$work/hot-text.ld" "$list"
echo "==> $list written; rebuild to link with it"
