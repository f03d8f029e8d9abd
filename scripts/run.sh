#!/usr/bin/env bash
# The run command: local PostgreSQL, a release build, migrations, then `order-worker dev`, which
# embeds a Kafka-protocol broker (librdkafka's mock cluster), publishes sample orders and runs the
# worker; it prints what lands in PostgreSQL every few seconds. Ctrl-C stops it gracefully.
# Arguments are passed to `order-worker dev` (see `order-worker dev --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_postgres
ensure_cmake
ensure_database order_worker
export DATABASE_URL=${DATABASE_URL:-$(pg_url order_worker)}

echo "==> building (release)"
release_env
cargo build --release --locked
echo "==> migrating"
"$RELEASE_DIR/order-worker" migrate
echo "==> order-worker dev $*"
# The image's allocator settings (the Dockerfile's ENV line), for the worker only.
GLIBC_TUNABLES=${GLIBC_TUNABLES:-$(image_tunables)}
export GLIBC_TUNABLES
exec "$RELEASE_DIR/order-worker" dev --http-addr 127.0.0.1:9090 "$@"
