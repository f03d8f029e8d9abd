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

# Turns on track_commit_timestamp (PostgreSQL records when each transaction committed), which the
# benchmark needs to measure latency up to a row's commit. A server setting: set once, and the
# cluster restarted once; it costs a few bytes per transaction.
ensure_commit_timestamps() {
  [ "$(as_postgres "psql -qAtc 'SHOW track_commit_timestamp'")" = on ] && return
  local version name
  read -r version name _ <<<"$(pg_lsclusters -h | head -n 1)"
  echo "==> turning on track_commit_timestamp (restarts PostgreSQL $version/$name once)"
  as_postgres "psql -qc 'ALTER SYSTEM SET track_commit_timestamp = on'" >/dev/null
  pg_ctlcluster "$version" "$name" restart
  wait_for_postgres
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
