//! `order-worker validate` gives the verdicts the worker reaches: every file of the decoder
//! corpus is published to a real broker (the mock cluster) and consumed by the worker into
//! PostgreSQL, then judged by `validate`; each file the worker dead-lettered has exactly the
//! reason and message it stored, and every other file is `ok`. A sample of the topic, read back
//! by `validate topic`, is judged the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sqlx::Row;

use crate::helpers::kafka::{Mock, OffsetProbe, RawMessage, publish_raw};
use crate::helpers::pg::TestDb;
use crate::helpers::{start_worker, unique, worker_bin};

/// The key every corpus file is checked with (tests/corpus/decode/README.md).
const ORDER: &str = "6f1c2a4e-7a43-4a39-9f7e-2b1d7c1e0a11";

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/decode");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("--"))
        .collect();
    files.sort();
    files
}

/// `order-worker validate --json` with `args`: its exit code and verdicts.
fn validate(args: &[&str]) -> (i32, Vec<Value>) {
    let out = Command::new(worker_bin())
        .arg("validate")
        .arg("--json")
        .args(args)
        .output()
        .expect("run order-worker validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdicts: Vec<Value> = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), verdicts)
}

/// (reason, message) or "ok", as a verdict says.
fn said(v: &Value) -> (String, String) {
    if v["ok"] == true {
        return ("ok".into(), String::new());
    }
    (
        v["reason"].as_str().unwrap().into(),
        v["detail"].as_str().unwrap().into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_gives_every_corpus_file_the_verdict_the_worker_stores() {
    let files = corpus();
    assert!(files.len() >= 30, "the corpus is there");
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let messages: Vec<RawMessage> = files
        .iter()
        .map(|f| {
            (
                Some(ORDER.as_bytes().to_vec()),
                Some(std::fs::read(f).unwrap()),
            )
        })
        .collect();
    publish_raw(&mock.brokers, &topic, &messages);
    let db = TestDb::create().await;
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    OffsetProbe::new(&mock.brokers, &group, &topic, 1)
        .wait_caught_up("the corpus consumed")
        .await;
    worker.stop();
    worker.wait().await.expect("graceful stop");
    let stored: BTreeMap<i64, (String, String)> =
        sqlx::query("SELECT source_offset, reason, error FROM dead_letters")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();

    let paths: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let (code, verdicts) = validate(&[&["--key", ORDER][..], &paths].concat());
    assert_eq!(verdicts.len(), files.len());
    let mut wrong = Vec::new();
    for (offset, (file, verdict)) in files.iter().zip(&verdicts).enumerate() {
        let worker = stored
            .get(&(offset as i64))
            .cloned()
            .unwrap_or(("ok".into(), String::new()));
        if said(verdict) != worker {
            wrong.push(format!(
                "{}: worker {worker:?}, validate {:?}",
                file.display(),
                said(verdict)
            ));
        }
    }
    assert!(wrong.is_empty(), "verdicts differ:\n{}", wrong.join("\n"));
    assert!(
        stored.len() >= 25,
        "most of the corpus is dead-lettered: {}",
        stored.len()
    );
    assert_eq!(code, 1, "some would be dead-lettered: exit 1");

    // A sample of the topic read back: the same verdicts, by offset.
    let (code, sample) = validate(&[
        "topic",
        "--brokers",
        &mock.brokers,
        "--topic",
        &topic,
        "--last",
        "8",
    ]);
    assert_eq!(code, 1);
    let n = files.len();
    let expected: Vec<(String, (String, String))> = (n - 8..n)
        .map(|o| {
            let v = stored
                .get(&(o as i64))
                .cloned()
                .unwrap_or(("ok".into(), String::new()));
            (format!("{topic}/0@{o}"), v)
        })
        .collect();
    let got: Vec<(String, (String, String))> = sample
        .iter()
        .map(|v| (v["source"].as_str().unwrap().to_owned(), said(v)))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn valid_events_exit_zero_and_an_event_without_its_key_is_judged_by_its_value() {
    let valid: Vec<String> = corpus()
        .iter()
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("valid--")
        })
        .map(|f| f.to_str().unwrap().to_owned())
        .collect();
    let args: Vec<&str> = valid.iter().map(String::as_str).collect();
    let (code, verdicts) = validate(&args);
    assert_eq!(code, 0, "{verdicts:?}");
    assert!(
        verdicts
            .iter()
            .all(|v| v["ok"] == true && v["order_id"] == ORDER)
    );
}
