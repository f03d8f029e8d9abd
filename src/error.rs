//! The library's error type.
//!
//! Invariant: no variant's message carries a secret (connection strings are never formatted
//! into errors).

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database schema: {0}")]
    Schema(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("http server on {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "graceful stop did not finish within {0:?}; messages not yet durable were not committed and \
         will be redelivered"
    )]
    DrainTimeout(Duration),
    #[error("{0}")]
    SchemaRegistry(String),
    #[error("pipeline task failed: {0}")]
    TaskFailed(String),
    #[error("stopped before the operation could finish")]
    Aborted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
