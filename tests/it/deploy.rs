//! What the deployment reads from the worker: every metric and label that the alerts
//! (`k8s/**` PrometheusRule), the Grafana dashboard and KEDA's prometheus trigger query must be
//! one that the running binary really exports, read from a live `/metrics` scrape. A misspelled
//! or renamed metric would otherwise make an alert silently never fire, a panel stay empty, or
//! KEDA scale on nothing. Reading the scrape rather than the catalogue
//! (`src/metrics/catalogue.rs`) means a declared but never-exported name, a histogram used
//! without its `_bucket` suffix, or a missing label cannot pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use order_worker::synth::SynthSpec;

use crate::helpers::kafka::{Mock, OffsetProbe, publish};
use crate::helpers::pg::TestDb;
use crate::helpers::{Binary, eventually, try_get, unique};

/// Labels a series gets from its scrape target (Prometheus Operator's ServiceMonitor), not from
/// the worker.
const TARGET_LABELS: &[&str] = &[
    "namespace",
    "pod",
    "job",
    "instance",
    "service",
    "endpoint",
    "container",
];

/// Exported series names, each with the label names it carries.
type Exported = BTreeMap<String, BTreeSet<String>>;

/// Series names and their label names in a Prometheus text exposition.
fn exported(exposition: &str) -> Exported {
    let mut out = Exported::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            // Label values are quoted and may hold anything, so walk them instead of splitting.
            let mut rest = &line[end + 1..];
            while let Some(eq) = rest.find("=\"") {
                labels.insert(rest[..eq].trim_start_matches(',').to_owned());
                let value = &rest[eq + 2..];
                let mut close = 0;
                let mut escaped = false;
                for (i, c) in value.char_indices() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            close = i;
                            break;
                        }
                        _ => escaped = false,
                    }
                }
                rest = &value[close + 1..];
                if rest.starts_with('}') {
                    break;
                }
            }
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The worker's metric names a PromQL expression uses, each with the label names its
/// selector matches on.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < expr.len() {
        let rest = &expr[i..];
        let starts_word = !expr[..i].ends_with(|c: char| is_ident(c) || c == '$');
        if starts_word && (rest.starts_with("order_worker_") || rest.starts_with("process_")) {
            let len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
            let mut labels = Vec::new();
            if rest[len..].starts_with('{') {
                let body = &rest[len + 1..rest[len..].find('}').map_or(rest.len(), |e| len + e)];
                for matcher in body.split(',').filter(|m| !m.trim().is_empty()) {
                    let name = matcher.split(['=', '!']).next().unwrap_or("").trim();
                    labels.push(name.to_owned());
                }
            }
            out.push((rest[..len].to_owned(), labels));
            i += len;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

/// Label names of `by`, `without`, `on` and `ignoring` clauses.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for keyword in ["by", "without", "on", "ignoring"] {
        for (at, _) in expr.match_indices(keyword) {
            let before = expr[..at].chars().next_back();
            let after = expr[at + keyword.len()..].trim_start();
            if before.is_some_and(is_ident) || !after.starts_with('(') {
                continue;
            }
            let list = &after[1..after.find(')').unwrap_or(after.len())];
            out.extend(
                list.split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            );
        }
    }
    out
}

/// What is wrong with one expression against a scrape: unknown metrics, unknown labels.
fn problems(expr: &str, scrape: &Exported) -> Vec<String> {
    let mut out = Vec::new();
    let used = selectors(expr);
    for (metric, labels) in &used {
        let Some(has) = scrape.get(metric) else {
            out.push(format!("metric {metric} is not exported"));
            continue;
        };
        for l in labels {
            if !has.contains(l) && !TARGET_LABELS.contains(&l.as_str()) {
                out.push(format!("{metric} has no label {l}"));
            }
        }
    }
    for l in grouping_labels(expr) {
        let known = TARGET_LABELS.contains(&l.as_str())
            || used
                .iter()
                .any(|(m, _)| scrape.get(m).is_some_and(|has| has.contains(&l)));
        if !known {
            out.push(format!("no metric of the expression has the label {l}"));
        }
    }
    out
}

/// Values of `key:` in a YAML file, inline or as a block scalar (`|`, `>-`). Enough for the
/// PromQL in k8s/, without a YAML parser among the dev-dependencies.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let item = line.trim_start().trim_start_matches("- ");
        let Some(value) = item.strip_prefix(&format!("{key}:")) else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let block = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent);
            out.push(block.copied().collect::<Vec<_>>().join("\n"));
        } else {
            out.push(value.trim_matches(['"', '\'']).to_owned());
        }
    }
    out
}

