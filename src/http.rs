//! The HTTP server: `/healthz`, `/readyz`, `/metrics`, `/lag`.
//!
//! Invariant: every handler answers from in-memory state (atomics, the metrics registry, the last
//! lag measurement, the pool's counters) without a request to PostgreSQL or Kafka, so a probe is
//! fast and bounded even when both are down; nothing served is writable and nothing served carries
//! configuration or secrets.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::Error;
use crate::health::Health;
use crate::lag::LagView;
use crate::metrics::Metrics;
use sqlx::PgPool;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub health: Arc<Health>,
    pub prometheus: PrometheusHandle,
    pub lag: Arc<LagView>,
    pub sampler: Arc<Sampler>,
}

/// Gauges that are cheapest to read at scrape time rather than keep current.
pub struct Sampler {
    pool: PgPool,
    metrics: Metrics,
    process: metrics_process::Collector,
}

impl Sampler {
    pub fn new(pool: PgPool, metrics: Metrics) -> Self {
        let process = metrics_process::Collector::default();
        process.describe();
        Self {
            pool,
            metrics,
            process,
        }
    }

    fn refresh(&self, health: &Health) {
        let size = self.pool.size() as f64;
        let idle = self.pool.num_idle() as f64;
        self.metrics.db_pool_in_use.set((size - idle).max(0.0));
        self.metrics.db_pool_idle.set(idle);
        self.metrics
            .ready
            .set(if health.readiness().is_ok() { 1.0 } else { 0.0 });
        self.metrics
            .pipeline_stall
            .set(health.stalled_for().as_secs_f64().floor());
        self.process.collect();
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/lag", get(lag))
        .with_state(state)
}

/// A request head (request line and headers) larger than this is refused with 431; the
/// endpoints take no body.
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// A client must send its request head within this time (a silent connection is closed).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 64;

/// Serves until `stop` fires. Each connection is bounded in head size, in the time to send its
/// head, and in lifetime, and their number is capped, so a slow or flooding client cannot hold
/// the probes hostage.
pub fn serve(
    listener: TcpListener,
    state: AppState,
    stop: CancellationToken,
) -> JoinHandle<Result<(), Error>> {
    let router = router(state);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, typically: back off instead of spinning.
                        warn!(error = %e, "http accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_REQUEST_HEAD_BYTES);
                let connection = http.serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
                drop(slot);
            });
        }
    })
}

/// Liveness: the process answers and its pipeline is not wedged. An outage of PostgreSQL or
/// Kafka never fails it: a restart would not fix that.
async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not alive: {reason}\n"),
        ),
    }
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
    s.sampler.refresh(&s.health);
    let mut body = s.prometheus.render();
    s.lag.render_prometheus(&mut body);
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], body)
}

/// The group's lag as JSON, for KEDA's metrics-api scaler and for people.
async fn lag(State(s): State<AppState>) -> impl IntoResponse {
    match s.lag.json() {
        Some(report) => (StatusCode::OK, Json(report)),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "lag not measured yet"})),
        ),
    }
}
