//! PostgreSQL side: fresh databases migrated by the worker binary, and the queries that check
//! final states and read commit times back. (The ceiling loaders are in `loaders.rs`.)

use std::path::Path;
use std::process::Command;

use sqlx::{Connection, Executor, PgConnection};

/// The server the benchmark creates its databases on.
pub struct Server {
    /// URL of a database to connect to for CREATE/DROP DATABASE.
    pub admin_url: String,
}

impl Server {
    /// The URL of database `db` on this server (query parameters such as `sslmode` kept).
    pub fn url_of(&self, db: &str) -> String {
        let (url, query) = match self.admin_url.split_once('?') {
            Some((u, q)) => (u, format!("?{q}")),
            None => (self.admin_url.as_str(), String::new()),
        };
        let (base, _) = url
            .rsplit_once('/')
            .expect("a database URL ends with /<db>");
        format!("{base}/{db}{query}")
    }

    async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.admin_url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at BENCH_DATABASE_URL: {e}"))
    }

    /// Creates an empty database and applies the schema with `order-worker migrate`.
    pub async fn fresh_database(&self, name: &str, bin: &Path) -> String {
        let mut admin = self.admin().await;
        admin
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await
            .expect("drop old database");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        let url = self.url_of(name);
        let out = Command::new(bin)
            .env_clear()
            .env("LOG_FORMAT", "json")
            .args(["migrate", "--database-url", &url])
            .output()
            .expect("run order-worker migrate");
        assert!(
            out.status.success(),
            "order-worker migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        url
    }

    pub async fn drop_database(&self, name: &str) {
        let mut admin = self.admin().await;
        let _ = admin
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
    }

    /// Writes dirty pages out, so a timed phase does not pay for the previous one's checkpoint.
    pub async fn checkpoint(&self) {
        let mut admin = self.admin().await;
        let _ = admin.execute("CHECKPOINT").await;
    }

    /// The server's data directory, as it names it (readable by superusers and
    /// `pg_read_all_settings`); `None` for a server on another host, whose path means nothing
    /// here.
    pub async fn data_directory(&self) -> Option<std::path::PathBuf> {
        let options: sqlx::postgres::PgConnectOptions = self.admin_url.parse().ok()?;
        let host = options.get_host();
        if !(host.starts_with('/') || ["localhost", "127.0.0.1", "::1"].contains(&host)) {
            return None;
        }
        let mut admin = self.admin().await;
        sqlx::query_scalar::<_, String>("SHOW data_directory")
            .fetch_one(&mut admin)
            .await
            .ok()
            .map(Into::into)
    }

    /// Checkpoints the server has started so far (`None` where `pg_stat_bgwriter` no longer
    /// counts them, PostgreSQL 17 and later).
    pub async fn checkpoints(&self) -> Option<i64> {
        let mut admin = self.admin().await;
        sqlx::query_scalar("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
            .fetch_one(&mut admin)
            .await
            .ok()
    }

    pub async fn setting(&self, name: &str) -> String {
        let mut admin = self.admin().await;
        sqlx::query_scalar::<_, String>("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .unwrap_or_default()
    }
}

/// What `orders` holds: row count, sum of versions, and a digest of (id, version, total, items).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalState {
    pub rows: i64,
    pub version_sum: i64,
    pub digest: String,
    pub dead_letters: i64,
}

pub async fn final_state(url: &str) -> FinalState {
    let mut c = PgConnection::connect(url).await.expect("connect");
    let (rows, version_sum, digest): (i64, i64, Option<String>) = sqlx::query_as(
        "SELECT count(*), COALESCE(sum(version), 0)::int8, \
                md5(string_agg(order_id::text || ':' || version || ':' || total_minor || ':' \
                               || md5(items::text), ',' ORDER BY order_id)) \
         FROM orders",
    )
    .fetch_one(&mut c)
    .await
    .expect("read final state");
    let dead_letters: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&mut c)
        .await
        .expect("count dead letters");
    FinalState {
        rows,
        version_sum,
        digest: digest.unwrap_or_default(),
        dead_letters,
    }
}

/// Earliest and latest durable writes (orders and dead letters), as Unix seconds.
pub async fn write_window(url: &str) -> Option<(f64, f64)> {
    let mut c = PgConnection::connect(url).await.ok()?;
    sqlx::query_as::<_, (Option<f64>, Option<f64>)>(
        "SELECT extract(epoch FROM least(
                    (SELECT min(first_applied_at) FROM orders),
                    (SELECT min(created_at) FROM dead_letters)))::float8,
                extract(epoch FROM greatest(
                    (SELECT max(applied_at) FROM orders),
                    (SELECT max(created_at) FROM dead_letters)))::float8",
    )
    .fetch_one(&mut c)
    .await
    .ok()
    .and_then(|(a, b)| Some((a?, b?)))
}

/// For every order row and dead letter: its source coordinates, when its writing transaction
/// started (`applied_at` / `created_at`, `now()`) and, if the server records commit times
/// (`track_commit_timestamp`), when that transaction committed; all in Unix seconds.
pub async fn write_times(url: &str) -> Vec<(i32, i64, f64, Option<f64>)> {
    let mut c = PgConnection::connect(url).await.expect("connect");
    let tracked: String = sqlx::query_scalar("SHOW track_commit_timestamp")
        .fetch_one(&mut c)
        .await
        .expect("read track_commit_timestamp");
    let commit = if tracked == "on" {
        "extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8"
    } else {
        "NULL::float8"
    };
    sqlx::query_as(&format!(
        "SELECT source_partition, source_offset, extract(epoch FROM applied_at)::float8, {commit}
         FROM orders
         UNION ALL
         SELECT source_partition, source_offset, extract(epoch FROM created_at)::float8, {commit}
         FROM dead_letters"
    ))
    .fetch_all(&mut c)
    .await
    .expect("read write times")
}
