//! Logging setup, span export, and the throttle that keeps a repeating condition to a few lines.
//!
//! Invariant: logs go to stderr (stdout is for command output such as `produce`'s summary), as
//! JSON lines unless a human is watching (a terminal) or `LOG_FORMAT=pretty` asks for text. A
//! line that repeats is logged at most once per throttle window, with the count held back. Spans
//! are exported over OTLP only when the standard variables ask for it ([`otlp`]).

pub mod otlp;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// What [`init`] set up that must be flushed before the process ends.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued (the SDK waits for its exporter's timeout at most).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = provider.shutdown();
        }
    }
}

/// Sets up logging, and span export when `OTEL_EXPORTER_OTLP_ENDPOINT` asks for it; the error is
/// one line about the OTLP settings.
pub fn init(format: Option<LogFormat>) -> Result<Telemetry, String> {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let provider = otlp::provider()?;
    let spans = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("order-worker")));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter).with(spans);
    // A second init (tests start several workers in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => registry
            .with(fmt.json().flatten_event(true).with_current_span(true))
            .try_init(),
        LogFormat::Pretty => registry.with(fmt.compact()).try_init(),
    };
    Ok(Telemetry { provider })
}

/// `RUST_LOG`'s levels per target (`info`, `order_worker=debug,librdkafka=warn`); `info` when
/// it is unset, empty or cannot be read.
fn log_filter(spec: Option<&str>) -> Targets {
    spec.filter(|s| !s.trim().is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
}

/// Keeps a condition that repeats many times a second (a broker that is down, a write that
/// keeps failing) to a few log lines: the first occurrence of a line is logged, then at most one
/// per window, saying how many were held back. Metrics still count every occurrence.
#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    seen: Mutex<HashMap<String, Seen>>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    logged_at: Instant,
    held: u64,
}

/// Distinct lines remembered at once; beyond it the oldest are forgotten (and may log again).
const THROTTLE_KEYS: usize = 64;

impl Throttle {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a line for `key` should be logged now; if so, how many were held back since the
    /// last one.
    pub fn admit(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = seen.get_mut(key) {
            if now.saturating_duration_since(s.logged_at) < self.window {
                s.held += 1;
                return None;
            }
            let held = s.held;
            *s = Seen {
                logged_at: now,
                held: 0,
            };
            return Some(held);
        }
        if seen.len() >= THROTTLE_KEYS {
            let window = self.window;
            seen.retain(|_, s| now.saturating_duration_since(s.logged_at) < window);
            // Still full: the line logged longest ago is forgotten (it may log again).
            let oldest = seen
                .iter()
                .min_by_key(|(_, s)| s.logged_at)
                .map(|(k, _)| k.clone());
            if let (true, Some(oldest)) = (seen.len() >= THROTTLE_KEYS, oldest) {
                seen.remove(&oldest);
            }
        }
        seen.insert(
            key.to_owned(),
            Seen {
                logged_at: now,
                held: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_line_is_let_through_once_per_window_with_the_count_held_back() {
        let t = Throttle::new(Duration::from_millis(50));
        assert_eq!(t.admit("brokers are down"), Some(0));
        for _ in 0..40 {
            assert_eq!(t.admit("brokers are down"), None);
        }
        assert_eq!(t.admit("another condition"), Some(0), "keys are apart");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.admit("brokers are down"), Some(40));
        assert_eq!(t.admit("brokers are down"), None);
    }

    #[test]
    fn it_remembers_a_bounded_number_of_lines() {
        let t = Throttle::new(Duration::from_secs(60));
        for i in 0..1_000 {
            assert_eq!(t.admit(&format!("line {i}")), Some(0));
        }
        assert!(t.seen.lock().unwrap().len() <= THROTTLE_KEYS);
    }

    #[test]
    fn rust_log_sets_levels_per_target_and_anything_unreadable_means_info() {
        use tracing::Level;
        use tracing_subscriber::filter::LevelFilter;
        let filter = log_filter(Some("order_worker=debug,librdkafka=warn"));
        assert!(filter.would_enable("order_worker::pipeline", &Level::DEBUG));
        assert!(!filter.would_enable("librdkafka", &Level::INFO));
        assert!(
            !filter.would_enable("sqlx::query", &Level::ERROR),
            "no default: other targets off"
        );
        for unreadable in [None, Some(""), Some("  "), Some("order_worker=loud")] {
            let filter = log_filter(unreadable);
            assert_eq!(
                filter.default_level(),
                Some(LevelFilter::INFO),
                "{unreadable:?}"
            );
            assert!(!filter.would_enable("sqlx::query", &Level::DEBUG));
        }
    }
}
