//! Publishing with Confluent's own serializers: `tests/tools/produce_confluent.py` run with the
//! Python client `scripts/lib.sh`'s `ensure_python_clients` installs.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

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
