//! Credentials for Kafka the way clusters hand them out: a SASL/SCRAM login against a broker
//! process that requires one (tansu with `--authentication`), with the password read from a
//! mounted Secret (a Strimzi KafkaUser's JAAS line or password key), set by one variable per
//! property, or kept in a properties file; a password with commas and `=` works in each. And
//! TLS with a private CA, as a Strimzi listener has: tansu 0.6 cannot serve TLS itself, so a TLS
//! endpoint in the test process (helpers::tls) fronts it and the broker advertises that.

use std::time::Duration;

use order_worker::synth::{Expectation, SynthSpec};

use crate::helpers::kafka::Tansu;
use crate::helpers::pg::{TestDb, assert_state_is};
use crate::helpers::tls::TlsProxy;
use crate::helpers::{Binary, eventually, unique, worker_bin};

/// Impossible to pass through the comma-separated `KAFKA_PROPERTIES`.
const PASSWORD: &str = "s3cr,et=with,commas";
const USER: &str = "order-worker";
const SASL: [(&str, &str); 2] = [
    ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
    ("KAFKA_PROPERTY_SASL_MECHANISM", "SCRAM-SHA-512"),
];

/// Publishes `events` of `spec` with `order-worker produce`, logging in from a properties file.
fn produce_with_properties_file(
    brokers: &str,
    topic: &str,
    spec: &SynthSpec,
    events: u64,
    extra: &[String],
) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kafka.properties");
    std::fs::write(
        &file,
        format!(
            "# as a platform team would mount it\nsecurity.protocol=SASL_PLAINTEXT\n\
             sasl.mechanism=SCRAM-SHA-512\nsasl.username={USER}\nsasl.password={PASSWORD}\n{}\n",
            extra.join("\n")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(worker_bin())
        .args(["produce", "--brokers", brokers, "--topic", topic])
        .args([
            "--events",
            &events.to_string(),
            "--orders",
            &spec.orders.to_string(),
        ])
        .args(["--seed", &spec.seed.to_string()])
        .args(["--invalid-ratio", &spec.invalid_ratio.to_string()])
        .args(["--duplicate-ratio", &spec.duplicate_ratio.to_string()])
        .env("KAFKA_PROPERTIES_FILE", &file)
        .output()
        .expect("run order-worker produce");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "produce: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{events} acknowledged")),
        "{stdout}"
    );
}

/// Runs the worker against the authenticating broker with `env` carrying its credentials, and
/// checks it applies every event and its log never shows the password.
async fn consumes_with(env: &[(&str, &str)]) {
    let topic = unique("orders");
    let tansu = Tansu::with_scram_user(USER, PASSWORD, &topic, 2);
    applies_everything(&tansu.brokers, &topic, env, &[]).await;
}

