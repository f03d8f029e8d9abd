//! PostgreSQL: the connection pool, the embedded migrations, and how errors are judged.
//!
//! Invariant: the worker only writes to a database whose schema has every migration this build
//! embeds; and every database error is classified as either transient (retry, never skip) or a
//! rejection of the data (the row is dead-lettered), never silently dropped.

mod columns;
pub mod dead_letters;
mod store;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::config::DbConfig;
use crate::error::Error;

pub use store::{OrderRow, UPSERT_ORDERS, encode_batch};
pub(crate) use store::{OrderStore, WriteFailed, Written};

/// The migrations in `migrations/`, compiled into the binary. A database may also hold
/// migrations this build does not know: a newer build applied them, and since every migration
/// only adds to the schema (`tests/it/migrations.rs` holds them to it), this build still works on
/// it, so an image can be rolled back without rolling the database back.
pub static MIGRATOR: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!()
};

/// A pool that connects on demand, so the worker starts (and reports unready) while PostgreSQL is
/// still down, and recovers by itself when it returns.
pub fn pool(cfg: &DbConfig, max_connections: u32) -> Result<PgPool, Error> {
    // Named, so operators (and the TLS test) find the worker's sessions in pg_stat_activity.
    let options = cfg
        .database_url
        .connect_options()?
        .application_name("order-worker");
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// Released migrations whose comments (and nothing else) were reworded since: the version and
/// the SHA-384 of the released text. sqlx refuses a database whose applied migration differs
/// from the embedded one; for these, [`migrate`] first moves the stored checksum from the
/// released text's to this build's, so every other edit of an applied migration is still refused.
const REWORDED: &[(i64, &str)] = &[
    (
        20261130000001,
        "6c69d460b6563f3b070f961eb06e13a1168c944da1ed766b6a006b2b8b5e021dd1cd6a96554f14912d5fff7142ace3c9",
    ),
    (
        20261130000002,
        "bcf76e48073594af94187e749bdccb3fbfde4386ce9543d55f0f313bd13f19c65c36700930599c8eeff17c1790c321f0",
    ),
];

/// Applies pending migrations; returns the versions it applied.
pub async fn migrate(pool: &PgPool) -> Result<Vec<i64>, Error> {
    let before = applied_versions(pool).await.unwrap_or_default();
    if !before.is_empty() {
        accept_reworded(pool).await?;
    }
    MIGRATOR.run(pool).await?;
    Ok(MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !before.contains(v))
        .collect())
}

async fn accept_reworded(pool: &PgPool) -> Result<(), Error> {
    for (version, released) in REWORDED {
        let Some(current) = MIGRATOR.iter().find(|m| m.version == *version) else {
            continue;
        };
        sqlx::query(
            "UPDATE _sqlx_migrations SET checksum = $2 WHERE version = $1 AND checksum = decode($3, 'hex')",
        )
        .bind(version)
        .bind(&*current.checksum)
        .bind(released)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// How a database's schema compares with the migrations this build embeds.
#[derive(Debug, Default)]
pub struct SchemaStatus {
    pub applied: usize,
    /// Embedded migrations the database lacks, as `version (description)`.
    pub missing: Vec<String>,
    /// Versions the database has that this build does not know (a newer build applied them).
    pub unknown: Vec<i64>,
}

pub async fn schema_status(pool: &PgPool) -> Result<SchemaStatus, Error> {
    let applied = applied_versions(pool).await?;
    Ok(SchemaStatus {
        applied: applied.len(),
        missing: MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{} ({})", m.version, m.description))
            .collect(),
        unknown: applied
            .into_iter()
            .filter(|v| MIGRATOR.iter().all(|m| m.version != *v))
            .collect(),
    })
}

/// Refuses a database that lacks a migration this build needs.
pub async fn check_schema(pool: &PgPool) -> Result<(), Error> {
    let status = schema_status(pool).await?;
    if status.missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Schema(format!(
            "the database lacks migration(s) {}; run `order-worker migrate` or set MIGRATE_ON_START=true",
            status.missing.join(", ")
        )))
    }
}

/// PostgreSQL's `max_connections` less the slots reserved for superusers: what clients such as
/// the worker can open at most.
pub async fn connection_slots(pool: &PgPool) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        "SELECT current_setting('max_connections')::bigint \
              - current_setting('superuser_reserved_connections')::bigint",
    )
    .fetch_one(pool)
    .await?)
}

async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?,
    )
}

