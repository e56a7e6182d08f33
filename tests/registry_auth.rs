//! Schema registry authentication of the `confluent` encoding against a registry that
//! requires it (`tests/registry/mod.rs`): basic authentication, a bearer token, TLS with a
//! CA made for the test, and mutual TLS with a client certificate. Wrong credentials and
//! failed handshakes name themselves and are configuration errors (stop), not retriable.

mod broker;
mod registry;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use apache_avro::AvroSchema;
use campaign_connector::codec::*;
use campaign_connector::model::*;
use campaign_connector::runtime::config::load;
use registry::{FakeRegistry, Require, TestPki};

fn interaction() -> Interaction {
    Interaction {
        event_id: "e1".into(),
        user_id: "u1".into(),
        campaign_id: "cart-push".into(),
        kind: InteractionKind::PushReceived,
        qualifier: None,
        occurred_at: 1_764_000_000_123,
        user_time_zone: None,
        properties: BTreeMap::new(),
    }
}

fn basic() -> Require {
    Require::Basic {
        user: "connector".into(),
        password: "s3cret-pw".into(),
    }
}

/// Registers, writes and reads back through a fresh codec (which fetches the id): every
/// request the codec makes, with these settings.
fn round_trip(settings: &EncodingSettings) -> Result<(), String> {
    let writer = Codec::<Interaction>::new("ix", settings).map_err(|e| e.to_string())?;
    let bytes = writer.encode(&interaction()).map_err(|e| e.to_string())?;
    let reader = Codec::<Interaction>::new("ix", settings).map_err(|e| e.to_string())?;
    let read = reader.decode(&bytes).map_err(|e| e.to_string())?;
    assert_eq!(read, interaction());
    Ok(())
}

/// The error of encoding (a registration) and of decoding (a fetch) with `settings`.
fn both_errors(registry: &FakeRegistry, settings: &EncodingSettings) -> (EncodeError, DecodeError) {
    let id = registry.add(&serde_json::to_string(&Interaction::get_schema()).unwrap());
    let codec = Codec::<Interaction>::new("ix", settings).unwrap();
    let encode = codec.encode(&interaction()).unwrap_err();
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&[2, 0]);
    let decode = codec.decode(&bytes).unwrap_err();
    (encode, decode)
}

fn assert_stop(encode: &EncodeError, decode: &DecodeError, expected: &[&str], secret: &str) {
    assert_eq!(encode.class(), ErrorClass::Stop, "{encode}");
    assert!(!encode.is_retriable());
    assert_eq!(decode.class(), ErrorClass::Stop, "{decode}");
    assert!(!decode.is_retriable());
    for text in [encode.to_string(), decode.to_string()] {
        for part in expected {
            assert!(text.contains(part), "{text:?} should contain {part:?}");
        }
        assert!(!text.contains(secret), "the secret leaked into {text:?}");
    }
}

#[test]
fn basic_authentication_is_sent_and_a_wrong_password_names_itself() {
    let registry = FakeRegistry::start_with(basic(), None);
    round_trip(&registry.settings_basic("connector", "s3cret-pw")).unwrap();
    let requests = registry.requests();
    assert!(requests.len() >= 2, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Basic Y29ubmVjdG9yOnMzY3JldC1wdw==")),
        "{requests:?}"
    );

    let (encode, decode) =
        both_errors(&registry, &registry.settings_basic("connector", "wrong-pw"));
    assert_stop(
        &encode,
        &decode,
        &[
            &format!(
                "schema registry at {} refused the credentials (HTTP 401)",
                registry.url
            ),
            r#"sent basic authentication as user "connector""#,
        ],
        "wrong-pw",
    );
    assert!(
        encode
            .to_string()
            .contains("on POST /subjects/ix-value/versions"),
        "{encode}"
    );
    assert!(
        decode.to_string().contains("on GET /schemas/ids/"),
        "{decode}"
    );
}

#[test]
fn no_credentials_for_a_registry_that_needs_them_says_none_were_sent() {
    let registry = FakeRegistry::start_with(basic(), None);
    let (encode, decode) = both_errors(&registry, &registry.settings());
    assert_stop(
        &encode,
        &decode,
        &[
            "refused the credentials (HTTP 401)",
            "no credentials were sent",
        ],
        "s3cret-pw",
    );
    assert!(registry
        .requests()
        .iter()
        .all(|r| r.authorization.is_none()));
}

