//! Building the service (everything that can fail: connect, migrate, bind)
//! and running it until a shutdown future resolves.

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};
use tonic_web::GrpcWebLayer;
use tower::util::{MapResponseLayer, option_layer};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::{info, warn};

use crate::auth::{RequireRole, SHARED_METHODS, VALIDATOR_METHODS};
use crate::changes::{ChangeFeed, Dispatcher};
use crate::codec::corrected_status;
use crate::config::{AccessSettings, DatabaseSettings, Settings, TlsFiles, WebSettings};
use crate::dns::DnsVerifier;
use crate::error::Error;
use crate::expiry;
use crate::grpc::IntegrationApi;
use crate::grpc::outcome::{CallLog, Refusals};
use crate::hashing::Hasher;
use crate::health;
use crate::integrations::Integrations;
use crate::invalidation::{self, Subscription};
use crate::metrics::{Sampled, requests::RequestMetricsLayer};
use crate::proto::{self, integration_service_server::IntegrationServiceServer};
use crate::request_id::RequestIdLayer;
use crate::store::{Schema, Store};
use crate::throttle::{ActivationThrottle, ValidationThrottle};
use crate::usage::{self, UsageQueue};
use crate::validation::{Validator, cache::CredentialCache};
use metrics_exporter_prometheus::PrometheusHandle;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot create the database directory {path}: {source}")]
    DataDirectory {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the directory {0} of the SQLite database does not exist: create it, or give a \
         --database-url (DATABASE_URL) in a directory that does"
    )]
    NoDirectory(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sea_orm::DbErr),
    #[error(
        "the database has no schema{0}: run `integration-service migrate` with the same \
         --database-url first, or start without --no-migrate"
    )]
    SchemaBehind(String),
    #[error(
        "the database's schema is newer than this version of integration-service knows ({0}): \
         run the version that migrated it, or a newer one"
    )]
    SchemaAhead(String),
    #[error("cannot read the database's schema version: {0}")]
    Schema(#[source] sea_orm::DbErr),
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[source] sea_orm::DbErr),
    #[error("{0}")]
    Dns(#[source] crate::dns::DnsSetupError),
    #[error("cannot read the pending secrets' expiry: {0}")]
    Expiry(#[source] Error),
    #[error("cannot prepare argon2id: {0}")]
    Hasher(#[source] Error),
    #[error("cannot key the credential cache: {0}")]
    Cache(#[source] crate::domain::RandomUnavailable),
    #[error("cannot listen for secret activations: {0}")]
    Listen(#[source] sea_orm::sqlx::Error),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(
        "refusing to serve on {0} without authentication: configure tokens \
         (--admin-token-file, --validator-token-file, INTEGRATION_ADMIN_TOKENS, \
         INTEGRATION_VALIDATOR_TOKENS), listen on a loopback address, or pass \
         --insecure-no-auth if something else decides who can connect"
    )]
    Unprotected(SocketAddr),
    #[error("cannot read {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set up TLS with the certificate {cert} and the key {key}: {source}")]
    Tls {
        cert: String,
        key: String,
        source: tonic::transport::Error,
    },
}

/// A service that is connected, migrated and bound, ready to serve.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    store: Store,
    cache: Arc<CredentialCache>,
    activations: Option<Subscription>,
    changes: ChangeFeed,
    dispatcher: Dispatcher,
    /// Uses of secrets, written by a task `run_until_stopped` starts.
    uses: UsageQueue,
    refusals: Refusals,
    routes: Routes,
    health: HealthReporter,
    health_interval: Duration,
    tls: Option<ServerTlsConfig>,
    request_timeout: Duration,
    max_concurrent_streams: u32,
    /// The decode limit, named in the answer to a larger message.
    max_message_bytes: usize,
    web: WebSettings,
    /// The metrics endpoint, bound, with what its gauges read.
    metrics: Option<(TcpListener, PrometheusHandle, Sampled)>,
}

/// Opens the database. The default SQLite file's directory (`./data/`) is
/// created if it does not exist; the directory of any other SQLite file must
/// exist already, so that a mistyped path is refused rather than created.
pub async fn open_store(options: &DatabaseSettings) -> Result<Store, StartupError> {
    if let Some(dir) = options.sqlite_directory()
        && !dir.is_dir()
    {
        if options.url != crate::config::DEFAULT_SQLITE_URL {
            return Err(StartupError::NoDirectory(dir.display().to_string()));
        }
        std::fs::create_dir_all(&dir).map_err(|source| StartupError::DataDirectory {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Store::connect(options).await.map_err(StartupError::Connect)
}

impl Application {
    /// Connects to the database, applies migrations (unless told not to),
    /// prepares the hasher, and binds the listener. Port 0 picks a free
    /// port; [`Application::address`] tells which.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let tls = check_access(&settings.access, settings.listen)?;
        // Bound first, so that a taken port stops the start at once, before
        // the database is created or migrated and argon2 is timed.
        let listener = bind(settings.listen).await?;
        let address = local_address(&listener, settings.listen)?;
        let metrics_listener = match settings.metrics_listen {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        let store = open_store(&settings.database).await?;
        if settings.migrate {
            let applied = store
                .migrate()
                .await
                .map_err(|error| migrate_error(&error))?;
            log_migrations(&applied);
        } else {
            check_schema(&store).await?;
        }
        // Pending secrets generated before they could expire get their
        // expiry now, counted from their creation.
        let dated = store
            .backfill_expiry(settings.lifecycle.pending_secret_ttl)
            .await
            .map_err(StartupError::Expiry)?;
        if dated > 0 {
            info!(
                secrets = dated,
                "gave pending secrets from before expiry an expiry"
            );
        }
        let hasher = Hasher::start(&settings.hashing)
            .await
            .map_err(StartupError::Hasher)?;
        let cache = Arc::new(CredentialCache::new(&settings.cache).map_err(StartupError::Cache)?);
        let (changes, dispatcher) = ChangeFeed::new(&store, settings.change_stream_capacity);
        let activations = invalidation::subscribe(&store)
            .await
            .map_err(StartupError::Listen)?
            .map(|subscription| subscription.feeding(changes.remote()));
        let throttle = ValidationThrottle::new(
            &settings.throttle,
            settings.hashing.threads,
            hasher.verify_time(),
        );
        info!(
            verify_ms = hasher.verify_time().as_secs_f64() * 1e3,
            threads = settings.hashing.threads,
            cache_misses_per_second = throttle.overall_per_second(),
            "argon2id ready"
        );
        let integrations = Integrations::new(
            store.clone(),
            hasher.clone(),
            Arc::clone(&cache),
            ActivationThrottle::new(&settings.throttle),
            settings.default_domain.clone(),
            settings.lifecycle.pending_secret_ttl,
            Arc::new(DnsVerifier::new(settings.lifecycle.dns_resolver).map_err(StartupError::Dns)?),
        );
        let (usage, uses) = usage::recorder(&settings.usage);
        let metrics = match metrics_listener {
            Some(listener) => match crate::metrics::install() {
                Some(handle) => Some((
                    listener,
                    handle,
                    Sampled {
                        cache: Arc::clone(&cache),
                        hasher: hasher.clone(),
                        store: store.clone(),
                    },
                )),
                None => {
                    warn!(
                        "another metrics recorder is installed in this process; not serving metrics"
                    );
                    None
                }
            },
            None => None,
        };
        let validator = Validator::new(
            store.clone(),
            hasher,
            Arc::clone(&cache),
            throttle,
            settings.default_domain,
            usage,
        );
        let refusals = Refusals::default();
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // Every service gets the same decode limit: none of them needs
        // tonic's 4 MiB default, and each would otherwise buffer that much.
        let limit = settings.max_message_bytes;
        let routes = Routes::new(health_service.max_decoding_message_size(limit))
            .add_service(reflection().build_v1()?.max_decoding_message_size(limit))
            .add_service(
                reflection()
                    .build_v1alpha()?
                    .max_decoding_message_size(limit),
            );
        let api = IntegrationServiceServer::new(IntegrationApi::new(
            integrations,
            validator,
            changes.clone(),
            CallLog::new(refusals.clone()),
        ))
        .max_decoding_message_size(limit);
        let tokens = &settings.access.tokens;
        let routes = if tokens.is_empty() {
            routes.add_service(api)
        } else {
            routes.add_service(RequireRole::new(
                api,
                Arc::new(tokens.clone()),
                &VALIDATOR_METHODS,
                &SHARED_METHODS,
                refusals.auth().clone(),
            ))
        };

        Ok(Self {
            listener,
            address,
            store,
            cache,
            activations,
            changes,
            dispatcher,
            uses,
            refusals,
            routes,
            health,
            health_interval: settings.health_interval,
            tls,
            request_timeout: settings.request_timeout,
            max_message_bytes: settings.max_message_bytes,
            max_concurrent_streams: settings.max_concurrent_streams,
            web: settings.web,
            metrics,
        })
    }

    /// The address the service listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The address the metrics endpoint listens on, if it is on.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|(listener, _, _)| listener.local_addr().ok())
    }

    /// The database the service uses.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves the IntegrationService, health and reflection until `shutdown`
    /// resolves; then ends the change streams (which would never finish by
    /// themselves), reports NOT_SERVING, stops accepting calls, lets the
    /// calls in flight finish, writes the uses of secrets still queued
    /// (for at most `USAGE_FLUSH_WITHIN`), and closes the database pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let reporter = self.health;
        health::report(&reporter, ServingStatus::Serving).await;
        reporter
            .set_service_status(health::LIVENESS, ServingStatus::Serving)
            .await;
        let probe =
            health::watch_database(self.store.clone(), reporter.clone(), self.health_interval);
        let sweeper = expiry::sweep(self.store.clone());
        let usage_writer = self.uses.write_to(self.store.clone());
        let listener = self
            .activations
            .map(|subscription| subscription.follow(self.cache));
        let dispatcher = self.dispatcher.spawn();
        let changes = self.changes;
        let report = report_refusals(self.refusals);
        let metrics = self.metrics.map(|(listener, handle, sampled)| {
            if let Ok(address) = listener.local_addr() {
                info!(%address, "serving metrics at /metrics");
            }
            crate::metrics::endpoint::serve(listener, handle, sampled)
        });
        let draining = async move {
            shutdown.await;
            info!("shutting down: refusing new calls, finishing those in flight");
            changes.close();
            dispatcher.abort();
            probe.abort();
            sweeper.abort();
            report.abort();
            if let Some(metrics) = metrics {
                metrics.abort();
            }
            if let Some(listener) = listener {
                listener.abort();
            }
            health::report(&reporter, ServingStatus::NotServing).await;
            reporter
                .set_service_status(health::LIVENESS, ServingStatus::NotServing)
                .await;
        };

        info!(address = %self.address, "serving");
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        // A caller that opens a call and stalls is answered after the
        // request timeout; one that goes silent altogether is dropped when
        // it stops answering pings.
        let mut server = Server::builder()
            .accept_http1(self.web.grpc_web)
            .timeout(self.request_timeout)
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
        if let Some(tls) = self.tls {
            server = server.tls_config(tls)?;
        }
        let max_message_bytes = self.max_message_bytes;
        let served = server
            .layer(option_layer(self.web.grpc_web.then(|| cors(&self.web))))
            .layer(option_layer(self.web.grpc_web.then(GrpcWebLayer::new)))
            .layer(RequestIdLayer)
            .layer(RequestMetricsLayer)
            .layer(MapResponseLayer::new(move |response| {
                corrected_status(response, max_message_bytes)
            }))
            .add_routes(self.routes)
            .serve_with_incoming_shutdown(incoming, draining)
            .await;

        usage_writer.finish(USAGE_FLUSH_WITHIN).await;
        if let Err(error) = self.store.close().await {
            tracing::warn!(%error, "closing the database pool");
        }
        info!("stopped");
        served
    }
}

/// Refuses a database whose schema is not the one this binary knows (with
/// `--no-migrate`): it would answer every call INTERNAL.
async fn check_schema(store: &Store) -> Result<(), StartupError> {
    match store.schema().await.map_err(StartupError::Schema)? {
        Schema::Current => Ok(()),
        Schema::Empty => Err(StartupError::SchemaBehind(String::new())),
        Schema::Behind { pending } => Err(StartupError::SchemaBehind(format!(
            " this version needs ({pending} migrations are not applied)"
        ))),
        Schema::Ahead(which) => Err(StartupError::SchemaAhead(which)),
    }
}

/// A failed migration; a database a newer version migrated says so.
pub fn migrate_error(error: &sea_orm::DbErr) -> StartupError {
    match error {
        sea_orm::DbErr::Custom(message) if message.contains("is missing") => {
            StartupError::SchemaAhead(message.clone())
        }
        _ => StartupError::Migrate(error.clone()),
    }
}

/// Says what a migration did: which migrations it applied, or that there
/// was nothing to do.
pub fn log_migrations(applied: &[String]) {
    if applied.is_empty() {
        info!("the database schema is up to date; no migration to apply");
    } else {
        info!(count = applied.len(), migrations = ?applied, "migrations applied");
    }
}

async fn bind(address: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartupError::Bind { address, source })
}

fn local_address(listener: &TcpListener, asked: SocketAddr) -> Result<SocketAddr, StartupError> {
    listener.local_addr().map_err(|source| StartupError::Bind {
        address: asked,
        source,
    })
}

/// What browsers on the allowed origins may send and read: the headers of
/// gRPC-Web calls, the bearer token and `x-actor`, and the status trailers
/// the gRPC-Web layer turns into headers. An origin not in the list gets no
/// CORS headers, so its page cannot read an answer.
fn cors(web: &WebSettings) -> CorsLayer {
    let origins = web
        .cors_allow_origins
        .iter()
        .filter_map(|origin| http::HeaderValue::from_str(origin).ok());
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([http::Method::POST, http::Method::OPTIONS])
        .allow_headers([
            http::header::AUTHORIZATION,
            http::header::CONTENT_TYPE,
            http::HeaderName::from_static("x-grpc-web"),
            http::HeaderName::from_static("x-user-agent"),
            http::HeaderName::from_static("grpc-timeout"),
            http::HeaderName::from_static("x-actor"),
            http::HeaderName::from_static("x-request-id"),
            http::HeaderName::from_static("traceparent"),
            http::HeaderName::from_static("tracestate"),
        ])
        .expose_headers([
            http::HeaderName::from_static("grpc-status"),
            http::HeaderName::from_static("grpc-message"),
            http::HeaderName::from_static("grpc-status-details-bin"),
            http::HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600))
}

/// Applies the access policy: without tokens, only loopback, unless told
/// otherwise. Reads the TLS files, and says at start how callers are
/// authenticated, warning of what a reviewer would flag.
fn check_access(
    access: &AccessSettings,
    listen: SocketAddr,
) -> Result<Option<ServerTlsConfig>, StartupError> {
    let loopback = listen.ip().to_canonical().is_loopback();
    let (admins, validators) = access.tokens.counts();
    if access.tokens.is_empty() && !loopback {
        if !access.insecure_no_auth {
            return Err(StartupError::Unprotected(listen));
        }
        warn!(
            address = %listen,
            "serving WITHOUT authentication (--insecure-no-auth): anyone who can reach this \
             address can create integrations and change secrets"
        );
    } else if access.tokens.is_empty() {
        info!("no tokens configured: serving without authentication, on loopback only");
    } else {
        if admins == 0 {
            warn!("no admin tokens: every call but ValidateClient will be refused");
        }
        if validators == 0 {
            warn!("no validator tokens: every ValidateClient will be refused");
        }
        if access.tls.is_none() && !loopback {
            warn!(
                "tokens configured without TLS: they cross the network in clear unless a \
                 proxy or mesh encrypts the connection; see --tls-cert"
            );
        }
    }
    let tls = access.tls.as_ref().map(tls_config).transpose()?;
    info!(
        admin_tokens = admins,
        validator_tokens = validators,
        tls = tls.is_some(),
        mutual_tls = access.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        "access"
    );
    Ok(tls)
}

/// Reads the certificate, key and client CAs, and checks that rustls takes
/// them, so that a bad file stops the start rather than the first call.
fn tls_config(files: &TlsFiles) -> Result<ServerTlsConfig, StartupError> {
    let read = |what: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| StartupError::TlsFile {
            what,
            path: path.display().to_string(),
            source,
        })
    };
    let identity = Identity::from_pem(
        read("the TLS certificate", &files.cert)?,
        read("the TLS key", &files.key)?,
    );
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &files.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read("the client CA", ca)?));
    }
    Server::builder()
        .tls_config(config.clone())
        .map_err(|source| StartupError::Tls {
            cert: files.cert.display().to_string(),
            key: files.key.display().to_string(),
            source,
        })?;
    Ok(config)
}