/// Whether PostgreSQL answers a trivial query within `timeout`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> Result<(), sqlx::Error> {
    match tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// Whether PostgreSQL refused who the worker is or what it asked for at connection time (wrong
/// password or user: SQLSTATE class 28; no such database: 3D000). Retrying cannot fix that, so
/// at startup it is a configuration error.
pub fn is_misconfigured(err: &sqlx::Error) -> bool {
    let code = match err {
        sqlx::Error::Database(db) => db.code(),
        _ => None,
    };
    code.is_some_and(|c| c.starts_with("28") || c == "3D000")
}

/// What kind of failure a database error is. Only `Data` and `Constraint` blame the row; every
/// other kind is retried, because a database that is down, restarting, overloaded or missing a
/// table today will be fixed, and the messages must still be there when it is. A `Timeout` (the
/// statement ran past `statement_timeout`), and a session that ends as its statement runs twice
/// in a row while PostgreSQL answers (a pooler's `query_timeout`), are retried with fewer rows
/// at a time (`pipeline::write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Connection,
    PoolTimeout,
    Shutdown,
    Serialization,
    Deadlock,
    Resources,
    Timeout,
    Data,
    Constraint,
    Other,
}

impl FailureKind {
    pub const ALL: [FailureKind; 10] = [
        Self::Connection,
        Self::PoolTimeout,
        Self::Shutdown,
        Self::Serialization,
        Self::Deadlock,
        Self::Resources,
        Self::Timeout,
        Self::Data,
        Self::Constraint,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::PoolTimeout => "pool_timeout",
            Self::Shutdown => "shutdown",
            Self::Serialization => "serialization",
            Self::Deadlock => "deadlock",
            Self::Resources => "resources",
            Self::Timeout => "timeout",
            Self::Data => "data",
            Self::Constraint => "constraint",
            Self::Other => "other",
        }
    }

    pub fn of(err: &sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => Self::Connection,
            sqlx::Error::PoolTimedOut => Self::PoolTimeout,
            sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => Self::Connection,
            sqlx::Error::Database(db) => Self::of_sqlstate(db.code().as_deref().unwrap_or("")),
            _ => Self::Other,
        }
    }

    fn of_sqlstate(code: &str) -> Self {
        match code {
            "40001" => Self::Serialization,
            "40P01" => Self::Deadlock,
            "57P01" | "57P02" | "57P03" => Self::Shutdown,
            "57014" => Self::Timeout,
            c if c.starts_with("08") => Self::Connection,
            c if c.starts_with("53") => Self::Resources,
            c if c.starts_with("22") => Self::Data,
            c if c.starts_with("23") => Self::Constraint,
            _ => Self::Other,
        }
    }

    /// Whether retrying the same statement can succeed.
    pub fn is_transient(self) -> bool {
        !matches!(self, Self::Data | Self::Constraint)
    }

    /// Whether the failure ended the session: lost, or closed by the server.
    pub fn ends_the_session(self) -> bool {
        matches!(self, Self::Connection | Self::Shutdown)
    }

    /// Whether PostgreSQL itself is away or out of resources (what a restart of the worker
    /// would not fix), as opposed to a statement failing while PostgreSQL answers.
    pub fn is_outage(self) -> bool {
        matches!(
            self,
            Self::Connection | Self::PoolTimeout | Self::Shutdown | Self::Resources
        )
    }
}

#[cfg(test)]
mod tests {
    use super::FailureKind;

    #[test]
    fn outages_and_conflicts_are_transient_and_bad_data_is_not() {
        for (code, kind) in [
            ("08006", FailureKind::Connection),
            ("57P01", FailureKind::Shutdown),
            ("57P03", FailureKind::Shutdown),
            ("40001", FailureKind::Serialization),
            ("40P01", FailureKind::Deadlock),
            ("53300", FailureKind::Resources),
            ("57014", FailureKind::Timeout),
            ("42P01", FailureKind::Other),
        ] {
            assert_eq!(FailureKind::of_sqlstate(code), kind, "{code}");
            assert!(kind.is_transient(), "{code}");
        }
        for (code, kind) in [
            ("22021", FailureKind::Data),
            ("23514", FailureKind::Constraint),
        ] {
            assert_eq!(FailureKind::of_sqlstate(code), kind, "{code}");
            assert!(!kind.is_transient(), "{code}");
        }
    }

    #[test]
    fn a_pool_timeout_is_transient() {
        assert!(FailureKind::of(&sqlx::Error::PoolTimedOut).is_transient());
    }
}
