//! The service in the test's own process: a real server on a free port of
//! loopback, on a fresh database, with a client connected to it.

use std::{net::SocketAddr, num::NonZeroU32, ops::Deref, sync::Arc, time::Duration};

use integration_service::{
    config::{
        AccessSettings, CacheSettings, DatabaseSettings, HashingSettings, LifecycleSettings,
        Priority, Settings, ThrottleSettings, UsageSettings, WebSettings,
    },
    domain::{DomainName, HashParams},
    startup::Application,
    store::Store,
};
use sea_orm::DatabaseConnection;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

use crate::{
    client::Client,
    database::{Backend, TestDatabase},
    tables::{self, SecretRow},
};

/// The default domain test servers run with.
pub const DEFAULT_DOMAIN: &str = "login.test.example";

/// The settings of a test server on `database_url`: a free port on
/// loopback, the spec's defaults otherwise, except where a comment says why.
pub fn test_settings(database_url: &str) -> Settings {
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
        change_stream_capacity: 1024,
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
            per_source_per_second: NonZeroU32::new(1_000).expect("non-zero"),
            per_source_burst: NonZeroU32::new(1_000).expect("non-zero"),
            overall_per_second: NonZeroU32::new(100_000),
            tracked_clients: 65_536,
            activation_failures_per_minute: NonZeroU32::new(1_000).expect("non-zero"),
        },
        health_interval: Duration::from_millis(200),
        access: AccessSettings::default(),
        lifecycle: LifecycleSettings {
            pending_secret_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            // Tests that verify domains point it at their own DNS server.
            dns_resolver: None,
        },
        usage: UsageSettings {
            interval: Duration::from_secs(60),
            tracked_secrets: 1_000,
        },
        metrics_listen: None,
        web: WebSettings::default(),
    }
}

/// A running server and a client connected to it. It dereferences to its
/// [`Client`], so `app.create(..)` calls the server; it stops the server
/// when dropped.
pub struct TestApp {
    pub address: SocketAddr,
    pub client: Client,
    /// The server's own store, for inspecting the tables.
    pub store: Store,
    /// Shared with replicas and restarts; dropped with the last of them.
    pub database: Arc<TestDatabase>,
    settings: Settings,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// Starts the service on a fresh database of `backend` with the test
/// settings. `None` when the backend is PostgreSQL and `TEST_DATABASE_URL`
/// is unset.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

/// Like [`spawn_app`], with the settings changed by `adjust` first.
pub async fn spawn_app_with(
    backend: Backend,
    adjust: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    let database = Arc::new(TestDatabase::create(backend).await?);
    let mut settings = test_settings(database.url());
    adjust(&mut settings);
    Some(TestApp::start(database, settings).await)
}

impl TestApp {
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
        // Lazy, so that a server with TLS (which this plaintext client cannot
        // reach) starts too; the listener is bound already, so the first
        // call connects.
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("a URI")
            .connect_lazy();
        TestApp {
            address,
            client: Client::new(channel),
            store,
            database,
            settings,
            server: Some((stop, server)),
        }
    }

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
        TestApp::start(self.database.clone(), self.settings.clone()).await
    }

    /// Starts a second server on the same database, as another replica.
    pub async fn replica(&self) -> TestApp {
        self.replica_with(|_| {}).await
    }

    /// Like [`TestApp::replica`], with the settings changed by `adjust` first.
    pub async fn replica_with(&self, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings.clone();
        adjust(&mut settings);
        TestApp::start(self.database.clone(), settings).await
    }

    /// The settings the server runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A new connection to the server, for clients of other services
    /// (health, reflection) or calls that must not share one.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .expect("a URI")
            .connect()
            .await
            .expect("connected")
    }

    /// A client on the app's connection whose calls carry `token` as a
    /// bearer token.
    pub fn client_with_token(&self, token: &str) -> Client {
        self.client.clone().with_token(token)
    }

    pub fn backend(&self) -> Backend {
        self.database.backend()
    }

    /// The server's own connection to its database, for [`crate::tables`].
    pub fn tables(&self) -> &DatabaseConnection {
        self.store.connection()
    }

    /// Every secret row of `organization_id`, oldest first.
    pub async fn secret_rows(&self, organization_id: &str) -> Vec<SecretRow> {
        tables::secret_rows_of(self.tables(), organization_id).await
    }

    /// How many of the organization's secrets are in `state`.
    pub async fn count_in_state(&self, organization_id: &str, state: &str) -> usize {
        tables::count_in_state(self.tables(), organization_id, state).await
    }

    /// Every table, rendered as text: what someone with a copy of the
    /// database could read.
    pub async fn dump_tables(&self) -> String {
        tables::dump_tables(self.tables()).await
    }
}

impl Deref for TestApp {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
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
