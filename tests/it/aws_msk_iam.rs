//! Amazon MSK's IAM login, as far as it can run here: no MSK broker can, so the worker talks to
//! a stand-in that speaks the Kafka protocol as far as the login (ApiVersions, KIP-43's
//! SaslHandshake, then the raw OAUTHBEARER client message of RFC 7628) and records the token. The test then checks the
//! token is what MSK verifies: a SigV4-presigned `kafka-cluster:Connect` request for the region,
//! signed with the credentials the AWS default chain found (here, the standard `AWS_*`
//! variables), whose signature the signer reproduces. The signer itself is checked against AWS's
//! published SigV4 vectors (src/kafka/aws_msk_iam/tests.rs).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use order_worker::kafka::aws_msk_iam::{Presign, TOKEN_LIFETIME, presign};

use crate::helpers::worker_bin;

const SASL_HANDSHAKE: i16 = 17;
const API_VERSIONS: i16 = 18;
/// A broker that offers OAUTHBEARER and sends each client's first SASL message to the channel.
fn sasl_broker() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (seen, messages) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || serve(stream, &seen));
        }
    });
    (address, messages)
}

fn serve(mut stream: TcpStream, seen: &mpsc::Sender<String>) -> Option<()> {
    loop {
        // Request header: api_key, api_version, correlation_id, ...
        let request = frame(&mut stream)?;
        let mut body = request[4..8].to_vec();
        match i16::from_be_bytes([request[0], request[1]]) {
            // ApiVersions v3 (KIP-511): error_code, a compact array of (key, min, max, no tags),
            // throttle_time_ms, no tags. SaslAuthenticate is not offered, so the SASL exchange
            // after the handshake is raw frames.
            API_VERSIONS => {
                body.extend(0i16.to_be_bytes());
                body.push(3);
                for (key, max) in [(API_VERSIONS, 3i16), (SASL_HANDSHAKE, 1)] {
                    body.extend(key.to_be_bytes());
                    body.extend(0i16.to_be_bytes());
                    body.extend(max.to_be_bytes());
                    body.push(0);
                }
                body.extend(0i32.to_be_bytes());
                body.push(0);
            }
            // SaslHandshake: error_code, mechanisms ["OAUTHBEARER"].
            SASL_HANDSHAKE => {
                body.extend(0i16.to_be_bytes());
                body.extend(1i32.to_be_bytes());
                body.extend((b"OAUTHBEARER".len() as i16).to_be_bytes());
                body.extend(b"OAUTHBEARER");
            }
            // Anything else is the raw client message: "n,,\x01auth=Bearer <token>\x01\x01".
            _ => {
                return seen
                    .send(String::from_utf8_lossy(&request).into_owned())
                    .ok();
            }
        }
        stream.write_all(&(body.len() as i32).to_be_bytes()).ok()?;
        stream.write_all(&body).ok()?;
    }
}

fn frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut size = [0; 4];
    stream.read_exact(&mut size).ok()?;
    let mut data = vec![0; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut data).ok()?;
    Some(data)
}

