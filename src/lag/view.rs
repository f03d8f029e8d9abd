//! The last lag measurement, served as JSON (`/lag`, for KEDA's metrics-api scaler) and as
//! Prometheus gauges (for dashboards, alerts and KEDA's prometheus scaler).
//!
//! Invariant: the Prometheus series name only partitions this instance owns at the moment of the
//! scrape, so a revoked partition's series disappears at once and `sum()` over all pods counts
//! every partition exactly once. The JSON reports the whole group (every partition, owned or
//! not), so KEDA may ask any one pod and get the group's total.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use time::OffsetDateTime;

use crate::lag::{GroupLag, PartitionLag};
use crate::metrics::{CONSUMER_LAG, CONSUMER_LAG_SUM, CONSUMER_TIME_LAG, LAG_AGE, Metric};
use crate::offsets::OffsetTracker;

pub struct LagView {
    group: String,
    topic: String,
    last: RwLock<Option<Measured>>,
    tracker: Arc<OffsetTracker>,
}

/// The last measurement, and what the measurements before it say of its partitions.
struct Measured {
    lag: GroupLag,
    /// Per partition with lag: its committed offset, and when a measurement first found the
    /// partition waiting at that offset. The message there was waiting already then.
    waiting: HashMap<i32, (Option<i64>, OffsetDateTime)>,
}

#[derive(Serialize)]
struct Partition {
    #[serde(flatten)]
    lag: PartitionLag,
    owned: bool,
    /// Age of the newest committed message while the partition has lag (before this instance
    /// committed it: how long its committed offset has been waiting, a lower bound); 0 when
    /// caught up; absent when this instance does not own the partition.
    time_lag_seconds: Option<f64>,
}

#[derive(Serialize)]
struct Report<'a> {
    group: &'a str,
    topic: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    measured_at: OffsetDateTime,
    /// The whole group's lag: what KEDA's metrics-api trigger reads (`valueLocation: total_lag`).
    total_lag: i64,
    /// The lag of the partitions this instance owns.
    owned_lag: i64,
    partitions: Vec<Partition>,
}