/// How long a stop waits for the uses of secrets still queued to be
/// written: what a stop loses is at most the latest use of each secret,
/// which its next use, on any replica, records again.
const USAGE_FLUSH_WITHIN: Duration = Duration::from_secs(1);

/// How often an idle connection is pinged, and how long the peer has to
/// answer before the connection is closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the number of calls refused under load is logged; also the
/// period in which each peer's first refusal for want of the right token
/// gets a line of its own (see `crate::auth`).
const REFUSALS_REPORTED_EVERY: Duration = Duration::from_secs(10);

/// Logs, every [`REFUSALS_REPORTED_EVERY`], how many calls were refused
/// because the service was saturated, how many validations carried
/// malformed credentials, and how many calls were refused for want of the
/// right token (per reason), if any were; then starts the next period of
/// the token refusals' first lines.
fn report_refusals(refusals: Refusals) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(REFUSALS_REPORTED_EVERY);
        ticks.tick().await;
        let seconds = REFUSALS_REPORTED_EVERY.as_secs();
        loop {
            ticks.tick().await;
            let taken = refusals.take();
            if taken.saturated > 0 {
                tracing::warn!(
                    refused = taken.saturated,
                    seconds,
                    "calls refused by the throttles of failed validations or a saturated argon2 \
                     (RESOURCE_EXHAUSTED; see the --throttle-* and --argon2-queue settings)"
                );
            }
            if taken.activations > 0 {
                tracing::warn!(
                    refused = taken.activations,
                    seconds,
                    "ActivateSecret calls refused by their organization's budget of wrong values \
                     (--throttle-activation-failures-per-minute)"
                );
            }
            let malformed = taken.malformed;
            if malformed > 0 {
                tracing::info!(
                    validations = malformed,
                    seconds,
                    "validations with malformed credentials (refused without a lookup)"
                );
            }
            let unauthorized = refusals.auth().take();
            if unauthorized.total() > 0 {
                tracing::warn!(
                    no_token = unauthorized.no_token,
                    malformed_authorization = unauthorized.malformed_authorization,
                    unknown_token = unauthorized.unknown_token,
                    wrong_role = unauthorized.wrong_role,
                    past_line_limit = unauthorized.past_line_limit,
                    seconds,
                    "calls refused for want of the right token (the first per peer and \
                     reason had a line of its own)"
                );
            }
        }
    })
}
