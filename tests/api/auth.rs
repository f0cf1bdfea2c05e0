//! Who may call: bearer tokens per role, and the refusal to serve a network
//! without them.

use std::time::Duration;

use integration_service::{
    auth::{Token, Tokens},
    startup::{Application, StartupError},
};
use support::{Backend, ServerCommand, TestDatabase, expect_code, spawn_app_with, test_settings};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::BINARY;

const ADMIN: &str = "admin-token-0123456789abcdef0123456789abcdef";
const GATEWAY: &str = "validator-token-0123456789abcdef0123456789ab";

fn tokens() -> Tokens {
    let parse = |t: &str| Token::parse(t).expect("a valid token");
    Tokens::new(&[parse(ADMIN)], &[parse(GATEWAY)]).expect("distinct tokens")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_calls_its_own_methods_and_nothing_else() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.access.tokens = tokens())
        .await
        .expect("SQLite");
    let admin = app.client_with_token(ADMIN);
    let gateway = app.client_with_token(GATEWAY);

    // The dashboard's token does the dashboard's work.
    let integration = admin.create("org-auth").await.expect("admin creates");
    let (value, _) = admin.generate("org-auth").await.expect("admin generates");
    admin
        .activate("org-auth", &value)
        .await
        .expect("admin activates");

    // The gateway's token validates, and the scheme is case-insensitive.
    let lower = app
        .client
        .clone()
        .with_authorization(&format!("bearer {GATEWAY}"));
    for validator in [&gateway, &lower] {
        let answer = validator
            .validate(&integration.client_id, &value)
            .await
            .expect("the validator validates");
        assert!(answer.valid, "the validator's answer is valid");
    }

    // Each role is refused the other's methods.
    let message = expect_code(gateway.get("org-auth").await, Code::PermissionDenied);
    assert!(message.contains("admin"), "{message}");
    let message = expect_code(
        admin.validate(&integration.client_id, &value).await,
        Code::PermissionDenied,
    );
    assert!(message.contains("validator"), "{message}");
    expect_code(
        gateway.create("org-by-gateway").await,
        Code::PermissionDenied,
    );
    expect_code(admin.get("org-by-gateway").await, Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_known_token_are_unauthenticated_and_change_nothing() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.access.tokens = tokens())
        .await
        .expect("SQLite");
    let wrong = bearer(&"x".repeat(ADMIN.len()));
    let almost = bearer(&ADMIN[..ADMIN.len() - 1]);
    let basic = format!("Basic {ADMIN}");
    let cases = [
        None,
        Some(wrong.as_str()),
        Some(almost.as_str()),
        Some(basic.as_str()),
        Some("Bearer "),
        Some(ADMIN),
    ];
    for header in cases {
        let client = match header {
            None => app.client.clone(),
            Some(header) => app.client.clone().with_authorization(header),
        };
        let message = expect_code(client.create("org-intruder").await, Code::Unauthenticated);
        assert!(!message.contains(ADMIN), "the message repeats a token");
        expect_code(
            client.validate("client", "secret").await,
            Code::Unauthenticated,
        );
    }
    expect_code(
        app.client_with_token(ADMIN).get("org-intruder").await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_stay_open_when_tokens_are_required() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.access.tokens = tokens())
        .await
        .expect("SQLite");
    let channel = app.channel().await;
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "centralauth.integration.v1.IntegrationService".into(),
        })
        .await
        .expect("health answers without a token")
        .into_inner()
        .status;
    assert_eq!(status, 1, "SERVING");

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers without a token")
        .into_inner();
    assert!(
        responses.message().await.expect("a response").is_some(),
        "reflection lists the services"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_it_serves_only_on_loopback_unless_told_otherwise() {
    let database = TestDatabase::sqlite();
    let mut open = test_settings(database.url());
    open.listen = "0.0.0.0:0".parse().expect("an address");
    match Application::build(open.clone()).await {
        Err(StartupError::Unprotected(address)) => {
            assert_eq!(address, open.listen, "the refusal names the address");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("served every interface without authentication"),
    }

    let mut insecure = open.clone();
    insecure.access.insecure_no_auth = true;
    Application::build(insecure)
        .await
        .expect("--insecure-no-auth lets it start");

    let mut protected = open;
    protected.access.tokens = tokens();
    Application::build(protected)
        .await
        .expect("with tokens it serves any address");
}

/// The binary on every interface, logging at `info`.
fn on_every_interface(database: &TestDatabase) -> ServerCommand {
    ServerCommand::new(BINARY, database.url())
        .listen("0.0.0.0:0")
        .log_filter("info")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_an_open_network_and_warns_when_told_to_allow_one() {
    let database = TestDatabase::sqlite();
    let refused = on_every_interface(&database)
        .run_to_exit(Duration::from_secs(20))
        .await;
    let output = refused.output();
    assert!(
        refused.status.is_some(),
        "it served without authentication: {output}"
    );
    assert!(
        output.contains("refusing to serve on 0.0.0.0:0 without authentication"),
        "{output}"
    );

    let mut server = on_every_interface(&database)
        .arg("--insecure-no-auth")
        .start()
        .await;
    let running = server.is_running();
    let (_, output) = server.terminate().await;
    let output = output.join("\n");
    assert!(running, "--insecure-no-auth should start it: {output}");
    assert!(output.contains("WITHOUT authentication"), "{output}");

    // Tokens from the environment: it starts, and no token reaches the log.
    let mut server = on_every_interface(&database)
        .env("INTEGRATION_ADMIN_TOKENS", ADMIN)
        .env("INTEGRATION_VALIDATOR_TOKENS", GATEWAY)
        .start()
        .await;
    let running = server.is_running();
    let (_, output) = server.terminate().await;
    let output = output.join("\n");
    assert!(
        !output.contains(ADMIN) && !output.contains(GATEWAY),
        "a token reached the log"
    );
    assert!(running, "tokens should let it start: {output}");
    assert!(output.contains(r#""admin_tokens":1"#), "{output}");
    assert!(output.contains("tokens configured without TLS"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_are_logged_with_their_reason_and_never_the_token() {
    let database = TestDatabase::sqlite();
    let server = ServerCommand::new(BINARY, database.url())
        .log_filter("info")
        .env("INTEGRATION_ADMIN_TOKENS", ADMIN)
        .env("INTEGRATION_VALIDATOR_TOKENS", GATEWAY)
        .start()
        .await;
    let client = server.client().await;
    let intruder = "i".repeat(40);
    expect_code(
        client.clone().with_token(&intruder).create("org-log").await,
        Code::Unauthenticated,
    );
    expect_code(
        client.with_token(GATEWAY).create("org-log").await,
        Code::PermissionDenied,
    );
    let (_, output) = server.terminate().await;
    let output = output.join("\n");
    assert!(
        !output.contains(&intruder) && !output.contains(GATEWAY),
        "a token reached the log"
    );
    let refusals: Vec<_> = output
        .lines()
        .filter(|l| l.contains("call refused"))
        .collect();
    assert_eq!(refusals.len(), 2, "{output}");
    assert!(refusals[0].contains("unknown_token"), "{}", refusals[0]);
    assert!(refusals[0].contains("CreateIntegration"), "{}", refusals[0]);
    assert!(refusals[1].contains("wrong_role"), "{}", refusals[1]);
}

/// How many calls of each refusal reason the flood sends.
const FLOOD: u64 = 1_000;

/// The counts per reason in the binary's periodic report of refused calls,
/// if `line` is one.
fn reported_refusals(line: &str) -> Option<[u64; 4]> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if !event["message"]
        .as_str()?
        .starts_with("calls refused for want of the right token")
    {
        return None;
    }
    let count = |reason: &str| event[reason].as_u64().expect("a count per reason");
    Some(REASONS.map(|(reason, _)| count(reason)))
}

/// Every reason a call is refused for, with the status it gets.
const REASONS: [(&str, Code); 4] = [
    ("no_token", Code::Unauthenticated),
    ("malformed_authorization", Code::Unauthenticated),
    ("unknown_token", Code::Unauthenticated),
    ("wrong_role", Code::PermissionDenied),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_calls_writes_a_line_per_peer_and_reason_and_then_counts() {
    let database = TestDatabase::sqlite();
    let server = ServerCommand::new(BINARY, database.url())
        .log_filter("info")
        .env("INTEGRATION_ADMIN_TOKENS", ADMIN)
        .env("INTEGRATION_VALIDATOR_TOKENS", GATEWAY)
        .start()
        .await;
    let before = server.log_counts().lines;

    // Each reason from connections of its own: a peer is its address, not
    // its port.
    let authorizations = [
        None,
        Some(format!("Basic {ADMIN}")),
        Some(bearer(&"i".repeat(40))),
        Some(bearer(GATEWAY)),
    ];
    let started = tokio::time::Instant::now();
    let mut floods = tokio::task::JoinSet::new();
    for ((_, code), authorization) in REASONS.into_iter().zip(authorizations) {
        for _ in 0..2 {
            let client = server.client().await;
            let client = match &authorization {
                None => client,
                Some(value) => client.with_authorization(value),
            };
            floods.spawn(async move {
                for _ in 0..FLOOD / 2 {
                    expect_code(client.create("org-flood").await, code);
                }
            });
        }
    }
    floods.join_all().await;
    let flooded_for = started.elapsed();

    // The report comes every 10 s; wait until it has counted the whole flood.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let reported = loop {
        let reported = server
            .output()
            .iter()
            .filter_map(|line| reported_refusals(line))
            .collect::<Vec<_>>();
        let totals = reported.iter().fold([0; 4], |mut sum, counts| {
            sum.iter_mut().zip(counts).for_each(|(s, c)| *s += c);
            sum
        });
        if totals == [FLOOD; 4] {
            break reported;
        }
        assert!(
            tokio::time::Instant::now() < deadline && totals.iter().all(|&t| t <= FLOOD),
            "reported {totals:?} of {FLOOD} per reason: {:#?}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let output = server.output();
    let written = server.log_counts().lines - before;
    let first_lines: Vec<_> = output
        .iter()
        .filter(|line| line.contains(r#""message":"call refused""#))
        .collect();
    for (reason, _) in REASONS {
        assert!(
            first_lines.iter().any(|line| line.contains(reason)),
            "no line for {reason}: {output:#?}"
        );
    }
    // One line per reason per period, at most, plus that period's report.
    assert!(
        first_lines.len() <= REASONS.len() * reported.len(),
        "{} first lines in {} periods: {output:#?}",
        first_lines.len(),
        reported.len()
    );
    assert!(
        written <= (REASONS.len() as u64 + 1) * reported.len() as u64 && written < 50,
        "{} calls refused over {flooded_for:?} wrote {written} lines: {output:#?}",
        4 * FLOOD
    );
}
