use super::*;

#[test]
fn offset_management_settings_cannot_be_overridden() {
    for (key, _) in GUARDED {
        let err = check_overrides(&[KafkaProperty::new(key, "true")]).unwrap_err();
        assert!(err.to_string().contains(key));
    }
    let reset = |v: &str| KafkaProperty::new("auto.offset.reset", v);
    assert!(check_overrides(&[reset("earliest")]).is_ok());
    assert!(
        check_overrides(&[reset("error"), reset("latest")]).is_ok(),
        "the last wins"
    );
    let err = check_overrides(&[reset(" Error ")]).unwrap_err();
    assert!(err.to_string().contains("auto.offset.reset=error"), "{err}");
    assert!(check_overrides(&[KafkaProperty::new("security.protocol", "SSL")]).is_ok());
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn one_variable_per_property_keeps_commas_and_equals_signs_in_values() {
    let props = properties_from_env(env(&[
        ("KAFKA_PROPERTY_SASL_PASSWORD", "a,b=c"),
        ("KAFKA_PROPERTY_DEBUG", "fetch,cgrp"),
        ("KAFKA_PROPERTIES", "ignored=here"),
        ("PATH", "/bin"),
    ]))
    .unwrap();
    assert_eq!(
        props,
        [
            KafkaProperty::new("debug", "fetch,cgrp"),
            KafkaProperty::new("sasl.password", "a,b=c")
        ]
    );
}

#[test]
fn a_double_underscore_in_a_variable_name_is_an_underscore_in_the_property() {
    let props = properties_from_env(env(&[("KAFKA_PROPERTY_SOME__NAME_X", "1")])).unwrap();
    assert_eq!(props, [KafkaProperty::new("some_name.x", "1")]);
    assert!(properties_from_env(env(&[("KAFKA_PROPERTY_", "1")])).is_err());
}

#[test]
fn a_properties_file_takes_values_verbatim_and_names_a_bad_line_without_its_content() {
    let text = "# Strimzi listener\nsecurity.protocol=SASL_SSL\n\n  debug = fetch,cgrp\nsecret\n";
    assert_eq!(parse_properties_file(text), Err(5));
    let ok = parse_properties_file(&text.replace("secret\n", "")).unwrap();
    assert_eq!(
        ok,
        [
            KafkaProperty::new("security.protocol", "SASL_SSL"),
            KafkaProperty::new("debug", "fetch,cgrp"),
        ]
    );
}

#[test]
fn a_strimzi_jaas_line_gives_the_username_and_password() {
    let jaas = r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="order-worker" password="p,w=d";"#;
    assert_eq!(
        secret_properties("sasl.jaas.config", jaas).unwrap(),
        [
            KafkaProperty::new("sasl.username", "order-worker"),
            KafkaProperty::new("sasl.password", "p,w=d"),
        ]
    );
    let err = secret_properties("sasl.jaas.config", "password-only").unwrap_err();
    assert!(!err.to_string().contains("password-only"), "{err}");
}

#[test]
fn msk_iam_defaults_to_oauthbearer_over_tls_and_refuses_another_login() {
    let msk = |properties: Vec<KafkaProperty>, region: Option<&str>| {
        let mut args = KafkaArgs {
            aws_msk_iam: true,
            aws_region: region.map(str::to_owned),
            properties,
            ..KafkaArgs::local("b:9098")
        };
        args.resolve(env(&[])).map(|()| args)
    };
    let args = msk(vec![], Some("eu-west-1")).unwrap();
    assert_eq!(
        args.properties,
        [
            KafkaProperty::new("security.protocol", "SASL_SSL"),
            KafkaProperty::new("sasl.mechanism", "OAUTHBEARER"),
        ]
    );
    assert_eq!(args.aws_msk_iam_region(), Some("eu-west-1"));
    let plaintext = vec![KafkaProperty::new("security.protocol", "SASL_PLAINTEXT")];
    assert!(
        msk(plaintext, Some("eu-west-1")).is_ok(),
        "a property overrides the default"
    );
    let refusals = [
        (vec![], None, "set AWS_REGION"),
        (
            vec![KafkaProperty::new("sasl.mechanism", "SCRAM-SHA-512")],
            Some("eu-west-1"),
            "OAUTHBEARER",
        ),
        (
            vec![KafkaProperty::new("sasl.oauthbearer.method", "OIDC")],
            Some("eu-west-1"),
            "choose one",
        ),
    ];
    for (properties, region, why) in refusals {
        let err = msk(properties, region).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }
    assert_eq!(KafkaArgs::local("b:9092").aws_msk_iam_region(), None);
}

#[test]
fn later_sources_override_earlier_ones_and_secret_files_come_last() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kafka.properties");
    std::fs::write(&file, "sasl.username=from-file\nsasl.password=from-file\n").unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, "from-secret\n").unwrap();
    let mut args = KafkaArgs {
        properties_file: Some(file),
        properties: vec![KafkaProperty::new("sasl.username", "from-list")],
        secret_files: vec![KafkaProperty::new(
            "sasl.password",
            secret.to_str().unwrap(),
        )],
        ..KafkaArgs::local("b:9092")
    };
    args.resolve(env(&[("KAFKA_PROPERTY_SASL_USERNAME", "from-env")]))
        .unwrap();
    let last = |key: &str| args.property(key).unwrap().to_owned();
    assert_eq!(last("sasl.username"), "from-env");
    assert_eq!(last("sasl.password"), "from-secret");
    let missing = KafkaArgs {
        secret_files: vec![KafkaProperty::new("sasl.password", "/nonexistent/password")],
        ..KafkaArgs::local("b:9092")
    }
    .resolve(Vec::new())
    .unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/password"),
        "{missing}"
    );
}