/// Strings under `expr`, `query` and `definition` anywhere in a Grafana dashboard.
fn dashboard_queries(node: &serde_json::Value, out: &mut Vec<String>) {
    match node {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read k8s/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Every PromQL expression of the deployment, with where it comes from.
fn deployment_queries() -> Vec<(String, String)> {
    let k8s = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s");
    let mut files = Vec::new();
    yaml_files(&k8s, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read yaml");
        let name = file.strip_prefix(&k8s).unwrap().display().to_string();
        for key in ["expr", "query"] {
            out.extend(
                yaml_values(&text, key)
                    .into_iter()
                    .map(|q| (name.clone(), q)),
            );
        }
    }
    let dashboard = k8s.join("base/dashboards/order-worker.json");
    let json = serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&json, &mut queries);
    out.extend(queries.into_iter().map(|q| ("dashboard".to_owned(), q)));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_and_label_the_alerts_dashboard_and_keda_use_is_exported_by_a_running_worker()
{
    // Everything a production scrape shows: owned partitions with measured lag and time lag,
    // batches written (histograms), dead letters.
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 3);
    let db = TestDb::create().await;
    let spec = SynthSpec {
        orders: 500,
        invalid_ratio: 0.05,
        duplicate_ratio: 0.05,
        seed: 4,
    };
    publish(&mock.brokers, &topic, &spec, 600);
    let worker = Binary::run(
        &mock.brokers,
        &db.url,
        &topic,
        &group,
        &["--lag-interval", "300ms"],
    );
    OffsetProbe::new(&mock.brokers, &group, &topic, 3)
        .wait_caught_up("the stream committed")
        .await;
    let scrape_now = || async {
        try_get(worker.http, "/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default()
    };
    eventually(
        "a scrape with lag per partition",
        Duration::from_secs(20),
        || async {
            scrape_now()
                .await
                .matches("order_worker_consumer_time_lag_seconds{")
                .count()
                == 3
        },
    )
    .await;
    let text = scrape_now().await;
    let scrape = exported(&text);

    let queries = deployment_queries();
    for source in [
        "prometheusrule.yaml",
        "scaledobject-patch.yaml",
        "dashboard",
    ] {
        let n = queries.iter().filter(|(f, _)| f.ends_with(source)).count();
        assert!(
            n > 0,
            "no PromQL found in {source}: the extraction is broken"
        );
    }
    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, q)| selectors(q).into_iter().map(|(m, _)| m))
        .collect();
    let wrong: Vec<String> = queries
        .iter()
        .flat_map(|(f, q)| {
            problems(q, &scrape)
                .into_iter()
                .map(move |p| format!("{f}: {p}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "the deployment uses what the worker does not export:\n{}\n(used: {used:?})",
        wrong.join("\n")
    );
    assert!(used.len() >= 15, "suspiciously few metrics found: {used:?}");

    // The check itself catches the mistakes it exists for.
    for (bad, expected) in [
        (
            "rate(order_worker_events_aplied_total[5m])",
            "metric order_worker_events_aplied_total is not exported",
        ),
        (
            "histogram_quantile(0.99, rate(order_worker_batch_write_duration_seconds[5m]))",
            "metric order_worker_batch_write_duration_seconds is not exported",
        ),
        (
            r#"sum(order_worker_consumer_lag_messages{grp="order-worker"})"#,
            "order_worker_consumer_lag_messages has no label grp",
        ),
        (
            "sum by (reasons) (increase(order_worker_dead_letters_total[10m]))",
            "no metric of the expression has the label reasons",
        ),
    ] {
        assert_eq!(problems(bad, &scrape), [expected], "{bad}");
    }
}

/// The allocator settings `src/memory.rs` counts on (no per-thread caches, two arenas) and the
/// mmap threshold the benchmark's figures rest on come from the image's environment (glibc reads
/// them only at start), and scripts/run.sh and the benchmark take them from the same line.
#[test]
fn the_image_gives_the_worker_the_allocator_settings_its_memory_figures_rest_on() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
            .expect("Dockerfile");
    let tunables = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ENV GLIBC_TUNABLES="))
        .expect("the runtime stage sets GLIBC_TUNABLES");
    let set: BTreeMap<&str, &str> = tunables
        .split(':')
        .filter_map(|t| t.split_once('='))
        .collect();
    assert_eq!(
        set.get("glibc.malloc.tcache_count"),
        Some(&"0"),
        "{tunables}"
    );
    assert_eq!(set.get("glibc.malloc.arena_max"), Some(&"2"), "{tunables}");
    assert_eq!(
        set.get("glibc.malloc.mmap_threshold"),
        Some(&"1048576"),
        "{tunables}"
    );
}

/// The benchmark measures the worker's defaults, and docs/deploy.md sizes the pod from those runs:
/// the manifest's tuning knobs are those defaults, so the pod runs what was measured.
#[test]
fn the_manifest_sets_the_tuning_knobs_to_the_measured_defaults() {
    use clap::CommandFactory;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/base/worker.env");
    let env = std::fs::read_to_string(&path).expect("k8s/base/worker.env");
    let set: BTreeMap<&str, &str> = env
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let cli = order_worker::config::Cli::command();
    let run = cli.find_subcommand("run").expect("the run command");
    for name in [
        "KAFKA_QUEUE_MAX_KBYTES",
        "WORKER_PROCESSORS",
        "WORKER_CHANNEL_CAPACITY",
        "BATCH_MAX_ROWS",
        "BATCH_LINGER",
    ] {
        let arg = run
            .get_arguments()
            .find(|a| a.get_env() == Some(std::ffi::OsStr::new(name)))
            .unwrap_or_else(|| panic!("run reads {name}"));
        let default: Vec<&str> = arg
            .get_default_values()
            .iter()
            .filter_map(|v| v.to_str())
            .collect();
        assert_eq!(
            set.get(name).map(|v| vec![*v]),
            Some(default),
            "{name} in {}",
            path.display()
        );
    }
}
