#!/usr/bin/env bash
# The test command: installs and starts what the tests need, then runs every check.
#   - PostgreSQL (local cluster, password set) for every integration test;
#   - tansu, a Kafka-compatible broker run as a separate process by the end-to-end tests
#     (built from crates.io once per machine: about 15-20 minutes the first time);
#   - cargo-nextest (each test in its own process);
#   - promtool (Debian package prometheus), which checks a live scrape of /metrics.
# Then: formatting, clippy with warnings as errors, unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin

ensure_postgres
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-$(pg_url postgres)}

if ! command -v promtool >/dev/null; then
  echo "==> installing promtool (Debian package prometheus)"
  apt-get install -y --no-install-recommends prometheus >/dev/null
fi
if ! command -v cargo-nextest >/dev/null; then
  echo "==> installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
if [ -z "${TANSU_BIN:-}" ]; then
  if [ ! -x "$CARGO_BIN/tansu" ]; then
    echo "==> installing tansu 0.6.0 (first time on this machine: 15-20 minutes)"
    cargo install tansu --version 0.6.0 --locked --features libsql
  fi
  export TANSU_BIN=$CARGO_BIN/tansu
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> tests"
cargo nextest run --locked --all-targets "$@"
