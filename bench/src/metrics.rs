//! The worker's HTTP endpoints as the harness reads them: a minimal HTTP/1.1 GET, and the
//! Prometheus text exposition parsed into samples, sums, histogram buckets and means.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET path` over a fresh HTTP/1.1 connection: the status code and body, or `None` when the
/// server does not answer (not listening yet, or gone).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_nodelay(true).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// One sample of a Prometheus text exposition: `name{labels} value`.
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let rest = if labels.is_empty() {
            rest.strip_prefix(' ')?
        } else {
            rest.strip_prefix(labels)?.strip_prefix(' ')?
        };
        rest.trim().parse().ok()
    })
}

/// The cumulative buckets of a histogram: (upper bound in its unit, count), in order.
pub fn histogram(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, rest) = rest.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The upper bound of the bucket holding quantile `q` (what a bucketed histogram can say).
pub fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(le, _)| *le)
}

/// Sum of every sample of a metric family (all label sets).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The mean of a histogram: `_sum / _count`, `None` before its first observation.
pub fn histogram_mean(metrics: &str, name: &str) -> Option<f64> {
    let sum = metric(metrics, &format!("{name}_sum"), "")?;
    let count = metric(metrics, &format!("{name}_count"), "")?;
    (count > 0.0).then(|| sum / count)
}

/// How the worker batched its writes, from one `/metrics` scrape.
pub struct BatchStats {
    /// Mean messages per batch.
    pub mean_batch: Option<f64>,
    /// Mean time of one batch write, in ms.
    pub mean_write_ms: Option<f64>,
    /// Backpressure pauses so far.
    pub pauses: Option<f64>,
}

impl BatchStats {
    pub fn of(metrics: &str) -> Self {
        Self {
            mean_batch: histogram_mean(metrics, "order_worker_batch_size_messages"),
            mean_write_ms: histogram_mean(metrics, "order_worker_batch_write_duration_seconds")
                .map(|s| s * 1000.0),
            pauses: metric(metrics, "order_worker_backpressure_pauses_total", ""),
        }
    }
}
