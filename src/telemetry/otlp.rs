//! Exporting spans over OTLP/HTTP, when the standard OpenTelemetry variables ask for it.
//!
//! Invariant: off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set (and `OTEL_SDK_DISABLED` is not `true`); off, nothing of OpenTelemetry runs and the
//! pipeline only reads [`enabled`]. On, spans leave through a batch processor on a thread of its
//! own with a bounded queue (the SDK's 2,048 spans; more are dropped, never waited for), so an
//! unreachable collector costs spans, not progress.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: the pipeline only then reads trace context from messages.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The standard variables that turn export on.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// The tracer provider the environment asks for, if any. Endpoint, headers, timeout, sampler
/// and resource attributes come from the standard `OTEL_*` variables, read by the SDK.
pub fn provider() -> Result<Option<SdkTracerProvider>, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if ENDPOINT_VARS.iter().all(|name| var(name).is_none())
        || var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Ok(None);
    }
    let client = reqwest::blocking::Client::builder()
        .build()
        .map_err(|e| format!("OTLP exporter's HTTP client: {e}"))?;
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(Blocking(client))
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("OTLP exporter: {e}"))?;
    let mut resource = Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("order-worker");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some(provider))
}

/// reqwest's blocking client as the exporter's HTTP client: the batch processor exports from a
/// thread of its own, outside any async runtime.
#[derive(Debug)]
struct Blocking(reqwest::blocking::Client);

#[async_trait::async_trait]
impl HttpClient for Blocking {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::blocking::Request::try_from(request)?;
        let mut response = self.0.execute(request)?.error_for_status()?;
        let headers = std::mem::take(response.headers_mut());
        let mut out = Response::builder()
            .status(response.status())
            .body(response.bytes()?)?;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// The W3C trace context a message's `traceparent` (and `tracestate`) header carries, as a link
/// target for the batch that applies it; `None` when export is off or the header is invalid.
/// Boxed: a batch holds one per message, and most messages carry none.
pub fn message_context(
    traceparent: Option<&[u8]>,
    tracestate: Option<&[u8]>,
) -> Option<Box<SpanContext>> {
    if !enabled() {
        return None;
    }
    struct Carrier<'a>(&'a str, Option<&'a str>);
    impl Extractor for Carrier<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                "traceparent" => Some(self.0),
                "tracestate" => self.1,
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }
    let parent = std::str::from_utf8(traceparent?).ok()?;
    let state = tracestate.and_then(|s| std::str::from_utf8(s).ok());
    let context = TraceContextPropagator::new().extract(&Carrier(parent, state));
    let span = context.span().span_context().clone();
    span.is_valid().then(|| Box::new(span))
}
