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
  for _ in $(seq 1 50); do
    as_postgres "psql -qAtc 'SELECT 1'" >/dev/null 2>&1 && break
    sleep 0.2
  done
  as_postgres "psql -qc \"ALTER USER postgres PASSWORD '$PG_PASSWORD'\"" >/dev/null
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
