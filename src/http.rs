//! The HTTP server: `/healthz`, `/readyz`, `/metrics`.
//!
//! Invariant: every handler answers from in-memory state (atomics, the metrics registry) without
//! touching PostgreSQL or Kafka, so a probe is fast and bounded even when both are down; nothing
//! served is writable and nothing served carries configuration or secrets.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::health::Health;

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    prometheus: PrometheusHandle,
}

pub fn router(health: Arc<Health>, prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState { health, prometheus })
}

/// Serves until `stop` fires.
pub fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    prometheus: PrometheusHandle,
    stop: CancellationToken,
) -> JoinHandle<Result<(), Error>> {
    tokio::spawn(async move {
        axum::serve(listener, router(health, prometheus))
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .map_err(Error::Io)
    })
}

/// Liveness: the process answers. Restarting does not fix a down database, so it is not checked.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.prometheus.render(),
    )
}