/// `order-worker check` with MSK IAM on and the given AWS variables, against `brokers`.
fn check_with_msk_iam(brokers: &str, aws: &[(&str, &str)]) -> std::process::Child {
    let mut command = Command::new(worker_bin());
    command
        .args(["check", "--brokers", brokers])
        .args([
            "--database-url",
            "postgres://postgres:unused@127.0.0.1:9/none",
        ])
        .env("KAFKA_AWS_MSK_IAM", "true")
        // The stand-in broker speaks plaintext.
        .env("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
        // Only the variables below: no profile, no instance metadata.
        .env("HOME", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_AUTHORIZATION_TOKEN")
        .env_remove("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
    ] {
        command.env_remove(var);
    }
    command.envs(aws.iter().copied());
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run order-worker check")
}

/// The presigned URL inside the first token `check` sent to the broker.
fn presigned_url(mut check: std::process::Child, messages: &mpsc::Receiver<String>) -> String {
    let message = messages.recv_timeout(Duration::from_secs(5));
    let _ = check.kill();
    let out = check.wait_with_output().unwrap();
    let message = message.unwrap_or_else(|_| {
        panic!(
            "no SASL message reached the broker: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let token = message
        .strip_prefix("n,,\u{1}auth=Bearer ")
        .and_then(|rest| rest.strip_suffix("\u{1}\u{1}"))
        .unwrap_or_else(|| panic!("an RFC 7628 client message: {message:?}"));
    String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .expect("base64url without padding"),
    )
    .unwrap()
}

/// An HTTP request's head (request line and headers), read byte by byte up to the blank line.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A credentials endpoint as the EKS Pod Identity agent serves it (the SDK's container
/// provider: `GET` with the `Authorization` token, a JSON answer); sends each request's
/// `Authorization` header to the channel.
fn pod_identity_agent(key: &'static str) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/credentials", listener.local_addr().unwrap());
    let (seen, asked) = mpsc::channel();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let request = read_head(&mut stream);
            let authorization = request
                .lines()
                .find_map(|l| {
                    l.strip_prefix("authorization: ")
                        .or(l.strip_prefix("Authorization: "))
                })
                .unwrap_or_default()
                .to_owned();
            let _ = seen.send(authorization);
            let expires = time::OffsetDateTime::now_utc() + Duration::from_secs(3600);
            let expires = expires
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            let body = format!(
                r#"{{"AccessKeyId":"{key}","SecretAccessKey":"agent-secret","Token":"agent-session","AccountId":"123456789012","Expiration":"{expires}"}}"#
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, asked)
}

/// A credentials endpoint whose answer is far larger than any credential: 64 MiB of a JSON
/// string, with no length announced, then silence until the client hangs up.
fn oversized_agent() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/credentials", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                read_head(&mut stream);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{{\"AccessKeyId\":\""
                );
                let chunk = [b'A'; 64 * 1024];
                for _ in 0..1024 {
                    if stream.write_all(&chunk).is_err() {
                        return;
                    }
                }
                let _ = stream.read(&mut [0; 1]);
            });
        }
    });
    url
}

fn param(url: &str, name: &str) -> String {
    let query = url.split_once('?').expect("a query").1;
    let value = query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in {url}"));
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

#[test]
fn the_worker_logs_in_to_msk_with_a_token_signed_by_the_pods_aws_credentials() {
    let (brokers, messages) = sasl_broker();
    let (key, secret, session) = ("AKIDMSKTEST", "msk/secret+key", "session-token/with+chars=");
    let started = SystemTime::now();
    let check = check_with_msk_iam(
        &brokers,
        &[
            ("AWS_REGION", "eu-central-1"),
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_SESSION_TOKEN", session),
        ],
    );
    let url = presigned_url(check, &messages);
    assert!(
        url.starts_with(
            "https://kafka.eu-central-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"
        ),
        "{url}"
    );
    assert_eq!(param(&url, "X-Amz-Security-Token"), session);
    let credential = param(&url, "X-Amz-Credential");
    assert!(
        credential.starts_with(&format!("{key}/"))
            && credential.ends_with("/eu-central-1/kafka-cluster/aws4_request"),
        "{credential}"
    );
    // Signed now, with exactly these credentials: the signature is reproduced from them.
    let date = param(&url, "X-Amz-Date");
    let at = time::PrimitiveDateTime::parse(
        &date,
        time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
    )
    .unwrap()
    .assume_utc();
    let at = SystemTime::from(at);
    assert!(at + Duration::from_secs(2) >= started, "signed at {date}");
    let credentials =
        aws_credential_types::Credentials::new(key, secret, Some(session.into()), None, "test");
    let again = presign(
        &credentials,
        &Presign {
            host: "kafka.eu-central-1.amazonaws.com",
            query: &[("Action", "kafka-cluster:Connect")],
            service: "kafka-cluster",
            region: "eu-central-1",
            expires_in: TOKEN_LIFETIME,
            at,
        },
    )
    .unwrap();
    assert_eq!(url.split("&User-Agent=").next().unwrap(), again);
}

#[test]
fn credentials_from_the_pod_identity_agent_sign_the_token() {
    let (brokers, messages) = sasl_broker();
    let (agent, asked) = pod_identity_agent("AKIDFROMAGENT");
    let check = check_with_msk_iam(
        &brokers,
        &[
            ("AWS_REGION", "eu-central-1"),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &agent),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "pod-identity-token"),
        ],
    );
    let url = presigned_url(check, &messages);
    assert_eq!(
        asked.recv_timeout(Duration::from_secs(1)).as_deref(),
        Ok("pod-identity-token")
    );
    assert_eq!(param(&url, "X-Amz-Security-Token"), "agent-session");
    assert!(
        param(&url, "X-Amz-Credential").starts_with("AKIDFROMAGENT/"),
        "{url}"
    );
}

