//! The binary itself, as an operator runs it: its subcommands, its logs,
//! and its shutdown on SIGTERM.

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use integration_service::proto::{self, integration_service_client::IntegrationServiceClient};
use sea_orm::ConnectionTrait;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
};

use crate::helpers::{Backend, TestDatabase};

const BINARY: &str = env!("CARGO_BIN_EXE_integration-service");

/// A server process and everything it has written so far.
pub struct ServerProcess {
    child: Child,
    address: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
    /// The tasks reading stdout and stderr; they end when the process has
    /// exited and its pipes are drained.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts `integration-service serve` with JSON logs of every level, on
    /// a free port, and waits until it says where it listens.
    pub async fn start(database_url: &str, extra_args: &[&str]) -> Self {
        Self::start_logging(database_url, extra_args, "trace").await
    }

    /// Like [`ServerProcess::start`], logging only what the `RUST_LOG`
    /// filter `log` lets through (at least `info`, where it says it serves).
    /// Under load, tracing every HTTP/2 frame would cost more than the calls.
    pub async fn start_logging(database_url: &str, extra_args: &[&str], log: &str) -> Self {
        let mut child = Command::new(BINARY)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(extra_args)
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().expect("stdout"), output.clone()),
            collect(child.stderr.take().expect("stderr"), output.clone()),
        ];

        for _ in 0..300 {
            let address = output.lock().expect("lock").iter().find_map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                (event["message"] == "serving").then(|| event["address"].as_str()?.parse().ok())?
            });
            if let Some(address) = address {
                return Self {
                    child,
                    address,
                    output,
                    readers,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the server exited with {status}: {:#?}",
                    output.lock().expect("lock")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server never said it was serving");
    }

    pub async fn client(&self) -> IntegrationServiceClient<tonic::transport::Channel> {
        IntegrationServiceClient::new(self.channel().await)
    }

    /// A new HTTP/2 connection to the server.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.address))
            .expect("a URI")
            .connect()
            .await
            .expect("connected")
    }

    /// Whether the process is still running (it has not exited, panicked
    /// out or been killed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the process has written so far, one line each.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().expect("lock").clone()
    }

    /// Kills the process with SIGKILL, as a crash or the OOM killer would:
    /// no signal handler, no shutdown, no flush. Returns everything it wrote.
    pub async fn kill(mut self) -> Vec<String> {
        // On Unix, tokio's `start_kill` sends SIGKILL.
        self.child.start_kill().expect("SIGKILL sent");
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("a killed process exits at once")
            .expect("exit status");
        self.drain().await
    }

    /// Sends SIGTERM and waits for the process to exit; returns everything it
    /// wrote.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().expect("still running");
        let killed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        assert!(killed.is_ok_and(|s| s.success()), "SIGTERM sent");
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the server stops within 10 s of SIGTERM")
            .expect("exit status");
        (status, self.drain().await)
    }

    /// Waits for the readers to reach the end of the pipes of the exited
    /// process, then returns everything it wrote.
    async fn drain(&mut self) -> Vec<String> {
        for reader in self.readers.drain(..) {
            tokio::time::timeout(Duration::from_secs(10), reader)
                .await
                .expect("the pipes close when the process has exited")
                .expect("the reader ends cleanly");
        }
        self.output()
    }
}

fn collect(
    stream: impl AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            into.lock().expect("lock").push(line);
        }
    })
}

const DATABASE_PASSWORD: &str = "db-Pa55word-of-the-test";

fn with_password(url: &str, password: &str) -> String {
    let mut url = url::Url::parse(url).expect("a database URL");
    url.set_password(Some(password))
        .expect("a URL that can hold a password");
    url.into()
}