impl LagView {
    pub fn new(group: &str, topic: &str, tracker: Arc<OffsetTracker>) -> Self {
        Self {
            group: group.to_owned(),
            topic: topic.to_owned(),
            last: RwLock::new(None),
            tracker,
        }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn update(&self, lag: GroupLag) {
        let mut last = self.last.write().unwrap_or_else(|p| p.into_inner());
        let before = last.take().map(|m| m.waiting).unwrap_or_default();
        let waiting = lag
            .partitions
            .iter()
            .filter(|p| p.lag > 0)
            .map(|p| {
                let since = match before.get(&p.partition) {
                    Some(&(at, since)) if at == p.committed => since,
                    _ => lag.measured_at,
                };
                (p.partition, (p.committed, since))
            })
            .collect();
        *last = Some(Measured { lag, waiting });
    }

    /// The last measurement with ownership and time lag as of now.
    fn partitions(&self, Measured { lag, waiting }: &Measured) -> Vec<Partition> {
        let progress = self.tracker.progress();
        let now = OffsetDateTime::now_utc();
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        lag.partitions
            .iter()
            .map(|p| {
                let mine = progress.iter().find(|m| m.partition == p.partition);
                let time_lag_seconds = mine.and_then(|m| {
                    if p.lag == 0 {
                        return Some(0.0);
                    }
                    // Without a commit of its own (a partition stuck since it was assigned),
                    // the alerts on time lag still see it grow.
                    let age = match m.committed_timestamp_ms {
                        Some(ts) => (now_ms - ts) as f64 / 1000.0,
                        None => (now - waiting.get(&p.partition)?.1).as_seconds_f64(),
                    };
                    Some(age.max(0.0))
                });
                Partition {
                    lag: *p,
                    owned: mine.is_some(),
                    time_lag_seconds,
                }
            })
            .collect()
    }

    /// Whether the last measurement found messages left on a partition this pod owns.
    pub fn owned_behind(&self) -> bool {
        let guard = self.last.read().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .is_some_and(|m| self.partitions(m).iter().any(|p| p.owned && p.lag.lag > 0))
    }

    /// The `/lag` document, or `None` before the first measurement.
    pub fn json(&self) -> Option<serde_json::Value> {
        let guard = self.last.read().unwrap_or_else(|p| p.into_inner());
        let measured = guard.as_ref()?;
        let (lag, partitions) = (&measured.lag, self.partitions(measured));
        let owned_lag = partitions
            .iter()
            .filter(|p| p.owned)
            .map(|p| p.lag.lag)
            .sum();
        let report = Report {
            group: &lag.group,
            topic: &lag.topic,
            measured_at: lag.measured_at,
            total_lag: lag.total(),
            owned_lag,
            partitions,
        };
        serde_json::to_value(report).ok()
    }

    /// Appends the lag families to a Prometheus text exposition.
    pub fn render_prometheus(&self, out: &mut String) {
        let guard = self.last.read().unwrap_or_else(|p| p.into_inner());
        let Some(measured) = guard.as_ref() else {
            return;
        };
        let lag = &measured.lag;
        let owned: Vec<Partition> = self
            .partitions(measured)
            .into_iter()
            .filter(|p| p.owned)
            .collect();
        let labels = format!(
            "group=\"{}\",topic=\"{}\"",
            escape(&lag.group),
            escape(&lag.topic)
        );
        family(out, &CONSUMER_LAG);
        for p in &owned {
            let _ = writeln!(
                out,
                "{}{{{labels},partition=\"{}\"}} {}",
                CONSUMER_LAG.name, p.lag.partition, p.lag.lag
            );
        }
        family(out, &CONSUMER_LAG_SUM);
        let sum: i64 = owned.iter().map(|p| p.lag.lag).sum();
        let _ = writeln!(out, "{}{{{labels}}} {sum}", CONSUMER_LAG_SUM.name);
        family(out, &CONSUMER_TIME_LAG);
        for p in &owned {
            if let Some(t) = p.time_lag_seconds {
                let _ = writeln!(
                    out,
                    "{}{{{labels},partition=\"{}\"}} {t}",
                    CONSUMER_TIME_LAG.name, p.lag.partition
                );
            }
        }
        family(out, &LAG_AGE);
        let age = (OffsetDateTime::now_utc() - lag.measured_at)
            .as_seconds_f64()
            .max(0.0);
        let _ = writeln!(out, "{}{{{labels}}} {age}", LAG_AGE.name);
    }
}

fn family(out: &mut String, metric: &Metric) {
    let (name, help) = (metric.name, metric.help);
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// Label values escaped as the exposition format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::Position;

    fn measured(partitions: &[(i32, Option<i64>, i64)]) -> GroupLag {
        GroupLag {
            group: "g\"1".into(),
            topic: "orders".into(),
            measured_at: OffsetDateTime::now_utc(),
            partitions: partitions
                .iter()
                .map(|&(partition, committed, end)| PartitionLag {
                    partition,
                    committed,
                    end,
                    lag: committed.map_or(end, |c| end - c),
                })
                .collect(),
        }
    }

    #[test]
    fn only_owned_partitions_are_exported_and_the_json_covers_the_group() {
        let tracker = Arc::new(OffsetTracker::new());
        tracker.assign(&[1]);
        let view = LagView::new("g\"1", "orders", tracker.clone());
        view.update(measured(&[(0, Some(5), 9), (1, Some(2), 10)]));
        let mut text = String::new();
        view.render_prometheus(&mut text);
        assert!(text.contains("order_worker_consumer_lag_messages{group=\"g\\\"1\",topic=\"orders\",partition=\"1\"} 8"), "{text}");
        assert!(!text.contains("partition=\"0\""), "{text}");
        assert!(text.contains(
            "order_worker_consumer_lag_sum_messages{group=\"g\\\"1\",topic=\"orders\"} 8"
        ));
        let json = view.json().unwrap();
        assert_eq!(json["total_lag"], 12);
        assert_eq!(json["owned_lag"], 8);
        assert_eq!(json["partitions"][0]["owned"], false);

        tracker.revoke(&[1]);
        let mut after = String::new();
        view.render_prometheus(&mut after);
        assert!(
            !after.contains("partition=\"1\""),
            "a revoked partition's series is gone: {after}"
        );
    }

    #[test]
    fn time_lag_is_zero_when_caught_up_and_the_committed_message_age_otherwise() {
        let tracker = Arc::new(OffsetTracker::new());
        tracker.assign(&[0, 1]);
        let long_ago = (OffsetDateTime::now_utc().unix_timestamp() - 60) * 1000;
        for p in [0, 1] {
            let pos = Position {
                partition: p,
                generation: tracker.generation(p).unwrap(),
                offset: 0,
            };
            assert!(tracker.register(pos, Some(long_ago)).is_some());
            tracker.complete(&[pos]);
            tracker.mark_committed(&tracker.commit_candidates(Some(&[p])));
        }
        let view = LagView::new("g", "orders", tracker);
        view.update(measured(&[(0, Some(1), 1), (1, Some(1), 50)]));
        let json = view.json().unwrap();
        assert_eq!(json["partitions"][0]["time_lag_seconds"], 0.0);
        let behind = json["partitions"][1]["time_lag_seconds"].as_f64().unwrap();
        assert!((59.0..70.0).contains(&behind), "{behind}");
    }

    #[test]
    fn a_partition_not_committed_yet_ages_from_the_first_measurement_that_found_it_waiting() {
        let tracker = Arc::new(OffsetTracker::new());
        tracker.assign(&[0, 1]);
        let view = LagView::new("g", "orders", tracker);
        let at = |partitions: &[(i32, Option<i64>, i64)], seconds_ago: i64| GroupLag {
            measured_at: OffsetDateTime::now_utc() - time::Duration::seconds(seconds_ago),
            ..measured(partitions)
        };
        let time_lag = |view: &LagView, p: usize| {
            view.json().unwrap()["partitions"][p]["time_lag_seconds"].as_f64()
        };
        view.update(at(&[(0, Some(5), 9), (1, None, 3)], 90));
        view.update(at(&[(0, Some(5), 12), (1, Some(3), 3)], 30));
        assert!(
            time_lag(&view, 0).is_some_and(|t| (89.0..100.0).contains(&t)),
            "still at 5"
        );
        assert_eq!(time_lag(&view, 1), Some(0.0), "caught up");
        view.update(at(&[(0, Some(12), 20), (1, Some(3), 4)], 0));
        assert!(
            time_lag(&view, 0).is_some_and(|t| t < 10.0),
            "moved on: counted afresh"
        );
        assert!(time_lag(&view, 1).is_some_and(|t| t < 10.0));
    }
}
