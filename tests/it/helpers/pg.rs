//! Real PostgreSQL for tests: a fresh database per test on the shared server, or a private
//! server of its own that a test may stop and start.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;

use order_worker::synth::Expectation;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// The server tests create their databases on: `TEST_DATABASE_URL`, of the form
/// `postgres://user:password@host:port/db` (the test command starts one and sets it).
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("a database URL ends with /<db>");
    format!("{base}/{db}")
}

/// A migrated database of its own, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    server: String,
}

impl TestDb {
    /// An operator's rule the contract knows nothing about: PostgreSQL refuses every row of
    /// `orders` for which `check` is false.
    pub async fn add_check(&self, name: &str, check: &str) {
        sqlx::query(&format!(
            "ALTER TABLE orders ADD CONSTRAINT {name} CHECK ({check})"
        ))
        .execute(&self.pool)
        .await
        .expect("add the check");
    }

    pub async fn create() -> Self {
        Self::create_on(&server_url()).await
    }

    pub async fn create_on(server: &str) -> Self {
        let name = format!("ow_test_{}", Uuid::new_v4().simple());
        let admin = PgPool::connect(server).await.unwrap_or_else(|e| {
            panic!("PostgreSQL for tests is not reachable ({e}); run ./scripts/test.sh, or start it and set TEST_DATABASE_URL")
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = with_database(server, &name);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connect to test database");
        order_worker::db::migrate(&pool).await.expect("migrate");
        Self {
            name,
            url,
            pool,
            server: server.to_owned(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs outside any runtime guarantee; a short-lived runtime of its own does the
        // cleanup. Failure only leaves a stray database behind.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = PgPool::connect(&server).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&admin)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// Final state of an order as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    pub version: i64,
    pub total_minor: i64,
    pub status: String,
}

pub async fn orders(pool: &PgPool) -> HashMap<Uuid, OrderState> {
    let rows: Vec<(Uuid, i64, i64, String)> =
        sqlx::query_as("SELECT order_id, version, total_minor, status FROM orders")
            .fetch_all(pool)
            .await
            .expect("read orders");
    rows.into_iter()
        .map(|(id, version, total_minor, status)| {
            (
                id,
                OrderState {
                    version,
                    total_minor,
                    status,
                },
            )
        })
        .collect()
}

pub async fn dead_letters_by_reason(pool: &PgPool) -> BTreeMap<String, u64> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT reason, count(*) FROM dead_letters GROUP BY reason")
            .fetch_all(pool)
            .await
            .expect("read dead letters");
    rows.into_iter().map(|(r, n)| (r, n as u64)).collect()
}

/// Holds an exclusive lock on `orders` until the transaction ends: the worker's writes block
/// while PostgreSQL itself keeps answering (a stalled database, as the worker sees it).
pub async fn lock_orders(pool: &PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock orders");
    lock
}

pub async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .expect("count rows")
}

/// Asserts that PostgreSQL holds exactly what a correct worker leaves for `expected`.
pub async fn assert_state_is(pool: &PgPool, expected: &Expectation) {
    let actual = orders(pool).await;
    let wanted: HashMap<Uuid, OrderState> = expected
        .orders
        .iter()
        .map(|(id, e)| {
            let state = OrderState {
                version: e.version,
                total_minor: e.total_minor,
                status: e.status.as_str().to_owned(),
            };
            (*id, state)
        })
        .collect();
    let wrong: Vec<_> = wanted
        .iter()
        .filter(|(id, w)| actual.get(id) != Some(w))
        .take(5)
        .map(|(id, w)| format!("{id}: expected {w:?}, found {:?}", actual.get(id)))
        .collect();
    assert!(
        wrong.is_empty(),
        "orders differ from the oracle, e.g.:\n{}",
        wrong.join("\n")
    );
    assert_eq!(actual.len(), wanted.len(), "unexpected extra orders");
    let dead = dead_letters_by_reason(pool).await;
    let wanted_dead: BTreeMap<String, u64> = expected
        .mix
        .invalid
        .iter()
        .map(|(r, n)| ((*r).to_owned(), *n))
        .collect();
    assert_eq!(dead, wanted_dead, "dead letters by reason");
}

/// A PostgreSQL server of the test's own, which it can stop and start like an outage.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Extra `postgres` options (`-c name=value ...`).
    options: String,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server with TLS on, using a certificate for `localhost` signed by a CA it generates in
    /// its own directory; returns the CA certificate's path too (clients verify against it).
    pub fn start_tls() -> (Self, PathBuf) {
        let pg = Self::start_with(true);
        let ca = pg.dir.path().join("ca.crt");
        (pg, ca)
    }

    fn start_with(tls: bool) -> Self {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("ow-pg-")
            .tempdir()
            .expect("tempdir");
        let mut options = String::new();
        if tls {
            // A CA and a server certificate it signed: verify-full must build a real chain
            // (rustls refuses a CA certificate presented as the server's own).
            let c = super::tls::certificates(dir.path());
            let (crt, key) = (c.cert, c.key);
            options = format!(
                "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                crt.display(),
                key.display()
            );
        }
        if is_root() {
            // postgres refuses to run as root; the data directory must belong to its user.
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()));
        }
        let port = super::free_port();
        let pg = Self {
            dir,
            bin,
            port,
            options,
        };
        run(pg
            .tool(
                "initdb",
                &["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"],
            )
            .arg(pg.data()));
        pg.start_server();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tool(&self, name: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(name);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args);
        cmd
    }

    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {}",
            self.port,
            self.dir.path().display(),
            self.options
        );
        let log = self.dir.path().join("server.log");
        run(self
            .tool("pg_ctl", &["-w", "-D"])
            .arg(self.data())
            .args(["-o", &opts, "-l"])
            .arg(log)
            .arg("start"));
    }

    /// A fast shutdown: sessions are terminated, new connections refused.
    pub fn stop_server(&self) {
        run(self
            .tool("pg_ctl", &["-w", "-m", "fast", "-D"])
            .arg(self.data())
            .arg("stop"));
    }

    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl", &["-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .output();
    }
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The newest installed PostgreSQL's binaries (`PG_BIN` overrides).
fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PG_BIN") {
        return p.into();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql (or set PG_BIN)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