/// Publishes 300 events (logging in from a properties file with `producer_extra` lines), runs
/// the worker with `env`, and checks every event is applied and no password is logged.
async fn applies_everything(
    brokers: &str,
    topic: &str,
    env: &[(&str, &str)],
    producer_extra: &[String],
) {
    let db = TestDb::create().await;
    let spec = SynthSpec {
        orders: 50,
        invalid_ratio: 0.02,
        duplicate_ratio: 0.02,
        seed: 21,
    };
    produce_with_properties_file(brokers, topic, &spec, 300, producer_extra);

    let worker = Binary::run_with_env(brokers, &db.url, topic, &unique("group"), &[], env);
    worker.ready().await;
    let expected = Expectation::of(&spec, 300);
    eventually("every event applied", Duration::from_secs(60), || async {
        crate::helpers::pg::count(&db.pool, "orders").await == expected.orders.len() as i64
    })
    .await;
    assert_state_is(&db.pool, &expected).await;
    let log = std::fs::read_to_string(&worker.log).unwrap();
    assert!(!log.contains("s3cr"), "the password reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strimzi_kafka_user_secret_mounted_as_a_file_logs_the_worker_in() {
    let dir = tempfile::tempdir().unwrap();
    let jaas = dir.path().join("sasl.jaas.config");
    std::fs::write(
        &jaas,
        format!(
            "org.apache.kafka.common.security.scram.ScramLoginModule required \
             username=\"{USER}\" password=\"{PASSWORD}\";"
        ),
    )
    .unwrap();
    let secret = format!("sasl.jaas.config={}", jaas.display());
    consumes_with(&[SASL[0], SASL[1], ("KAFKA_SECRET_FILES", &secret)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_variable_per_property_carries_a_password_with_commas() {
    consumes_with(&[
        SASL[0],
        SASL[1],
        ("KAFKA_PROPERTY_SASL_USERNAME", USER),
        ("KAFKA_PROPERTY_SASL_PASSWORD", PASSWORD),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_with_a_private_ca_from_a_mounted_file_as_on_strimzi() {
    let topic = unique("orders");
    let broker_port = crate::helpers::free_port();
    let proxy = TlsProxy::start(format!("127.0.0.1:{broker_port}")).await;
    let _tansu =
        Tansu::with_scram_user_on(broker_port, USER, PASSWORD, &topic, 2, Some(proxy.port));
    let brokers = format!("127.0.0.1:{}", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let secret = format!("sasl.password={}", password.display());
    let ca = proxy.certificates.ca.display().to_string();
    let tls = [
        ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL"),
        ("KAFKA_PROPERTY_SASL_MECHANISM", "SCRAM-SHA-512"),
        ("KAFKA_PROPERTY_SASL_USERNAME", USER),
        ("KAFKA_PROPERTY_SSL_CA_LOCATION", ca.as_str()),
        ("KAFKA_SECRET_FILES", secret.as_str()),
    ];
    let producer = [
        "security.protocol=SASL_SSL".to_owned(),
        format!("ssl.ca.location={ca}"),
    ];
    applies_everything(&brokers, &topic, &tls, &producer).await;
}

/// A stand-in for an OIDC provider's token endpoint (Keycloak, Okta, Confluent Cloud's identity
/// pool): the OAuth 2.0 client-credentials grant of RFC 6749 section 4.4, nothing else. It
/// answers every POST with a JWT whose claims librdkafka reads (`sub`, `exp`; it does not check
/// the signature) and records each request's authorization header and form body. No OIDC
/// provider can be installed here, and no broker here validates OAUTHBEARER tokens, so the test
/// stops at the token: that the worker, configured as for Strimzi with Keycloak, fetches one.
fn token_endpoint() -> (String, std::sync::mpsc::Receiver<(String, String)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/realms/kafka/protocol/openid-connect/token",
        listener.local_addr().unwrap()
    );
    let (seen, requests) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let (mut authorization, mut length) = (String::new(), 0);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("authorization:") {
                    authorization = line["authorization:".len()..].trim().to_owned();
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = seen.send((authorization, String::from_utf8_lossy(&body).into_owned()));
            let b64 = |s: &str| base64url(s.as_bytes());
            let exp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3600;
            let jwt = format!(
                "{}.{}.c2lnbmF0dXJl",
                b64(r#"{"alg":"RS256","typ":"JWT"}"#),
                b64(&format!(
                    r#"{{"sub":"order-worker","exp":{exp},"iat":{}}}"#,
                    exp - 3600
                ))
            );
            let json =
                format!(r#"{{"access_token":"{jwt}","token_type":"Bearer","expires_in":3600}}"#);
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                json.len()
            );
        }
    });
    (url, requests)
}

/// Base64url without padding (RFC 4648 section 5), as JWTs use.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn sasl_oauthbearer_with_oidc_fetches_a_client_credentials_token() {
    let (url, requests) = token_endpoint();
    let db_url = "postgres://postgres:unused@127.0.0.1:9/none";
    let out = std::process::Command::new(worker_bin())
        .args([
            "check",
            "--brokers",
            "127.0.0.1:9",
            "--database-url",
            db_url,
        ])
        .env("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
        .env("KAFKA_PROPERTY_SASL_MECHANISM", "OAUTHBEARER")
        .env("KAFKA_PROPERTY_SASL_OAUTHBEARER_METHOD", "oidc")
        .env("KAFKA_PROPERTY_SASL_OAUTHBEARER_CLIENT_ID", "order-worker")
        .env("KAFKA_PROPERTY_SASL_OAUTHBEARER_CLIENT_SECRET", "s3cr,et")
        .env("KAFKA_PROPERTY_SASL_OAUTHBEARER_SCOPE", "kafka")
        .env("KAFKA_PROPERTY_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL", &url)
        .output()
        .expect("run order-worker check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (authorization, form) = requests
        .recv_timeout(std::time::Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("no token request reached the endpoint: {stdout}"));
    assert_eq!(
        authorization,
        format!("Basic {}", base64(b"order-worker:s3cr,et")),
        "client id and secret as HTTP Basic credentials"
    );
    assert!(form.contains("grant_type=client_credentials"), "{form}");
    assert!(form.contains("scope=kafka"), "{form}");
    assert!(
        !stdout.contains("s3cr"),
        "the secret never reaches the output: {stdout}"
    );
}

/// Standard base64 with padding, for HTTP Basic credentials.
fn base64(bytes: &[u8]) -> String {
    let mut s = base64url(bytes).replace('-', "+").replace('_', "/");
    while !s.len().is_multiple_of(4) {
        s.push('=');
    }
    s
}
