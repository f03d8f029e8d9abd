//! The `check` command: what an operator runs before (and during) a rollout to learn whether the
//! worker, as configured, can run here. One finding per check, each with its fix.
//!
//! Invariant: it only reads. It fetches metadata, committed offsets and a topic's configuration,
//! and queries PostgreSQL's catalog; it never joins the group, commits, publishes or migrates,
//! so it is safe beside live workers. The verdicts on figures are pure functions.

mod kafka;
mod postgres;

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::config::CheckConfig;
use crate::registry::SchemaRegistry;

/// Longest any one request may take: a check that waits longer is as good as failed.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
    /// Not run, because a check it depends on failed.
    Skipped,
}

#[derive(Debug, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub(super) fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(super) fn fail(
        check: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            check,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub(super) fn skipped(check: &'static str, because: &str) -> Self {
        Self {
            check,
            status: Status::Skipped,
            detail: format!("not checked: {because}"),
            fix: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub passed: bool,
    pub checks: Vec<Finding>,
}

impl Report {
    /// One line per check: status, name, what was found and, for a failure, the fix.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.checks {
            let status = match f.status {
                Status::Ok => "ok  ",
                Status::Fail => "FAIL",
                Status::Skipped => "--  ",
            };
            let _ = write!(out, "{status} {:<17} {}", f.check, f.detail);
            if let Some(fix) = &f.fix {
                let _ = write!(out, " (fix: {fix})");
            }
            out.push('\n');
        }
        out
    }

    pub fn failed(&self) -> usize {
        self.checks
            .iter()
            .filter(|f| f.status == Status::Fail)
            .count()
    }
}

/// Runs every check.
pub async fn check(cfg: &CheckConfig) -> Report {
    let mut checks = vec![settings(cfg)];
    checks.extend(kafka::check(cfg).await);
    checks.extend(postgres::check(cfg).await);
    checks.extend(schema_registry(cfg).await);
    Report {
        passed: checks.iter().all(|f| f.status == Status::Ok),
        checks,
    }
}

/// With `SCHEMA_REGISTRY_URL`: the registry answers and takes the credentials.
async fn schema_registry(cfg: &CheckConfig) -> Option<Finding> {
    const NAME: &str = "schema registry";
    let registry_cfg = &cfg.run.worker.schema_registry;
    let url = registry_cfg.schema_registry_url.as_deref()?;
    let registry = match SchemaRegistry::new(registry_cfg) {
        Ok(registry) => registry?,
        Err(e) => return Some(Finding::fail(NAME, e.to_string(), "fix the file it names")),
    };
    Some(
        match tokio::time::timeout(TIMEOUT, registry.subjects()).await {
            Ok(Ok(n)) => Finding::ok(NAME, format!("{url} answers ({n} subjects)")),
            Ok(Err(e)) => Finding::fail(
                NAME,
                format!("{url}: {e}"),
                "check SCHEMA_REGISTRY_URL, the credentials file and the pod's egress to it",
            ),
            Err(_) => Finding::fail(
                NAME,
                format!("{url} did not answer within {}s", TIMEOUT.as_secs()),
                "check SCHEMA_REGISTRY_URL and the pod's egress to it",
            ),
        },
    )
}

fn settings(cfg: &CheckConfig) -> Finding {
    if let Err(e) = cfg.run.validate() {
        let what = e.to_string();
        let what = what.trim_start_matches("invalid configuration: ");
        return Finding::fail("settings", what, "change the setting it names");
    }
    let shutdown = cfg.run.worker.shutdown_timeout;
    let fmt = |d: Duration| humantime::format_duration(d).to_string();
    match cfg.grace_period {
        Some(grace) if shutdown >= grace => Finding::fail(
            "settings",
            format!(
                "SHUTDOWN_TIMEOUT ({}) does not end before the grace period ({})",
                fmt(shutdown),
                fmt(grace)
            ),
            "lower SHUTDOWN_TIMEOUT or raise terminationGracePeriodSeconds, a few seconds apart",
        ),
        Some(grace) => Finding::ok(
            "settings",
            format!(
                "consistent; SHUTDOWN_TIMEOUT {} ends before the grace period {}",
                fmt(shutdown),
                fmt(grace)
            ),
        ),
        None => Finding::ok("settings", "consistent"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_report_has_one_line_per_check_with_the_fix_of_a_failure() {
        let report = Report {
            passed: false,
            checks: vec![
                Finding::ok("kafka", "brokers at b:9092 answer"),
                Finding::fail("topic", "topic orders does not exist", "create it"),
                Finding::skipped("group", "the topic could not be read"),
            ],
        };
        let text = report.text();
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().nth(1).unwrap().starts_with("FAIL topic"));
        assert!(text.contains("(fix: create it)"));
        assert_eq!(report.failed(), 1);
    }
}
