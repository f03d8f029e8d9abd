//! How every Kafka client of the worker answers librdkafka's request for a SASL/OAUTHBEARER
//! token: with an AWS MSK IAM token when that login is installed, otherwise with an error naming
//! the settings that would give one (OIDC logins never ask: librdkafka fetches those itself).
//!
//! Invariant: each client context of the worker answers token requests the same way, through
//! [`answer_token_requests!`]; a client nobody polls (the admin client) gets its token at
//! creation, from [`prime`].

use std::ffi::CString;

use rdkafka::admin::AdminClient;
use rdkafka::client::Client;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaResult;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

use super::aws_msk_iam;

/// The two items of a `ClientContext` impl that hand librdkafka a token when it asks.
macro_rules! answer_token_requests {
    () => {
        const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

        fn generate_oauth_token(
            &self,
            _config: Option<&str>,
        ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
            $crate::kafka::aws_msk_iam::current_token()
        }
    };
}
pub(crate) use answer_token_requests;

/// The context of clients with no callbacks of their own: `DefaultClientContext`, plus tokens.
#[derive(Clone, Copy, Default)]
pub struct Login;

impl ClientContext for Login {
    answer_token_requests!();
}

impl ConsumerContext for Login {}

impl ProducerContext for Login {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// An admin client. librdkafka's admin client has no thread that serves token requests, so it
/// gets its first token now; a token lasts longer than the admin requests the worker makes.
pub fn admin(config: &ClientConfig) -> KafkaResult<AdminClient<Login>> {
    let admin: AdminClient<Login> = config.create_with_context(Login)?;
    prime(admin.inner());
    Ok(admin)
}

/// Sets a first token on a client (with MSK IAM; otherwise nothing). A client whose queue is
/// not served before its first requests needs this; later tokens come from
/// `generate_oauth_token` whenever its queue is polled.
pub fn prime<C: ClientContext>(client: &Client<C>) {
    if !aws_msk_iam::installed() {
        return;
    }
    let token = aws_msk_iam::current_token().map_err(|e| e.to_string());
    let set = token.and_then(|t| {
        let value = CString::new(t.token).map_err(|e| e.to_string())?;
        let principal = CString::new(t.principal_name).map_err(|e| e.to_string())?;
        let mut err = [0 as std::ffi::c_char; 512];
        // SAFETY: the client outlives the call; the strings and buffer are valid for its
        // duration and librdkafka copies what it keeps.
        let code = unsafe {
            rdkafka::bindings::rd_kafka_oauthbearer_set_token(
                client.native_ptr(),
                value.as_ptr(),
                t.lifetime_ms,
                principal.as_ptr(),
                std::ptr::null_mut(),
                0,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if code == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            // SAFETY: librdkafka wrote a NUL-terminated message into `err`.
            Err(unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned())
        }
    });
    // A token that cannot be had is an authentication error the client reports (and readiness
    // and `check` name), not a silent wait.
    if let Err(reason) = set
        && let Ok(reason) = CString::new(reason)
    {
        // SAFETY: as above; librdkafka copies the message.
        unsafe {
            rdkafka::bindings::rd_kafka_oauthbearer_set_token_failure(
                client.native_ptr(),
                reason.as_ptr(),
            );
        }
    }
}
