//! The signer against AWS's published SigV4 test suite (the `v4` vectors of
//! github.com/awslabs/aws-c-auth, tests/aws-signing-test-suite, which AWS's SDKs share): the
//! query-signed variants, whose credentials, time, region and service are those of
//! `context.json`, and whose `query-signature.txt` is the expected signature.

use super::*;

const AT: u64 = 1_440_938_160; // 2015-08-30T12:36:00Z

fn example(token: Option<&str>) -> Credentials {
    Credentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        token.map(str::to_owned),
        None,
        "test-suite",
    )
}

fn signature_of(credentials: &Credentials, query: &[(&str, &str)]) -> String {
    let url = presign(
        credentials,
        &Presign {
            host: "example.amazonaws.com",
            query,
            service: "service",
            region: "us-east-1",
            expires_in: Duration::from_secs(3600),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(AT),
        },
    )
    .unwrap();
    param(&url, "X-Amz-Signature").expect("a signature")
}

fn param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

#[test]
fn get_vanilla_signs_as_the_published_vector() {
    assert_eq!(
        signature_of(&example(None), &[]),
        "e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d"
    );
}

#[test]
fn a_session_token_is_signed_as_the_published_vector() {
    let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
    assert_eq!(
        signature_of(&example(Some(token)), &[]),
        "7ff2b50b376cb4d151970630573d6291dc128cc5c2a12ffb237f73cc53f67b6c"
    );
}

#[test]
fn query_parameters_are_encoded_and_ordered_as_the_published_vector() {
    let query = [
        ("Param-3", "Value3"),
        ("Param", "Value2"),
        ("\u{1234}", "Value1"),
    ];
    assert_eq!(
        signature_of(&example(None), &query),
        "c5f1848ceec943ac2ca68ee720460c23aaae30a2300586597ada94c4a65e4787"
    );
    let unreserved = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    assert_eq!(
        signature_of(&example(None), &[(unreserved, unreserved)]),
        "8e76a88a7433637b12778d5592799b29ad21ecd6cf6325051c21d86f0acda2bf"
    );
}

#[test]
fn an_msk_token_is_a_presigned_connect_request_for_the_region() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(AT);
    let credentials = example(Some("session/token+with=odd chars"));
    let t = token(&credentials, "eu-west-1", at).unwrap();
    let url = String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&t.token)
            .expect("base64url without padding"),
    )
    .unwrap();
    assert!(
        url.starts_with("https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"),
        "{url}"
    );
    assert_eq!(
        param(&url, "X-Amz-Credential").unwrap(),
        "AKIDEXAMPLE/20150830/eu-west-1/kafka-cluster/aws4_request"
    );
    assert_eq!(param(&url, "X-Amz-Expires").unwrap(), "900");
    assert_eq!(param(&url, "X-Amz-SignedHeaders").unwrap(), "host");
    assert_eq!(
        param(&url, "X-Amz-Security-Token").unwrap(),
        "session/token+with=odd chars"
    );
    assert!(
        param(&url, "User-Agent")
            .unwrap()
            .starts_with("order-worker/")
    );
    // The signature is the one SigV4 gives the same request without the unsigned User-Agent.
    let signed_part = url.split("&User-Agent=").next().unwrap();
    let again = presign(
        &credentials,
        &Presign {
            host: "kafka.eu-west-1.amazonaws.com",
            query: &[("Action", "kafka-cluster:Connect")],
            service: "kafka-cluster",
            region: "eu-west-1",
            expires_in: TOKEN_LIFETIME,
            at,
        },
    )
    .unwrap();
    assert_eq!(signed_part, again);
    assert_eq!(t.lifetime_ms, (AT as i64 + 900) * 1000);
    assert_eq!(t.principal_name, "AKIDEXAMPLE");
}

#[test]
fn a_token_expires_with_the_credentials_that_signed_it() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(AT);
    let soon = at + Duration::from_secs(60);
    let credentials = Credentials::new("AKID", "secret", None, Some(soon), "test");
    let t = token(&credentials, "us-east-1", at).unwrap();
    assert_eq!(t.lifetime_ms, (AT as i64 + 60) * 1000);
    let keys = Keys {
        region: "us-east-1".into(),
        current: RwLock::new((credentials, Some("STS said no".into()))),
    };
    let Err(refused) = keys.token(soon) else {
        panic!("a token signed with expired credentials");
    };
    assert!(
        refused.contains("expired") && refused.contains("STS said no"),
        "{refused}"
    );
}