async fn no_secret_reaches_the_log(backend: Backend) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    // The test server trusts local connections, so a password is accepted
    // and ignored: it is here to show that it never reaches the log.
    let url = match backend {
        Backend::Postgres => with_password(&database.url, DATABASE_PASSWORD),
        Backend::Sqlite => database.url.clone(),
    };
    let server = ServerProcess::start(&url, &[]).await;
    let mut client = server.client().await;
    let org = "org-logs".to_owned();

    let integration = client
        .create_integration(proto::CreateIntegrationRequest {
            organization_id: org.clone(),
        })
        .await
        .expect("created")
        .into_inner()
        .integration
        .expect("an integration");
    let generate = || proto::GenerateSecretRequest {
        organization_id: org.clone(),
    };
    let discarded = client
        .generate_secret(generate())
        .await
        .expect("generated")
        .into_inner();
    let active = client
        .generate_secret(generate())
        .await
        .expect("generated")
        .into_inner();
    let value = active.client_secret.clone();
    let activate = |value: &str| proto::ActivateSecretRequest {
        organization_id: org.clone(),
        client_secret: value.to_owned(),
    };
    client
        .activate_secret(activate(&value))
        .await
        .expect("activated");
    client
        .activate_secret(activate(&discarded.client_secret))
        .await
        .expect_err("discarded");
    let mut typo = value.clone().into_bytes();
    typo[10] = if typo[10] == b'q' { b'r' } else { b'q' };
    let typo = String::from_utf8(typo).expect("ASCII");
    client
        .activate_secret(activate(&typo))
        .await
        .expect_err("typo");
    let validate = |value: &str| proto::ValidateClientRequest {
        client_id: integration.client_id.clone(),
        client_secret: value.to_owned(),
        ..Default::default()
    };
    for value in [&value, &typo, &discarded.client_secret] {
        client
            .validate_client(validate(value))
            .await
            .expect("answered");
    }
    let (status, output) = server.terminate().await;
    assert!(status.success(), "a clean exit on SIGTERM: {status}");

    let log = output.join("\n");
    for line in &output {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
    let stored_hashes: Vec<String> = {
        let store = sea_orm::Database::connect(&database.url)
            .await
            .expect("connected");
        let rows = store
            .query_all_raw(sea_orm::Statement::from_string(
                store.get_database_backend(),
                "SELECT hash FROM secrets",
            ))
            .await
            .expect("readable");
        rows.iter()
            .map(|r| r.try_get::<String>("", "hash").expect("a hash"))
            .collect()
    };
    assert_eq!(stored_hashes.len(), 2, "two secrets were stored");
    for secret in [&value, &discarded.client_secret, &typo] {
        // Any 8 consecutive characters of the random part would be a leak.
        for window in secret.as_bytes()[4..60].windows(8) {
            let window = std::str::from_utf8(window).expect("ASCII");
            assert!(
                !log.contains(window),
                "a piece of a secret ({window}) is in the log"
            );
        }
    }
    assert!(
        !log.contains(DATABASE_PASSWORD),
        "the database password is in the log"
    );
    for hash in &stored_hashes {
        let digest = hash.rsplit('$').next().expect("a PHC string");
        assert!(!log.contains(digest), "a stored hash is in the log");
    }

    // What did happen is in the log, once each, with the organization.
    for (message, times) in [
        ("integration created", 1),
        ("secret generated", 2),
        ("secret activated", 1),
        ("serving", 1),
        ("stopped", 1),
    ] {
        let events: Vec<serde_json::Value> = output
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|e: &serde_json::Value| e["message"] == message)
            .collect();
        assert_eq!(
            events.len(),
            times,
            "{message:?} logged {} times",
            events.len()
        );
        if message.contains("secret") || message.contains("integration") {
            assert!(
                events
                    .iter()
                    .all(|e| e["span"]["organization_id"] == "org-logs"),
                "{message:?} names the organization: {events:?}"
            );
        }
    }
    assert!(log.contains("wrong_secret"), "a failed validation says why");
}

#[tokio::test]
async fn no_secret_reaches_the_log_on_sqlite() {
    no_secret_reaches_the_log(Backend::Sqlite).await;
}

#[tokio::test]
async fn no_secret_reaches_the_log_on_postgres() {
    no_secret_reaches_the_log(Backend::Postgres).await;
}

async fn migrate_then_serve_without_migrating(backend: Backend) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let migrated = Command::new(BINARY)
        .args(["migrate", "--database-url", &database.url])
        .output()
        .await
        .expect("the binary runs");
    assert!(migrated.status.success(), "migrate: {migrated:?}");
    let again = Command::new(BINARY)
        .args(["migrate", "--database-url", &database.url])
        .output()
        .await
        .expect("the binary runs");
    assert!(
        again.status.success(),
        "migrating twice is harmless: {again:?}"
    );

    let server = ServerProcess::start(&database.url, &["--no-migrate"]).await;
    let mut client = server.client().await;
    client
        .create_integration(proto::CreateIntegrationRequest {
            organization_id: "org-cli".into(),
        })
        .await
        .expect("the migrated schema serves");
    let (status, _) = server.terminate().await;
    assert!(status.success());
}

#[tokio::test]
async fn migrate_prepares_the_schema_for_a_server_that_does_not_migrate_on_sqlite() {
    migrate_then_serve_without_migrating(Backend::Sqlite).await;
}

#[tokio::test]
async fn migrate_prepares_the_schema_for_a_server_that_does_not_migrate_on_postgres() {
    migrate_then_serve_without_migrating(Backend::Postgres).await;
}

#[tokio::test]
async fn settings_that_would_weaken_hashing_stop_the_start() {
    let output = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--argon2-memory-kib", "4096"])
        .env("DATABASE_URL", "sqlite::memory:")
        .output()
        .await
        .expect("the binary runs");
    assert!(!output.status.success(), "it must refuse to start");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("at least m=19456"), "it says why: {said}");
}

#[tokio::test]
async fn a_malformed_database_url_is_refused_without_repeating_its_password() {
    let output = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0"])
        .env(
            "DATABASE_URL",
            format!("postgres://svc:{DATABASE_PASSWORD}@db:notaport/x"),
        )
        .env("RUST_LOG", "trace")
        .output()
        .await
        .expect("the binary runs");
    assert!(!output.status.success(), "it must refuse to start");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("not a valid URL"), "it says why: {said}");
    assert!(
        !said.contains(DATABASE_PASSWORD),
        "it repeats the password: {said}"
    );
}
