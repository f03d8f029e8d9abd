//! Amazon MSK's IAM login: a SASL/OAUTHBEARER token that is a SigV4-presigned
//! `kafka-cluster:Connect` request, signed with the pod's AWS credentials from the SDK's default
//! chain (IRSA's web identity, EKS Pod Identity, environment, profile, instance metadata).
//!
//! Invariant: librdkafka asks for a token on a client's polling thread, and that never waits on
//! the network: tokens are signed with credentials loaded before any client exists and kept
//! fresh by a task. A token never outlives the credentials that signed it; when they have expired
//! and cannot be renewed, the token request fails with the reason, which librdkafka reports as an
//! authentication error (readiness names it) and asks again later.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rdkafka::client::OAuthToken;
use tracing::{info, warn};

use crate::error::Error;

mod sdk_http;

/// How long a token is valid, as AWS's signers for MSK choose.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// Credentials are renewed this long before they expire; those without an expiry (static keys)
/// are read again this often, so a rotated key is picked up.
const RENEW_AHEAD: Duration = Duration::from_secs(300);
/// Least wait between two renewals: credentials that expire within RENEW_AHEAD of being issued
/// (a short session) must not make the renewal loop call the provider back to back.
const MIN_RENEW_WAIT: Duration = Duration::from_secs(10);
/// How long loading credentials at start may take (STS answers in well under a second).
const FIRST_LOAD: Duration = Duration::from_secs(20);
/// The action MSK authorizes a connection with, and the name it signs under.
const ACTION: &str = "kafka-cluster:Connect";
const SERVICE: &str = "kafka-cluster";
const USER_AGENT: &str = concat!("order-worker/", env!("CARGO_PKG_VERSION"));

/// SigV4's URI encoding: everything but RFC 3986's unreserved characters.
const SIGV4: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A GET request to presign.
pub struct Presign<'a> {
    pub host: &'a str,
    /// Query parameters, not yet encoded.
    pub query: &'a [(&'a str, &'a str)],
    pub service: &'a str,
    pub region: &'a str,
    pub expires_in: Duration,
    pub at: SystemTime,
}

/// The presigned `https://` URL of `request`: its query, then SigV4's parameters and signature.
pub fn presign(credentials: &Credentials, request: &Presign<'_>) -> Result<String, String> {
    let mut url = format!("https://{}/", request.host);
    for (i, (k, v)) in request.query.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(&format!("{}={}", encode(k), encode(v)));
    }
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(request.expires_in);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(request.region)
        .name(request.service)
        .time(request.at)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    for (i, (k, v)) in instructions.params().iter().enumerate() {
        let first = i == 0 && request.query.is_empty();
        url.push(if first { '?' } else { '&' });
        url.push_str(&format!("{}={}", encode(k), encode(v)));
    }
    Ok(url)
}

fn encode(s: &str) -> Cow<'_, str> {
    utf8_percent_encode(s, SIGV4).into()
}

/// An MSK IAM token for `region`, signed at `at`: the presigned URL, base64url without padding.
/// It expires with its signature or with the credentials, whichever comes first.
pub fn token(
    credentials: &Credentials,
    region: &str,
    at: SystemTime,
) -> Result<OAuthToken, String> {
    let host = format!("kafka.{region}.amazonaws.com");
    let url = presign(
        credentials,
        &Presign {
            host: &host,
            query: &[("Action", ACTION)],
            service: SERVICE,
            region,
            expires_in: TOKEN_LIFETIME,
            at,
        },
    )?;
    // Not signed, as in AWS's own signers: it only names the client in MSK's logs.
    let url = format!("{url}&User-Agent={}", encode(USER_AGENT));
    let expires = credentials
        .expiry()
        .map_or(at + TOKEN_LIFETIME, |e| e.min(at + TOKEN_LIFETIME));
    let lifetime_ms = expires
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis() as i64;
    Ok(OAuthToken {
        token: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url),
        principal_name: credentials.access_key_id().to_owned(),
        lifetime_ms,
    })
}

