//! Certificates from a private CA, and a TLS endpoint in front of a plaintext server: what a
//! Strimzi cluster's TLS listener (a private cluster CA) looks like to a client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A CA and a server certificate it signed, for `localhost` and `127.0.0.1`.
pub struct Certificates {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a new CA and a server certificate into `dir` with the openssl command-line tool. A
/// real chain (not a self-signed server certificate): clients must verify it through the CA.
pub fn certificates(dir: &Path) -> Certificates {
    let path = |name: &str| dir.join(name);
    let (ca, ca_key) = (path("ca.crt"), path("ca.key"));
    let (cert, key, csr) = (path("server.crt"), path("server.key"), path("server.csr"));
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=order-worker test CA", "-keyout"])
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca));
    run(Command::new("openssl")
        .args(["req", "-new", "-newkey", "rsa:2048", "-nodes"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    run(Command::new("openssl")
        .args([
            "x509",
            "-req",
            "-days",
            "2",
            "-copy_extensions",
            "copy",
            "-in",
        ])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-CAcreateserial")
        .arg("-out")
        .arg(&cert));
    run(Command::new("chmod").arg("600").arg(&key));
    Certificates { ca, cert, key }
}

/// Accepts TLS on a loopback port and forwards each connection, decrypted, to `upstream`. tansu
/// 0.6 cannot serve TLS itself (its `--cert` and `--key` flags exclude each other), so the
/// broker's clients meet TLS here.
pub struct TlsProxy {
    pub port: u16,
    pub certificates: Certificates,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    pub async fn start(upstream: String) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let certificates = certificates(dir.path());
        let chain = CertificateDer::pem_file_iter(&certificates.cert)
            .expect("server certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("PEM");
        let key = PrivateKeyDer::from_pem_file(&certificates.key).expect("server key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    if let Ok(mut plain) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        Self {
            port,
            certificates,
            _dir: dir,
            task,
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
