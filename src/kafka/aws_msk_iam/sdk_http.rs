//! The AWS credential chain's HTTP client (STS for IRSA's web identity, the EKS Pod Identity
//! agent, instance metadata) on reqwest over OpenSSL, the TLS library librdkafka links anyway.
//! The SDK's own client brings hyper's HTTP/2 and its own rustls setup, ~1 MB of binary for a
//! request an hour.
//!
//! Invariant: each request is bounded by the connect and read timeouts the SDK asks for and its
//! answer by `MAX_ANSWER`, and every failure reaches the SDK as a connector error of the right
//! kind (timeout or I/O, which its retry and the renewal loop above act on; an oversized answer,
//! which no retry mends).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// The client the SDK asks a connector of, per its timeout settings.
pub fn client() -> SharedHttpClient {
    SharedHttpClient::new(Client::default())
}

type Timeouts = (Option<Duration>, Option<Duration>);

/// One connector (a reqwest client: its connection pool, and the CA bundle OpenSSL read once)
/// per timeout settings the SDK asks for, kept for the process's life.
#[derive(Debug, Default)]
struct Client(Mutex<HashMap<Timeouts, SharedHttpConnector>>);

impl HttpClient for Client {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let timeouts = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self.0.lock().unwrap_or_else(|p| p.into_inner());
        connectors
            .entry(timeouts)
            .or_insert_with(|| {
                let mut builder = reqwest::Client::builder();
                if let Some(timeout) = timeouts.0 {
                    builder = builder.connect_timeout(timeout);
                }
                if let Some(timeout) = timeouts.1 {
                    builder = builder.read_timeout(timeout);
                }
                SharedHttpConnector::new(Connector(builder.build()))
            })
            .clone()
    }
}

/// A reqwest client, or why it could not be built (reported on the first request).
#[derive(Debug)]
struct Connector(reqwest::Result<reqwest::Client>);

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.0.as_ref().map_err(|e| e.to_string()).cloned();
        HttpConnectorFuture::new(async move {
            let client = client.map_err(|e| ConnectorError::other(e.into(), None))?;
            let request = into_reqwest(request).map_err(|e| ConnectorError::user(e.into()))?;
            let response = client.execute(request).await.map_err(connector_error)?;
            from_reqwest(response).await
        })
    }
}

fn into_reqwest(request: HttpRequest) -> Result<reqwest::Request, String> {
    let request = request.try_into_http1x().map_err(|e| e.to_string())?;
    let (parts, body) = request.into_parts();
    // The chain's requests (STS, the credential endpoints) carry small bodies held in memory.
    let body = body
        .bytes()
        .ok_or("a streamed request body, which no credential request has")?
        .to_vec();
    reqwest::Request::try_from(http::Request::from_parts(parts, body)).map_err(|e| e.to_string())
}

/// The largest answer read: credential answers are a few KiB, and an endpoint that sends more
/// is not a credential endpoint; reading on would only grow memory until the first load times out.
const MAX_ANSWER: usize = 1 << 20;

async fn from_reqwest(mut response: reqwest::Response) -> Result<HttpResponse, ConnectorError> {
    let too_large = || {
        ConnectorError::other(
            format!("the answer exceeds {} MiB", MAX_ANSWER >> 20).into(),
            None,
        )
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER as u64)
    {
        return Err(too_large());
    }
    let mut head = http::Response::builder().status(response.status());
    if let Some(headers) = head.headers_mut() {
        headers.clone_from(response.headers());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(connector_error)? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let response = head
        .body(SdkBody::from(body))
        .map_err(|e| ConnectorError::other(e.into(), None))?;
    HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
}

fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else {
        ConnectorError::io(e.into())
    }
}