#[test]
fn msk_iam_without_aws_credentials_is_one_line_and_a_failed_exit() {
    let (brokers, messages) = sasl_broker();
    let out = check_with_msk_iam(&brokers, &[("AWS_REGION", "eu-central-1")])
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("order-worker: ") && last.contains("AWS MSK IAM: no AWS credentials"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(messages.try_recv().is_err(), "no client was started");
}

#[test]
fn a_credentials_answer_larger_than_any_credential_is_refused_unread() {
    let (brokers, messages) = sasl_broker();
    let agent = oversized_agent();
    let started = std::time::Instant::now();
    let out = check_with_msk_iam(
        &brokers,
        &[
            ("AWS_REGION", "eu-central-1"),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &agent),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "pod-identity-token"),
        ],
    )
    .wait_with_output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("order-worker: ")
            && last.contains("AWS MSK IAM: no AWS credentials")
            && last.contains("answer exceeds 1 MiB"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at the limit, not after a read timeout: {:?}",
        started.elapsed()
    );
    assert!(messages.try_recv().is_err(), "no client was started");
}

#[test]
fn msk_iam_without_a_region_is_a_configuration_error() {
    let aws = [
        ("AWS_ACCESS_KEY_ID", "AKID"),
        ("AWS_SECRET_ACCESS_KEY", "s"),
    ];
    let out = check_with_msk_iam("127.0.0.1:9", &aws)
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("KAFKA_AWS_MSK_IAM needs the cluster's region: set AWS_REGION"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reading_originals_back_logs_in_at_once() {
    use order_worker::config::KafkaProperty;
    use order_worker::kafka::originals::{Originals, ReadBack};
    let (brokers, messages) = sasl_broker();
    // SAFETY: set before any other thread of this test process reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDORIGINALS");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "secret");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    order_worker::kafka::aws_msk_iam::install("eu-west-1")
        .await
        .expect("credentials from the environment");
    let properties = [
        KafkaProperty::new("security.protocol", "SASL_PLAINTEXT"),
        KafkaProperty::new("sasl.mechanism", "OAUTHBEARER"),
    ];
    // Its first requests are watermark queries, made before it polls: its token must still
    // come (a reader whose first request was a metadata query waited for its timeout).
    let reader = Originals::new(&brokers, &properties, "orders", "group");
    tokio::task::spawn_blocking(move || {
        let stop = tokio_util::sync::CancellationToken::new();
        let _ = reader.fetch_into(
            &[(0, 0)],
            &mut ReadBack::new(),
            Duration::from_secs(3),
            &stop,
        );
    });
    let message = messages
        .recv_timeout(Duration::from_secs(5))
        .expect("the read-back client sent its SASL message");
    assert!(message.starts_with("n,,\u{1}auth=Bearer "), "{message:?}");
}
