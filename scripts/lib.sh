# Shared by scripts/run.sh and scripts/test.sh. Every step is idempotent: running it on a machine
# where it already happened changes nothing.

PG_PASSWORD=postgres

# Runs a command as the postgres OS user (postgres refuses to run as root).
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -c "$*"
  else
    sudo -u postgres sh -c "$*"
  fi
}

# Starts the local PostgreSQL cluster (creating it if the machine has none) and gives the
# postgres user a password, since connections to 127.0.0.1 use password authentication.
ensure_postgres() {
  command -v pg_lsclusters >/dev/null || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
  local line version name status
  line=$(pg_lsclusters -h | head -n 1)
  if [ -z "$line" ]; then
    version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
    echo "==> creating PostgreSQL $version cluster 'main'"
    pg_createcluster "$version" main >/dev/null
    line=$(pg_lsclusters -h | head -n 1)
  fi
  read -r version name _ status _ <<<"$line"
  if [ "$status" != "online" ]; then
    echo "==> starting PostgreSQL $version/$name"
    pg_ctlcluster "$version" "$name" start
  fi
  wait_for_postgres
  as_postgres "psql -qc \"ALTER USER postgres PASSWORD '$PG_PASSWORD'\"" >/dev/null
}

# Waits (up to 10 s) until the local server takes queries.
wait_for_postgres() {
  for _ in $(seq 1 50); do
    as_postgres "psql -qAtc 'SELECT 1'" >/dev/null 2>&1 && return
    sleep 0.2
  done
}

