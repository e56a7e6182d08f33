//! TLS + SASL/SCRAM end to end, against the secured broker that `scripts/test.sh` starts
//! next to the plaintext one: its `SASL_SSL` listener (`KAFKA_SASL_BOOTSTRAP`) presents a
//! certificate of a CA generated for the run (`KAFKA_SASL_CA`) and accepts the SCRAM-SHA-512
//! user `KAFKA_SASL_USER` / `KAFKA_SASL_PASSWORD`. The connector is configured through the
//! environment only: `CONNECTOR_KAFKA__*` pass-through keys. The test's own producer and
//! `read_committed` reader use the same settings.

mod broker;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use broker::*;
use campaign_connector::model::InteractionKind::PushDirectOpen;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};

/// The secured broker's address and credentials, from `scripts/test.sh`.
struct Secured {
    bootstrap: String,
    ca: String,
    user: String,
    password: String,
}

fn secured() -> Secured {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run the suite with scripts/test.sh, which starts the \
                 SASL_SSL test broker"
            )
        })
    };
    Secured {
        bootstrap: var("KAFKA_SASL_BOOTSTRAP"),
        ca: var("KAFKA_SASL_CA"),
        user: var("KAFKA_SASL_USER"),
        password: var("KAFKA_SASL_PASSWORD"),
    }
}

/// A world on the SASL_SSL listener: the connector (through its environment) and the test's
/// own clients use `password` and the CA file `ca` (`None`: librdkafka's default trust
/// store, which does not know the test CA).
fn sasl_world(name: &str, password: &str, ca: Option<&str>) -> World {
    let s = secured();
    let mut w = World::with_bootstrap(name, 2, s.bootstrap.clone());
    let mut settings = vec![
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", s.user.as_str()),
        ("sasl.password", password),
    ];
    if let Some(ca) = ca {
        settings.push(("ssl.ca.location", ca));
    }
    for (key, value) in settings {
        // The environment key of a kafka property: `.` → `_` under CONNECTOR_KAFKA__
        // (CONNECTOR_KAFKA__SASL_USERNAME sets sasl.username).
        w.set(
            &format!("KAFKA__{}", key.replace('.', "_").to_uppercase()),
            value,
        );
        w.client.insert(key.into(), value.into());
    }
    w
}

/// Records the errors librdkafka reports for a client (authentication, TLS handshake).
#[derive(Default)]
struct Errors(Mutex<Vec<(RDKafkaErrorCode, String)>>);

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(code) = error.rdkafka_error_code() {
            self.0.lock().unwrap().push((code, reason.to_string()));
        }
    }
}

impl ProducerContext for Errors {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Connects a client with the world's settings and returns the first error librdkafka
/// reports with `code` (panics after a deadline).
fn client_error(w: &World, code: RDKafkaErrorCode) -> String {
    let producer: BaseProducer<Errors> = w
        .client_config()
        .create_with_context(Errors::default())
        .unwrap();
    // A metadata request makes the client connect; it fails, which is the point.
    let _ = producer
        .client()
        .fetch_metadata(None, Duration::from_secs(2));
    wait_for(
        &format!("a {code:?} error from librdkafka"),
        Duration::from_secs(30),
        || {
            producer.poll(Duration::from_millis(100));
            let errors = producer.context().0.lock().unwrap();
            errors
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, reason)| reason.clone())
        },
    )
}

/// Runs a CLI command that must end within `deadline` (killed and failed otherwise);
/// returns (success, stdout + stderr, how long it took).
fn cli_within(w: &World, args: &[&str], deadline: Duration) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_campaign-connector"))
        .args(args)
        .envs(&w.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes on their own threads so a chatty child never blocks on a full pipe.
    let pipe = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let status = wait_for(
        &format!("`campaign-connector {}` to exit", args.join(" ")),
        deadline,
        || child.try_wait().unwrap(),
    );
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    (status.success(), text, started.elapsed())
}

const FOLLOW_ON: &str = r#"
campaigns:
  - campaign_id: welcome
    name: Welcome push
    status: ACTIVE
  - campaign_id: welcome-2
    name: Welcome, step 2
    status: ACTIVE
    published_at: 2020-01-01T00:00:00Z
    follow_on:
      trigger: {campaign_id: welcome, kinds: [PUSH_DIRECT_OPEN]}
      delay: immediate
      message: {channel: EMAIL, template_id: welcome-2}
