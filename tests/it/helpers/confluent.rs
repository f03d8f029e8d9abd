//! The Python client `scripts/lib.sh`'s `ensure_python_clients` installs: publishing with
//! Confluent's own serializers (`tests/tools/produce_confluent.py`), and a broker holding
//! committed transactions (`tests/tools/transaction_broker.py`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

#[derive(Debug, Clone, Copy)]
pub enum Format {
    Avro,
    Protobuf,
}

fn python() -> PathBuf {
    std::env::var_os("ORDER_WORKER_TEST_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            Some(PathBuf::from(home).join(".cache/order-worker/pyenv/bin/python"))
        })
        .filter(|p| p.exists())
        .expect("the Python clients are installed: run ./scripts/test.sh, or ensure_python_clients")
}

/// Publishes `events` (the JSON contract's form) keyed by order id, serialized by confluent-kafka's
/// Avro or Protobuf serializer against the registry at `registry`; panics unless all are
/// acknowledged.
pub fn produce_confluent(
    brokers: &str,
    topic: &str,
    registry: &str,
    format: Format,
    events: &[Value],
) {
    let dir = tempfile::tempdir().unwrap();
    let (lines, descriptors) = (
        dir.path().join("events.jsonl"),
        dir.path().join("order_event.fds"),
    );
    let mut file = std::fs::File::create(&lines).unwrap();
    for e in events {
        writeln!(file, "{e}").unwrap();
    }
    std::fs::write(
        &descriptors,
        order_worker::contract::protobuf::FILE_DESCRIPTOR_SET,
    )
    .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/produce_confluent.py");
    let format = match format {
        Format::Avro => "avro",
        Format::Protobuf => "protobuf",
    };
    let out = Command::new(python())
        .arg(script)
        .args([
            "--brokers",
            brokers,
            "--topic",
            topic,
            "--registry",
            registry,
        ])
        .args(["--format", format])
        .arg("--events")
        .arg(&lines)
        .arg("--descriptors")
        .arg(&descriptors)
        .output()
        .expect("python runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains(&format!("{} acknowledged, 0 failed", events.len())),
        "produce_confluent.py {format}: {said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Kafka-protocol broker (librdkafka's mock cluster, in a Python process) whose partition 0 of
/// its topic holds `transactions`, each committed: every transaction ends in a commit marker.
/// It lives as long as this value.
pub struct TransactionBroker {
    child: Child,
    _dir: tempfile::TempDir,
    pub brokers: String,
    /// Partition 0's high watermark: one past the last commit marker.
    pub end: i64,
}

impl TransactionBroker {
    pub fn start(topic: &str, transactions: &[Vec<Value>]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lines = dir.path().join("transactions.jsonl");
        let mut file = std::fs::File::create(&lines).unwrap();
        for t in transactions {
            writeln!(file, "{}", Value::Array(t.clone())).unwrap();
        }
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/transaction_broker.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(["--topic", topic])
            .arg("--transactions")
            .arg(&lines)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .expect("python runs");
        let mut said = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = |word: &str| -> String {
            let line = said.next().and_then(Result::ok).unwrap_or_default();
            let Some(rest) = line.strip_prefix(word) else {
                let errors = std::fs::read_to_string(dir.path().join("stderr"));
                panic!("transaction_broker.py said {line:?}, not {word}: {errors:?}");
            };
            rest.trim().to_owned()
        };
        let brokers = next("bootstrap");
        let end = next("end").parse().expect("a high watermark");
        Self {
            child,
            _dir: dir,
            brokers,
            end,
        }
    }
}

impl Drop for TransactionBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
