//! Who may call: bearer tokens per role, TLS and mutual TLS, the refusal to
//! serve a network unprotected, and the limit on wrong activations.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use integration_service::{
    auth::{Token, Tokens},
    config::{Settings, TlsFiles},
    proto::{self, integration_service_client::IntegrationServiceClient},
    startup::{Application, StartupError},
};
use tokio::{io::AsyncReadExt, process::Command, sync::oneshot};
use tonic::{
    Code, Request,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::{Backend, TestDatabase, expect_code, settings, spawn_app_with};

const ADMIN: &str = "admin-token-0123456789abcdef0123456789abcdef";
const GATEWAY: &str = "validator-token-0123456789abcdef0123456789ab";

fn tokens() -> Tokens {
    let parse = |t: &str| Token::parse(t).expect("a valid token");
    Tokens::new(&[parse(ADMIN)], &[parse(GATEWAY)]).expect("distinct tokens")
}

/// `message` with `authorization: <value>` metadata, if any.
fn authorized<T>(message: T, value: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = value {
        let value: MetadataValue<_> = value.parse().expect("ASCII metadata");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn create(organization_id: &str) -> proto::CreateIntegrationRequest {
    proto::CreateIntegrationRequest {
        organization_id: organization_id.into(),
    }
}

fn get(organization_id: &str) -> proto::GetIntegrationRequest {
    proto::GetIntegrationRequest {
        organization_id: organization_id.into(),
    }
}

fn validate(client_id: &str, value: &str) -> proto::ValidateClientRequest {
    proto::ValidateClientRequest {
        client_id: client_id.into(),
        client_secret: value.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_calls_its_own_methods_and_nothing_else() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.access.tokens = tokens())
        .await
        .expect("SQLite");
    let mut client = app.client.clone();
    let admin = Some(bearer(ADMIN));
    let gateway = Some(bearer(GATEWAY));

    // The dashboard's token does the dashboard's work.
    let integration = client
        .create_integration(authorized(create("org-auth"), admin.as_deref()))
        .await
        .expect("admin creates")
        .into_inner()
        .integration
        .expect("an integration");
    let value = client
        .generate_secret(authorized(
            proto::GenerateSecretRequest {
                organization_id: "org-auth".into(),
            },
            admin.as_deref(),
        ))
        .await
        .expect("admin generates")
        .into_inner()
        .client_secret;
    client
        .activate_secret(authorized(
            proto::ActivateSecretRequest {
                organization_id: "org-auth".into(),
                client_secret: value.clone(),
            },
            admin.as_deref(),
        ))
        .await
        .expect("admin activates");

    // The gateway's token validates, and the scheme is case-insensitive.
    let lower = format!("bearer {GATEWAY}");
    for header in [gateway.as_deref(), Some(lower.as_str())] {
        let answer = client
            .validate_client(authorized(validate(&integration.client_id, &value), header))
            .await
            .expect("the validator validates")
            .into_inner();
        assert!(answer.valid);
    }

    // Each role is refused the other's methods.
    let message = expect_code(
        client
            .get_integration(authorized(get("org-auth"), gateway.as_deref()))
            .await,
        Code::PermissionDenied,
    );
    assert!(message.contains("admin"), "{message}");
    let message = expect_code(
        client
            .validate_client(authorized(
                validate(&integration.client_id, &value),
                admin.as_deref(),
            ))
            .await,
        Code::PermissionDenied,
    );
    assert!(message.contains("validator"), "{message}");
    expect_code(
        client
            .create_integration(authorized(create("org-by-gateway"), gateway.as_deref()))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        client
            .get_integration(authorized(get("org-by-gateway"), admin.as_deref()))
            .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_known_token_are_unauthenticated_and_change_nothing() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.access.tokens = tokens())
        .await
        .expect("SQLite");
    let mut client = app.client.clone();
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
        let message = expect_code(
            client
                .create_integration(authorized(create("org-intruder"), header))
                .await,
            Code::Unauthenticated,
        );
        assert!(!message.contains(ADMIN), "the message repeats a token");
        expect_code(
            client
                .validate_client(authorized(validate("client", "secret"), header))
                .await,
            Code::Unauthenticated,
        );
    }
    expect_code(
        client
            .get_integration(authorized(get("org-intruder"), Some(&bearer(ADMIN))))
            .await,
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
    let database = TestDatabase::create(Backend::Sqlite).await.expect("SQLite");
    let mut open = settings(&database.url);
    open.listen = "0.0.0.0:0".parse().expect("an address");
    match Application::build(open.clone()).await {
        Err(StartupError::Unprotected(address)) => {
            assert_eq!(address, open.listen);
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

const BINARY: &str = env!("CARGO_BIN_EXE_integration-service");

/// Runs the binary until it exits or `wait` passes; returns whether it was
/// still running, and what it wrote.
async fn run_binary(
    args: &[&str],
    envs: &[(&str, &str)],
    database_url: &str,
    wait: Duration,
) -> (bool, String) {
    let mut child = Command::new(BINARY)
        .args(["--log-format", "json"])
        .args(args)
        .envs(envs.iter().copied())
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let running = tokio::time::timeout(wait, child.wait()).await.is_err();
    if running {
        child.start_kill().expect("killed");
        let _ = child.wait().await;
    }
    let mut output = String::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let mut stream = stream;
        let _ = stream.read_to_string(&mut output).await;
    }
    (running, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_an_open_network_and_warns_when_told_to_allow_one() {
    let database = TestDatabase::create(Backend::Sqlite).await.expect("SQLite");
    let (running, output) = run_binary(
        &["--listen", "0.0.0.0:0"],
        &[],
        &database.url,
        Duration::from_secs(20),
    )
    .await;
    assert!(!running, "it served without authentication: {output}");
    assert!(
        output.contains("refusing to serve on 0.0.0.0:0 without authentication"),
        "{output}"
    );

    let (running, output) = run_binary(
        &["--listen", "0.0.0.0:0", "--insecure-no-auth"],
        &[],
        &database.url,
        Duration::from_secs(5),
    )
    .await;
    assert!(running, "--insecure-no-auth should start it: {output}");
    assert!(output.contains("WITHOUT authentication"), "{output}");

    // Tokens from the environment: it starts, and no token reaches the log.
    let (running, output) = run_binary(
        &["--listen", "0.0.0.0:0"],
        &[
            ("INTEGRATION_ADMIN_TOKENS", ADMIN),
            ("INTEGRATION_VALIDATOR_TOKENS", GATEWAY),
        ],
        &database.url,
        Duration::from_secs(5),
    )
    .await;
    assert!(running, "tokens should let it start: {output}");
    assert!(output.contains(r#""admin_tokens":1"#), "{output}");
    assert!(output.contains("tokens configured without TLS"), "{output}");
    assert!(!output.contains(ADMIN) && !output.contains(GATEWAY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_are_logged_with_their_reason_and_never_the_token() {
    let database = TestDatabase::create(Backend::Sqlite).await.expect("SQLite");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = {
        let url = database.url.clone();
        tokio::spawn(async move {
            run_binary(
                &["--listen", &listen],
                &[
                    ("INTEGRATION_ADMIN_TOKENS", ADMIN),
                    ("INTEGRATION_VALIDATOR_TOKENS", GATEWAY),
                ],
                &url,
                Duration::from_secs(8),
            )
            .await
        })
    };
    let channel = connect_when_up(&format!("http://127.0.0.1:{port}")).await;
    let mut client = IntegrationServiceClient::new(channel);
    let intruder = bearer(&"i".repeat(40));
    expect_code(
        client
            .create_integration(authorized(create("org-log"), Some(&intruder)))
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        client
            .create_integration(authorized(create("org-log"), Some(&bearer(GATEWAY))))
            .await,
        Code::PermissionDenied,
    );
    let (_, output) = server.await.expect("joined");
    let refusals: Vec<_> = output
        .lines()
        .filter(|l| l.contains("call refused"))
        .collect();
    assert_eq!(refusals.len(), 2, "{output}");
    assert!(refusals[0].contains("unknown_token"), "{}", refusals[0]);
    assert!(refusals[0].contains("CreateIntegration"), "{}", refusals[0]);
    assert!(refusals[1].contains("wrong_role"), "{}", refusals[1]);
    assert!(
        !output.contains(&"i".repeat(40)) && !output.contains(GATEWAY),
        "a token reached the log"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Connects to `uri`, retrying while the server starts.
async fn connect_when_up(uri: &str) -> Channel {
    for _ in 0..200 {
        if let Ok(channel) = Channel::from_shared(uri.to_owned())
            .expect("a URI")
            .connect()
            .await
        {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{uri} never answered");
}

/// A certificate authority, and certificates it signs, as PEM.
struct Pki {
    ca_cert: rcgen::Certificate,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca_key = rcgen::KeyPair::generate().expect("a key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("a CA");
        Self {
            ca_cert,
            ca_params,
            ca_key,
        }
    }

    fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    /// A certificate for `name` (PEM) and its key (PEM).
    fn issue(&self, name: &str, usage: rcgen::ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().expect("a key");
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

/// A server on TLS files written to `dir`, running until the sender drops.
async fn spawn_tls_server(
    dir: &Path,
    pki: &Pki,
    client_ca: Option<&Pki>,
    database: &TestDatabase,
) -> (SocketAddr, oneshot::Sender<()>) {
    let (cert, key) = pki.issue("localhost", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.join("cert.pem"), cert).expect("written");
    std::fs::write(dir.join("key.pem"), key).expect("written");
    let mut settings: Settings = settings(&database.url);
    settings.access.tls = Some(TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        client_ca: client_ca.map(|ca| {
            std::fs::write(dir.join("client-ca.pem"), ca.ca_pem()).expect("written");
            dir.join("client-ca.pem")
        }),
    });
    let app = Application::build(settings).await.expect("TLS starts");
    let address = app.address();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    (address, stop)
}

/// A TLS channel that trusts `ca`, presenting `identity` if given.
async fn tls_channel(
    address: SocketAddr,
    ca: &Pki,
    identity: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.ca_pem()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{address}"))
        .expect("a URI")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A call through `channel`, or the reason it failed.
async fn get_through(channel: Channel) -> Result<(), tonic::Status> {
    IntegrationServiceClient::new(channel)
        .get_integration(get("org-tls"))
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_service_answers_and_plaintext_gets_nothing() {
    let dir = tempfile::tempdir().expect("a directory");
    let database = TestDatabase::create(Backend::Sqlite).await.expect("SQLite");
    let pki = Pki::new("test CA");
    let (address, _stop) = spawn_tls_server(dir.path(), &pki, None, &database).await;

    let channel = tls_channel(address, &pki, None)
        .await
        .expect("TLS connects");
    expect_code(get_through(channel).await, Code::NotFound);

    let plaintext = Channel::from_shared(format!("http://{address}"))
        .expect("a URI")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let status = get_through(channel).await.expect_err("plaintext refused");
        assert_ne!(status.code(), Code::NotFound, "plaintext reached a handler");
    }

    let stranger = Pki::new("another CA");
    if let Ok(channel) = tls_channel(address, &stranger, None).await {
        get_through(channel)
            .await
            .expect_err("a client that does not trust the server's CA must not get through");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_callers_with_its_certificates_get_in() {
    let dir = tempfile::tempdir().expect("a directory");
    let database = TestDatabase::create(Backend::Sqlite).await.expect("SQLite");
    let pki = Pki::new("test CA");
    let clients = Pki::new("client CA");
    let (address, _stop) = spawn_tls_server(dir.path(), &pki, Some(&clients), &database).await;

    let client_identity = clients.issue("gateway", rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let channel = tls_channel(address, &pki, Some(client_identity))
        .await
        .expect("mutual TLS connects");
    expect_code(get_through(channel).await, Code::NotFound);

    for identity in [
        None,
        Some(pki.issue("rogue", rcgen::ExtendedKeyUsagePurpose::ClientAuth)),
    ] {
        if let Ok(channel) = tls_channel(address, &pki, identity).await {
            let status = get_through(channel)
                .await
                .expect_err("a caller without a certificate of the client CA is refused");
            assert_ne!(status.code(), Code::NotFound, "it reached a handler");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tls_file_stops_the_start_with_its_path() {
    let dir = tempfile::tempdir().expect("a directory");
    let database = TestDatabase::create(Backend::Sqlite).await.expect("SQLite");
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").expect("written");
    std::fs::write(dir.path().join("key.pem"), "not a key").expect("written");
    for (cert, key) in [("missing.pem", "key.pem"), ("cert.pem", "key.pem")] {
        let mut settings = settings(&database.url);
        settings.access.tls = Some(TlsFiles {
            cert: dir.path().join(cert),
            key: dir.path().join(key),
            client_ca: None,
        });
        let error = Application::build(settings)
            .await
            .err()
            .expect("refused to start");
        let message = error.to_string();
        assert!(
            message.contains("TLS"),
            "the message says what is wrong: {message}"
        );
        assert!(
            message.contains(&dir.path().join(cert).display().to_string()),
            "and names the file: {message}"
        );
    }
}

async fn wrong_activations_are_throttled_per_organization(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.throttle.activation_failures_per_minute = std::num::NonZeroU32::new(3).expect("3");
    })
    .await
    else {
        return;
    };
    app.create("org-guessed").await.expect("created");
    app.create("org-bystander").await.expect("created");
    let (value, _) = app.generate("org-guessed").await.expect("generated");
    let (other, _) = app.generate("org-bystander").await.expect("generated");
    let made_up = integration_service::domain::ClientSecret::generate().expect("RNG");

    // Wrong values (well formed or not) spend the budget; the fourth
    // failure puts the organization over it.
    for wrong in [made_up.expose(), "cas_typo", made_up.expose(), "x"] {
        expect_code(
            app.activate("org-guessed", wrong).await,
            Code::FailedPrecondition,
        );
    }
    let message = expect_code(
        app.activate("org-guessed", &value).await,
        Code::ResourceExhausted,
    );
    assert!(message.contains("wait"), "{message}");
    app.activate("org-bystander", &other)
        .await
        .expect("another organization is not affected");
    assert_eq!(
        app.count_in_state("org-guessed", "pending").await,
        1,
        "the refused activation changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_activations_are_throttled_per_organization_on_sqlite() {
    wrong_activations_are_throttled_per_organization(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_activations_are_throttled_per_organization_on_postgres() {
    wrong_activations_are_throttled_per_organization(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_activations_never_spend_the_budget() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.throttle.activation_failures_per_minute = std::num::NonZeroU32::MIN;
    })
    .await
    .expect("SQLite");
    app.create("org-busy").await.expect("created");
    for _ in 0..3 {
        let (value, _) = app.generate("org-busy").await.expect("generated");
        app.activate("org-busy", &value).await.expect("activated");
        app.activate("org-busy", &value)
            .await
            .expect("a retried activation succeeds too");
    }
}