"#;

#[test]
fn the_connector_runs_over_tls_and_scram_end_to_end() {
    let s = secured();
    let w = sasl_world("sasl", &s.password, Some(&s.ca));
    let (ok, out, took) = cli_within(&w, &["topics", "create"], Duration::from_secs(60));
    assert!(
        ok,
        "topics create over SASL_SSL failed after {took:?}:\n{out}"
    );
    w.publish(FOLLOW_ON);

    let instance = w.start("i0");
    instance.wait_log("tasks assigned", Duration::from_secs(60));
    w.send_events(&[interaction(
        "open-1",
        "sam",
        "welcome",
        PushDirectOpen,
        now_ms(),
    )]);

    let mut commands = w.send_commands();
    commands.until_count(1, Duration::from_secs(60));
    let sent = commands.commands();
    assert_eq!(sent.len(), 1, "one send-command: {sent:?}");
    assert_eq!(sent[0].user_id, "sam");
    assert_eq!(sent[0].campaign_id, "welcome-2");
    assert_eq!(sent[0].template_id, "welcome-2");
    assert_eq!(sent[0].trigger.event_id, "open-1");

    let log = instance.log_text();
    assert!(
        !log.contains("Authentication") && !log.contains("SSL handshake failed"),
        "no security errors in the connector log:\n{log}"
    );
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
}

/// The connector's environment for a failing connection: give up after 10 s instead of
/// the default 60 s (`socket.timeout.ms` is also the admin requests' timeout).
fn fail_fast(w: &mut World) {
    w.set("KAFKA__SOCKET_TIMEOUT_MS", "10000");
}

#[test]
fn a_wrong_password_fails_topics_create_with_an_authentication_error() {
    let s = secured();
    let mut w = sasl_world("sasl-badpw", &format!("{}x", s.password), Some(&s.ca));
    fail_fast(&mut w);
    let (ok, out, took) = cli_within(&w, &["topics", "create"], Duration::from_secs(60));
    assert!(
        !ok,
        "topics create must fail with a wrong password (took {took:?}):\n{out}"
    );
    // Why it failed, as librdkafka reports it to a client with the same settings. (The
    // connector's own message is checked by the next test.)
    let reason = client_error(&w, RDKafkaErrorCode::Authentication);
    assert!(
        reason.contains("SASL authentication error") && reason.contains("invalid credentials"),
        "{reason}"
    );
}

/// What the connector prints: `topics create` names the authentication failure (the
/// connection check drains librdkafka's error events before any admin request).
#[test]
fn topics_create_with_a_wrong_password_names_the_authentication_failure() {
    let s = secured();
    let mut w = sasl_world("sasl-badpw-msg", &format!("{}x", s.password), Some(&s.ca));
    fail_fast(&mut w);
    let (ok, out, took) = cli_within(&w, &["topics", "create"], Duration::from_secs(60));
    assert!(
        !ok,
        "topics create must fail with a wrong password (took {took:?}):\n{out}"
    );
    let lower = out.to_lowercase();
    assert!(
        lower.contains("authentication") && lower.contains("sasl"),
        "the error names the SASL authentication failure (took {took:?}):\n{out}"
    );
}

#[test]
fn an_untrusted_broker_certificate_fails_the_tls_handshake() {
    let s = secured();
    let mut w = sasl_world("sasl-noca", &s.password, None);
    fail_fast(&mut w);
    let (ok, out, took) = cli_within(&w, &["topics", "create"], Duration::from_secs(60));
    assert!(
        !ok,
        "topics create must fail against an untrusted certificate (took {took:?}):\n{out}"
    );
    // The connector's own message names the TLS failure...
    assert!(
        out.contains("certificate verify failed"),
        "the error names the untrusted certificate (took {took:?}):\n{out}"
    );
    // ... as librdkafka reports it to a client with the same settings.
    let reason = client_error(&w, RDKafkaErrorCode::SSL);
    assert!(reason.contains("certificate verify failed"), "{reason}");
}
