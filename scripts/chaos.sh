#!/usr/bin/env bash
# The chaos suite: streams known events through worker kills, PostgreSQL and broker outages,
# rebalances, SIGTERM at full speed, a large backlog, and poison (oversized dead letters, rows
# PostgreSQL refuses, keys in upper case, partitions revoked while paused, a broker that appears
# late), then compares PostgreSQL with the oracle. Prints one table (also written to
# target/chaos/<profile>.md); fails if any scenario lost an event or applied one twice.
#
#   scripts/chaos.sh          # short profile (part of scripts/test.sh), ~4 minutes
#   scripts/chaos.sh long     # long profile: 12 kills, 1M-event backlog, release binary
#   scripts/chaos.sh long backlog   # further arguments go to nextest (here: a filter)
#
# Sizes per profile: tests/chaos/main.rs (`profile`). The long profile runs the release binary,
# so its memory figure is the one we ship (docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

PROFILE=${1:-short}
shift || true
NEXTEST_PROFILE=default
case $PROFILE in
  short) ;;
  long)
    NEXTEST_PROFILE=chaos-long
    ensure_cmake
    echo "==> cargo build --release"
    # The image's build environment in a subshell only: the tests below build as usual.
    dir=$(release_env && cargo build --release --locked >&2 && echo "$RELEASE_DIR")
    export ORDER_WORKER_BIN=${ORDER_WORKER_BIN:-$PWD/$dir/order-worker}
    ;;
  *) echo "usage: $0 [short|long]" >&2; exit 2 ;;
esac

ensure_postgres
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-$(pg_url postgres)}
ensure_tansu
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked

mkdir -p target/chaos
LOG=target/chaos/$PROFILE.log
TABLE=target/chaos/$PROFILE.md
status=0
CHAOS_PROFILE=$PROFILE cargo nextest run --locked --profile "$NEXTEST_PROFILE" --test chaos \
  --no-capture "$@" 2>&1 | tee "$LOG" || status=$?

{
  echo "Chaos suite, profile $PROFILE, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
  echo
  echo "| scenario | events produced | orders in final state | dead letters | lost | applied twice or regressed | seconds | notes |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|"
  grep -a '^CHAOS-ROW|' "$LOG" | cut -d'|' -f3- | awk -F'|' -v OFS=' | ' '{ $1 = $1; print "| " $0 " |" }'
} >"$TABLE"
echo
cat "$TABLE"
scenarios=$(grep -c '^CHAOS-ROW|' "$LOG" || true)
echo
echo "$scenarios scenarios reported; table in $TABLE"
exit "$status"
