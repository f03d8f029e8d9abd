//! The reference docs against the code, both ways, so neither can drift: docs/configuration.md
//! against the command line (every flag and environment variable clap knows, and nothing else),
//! docs/operations.md's metric table against the metric catalogue.

use std::collections::BTreeSet;

use clap::CommandFactory;
use order_worker::config::Cli;

/// Variables the worker reads outside clap (documented in the same tables): the log filter, the
/// runtime's thread count (checked by the worker before tokio starts), glibc's, the host name in
/// Kafka's client id, and OpenTelemetry's SDK (the standard `OTEL_*` variables).
const OUTSIDE_CLAP: &[&str] = &[
    "RUST_LOG",
    "GLIBC_TUNABLES",
    "HOSTNAME",
    order_worker::config::RUNTIME_THREADS_ENV,
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

fn document() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    std::fs::read_to_string(path).expect("docs/configuration.md")
}

/// Every long flag and every environment variable of every command.
fn declared() -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut flags, mut envs) = (BTreeSet::new(), BTreeSet::new());
    let mut commands = vec![Cli::command()];
    while let Some(command) = commands.pop() {
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long().filter(|l| !matches!(*l, "help" | "version")) {
                flags.insert(format!("--{long}"));
            }
            if let Some(env) = arg.get_env() {
                envs.insert(env.to_string_lossy().into_owned());
            }
        }
        commands.extend(command.get_subcommands().cloned());
    }
    (flags, envs)
}

/// Backquoted words of the document's table rows: `--flags` and `UPPER_CASE` names.
fn named_in_tables(document: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut flags, mut envs) = (BTreeSet::new(), BTreeSet::new());
    for row in document.lines().filter(|l| l.starts_with('|')) {
        for cell in row.split('|').skip(1).take(2) {
            for word in cell.split('`').skip(1).step_by(2) {
                let word = word.split_whitespace().next().unwrap_or("");
                if word.starts_with("--") {
                    flags.insert(word.to_owned());
                } else if !word.is_empty()
                    && word
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    envs.insert(word.to_owned());
                }
            }
        }
    }
    (flags, envs)
}

#[test]
fn every_flag_and_variable_of_the_command_line_is_documented() {
    let document = document();
    let (flags, envs) = declared();
    let missing: Vec<_> = flags
        .iter()
        .filter(|f| !document.contains(&format!("`{f}")))
        .chain(
            envs.iter()
                .filter(|e| !document.contains(&format!("`{e}`"))),
        )
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md: {missing:?}"
    );
}

#[test]
fn every_flag_and_variable_the_tables_name_exists() {
    let (flags, envs) = declared();
    let (named_flags, named_envs) = named_in_tables(&document());
    let unknown: Vec<_> = named_flags
        .difference(&flags)
        .chain(
            named_envs
                .difference(&envs)
                .filter(|e| !OUTSIDE_CLAP.contains(&e.as_str())),
        )
        .collect();
    assert!(
        unknown.is_empty(),
        "documented but not accepted: {unknown:?}"
    );
    assert!(
        named_flags.len() > 20 && named_envs.len() > 20,
        "the tables were read"
    );
}

/// docs/operations.md's metric table names every metric of the catalogue with its type and
/// labels, and nothing else of the worker's own.
#[test]
fn the_metric_reference_matches_the_catalogue_both_ways() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md");
    let document = std::fs::read_to_string(path).expect("docs/operations.md");
    let mut documented = BTreeSet::new();
    for row in document
        .lines()
        .filter(|l| l.starts_with("| `order_worker_"))
    {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, kind, labels) = (cells[1], cells[2], cells[3]);
        for name in names.split(',').map(|n| n.trim().trim_matches('`')) {
            let metric = order_worker::METRICS
                .iter()
                .find(|m| m.name == name)
                .unwrap_or_else(|| {
                    panic!("docs/operations.md names {name}, which is not a metric")
                });
            assert_eq!(
                kind,
                format!("{:?}", metric.kind).to_lowercase(),
                "type of {name}"
            );
            let labels: Vec<&str> = labels
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            assert_eq!(labels, metric.labels, "labels of {name}");
            documented.insert(name.to_string());
        }
    }
    let missing: Vec<&str> = order_worker::METRICS
        .iter()
        .map(|m| m.name)
        .filter(|n| !documented.contains(*n))
        .collect();
    assert!(missing.is_empty(), "docs/operations.md lacks {missing:?}");
}