#[test]
fn bearer_token_is_sent_and_a_wrong_one_names_itself() {
    let registry = FakeRegistry::start_with(Require::Bearer("tok-123".into()), None);
    round_trip(&registry.settings_bearer("tok-123")).unwrap();
    assert!(registry
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer tok-123")));

    let (encode, decode) = both_errors(&registry, &registry.settings_bearer("tok-999"));
    assert_stop(
        &encode,
        &decode,
        &[
            "refused the credentials (HTTP 401)",
            "sent a bearer token (registry_bearer_token)",
        ],
        "tok-999",
    );
}

#[test]
fn an_outage_stays_retriable_with_credentials() {
    let registry = FakeRegistry::start_with(basic(), None);
    registry.fail_with(Some(503));
    let (encode, decode) = both_errors(
        &registry,
        &registry.settings_basic("connector", "s3cret-pw"),
    );
    assert_eq!(encode.class(), ErrorClass::Retry, "{encode}");
    assert_eq!(decode.class(), ErrorClass::Retry, "{decode}");
    assert!(encode.is_retriable() && decode.is_retriable());
}

#[test]
fn tls_with_the_configured_ca_works_and_an_untrusted_certificate_stops() {
    let pki = TestPki::new();
    let registry = FakeRegistry::start_with(Require::Nothing, Some((&pki, false)));
    assert!(registry.url.starts_with("https://127.0.0.1:"));
    round_trip(&registry.settings().with_registry_tls(pki.client_tls(None))).unwrap();

    // The public web PKI roots (registry_ca_location not set) do not know the test CA.
    let (encode, decode) = both_errors(&registry, &registry.settings());
    assert_stop(
        &encode,
        &decode,
        &[
            &format!("TLS with the schema registry at {} failed", registry.url),
            "invalid peer certificate",
            "registry_ca_location",
        ],
        "-",
    );
    // Neither does another CA.
    let other = RegistryTls {
        ca_location: Some(pki.other_ca.clone()),
        client_certificate: None,
    };
    let (encode, decode) = both_errors(&registry, &registry.settings().with_registry_tls(other));
    assert_stop(
        &encode,
        &decode,
        &["invalid peer certificate: UnknownIssuer"],
        "-",
    );
}

#[test]
fn mutual_tls_presents_the_client_certificate_and_a_missing_or_foreign_one_stops() {
    let pki = TestPki::new();
    let registry = FakeRegistry::start_with(basic(), Some((&pki, true)));
    let with_client = |cert: &Path, key: &Path| {
        registry
            .settings_basic("connector", "s3cret-pw")
            .with_registry_tls(pki.client_tls(Some((&cert.to_path_buf(), &key.to_path_buf()))))
    };
    round_trip(&with_client(&pki.client_cert, &pki.client_key)).unwrap();
    assert!(registry.handshake_failures.lock().unwrap().is_empty());

    // Without a client certificate the registry ends the handshake.
    let no_client = registry
        .settings_basic("connector", "s3cret-pw")
        .with_registry_tls(pki.client_tls(None));
    let (encode, decode) = both_errors(&registry, &no_client);
    assert_stop(
        &encode,
        &decode,
        &[
            "TLS with the schema registry at",
            "registry_certificate_location",
        ],
        "s3cret-pw",
    );
    let failures = registry.handshake_failures.lock().unwrap().clone();
    assert!(
        failures.iter().any(|f| f.contains("certificate")),
        "the registry refused the handshake for want of a certificate: {failures:?}"
    );

    // A certificate from a CA the registry does not trust.
    let (encode, decode) = both_errors(
        &registry,
        &with_client(&pki.stranger_cert, &pki.stranger_key),
    );
    assert_stop(
        &encode,
        &decode,
        &["TLS with the schema registry at"],
        "s3cret-pw",
    );
}

#[test]
fn registry_settings_come_from_the_environment_like_every_key() {
    let pki = TestPki::new();
    let registry = FakeRegistry::start_with(basic(), Some((&pki, true)));
    let path = |p: &Path| p.display().to_string();
    let env: Vec<(String, String)> = [
        ("CONNECTOR_ENCODING__FORMAT", "confluent".to_string()),
        ("CONNECTOR_ENCODING__REGISTRY_URL", registry.url.clone()),
        ("CONNECTOR_ENCODING__REGISTRY_TIMEOUT_MS", "3000".into()),
        ("CONNECTOR_ENCODING__REGISTRY_USERNAME", "connector".into()),
        ("CONNECTOR_ENCODING__REGISTRY_PASSWORD", "s3cret-pw".into()),
        ("CONNECTOR_ENCODING__REGISTRY_CA_LOCATION", path(&pki.ca)),
        (
            "CONNECTOR_ENCODING__REGISTRY_CERTIFICATE_LOCATION",
            path(&pki.client_cert),
        ),
        (
            "CONNECTOR_ENCODING__REGISTRY_KEY_LOCATION",
            path(&pki.client_key),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let settings = load(None, env).unwrap();
    let encoding = settings.encoding("interactions").validate().unwrap();
    assert_eq!(encoding.registry_timeout.as_millis(), 3000);
    round_trip(&encoding).unwrap();

    // Never shown: not in the settings' debug output.
    let shown = format!("{settings:?} {encoding:?}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(shown.contains("***"), "{shown}");
}

#[test]
fn registry_settings_that_cannot_work_are_refused_with_the_key() {
    let check = |yaml: &str, expected: &str| {
        let config: EncodingConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let e = config.validate().unwrap_err().to_string();
        assert!(
            e.contains(expected),
            "{yaml}: {e:?} should contain {expected:?}"
        );
    };
    let base = "format: confluent\nregistry_url: https://registry:8081\n";
    check(
        &format!("{base}registry_username: u"),
        "only registry_username is set",
    );
    check(
        &format!("{base}registry_password: p"),
        "only registry_password is set",
    );
    check(
        &format!("{base}registry_username: u\nregistry_password: p\nregistry_bearer_token: t"),
        "two ways to authenticate",
    );
    check(
        &format!("{base}registry_bearer_token: ''"),
        "registry_bearer_token is set but empty",
    );
    check(
        &format!("{base}registry_certificate_location: c.pem"),
        "only registry_certificate_location is set",
    );
    check(
        "format: confluent\nregistry_url: http://registry:8081\nregistry_ca_location: ca.pem",
        "registry_ca_location is set, but registry_url http://registry:8081 is not https://",
    );
    check(
        "format: confluent\nregistry_url: https://u:p@registry:8081",
        "must not contain credentials",
    );
    check(
        "format: avro\nregistry_bearer_token: t",
        "registry_bearer_token is only used with format confluent, not avro",
    );
    check(
        "format: json\nregistry_key_location: k.pem",
        "registry_key_location is only used with format confluent, not json",
    );
}

#[test]
fn unreadable_certificate_and_key_files_stop_startup_with_key_and_path() {
    let pki = TestPki::new();
    let settings = |tls: RegistryTls| {
        EncodingSettings::confluent("https://registry:8081").with_registry_tls(tls)
    };
    let setup_error = |tls: RegistryTls| {
        Codec::<Interaction>::new("ix", &settings(tls))
            .err()
            .expect("setup must fail")
            .to_string()
    };
    let missing = pki.dir.path().join("missing.pem");
    let e = setup_error(RegistryTls {
        ca_location: Some(missing.clone()),
        client_certificate: None,
    });
    assert!(
        e.starts_with(&format!("registry_ca_location {}: ", missing.display())),
        "{e}"
    );

    // A key where the certificates should be.
    let e = setup_error(RegistryTls {
        ca_location: Some(pki.client_key.clone()),
        client_certificate: None,
    });
    assert!(e.contains("no PEM certificate"), "{e}");

    let e = setup_error(RegistryTls {
        ca_location: None,
        client_certificate: Some((pki.client_cert.clone(), pki.client_cert.clone())),
    });
    assert!(
        e.starts_with(&format!(
            "registry_key_location {}: ",
            pki.client_cert.display()
        )),
        "{e}"
    );

    let encrypted = pki.dir.path().join("encrypted.key");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = setup_error(RegistryTls {
        ca_location: None,
        client_certificate: Some((pki.client_cert.clone(), encrypted)),
    });
    assert!(
        e.contains("the key is encrypted, which is not supported"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------
// `campaign-connector schemas` with the registry: ids and versions per confluent topic

/// Runs `campaign-connector schemas` with only `env` in the environment: (exit code,
/// stdout, stderr).
fn schemas_cli(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_campaign-connector"))
        .arg("schemas")
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The table block of one schema (from its name line to the blank line after it).
fn block<'a>(table: &'a str, name: &str) -> &'a str {
    let start = table
        .find(&format!("{name}\n"))
        .unwrap_or_else(|| panic!("no block for {name} in:\n{table}"));
    let rest = &table[start..];
    &rest[..rest.find("\n\n").unwrap_or(rest.len())]
}

fn jsonl_by_name(out: &str) -> BTreeMap<String, serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["name"].as_str().unwrap().to_string(), v))
        .collect()
}

fn schema_json<T: AvroSchema>() -> String {
    serde_json::to_string(&T::get_schema()).unwrap()
}

/// The same schema with a `doc` on the record: another text, so another registry id, but
/// the same Parsing Canonical Form.
fn with_doc<T: AvroSchema>() -> String {
    let mut json = serde_json::to_value(T::get_schema()).unwrap();
    json["doc"] = "registered by another producer, with documentation".into();
    json.to_string()
}

#[test]
fn the_schemas_command_prints_the_registry_ids_and_versions_of_each_confluent_topic() {
    let pki = TestPki::new();
    let registry = FakeRegistry::start_with(basic(), Some((&pki, true)));
    // interactions: an unrelated version, this build's schema, the same with a doc.
    let (other_id, _) = registry.register("ix-value", r#""string""#);
    let (own_id, own_version) = registry.register("ix-value", &schema_json::<Interaction>());
    let (doc_id, doc_version) = registry.register("ix-value", &with_doc::<Interaction>());
    assert_eq!((own_version, doc_version), (2, 3));
    assert!(own_id != doc_id && own_id != other_id);
    // campaigns: only another schema of the record (an older campaign without a field).
    let mut older = serde_json::to_value(Campaign::get_schema()).unwrap();
    older["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "backfill_since");
    let (older_id, _) = registry.register("cp-value", &older.to_string());
    // send-commands: registered by the connector's own codec (the subject it writes to).
    let settings = registry
        .settings_basic("connector", "s3cret-pw")
        .with_registry_tls(pki.client_tls(Some((&pki.client_cert, &pki.client_key))));
    let send_command = SendCommand {
        command_id: "c1".into(),
        user_id: "u1".into(),
        campaign_id: "promo".into(),
        campaign_version: 1,
        channel: Channel::Email,
        template_id: "t".into(),
        payload: BTreeMap::new(),
        trigger: TriggerRef {
            campaign_id: "cart-push".into(),
            kind: InteractionKind::PushReceived,
            event_id: "e1".into(),
            occurred_at: 1,
        },
        due_at: 2,
        emitted_at: 3,
    };
    let bytes = Codec::<SendCommand>::new("sc", &settings)
        .unwrap()
        .encode(&send_command)
        .unwrap();
    let sc_id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
    // user-events ("ue-value"): no subject at all. The changelog is avro, decisions are off.

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("connector.yaml");
    std::fs::write(
        &config,
        format!(
            "topics:\n  interactions: ix\n  user_events: ue\n  campaigns: cp\n  send_commands: sc\n  changelog: cl\n  decisions: ''\n\
             encoding:\n  format: confluent\n  registry_url: {}\n  registry_username: connector\n  registry_ca_location: {}\n  registry_certificate_location: {}\n  registry_key_location: {}\n\
             encodings:\n  changelog:\n    format: avro\n",
            registry.url,
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    )
    .unwrap();
    // The password from the environment, the rest from the file.
    let env = [(
        "CONNECTOR_ENCODING__REGISTRY_PASSWORD",
        "s3cret-pw".to_string(),
    )];
    let config_arg = config.to_str().unwrap();

    let (code, table, err) = schemas_cli(&["--config", config_arg], &env);
    assert_eq!(code, 0, "{table}{err}");
    let url = &registry.url;
    let ix = block(&table, "campaign_connector.Interaction");
    assert!(
        ix.contains("  topic           ix (interactions, format confluent)\n")
            && ix.contains(&format!("  subject         ix-value at {url}\n"))
            && ix.contains(&format!(
                "  registered      id {own_id} (version 2), id {doc_id} (version 3)\n"
            )),
        "{ix}"
    );
    let ue = block(&table, "campaign_connector.UserEvent");
    assert!(
        ue.contains("  registered      no: the registry has no subject ue-value\n"),
        "{ue}"
    );
    let cp = block(&table, "campaign_connector.Campaign");
    let older_fp = canonical::Fingerprinted::of_text(&older.to_string())
        .unwrap()
        .fingerprint;
    assert!(
        cp.contains(&format!(
            "  registered      no: none of the 1 versions of subject cp-value is this schema (version 1: id {older_id}, fingerprint {} (0x{older_fp:016x}))\n",
            older_fp as i64
        )),
        "{cp}"
    );
    let sc = block(&table, "campaign_connector.SendCommand");
    assert!(
        sc.contains(&format!("  registered      id {sc_id} (version 1)\n")),
        "{sc}"
    );
    let cl = block(&table, "campaign_connector.TaskStateRecord");
    assert!(
        cl.contains("  topic           cl (changelog, format avro)\n")
            && !cl.contains("registered"),
        "{cl}"
    );
    let decision = block(&table, "campaign_connector.Decision");
    assert!(
        !decision.contains("  topic  ") && !decision.contains("  registered  "),
        "{decision}"
    );
    // Every request carried the credentials, over mutual TLS, and nothing was registered.
    assert!(registry.handshake_failures.lock().unwrap().is_empty());
    assert!(registry
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Basic Y29ubmVjdG9yOnMzY3JldC1wdw==")));
    assert_eq!(registry.count("POST", "/subjects/"), 1, "only the codec's");

    let (code, out, err) = schemas_cli(&["--config", config_arg, "--format", "jsonl"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let json = jsonl_by_name(&out);
    let ix = &json["campaign_connector.Interaction"];
    assert_eq!(
        ix["topic"],
        serde_json::json!({"role": "interactions", "name": "ix", "format": "confluent"})
    );
    assert_eq!(ix["registry"]["status"], "registered");
    assert_eq!(ix["registry"]["url"], url.as_str());
    assert_eq!(ix["registry"]["subject"], "ix-value");
    assert_eq!(
        ix["registry"]["matches"],
        serde_json::json!([{"id": own_id, "version": 2}, {"id": doc_id, "version": 3}])
    );
    let versions = ix["registry"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[1]["fingerprint"], ix["fingerprint"]);
    assert_eq!(versions[0]["matches"], false);
    let ue = &json["campaign_connector.UserEvent"]["registry"];
    assert_eq!(ue["status"], "subject_not_found");
    assert_eq!(ue["subject"], "ue-value");
    let cp = &json["campaign_connector.Campaign"]["registry"];
    assert_eq!(cp["status"], "no_matching_version");
    assert_eq!(cp["matches"], serde_json::json!([]));
    assert_eq!(cp["versions"][0]["fingerprint"], older_fp as i64);
    assert_eq!(
        json["campaign_connector.SendCommand"]["registry"]["matches"],
        serde_json::json!([{"id": sc_id, "version": 1}])
    );
    assert!(json["campaign_connector.TaskStateRecord"]["registry"].is_null());
    assert!(json["campaign_connector.Decision"]["topic"].is_null());

    // A schema file is compared with its record's topic: the older campaign is version 1.
    let older_file = dir.path().join("older-campaign.avsc");
    std::fs::write(&older_file, older.to_string()).unwrap();
    let (code, out, err) = schemas_cli(
        &["--config", config_arg, older_file.to_str().unwrap()],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("  registered      id {older_id} (version 1)\n")),
        "{out}"
    );
}

#[test]
fn the_schemas_command_without_a_registry_prints_no_registry_lines() {
    let (code, table, err) = schemas_cli(&[], &[]);
    assert_eq!(code, 0, "{table}{err}");
    assert!(
        !table.contains("  registered  ") && !table.contains("  subject  "),
        "{table}"
    );
    assert!(
        table.contains("  topic           campaign-interactions (interactions, format avro)\n"),
        "{table}"
    );
    let (code, out, err) = schemas_cli(&["--format", "jsonl"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let json = jsonl_by_name(&out);
    // One line per schema of this build (the .avsc files of `schemas/`).
    let schema_files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "avsc")
        })
        .count();
    assert_eq!(json.len(), schema_files);
    assert!(json.values().all(|v| v["registry"].is_null()), "{out}");
}

#[test]
fn the_schemas_command_names_the_registry_and_subject_it_could_not_ask() {
    // A port nobody listens on.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let env = [
        ("CONNECTOR_ENCODING__FORMAT", "confluent".to_string()),
        ("CONNECTOR_ENCODING__REGISTRY_URL", url.clone()),
        ("CONNECTOR_ENCODING__REGISTRY_TIMEOUT_MS", "2000".into()),
        ("CONNECTOR_ENCODINGS__USER_EVENTS__FORMAT", "json".into()),
    ];
    let (code, table, err) = schemas_cli(&[], &env);
    assert_eq!(
        code, 1,
        "an unanswered lookup fails the command: {table}{err}"
    );
    let expected = format!(
        "looking up subject campaign-interactions-value at the schema registry {url}: {url}/subjects/campaign-interactions-value/versions: "
    );
    let ix = block(&table, "campaign_connector.Interaction");
    assert!(
        ix.contains(&format!(
            "  subject         campaign-interactions-value at {url}\n"
        )) && ix.contains(&format!("  registered      unknown: {expected}")),
        "{ix}"
    );
    assert!(err.contains(&format!("error: {expected}")), "{err}");
    // Every confluent topic says so; the json one was not looked up.
    for topic in [
        "campaigns",
        "send-commands",
        "connector-decisions",
        "campaign-connector-changelog",
    ] {
        assert!(
            err.contains(&format!(
                "looking up subject {topic}-value at the schema registry {url}"
            )),
            "{topic}: {err}"
        );
    }
    assert!(!err.contains("user-events-value"), "{err}");
    assert!(
        block(&table, "campaign_connector.UserEvent")
            .contains("  topic           user-events (user_events, format json)\n"),
        "{table}"
    );

    let (code, out, _) = schemas_cli(&["--format", "jsonl"], &env);
    assert_eq!(code, 1);
    let ix = &jsonl_by_name(&out)["campaign_connector.Interaction"]["registry"];
    assert_eq!(ix["status"], "error");
    assert_eq!(ix["url"], url.as_str());
    assert_eq!(ix["subject"], "campaign-interactions-value");
    assert!(ix["error"].as_str().unwrap().starts_with(&expected), "{ix}");
}

#[test]
fn the_schemas_command_says_when_the_registry_refuses_the_credentials() {
    let registry = FakeRegistry::start_with(basic(), None);
    let env = [
        ("CONNECTOR_ENCODING__FORMAT", "confluent".to_string()),
        ("CONNECTOR_ENCODING__REGISTRY_URL", registry.url.clone()),
        ("CONNECTOR_ENCODING__REGISTRY_USERNAME", "connector".into()),
        ("CONNECTOR_ENCODING__REGISTRY_PASSWORD", "not-the-pw".into()),
    ];
    let (code, table, err) = schemas_cli(&[], &env);
    assert_eq!(code, 1, "{table}{err}");
    assert!(
        err.contains(&format!(
            "error: looking up subject campaign-interactions-value at the schema registry {url}: schema registry at {url} refused the credentials (HTTP 401) on GET /subjects/campaign-interactions-value/versions",
            url = registry.url
        )) && err.contains(r#"sent basic authentication as user "connector""#),
        "{err}"
    );
    assert!(
        !err.contains("not-the-pw") && !table.contains("not-the-pw"),
        "{table}{err}"
    );
}

// ---------------------------------------------------------------------------------------
// The connector binary with an authenticated registry, on the broker

/// A test world whose every topic uses the `confluent` encoding with `registry`, basic
/// authentication with `password` and mutual TLS, all from `CONNECTOR_ENCODING__…`.
fn confluent_world(
    name: &str,
    registry: &FakeRegistry,
    pki: &TestPki,
    password: &str,
) -> broker::World {
    let mut w = broker::World::new(name, 2);
    let path = |p: &Path| p.display().to_string();
    for (key, value) in [
        ("ENCODING__FORMAT", "confluent".to_string()),
        ("ENCODING__REGISTRY_URL", registry.url.clone()),
        ("ENCODING__REGISTRY_USERNAME", "connector".into()),
        ("ENCODING__REGISTRY_PASSWORD", password.into()),
        ("ENCODING__REGISTRY_CA_LOCATION", path(&pki.ca)),
        (
            "ENCODING__REGISTRY_CERTIFICATE_LOCATION",
            path(&pki.client_cert),
        ),
        ("ENCODING__REGISTRY_KEY_LOCATION", path(&pki.client_key)),
    ] {
        w.set(key, &value);
    }
    w
}

#[test]
fn the_connector_and_its_commands_work_with_a_registry_that_requires_credentials_and_mutual_tls() {
    let pki = TestPki::new();
    let registry = FakeRegistry::start_with(basic(), Some((&pki, true)));
    let w = confluent_world("registry-auth", &registry, &pki, "s3cret-pw");
    w.create_topics();
    w.publish(broker::PROMO_CHAIN);
    let instance = w.start("i0");
    instance.wait_log("catalog loaded", Duration::from_secs(60));

    let events = broker::write_file(
        w.dir.path(),
        "events.jsonl",
        r#"{"interaction": {"event_id": "f1", "user_id": "fay", "campaign_id": "free-shipping", "kind": "PUSH_DIRECT_OPEN", "occurred_at": "2026-01-01T00:00:00Z"}}"#,
    );
    let (ok, out, err) = w.cli(&["send", "--now", events.to_str().unwrap()]);
    assert!(ok, "send failed: {out}{err}");

    let mut commands = w.send_commands();
    let read = commands.until_count(1, Duration::from_secs(60)).to_vec();
    let settings = registry
        .settings_basic("connector", "s3cret-pw")
        .with_registry_tls(pki.client_tls(Some((&pki.client_cert, &pki.client_key))));
    let codec = Codec::<SendCommand>::new(w.topic("send-commands"), &settings).unwrap();
    let bytes = read[0].payload.as_deref().unwrap();
    assert_eq!(bytes[0], 0, "the Confluent wire format");
    let command = codec.decode(bytes).unwrap();
    assert_eq!(
        (command.user_id.as_str(), command.campaign_id.as_str()),
        ("fay", "promo-2")
    );
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));

    // Every request carried the credentials over mutual TLS, and every topic registered
    // its schema under <topic>-value.
    assert!(registry.handshake_failures.lock().unwrap().is_empty());
    assert!(registry
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Basic Y29ubmVjdG9yOnMzY3JldC1wdw==")));
    for role in [
        "campaigns",
        "interactions",
        "send-commands",
        "decisions",
        "changelog",
    ] {
        let subject = format!("/subjects/{}-value/versions", w.topic(role));
        assert!(
            registry.count("POST", &subject) >= 1,
            "{subject} was registered"
        );
    }
}

#[test]
fn a_wrong_registry_password_stops_the_command_with_a_message_that_names_it() {
    let pki = TestPki::new();
    let registry = FakeRegistry::start_with(basic(), Some((&pki, true)));
    let w = confluent_world("registry-auth-wrong", &registry, &pki, "not-the-pw");
    w.create_topics();
    let file = broker::write_file(w.dir.path(), "campaigns.yaml", broker::PROMO_CHAIN);
    let (ok, out, err) = w.cli(&["campaigns", "publish", file.to_str().unwrap()]);
    assert!(!ok, "publish must fail: {out}{err}");
    assert!(
        err.contains(&format!(
            "schema registry at {} refused the credentials (HTTP 401) on POST /subjects/{}-value/versions",
            registry.url,
            w.topic("campaigns")
        )) && err.contains(r#"sent basic authentication as user "connector""#),
        "{err}"
    );
    assert!(
        !err.contains("not-the-pw") && !out.contains("not-the-pw"),
        "{out}{err}"
    );
}
