//! The test harness: a real server on a free port, on a fresh database, and
//! a generated tonic client to call it with.
//!
//! Every scenario that touches storage runs twice, on SQLite and on
//! PostgreSQL, through [`on_every_backend!`]. PostgreSQL runs when
//! `TEST_DATABASE_URL` names a server (`postgres://postgres@127.0.0.1:5432/test`):
//! each test gets a database of its own there, dropped at the end.

use std::{
    io::Write,
    net::SocketAddr,
    num::NonZeroU32,
    sync::{Arc, Once},
    time::Duration,
};

use integration_service::{
    config::{
        AccessSettings, CacheSettings, DatabaseSettings, HashingSettings, Priority, Settings,
        ThrottleSettings,
    },
    domain::{DomainName, HashParams},
    proto::{self, integration_service_client::IntegrationServiceClient},
    startup::Application,
    store::Store,
};
use sea_orm::{ConnectionTrait, Database};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Status, transport::Channel};

/// The database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a scenario once per backend, as two tests named `sqlite` and
/// `postgres` in a module named after the scenario.
#[macro_export]
macro_rules! on_every_backend {
    ($(#[$meta:meta])* async fn $name:ident($($app:tt)+) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$meta])*
            async fn scenario($($app)+) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await;
                scenario(app.expect("SQLite is always available")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = $crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await {
                    scenario(app).await;
                }
            }
        }
    };
}

/// A running server and a client connected to it.
pub struct TestApp {
    pub address: SocketAddr,
    pub client: IntegrationServiceClient<Channel>,
    /// The server's own store, for inspecting the tables.
    pub store: Store,
    /// Shared with replicas and restarts; dropped with the last of them.
    pub database: Arc<TestDatabase>,
    settings: Settings,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// Starts the service on a fresh database of `backend`. `None` when the
/// backend is PostgreSQL and `TEST_DATABASE_URL` is unset.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

/// Like [`spawn_app`], with settings changed by `adjust` first.
pub async fn spawn_app_with(
    backend: Backend,
    adjust: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    let database = Arc::new(TestDatabase::create(backend).await?);
    let mut settings = settings(&database.url);
    adjust(&mut settings);
    Some(start(database, settings).await)
}

/// Starts the service on `database`, which may already hold data.
async fn start(database: Arc<TestDatabase>, settings: Settings) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("the service starts");
    let address = app.address();
    let store = app.store().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("the server runs until stopped");
    });
    let client = IntegrationServiceClient::connect(format!("http://{address}"))
        .await
        .expect("the client connects to the bound port");
    TestApp {
        address,
        client,
        store,
        database,
        settings,
        server: Some((stop, server)),
    }
}

/// The settings of a test server: a free port on loopback, the spec's
/// defaults otherwise.
pub fn settings(database_url: &str) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        database: DatabaseSettings {
            url: database_url.to_owned(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
        },
        migrate: true,
        default_domain: DomainName::parse(DEFAULT_DOMAIN).expect("a domain"),
        max_message_bytes: 16 * 1024,
        request_timeout: Duration::from_secs(30),
        max_concurrent_streams: 256,
        hashing: HashingSettings {
            params: HashParams::MINIMUM,
            threads: 2,
            queue_capacity: 256,
            // The test suite keeps the machine busy; a hash may wait.
            queue_timeout: Duration::from_secs(30),
            priority: Priority::Normal,
        },
        cache: CacheSettings {
            capacity: 1_000,
            revalidate: Duration::from_millis(500),
        },
        // Generous, so that only the tests of throttling meet it.
        throttle: ThrottleSettings {
            per_client_per_second: NonZeroU32::new(1_000).expect("non-zero"),
            per_client_burst: NonZeroU32::new(1_000).expect("non-zero"),
            overall_per_second: NonZeroU32::new(100_000),
            tracked_clients: 65_536,
            activation_failures_per_minute: NonZeroU32::new(1_000).expect("non-zero"),
        },
        health_interval: Duration::from_millis(200),
        access: AccessSettings::default(),
    }
}