/// The credentials tokens are signed with, and why the last renewal failed, if it did.
struct Keys {
    region: String,
    current: RwLock<(Credentials, Option<String>)>,
}

static KEYS: OnceLock<Arc<Keys>> = OnceLock::new();

/// Loads the pod's AWS credentials for `region` and keeps them fresh from now on; every Kafka
/// client created afterwards logs in with MSK IAM tokens. Fails if none can be loaded.
pub async fn install(region: &str) -> Result<(), Error> {
    let login = |e: String| Error::Config(format!("AWS MSK IAM: {e}"));
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()))
        .http_client(sdk_http::client())
        .load()
        .await;
    let provider = config
        .credentials_provider()
        .ok_or_else(|| login("no AWS credential provider".into()))?;
    let first = tokio::time::timeout(FIRST_LOAD, provider.provide_credentials())
        .await
        .map_err(|_| login(format!("no AWS credentials within {FIRST_LOAD:?}")))?
        .map_err(|e| login(format!("no AWS credentials: {}", error_chain(&e))))?;
    info!(
        region,
        access_key = first.access_key_id(),
        expires = ?first.expiry(),
        "logging in to Kafka with AWS MSK IAM"
    );
    let keys = Arc::new(Keys {
        region: region.to_owned(),
        current: RwLock::new((first, None)),
    });
    KEYS.set(keys.clone())
        .map_err(|_| login("installed twice".into()))?;
    tokio::spawn(renew(provider, keys));
    Ok(())
}

/// Renews the credentials ahead of their expiry, and retries a failed renewal with backoff: a
/// failure stays visible (logged, and in every token request once the credentials expire).
async fn renew(provider: SharedCredentialsProvider, keys: Arc<Keys>) {
    let mut retry = Duration::from_secs(1);
    loop {
        let expiry = keys.read().0.expiry();
        let due = expiry.map_or(RENEW_AHEAD * 2, |e| {
            e.checked_sub(RENEW_AHEAD)
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .unwrap_or_default()
        });
        let failed = keys.read().1.is_some();
        tokio::time::sleep(if failed {
            retry
        } else {
            due.max(MIN_RENEW_WAIT)
        })
        .await;
        match provider.provide_credentials().await {
            Ok(fresh) => {
                retry = Duration::from_secs(1);
                *keys.current.write().unwrap_or_else(|p| p.into_inner()) = (fresh, None);
            }
            Err(e) => {
                let reason = error_chain(&e);
                warn!(error = %reason, retry_in = ?retry, "could not renew the AWS credentials for MSK IAM");
                keys.current.write().unwrap_or_else(|p| p.into_inner()).1 = Some(reason);
                retry = (retry * 2).min(Duration::from_secs(60));
            }
        }
    }
}

impl Keys {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, (Credentials, Option<String>)> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    fn token(&self, now: SystemTime) -> Result<OAuthToken, String> {
        let (credentials, failure) = &*self.read();
        if credentials.expiry().is_some_and(|e| e <= now) {
            return Err(format!(
                "the AWS credentials for MSK IAM expired and could not be renewed: {}",
                failure.as_deref().unwrap_or("not renewed yet")
            ));
        }
        token(credentials, &self.region, now)
    }
}

/// The token librdkafka asked for, if MSK IAM is installed.
pub(crate) fn current_token() -> Result<OAuthToken, Box<dyn std::error::Error>> {
    match KEYS.get() {
        Some(keys) => Ok(keys.token(SystemTime::now())?),
        None => Err("sasl.mechanism=OAUTHBEARER needs sasl.oauthbearer.method=oidc, or KAFKA_AWS_MSK_IAM=true for Amazon MSK".into()),
    }
}

/// Whether clients log in with MSK IAM tokens.
pub(crate) fn installed() -> bool {
    KEYS.get().is_some()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