# Settings the benchmark needs from the local server, set once (ALTER SYSTEM; a restart only when
# one of them needs it):
# - track_commit_timestamp=on, so that latency is measured to each row's commit (a few bytes per
#   transaction);
# - max_wal_size=4GB and checkpoint_timeout=15min, what PostgreSQL's own log asks for at this
#   write rate ("checkpoints are occurring too frequently ... consider increasing
#   max_wal_size"). With the stock 1GB a checkpoint started ~10 s into every latency phase, and
#   the full-page images it forces into WAL slowed PostgreSQL's writes for the rest of the phase;
# - shared_buffers=2GB (the stock 128MB is sized for a machine with little memory; PostgreSQL's
#   documentation suggests a quarter of a dedicated server's). The latency phase writes ~1.4M
#   new rows; once 128MB were full, every write also had to evict a dirty page first;
# - log_min_duration_statement=100ms and log_autovacuum_min_duration=0, so that a statement
#   which holds up a latency round (over 100 ms, or an autovacuum beside it) is named in the
#   server's log (/var/log/postgresql/); a latency round's statements take ~10 ms. The logged
#   time ends before the commit, so a late commit does not show there (the worker's per-batch
#   debug log times both). Without their parameters (log_parameter_max_length=0): a batch's
#   arrays would fill the log.
configure_bench_postgres() {
  local want="track_commit_timestamp=on max_wal_size=4GB checkpoint_timeout=15min shared_buffers=2GB"
  want+=" log_min_duration_statement=100ms log_autovacuum_min_duration=0 log_parameter_max_length=0"
  local setting name value restart=0 changed=0
  for setting in $want; do
    name=${setting%%=*} value=${setting#*=}
    [ "$(as_postgres "psql -qAtc \"SELECT current_setting('$name')\"")" = "$value" ] && continue
    echo "==> PostgreSQL: $name = $value (for the benchmark)"
    as_postgres "psql -qc \"ALTER SYSTEM SET $name = '$value'\"" >/dev/null
    changed=1
    [ "$(as_postgres "psql -qAtc \"SELECT context FROM pg_settings WHERE name = '$name'\"")" = postmaster ] && restart=1
  done
  [ $changed = 1 ] || return 0
  local version cluster
  read -r version cluster _ <<<"$(pg_lsclusters -h | head -n 1)"
  if [ $restart = 1 ]; then
    pg_ctlcluster "$version" "$cluster" restart
    wait_for_postgres
  else
    as_postgres "psql -qAtc 'SELECT pg_reload_conf()'" >/dev/null
  fi
}

# Creates a database unless it exists.
ensure_database() {
  local db=$1
  if ! as_postgres "psql -qAtc \"SELECT 1 FROM pg_database WHERE datname = '$db'\"" | grep -q 1; then
    as_postgres "createdb '$db'"
  fi
}

pg_url() {
  echo "postgres://postgres:$PG_PASSWORD@127.0.0.1:5432/$1"
}

# tansu, the Kafka-compatible broker the end-to-end and chaos tests run as a separate process;
# built from crates.io once per machine (15-20 minutes the first time). Exports TANSU_BIN.
ensure_tansu() {
  if [ -z "${TANSU_BIN:-}" ]; then
    local bin=${CARGO_HOME:-$HOME/.cargo}/bin/tansu
    if [ ! -x "$bin" ]; then
      echo "==> installing tansu 0.6.0 (first time on this machine: 15-20 minutes)"
      cargo install tansu --version 0.6.0 --locked --features libsql
    fi
    export TANSU_BIN=$bin
  fi
}

# cmake, for librdkafka: rdkafka's cmake-build is the build of it that links a static libcurl,
# which SASL/OAUTHBEARER with OIDC needs. Debian 12 does not ship it preinstalled; the PyPI wheel
# installs in seconds.
ensure_cmake() {
  command -v cmake >/dev/null && return
  echo "==> installing cmake 4.4.5 (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check "cmake==4.4.5"
  hash -r
}

# A venv of its own under ~/.cache/order-worker (the system Python stays as it is), built from
# PyPI unless `python -c "import <modules>"` already succeeds in it; prints its Python.
# Usage: python_venv <name> <modules, comma-separated> <what, for the log line> <pip specs...>
python_venv() {
  local venv="$HOME/.cache/order-worker/$1" modules=$2 what=$3
  shift 3
  if ! "$venv/bin/python" -c "import $modules" 2>/dev/null; then
    echo "==> installing $what (PyPI, a venv)" >&2
    python3 -m venv "$venv" || return 1
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" >&2 || return 1
  fi
  echo "$venv/bin/python"
}

# The Confluent serializers the registry tests publish with (tests/tools/produce_confluent.py):
# confluent-kafka's Python client with its Avro and Protobuf extras. A few seconds when present;
# tests find it through ORDER_WORKER_TEST_PYTHON.
ensure_python_clients() {
  ORDER_WORKER_TEST_PYTHON=$(python_venv pyenv "confluent_kafka, fastavro, google.protobuf" \
    "confluent-kafka 2.16.1 with Avro and Protobuf" \
    "confluent-kafka[avro,protobuf,schemaregistry]==2.16.1" "fastavro==1.13.1" "protobuf==7.36.2")
  export ORDER_WORKER_TEST_PYTHON
}

# The benchmark's peers (bench/peers/): a hand-written confluent-kafka consumer and Quix Streams
# with its PostgreSQL sink. Exports BENCH_PEERS_PYTHON.
ensure_bench_peers() {
  BENCH_PEERS_PYTHON=$(python_venv peers-venv "confluent_kafka, psycopg, psycopg2, quixstreams" \
    "the benchmark's peers: Quix Streams 3.28.1, psycopg 3.3.9" \
    "quixstreams[postgresql]==3.28.1" "psycopg[binary]==3.3.9")
  export BENCH_PEERS_PYTHON
}

# The allocator settings the image gives the worker: the value of the Dockerfile's
# `ENV GLIBC_TUNABLES=` line, the one place they are written.
image_tunables() {
  sed -n 's/^ENV GLIBC_TUNABLES=//p' Dockerfile
}

# The build environment of the image's release build: the Dockerfile's `ENV ...OPENSSL...`
# lines (OpenSSL linked statically) and `ENV ...RUSTFLAGS=` lines (glibc too), exported with the
# target the Dockerfile names, so every release build on a host makes the image's binary, in
# $RELEASE_DIR, and shares one set of fingerprints with scripts/check-deploy.sh. Fails when
# either kind of line is missing: a host build would otherwise link dynamically without a word.
release_env() {
  local line kind
  for kind in OPENSSL RUSTFLAGS CFLAGS; do
    line=$(sed -n "s/^ENV \([A-Za-z0-9_]*${kind}[A-Za-z0-9_]*\)=\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1=\2/p" Dockerfile)
    if [ -z "$line" ]; then
      echo "release_env: no 'ENV ...${kind}...=...' line in ./Dockerfile" >&2
      return 1
    fi
    while read -r line; do export "${line?}"; done <<<"$line"
  done
  CARGO_BUILD_TARGET=$(uname -m)-unknown-linux-gnu
  export CARGO_BUILD_TARGET RELEASE_DIR=target/$CARGO_BUILD_TARGET/release
}
