//! Security: TLS to PostgreSQL, SQL only with bind parameters, and an HTTP server that bounds
//! what clients can make it hold and exposes nothing writable.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use order_worker::synth::SynthSpec;

use crate::helpers::kafka::{Mock, OffsetProbe, publish};
use crate::helpers::pg::{PrivatePostgres, TestDb};
use crate::helpers::{start_worker, unique};

/// Sends raw bytes and returns what the server answered before closing (or a timeout).
async fn exchange(
    addr: std::net::SocketAddr,
    request: &[u8],
    wait: Duration,
) -> (String, Duration) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_server_bounds_requests_and_exposes_nothing_writable() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let db = TestDb::create().await;
    let worker = start_worker(&mock.brokers, &db.url, &topic, &group, &[]).await;
    let addr = worker.http_addr();
    let wait = Duration::from_secs(15);

    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let (answer, _) = exchange(addr, big.as_bytes(), wait).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "an oversized head is refused: {answer:?}"
    );

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/metrics", "/readyz", "/healthz", "/lag"] {
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let (answer, _) = exchange(addr, request.as_bytes(), wait).await;
            assert!(
                answer.starts_with("HTTP/1.1 405"),
                "{method} {path}: {answer:?}"
            );
        }
    }
    let (answer, _) = exchange(
        addr,
        b"GET /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");

    // A client that starts a request and goes silent is cut off, not waited for.
    let (_, held) = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n", wait).await;
    assert!(
        held < Duration::from_secs(8),
        "silent connection held {held:?}"
    );
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_talks_to_postgres_over_verified_tls() {
    let (topic, group) = (unique("orders"), unique("group"));
    let mock = Mock::with_topic(&topic, 1);
    let (pg, certificate) = PrivatePostgres::start_tls();
    let db = TestDb::create_on(&pg.server_url()).await;
    let url = format!(
        "postgres://postgres@localhost:{}/{}?sslmode=verify-full&sslrootcert={}",
        pg.port,
        db.name,
        certificate.display()
    );
    publish(&mock.brokers, &topic, &SynthSpec::default(), 200);
    let worker = start_worker(&mock.brokers, &url, &topic, &group, &[]).await;
    OffsetProbe::new(&mock.brokers, &group, &topic, 1)
        .wait_caught_up("applied over TLS")
        .await;
    let encrypted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = $1 AND a.application_name = 'order-worker' AND s.ssl",
    )
    .bind(&db.name)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(encrypted > 0, "the worker's sessions use TLS");
    worker.stop();
    worker.wait().await.expect("graceful stop");
}

#[test]
fn sql_reaches_postgres_only_as_constant_text_with_bind_parameters() {
    // Every sqlx query in the worker takes a string literal or a named constant; values only
    // ever travel as bind parameters. A `format!` (or any other expression) fails this test.
    let mut calls = 0;
    let mut offenders = Vec::new();
    visit(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut |path, text| {
            for call in ["sqlx::query(", "sqlx::query_as(", "sqlx::query_scalar("] {
                for (at, _) in text.match_indices(call) {
                    calls += 1;
                    let arg = text[at + call.len()..].trim_start();
                    let constant = arg.starts_with('"')
                        || arg.starts_with("r#\"")
                        || arg
                            .chars()
                            .take_while(|c| *c != ')' && *c != ',')
                            .all(|c| c.is_ascii_uppercase() || c == '_');
                    if !constant {
                        offenders.push(format!(
                            "{}: {}",
                            path.display(),
                            arg.lines().next().unwrap_or("")
                        ));
                    }
                }
            }
        },
    );
    assert!(calls >= 8, "the scan found the queries ({calls})");
    assert!(
        offenders.is_empty(),
        "SQL built at run time:\n{}",
        offenders.join("\n")
    );
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path, &str)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, f);
        } else if path.extension().is_some_and(|e| e == "rs") {
            f(&path, &std::fs::read_to_string(&path).unwrap());
        }
    }
}