/// The default domain test servers run with.
pub const DEFAULT_DOMAIN: &str = "login.test.example";

impl TestApp {
    /// Stops the server gracefully and waits until it has.
    pub async fn stop(&mut self) {
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            server.await.expect("the server task ends cleanly");
        }
    }

    /// Stops the server and starts a new one on the same database.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        start(self.database.clone(), self.settings.clone()).await
    }

    /// Starts a second server on the same database, as another replica.
    pub async fn replica(&self) -> TestApp {
        self.replica_with(|_| {}).await
    }

    /// Like [`TestApp::replica`], with settings changed by `adjust` first.
    pub async fn replica_with(&self, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings.clone();
        adjust(&mut settings);
        start(self.database.clone(), settings).await
    }

    /// A new connection to the server, for clients of other services.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .expect("a URI")
            .connect()
            .await
            .expect("connected")
    }

    pub fn backend(&self) -> Backend {
        self.database.backend
    }

    pub async fn create(&self, organization_id: &str) -> Result<proto::Integration, Status> {
        let response = self
            .client
            .clone()
            .create_integration(proto::CreateIntegrationRequest {
                organization_id: organization_id.to_owned(),
            })
            .await?;
        Ok(response.into_inner().integration.expect("an integration"))
    }

    pub async fn get(&self, organization_id: &str) -> Result<proto::Integration, Status> {
        let response = self
            .client
            .clone()
            .get_integration(proto::GetIntegrationRequest {
                organization_id: organization_id.to_owned(),
            })
            .await?;
        Ok(response.into_inner().integration.expect("an integration"))
    }

    /// Generates a secret; returns its value and metadata.
    pub async fn generate(&self, organization_id: &str) -> Result<(String, proto::Secret), Status> {
        let response = self
            .client
            .clone()
            .generate_secret(proto::GenerateSecretRequest {
                organization_id: organization_id.to_owned(),
            })
            .await?
            .into_inner();
        Ok((response.client_secret, response.secret.expect("a secret")))
    }

    pub async fn activate(
        &self,
        organization_id: &str,
        value: &str,
    ) -> Result<proto::Integration, Status> {
        let response = self
            .client
            .clone()
            .activate_secret(proto::ActivateSecretRequest {
                organization_id: organization_id.to_owned(),
                client_secret: value.to_owned(),
            })
            .await?;
        Ok(response.into_inner().integration.expect("an integration"))
    }

    pub async fn validate(
        &self,
        client_id: &str,
        value: &str,
    ) -> Result<proto::ValidateClientResponse, Status> {
        let response = self
            .client
            .clone()
            .validate_client(proto::ValidateClientRequest {
                client_id: client_id.to_owned(),
                client_secret: value.to_owned(),
                ..Default::default()
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Whether the pair validates; panics on an error status.
    pub async fn is_valid(&self, client_id: &str, value: &str) -> bool {
        self.validate(client_id, value)
            .await
            .expect("ValidateClient answers")
            .valid
    }

    /// Polls until the pair no longer validates; panics if it still does
    /// after `within`. Returns how long it took.
    pub async fn becomes_invalid(
        &self,
        client_id: &str,
        value: &str,
        within: Duration,
    ) -> Duration {
        let started = std::time::Instant::now();
        while self.is_valid(client_id, value).await {
            assert!(
                started.elapsed() < within,
                "still valid {:?} after it was revoked",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started.elapsed()
    }

    /// Creates an integration with an active secret; returns its client ID
    /// and the secret's value.
    pub async fn ready(&self, organization_id: &str) -> (String, String) {
        let integration = self.create(organization_id).await.expect("created");
        let (value, _) = self.generate(organization_id).await.expect("generated");
        self.activate(organization_id, &value)
            .await
            .expect("activated");
        (integration.client_id, value)
    }

    /// Every secret row of `organization_id`: (state, hash, hint).
    pub async fn secret_rows(&self, organization_id: &str) -> Vec<(String, String, String)> {
        let sql = format!(
            "SELECT state, hash, hint FROM secrets WHERE organization_id = '{organization_id}' \
             ORDER BY created_at"
        );
        let rows = self
            .store
            .connection()
            .query_all_raw(sea_orm::Statement::from_string(self.store.backend(), sql))
            .await
            .expect("the secrets table is readable");
        rows.iter()
            .map(|row| {
                (
                    row.try_get("", "state").expect("state"),
                    row.try_get("", "hash").expect("hash"),
                    row.try_get("", "hint").expect("hint"),
                )
            })
            .collect()
    }

    /// How many of the organization's secrets are in `state`.
    pub async fn count_in_state(&self, organization_id: &str, state: &str) -> usize {
        self.secret_rows(organization_id)
            .await
            .iter()
            .filter(|(s, _, _)| s == state)
            .count()
    }

    /// Every table, rendered as text: what someone with a copy of the
    /// database could read.
    pub async fn dump_tables(&self) -> String {
        let mut dump = String::new();
        for table in ["integrations", "secrets"] {
            let sql = match self.backend() {
                Backend::Postgres => format!("SELECT row_to_json(t)::text AS line FROM {table} t"),
                Backend::Sqlite => format!(
                    "SELECT {} AS line FROM {table}",
                    match table {
                        "integrations" =>
                            "organization_id || client_id || coalesce(custom_domain, '')",
                        _ => "hex(id) || organization_id || state || hash || hint",
                    }
                ),
            };
            let rows = self
                .store
                .connection()
                .query_all_raw(sea_orm::Statement::from_string(self.store.backend(), sql))
                .await
                .expect("tables are readable");
            for row in rows {
                let line: String = row.try_get("", "line").expect("a text line");
                dump.push_str(&line);
                dump.push('\n');
            }
        }
        dump
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            server.abort();
        }
    }
}

/// A database created for one test, removed when dropped.
pub struct TestDatabase {
    pub backend: Backend,
    pub url: String,
    /// PostgreSQL: the server's administrative URL and the database's name.
    postgres: Option<(String, String)>,
    /// SQLite: the directory holding the file.
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A new, empty database. `None` for PostgreSQL without
    /// `TEST_DATABASE_URL`.
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}/integration.db?mode=rwc", dir.path().display());
                Some(Self {
                    backend,
                    url,
                    postgres: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = postgres_url()?;
                let name = format!("integration_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("TEST_DATABASE_URL names a reachable PostgreSQL server");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("a test database can be created");
                let _ = admin.close().await;
                Some(Self {
                    backend,
                    url: with_database(&admin_url, &name),
                    postgres: Some((admin_url, name)),
                    _dir: None,
                })
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot block on async
        // work: drop the database from a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = dropped.join();
    }
}

/// `TEST_DATABASE_URL`, or `None` after saying once, on the terminal, that
/// the PostgreSQL half of the suite is skipped.
fn postgres_url() -> Option<String> {
    static NOTICE: Once = Once::new();
    let url = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        NOTICE.call_once(|| {
            // Written straight to stderr: the test harness captures print!.
            let _ = writeln!(
                std::io::stderr(),
                "\nnote: TEST_DATABASE_URL is not set, so the PostgreSQL tests pass without \
                 running; set it (e.g. postgres://postgres@127.0.0.1:5432/test) to run them\n"
            );
        });
    }
    url
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (server, _) = base
        .rsplit_once('/')
        .filter(|(server, _)| server.contains("//") && !server.ends_with('/'))
        .expect("TEST_DATABASE_URL has the form postgres://user@host:port/database");
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

/// Asserts that `result` failed with `code`, and returns its message.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: tonic::Code) -> String {
    match result {
        Ok(value) => panic!("expected {code:?}, got a success: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "status: {status:?}");
            status.message().to_owned()
        }
    }
}
