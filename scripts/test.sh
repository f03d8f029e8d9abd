#!/usr/bin/env bash
# The test command: installs and starts what the tests need, then runs every check.
#   - PostgreSQL (local cluster, password set) for every integration test;
#   - tansu, a Kafka-compatible broker run as a separate process by the end-to-end tests
#     (built from crates.io once per machine: about 15-20 minutes the first time);
#   - cargo-nextest (each test in its own process);
#   - promtool (Debian package prometheus), which checks a live scrape of /metrics;
#   - confluent-kafka's Python client with its Avro and Protobuf serializers (a venv), which
#     the schema-registry tests publish with.
# Then: the deployment files (scripts/check-deploy.sh: Dockerfile, k8s/, alerts, dashboard;
# it installs hadolint, kubernetes-validate, checkov and yamllint), formatting, clippy with
# warnings as errors, unit and integration tests, and the chaos suite's short profile
# (scripts/chaos.sh; it prints its table).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_postgres
ensure_cmake
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-$(pg_url postgres)}

if ! command -v promtool >/dev/null; then
  echo "==> installing promtool (Debian package prometheus)"
  apt-get install -y --no-install-recommends prometheus >/dev/null
fi
if ! command -v cargo-nextest >/dev/null; then
  echo "==> installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
ensure_tansu
ensure_python_clients

echo "==> deployment files (scripts/check-deploy.sh)"
scripts/check-deploy.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> tests"
cargo nextest run --locked --all-targets -E 'not binary(chaos)' "$@"
echo "==> chaos suite (short profile)"
scripts/chaos.sh short
