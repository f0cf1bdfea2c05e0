//! Flags and environment variables, turned into [`Settings`]. Every flag
//! also reads an environment variable, so the service configures the same
//! way from a shell, a container or an orchestrator.

use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use super::{
    AccessSettings, CacheSettings, DEFAULT_SQLITE_URL, DatabaseSettings, HashingSettings,
    HealthCheckSettings, LifecycleSettings, LogFormat, Priority, Settings, TelemetrySettings,
    ThrottleSettings, TlsFiles, UsageSettings, WebSettings,
};
use crate::auth::{Token, Tokens};
use crate::domain::{DomainName, HashParams};

/// CentralAuth's integration service: each organization's login domain,
/// client ID and client secret.
#[derive(Debug, Parser)]
#[command(
    name = "integration-service",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `serve`'s flags, accepted without the subcommand.
    #[command(flatten)]
    serve: ServeArgs,
}

// Built once per process: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gRPC API (the default).
    Serve(ServeArgs),
    /// Apply pending database migrations, then exit.
    Migrate(MigrateArgs),
    /// Ask a running server's health service whether it is SERVING; exit 0
    /// if it is, 1 otherwise (for a container's health check).
    HealthCheck(HealthCheckArgs),
}

/// What the binary was asked to do.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Action {
    Serve(Settings),
    Migrate(DatabaseSettings),
    HealthCheck(HealthCheckSettings),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// IP address and port to serve gRPC on (127.0.0.1:50051, [::1]:50051,
    /// 0.0.0.0:50051; localhost:50051 is 127.0.0.1:50051).
    #[arg(long, env = "INTEGRATION_LISTEN", default_value = "127.0.0.1:50051", value_parser = parse_address)]
    listen: SocketAddr,

    /// Login domain of organizations without a custom domain.
    #[arg(
        long,
        env = "INTEGRATION_DEFAULT_DOMAIN",
        default_value = "centralauth.com"
    )]
    default_domain: DomainName,

    /// Seconds a generated secret may stay PENDING before it is DISCARDED
    /// (1 to 31536000, a year).
    #[arg(
        long,
        env = "INTEGRATION_PENDING_SECRET_TTL_SECS",
        default_value_t = 7 * 24 * 60 * 60,
        value_parser = clap::value_parser!(u64).range(1..=365 * 24 * 60 * 60)
    )]
    pending_secret_ttl_secs: u64,

    /// The DNS server (an `ip:port`) VerifyDomain asks for TXT records;
    /// by default the system's resolvers.
    #[arg(long, env = "INTEGRATION_DNS_RESOLVER")]
    dns_resolver: Option<SocketAddr>,

    /// Do not apply pending migrations at start (run `migrate` separately).
    #[arg(long, env = "INTEGRATION_NO_MIGRATE")]
    no_migrate: bool,

    /// Largest request message accepted, in bytes; larger ones are refused
    /// with RESOURCE_EXHAUSTED before they are read.
    #[arg(
        long,
        env = "INTEGRATION_MAX_MESSAGE_BYTES",
        default_value_t = 16 * 1024,
        value_parser = clap::value_parser!(u32).range(1024..=4 * 1024 * 1024)
    )]
    max_message_bytes: u32,

    /// Seconds a call may take from its first byte to its answer, however
    /// slowly the caller sends it; then it fails CANCELLED. Callers' own
    /// deadlines (grpc-timeout) apply within it.
    #[arg(long, env = "INTEGRATION_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    request_timeout_secs: u64,

    /// Calls one connection may have in flight at once (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(
        long,
        env = "INTEGRATION_MAX_CONCURRENT_STREAMS",
        default_value_t = 256
    )]
    max_concurrent_streams: u32,

    /// argon2id memory cost of new secrets, in KiB (19456 to 262144).
    /// Secrets stored at a lower cost are stored again at this one when
    /// they next verify.
    #[arg(long, env = "INTEGRATION_ARGON2_MEMORY_KIB", default_value_t = HashParams::MINIMUM.memory_kib)]
    argon2_memory_kib: u32,

    /// argon2id passes over memory for new secrets (2 to 16).
    #[arg(long, env = "INTEGRATION_ARGON2_ITERATIONS", default_value_t = HashParams::MINIMUM.iterations)]
    argon2_iterations: u32,

    /// argon2id lanes for new secrets (1 to 8).
    #[arg(long, env = "INTEGRATION_ARGON2_PARALLELISM", default_value_t = HashParams::MINIMUM.parallelism)]
    argon2_parallelism: u32,

    /// Scheduling of the argon2 threads: `idle` runs them only on CPU that
    /// requests leave free, so a flood of wrong secrets cannot slow cached
    /// validations; `normal` lets them compete.
    #[arg(long, env = "INTEGRATION_ARGON2_PRIORITY", value_enum, default_value_t = Priority::Idle)]
    argon2_priority: Priority,

    /// Calls that may wait for an argon2 thread; more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "INTEGRATION_ARGON2_QUEUE", default_value_t = 256)]
    argon2_queue: usize,

    /// Milliseconds a call may wait for its hash or verify before it fails
    /// UNAVAILABLE.
    #[arg(long, env = "INTEGRATION_ARGON2_TIMEOUT_MS", default_value_t = 2_000)]
    argon2_timeout_ms: u64,

    /// Clients whose verified secret is cached, at most; also the number of
    /// client IDs the throttle tracks.
    #[arg(long, env = "INTEGRATION_CACHE_CAPACITY", default_value_t = 100_000)]
    cache_capacity: u64,

    /// Milliseconds a cached verification is trusted before it is checked
    /// against the database again: the longest a revoked secret can validate
    /// on a replica that missed the activation's notification.
    #[arg(long, env = "INTEGRATION_CACHE_REVALIDATE_MS", default_value_t = 500)]
    cache_revalidate_ms: u64,

    /// Failed validations (cache misses that did not verify) per second
    /// allowed per client ID and remote_address; per client ID for checks
    /// that send no remote_address.
    #[arg(long, env = "INTEGRATION_THROTTLE_CLIENT_PER_SECOND", default_value_t = nz(2))]
    throttle_client_per_second: NonZeroU32,

    /// Failed validations one client ID may make from one address in a
    /// burst.
    #[arg(long, env = "INTEGRATION_THROTTLE_CLIENT_BURST", default_value_t = nz(10))]
    throttle_client_burst: NonZeroU32,

    /// Failed validations per second allowed per remote_address (an IPv6
    /// address counts as its /64), over all client IDs.
    #[arg(long, env = "INTEGRATION_THROTTLE_SOURCE_PER_SECOND", default_value_t = nz(5))]
    throttle_source_per_second: NonZeroU32,

    /// Failed validations one remote_address may make in a burst.
    #[arg(long, env = "INTEGRATION_THROTTLE_SOURCE_BURST", default_value_t = nz(20))]
    throttle_source_burst: NonZeroU32,

    /// Cache misses per second allowed overall; by default twice what the
    /// argon2 threads can verify, measured at start.
    #[arg(long, env = "INTEGRATION_THROTTLE_OVERALL_PER_SECOND")]
    throttle_overall_per_second: Option<NonZeroU32>,

    /// ActivateSecret attempts with a wrong value allowed per organization
    /// per minute (and at once); more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "INTEGRATION_THROTTLE_ACTIVATION_FAILURES_PER_MINUTE", default_value_t = nz(10))]
    throttle_activation_failures_per_minute: NonZeroU32,

    /// Seconds between database health probes.
    #[arg(long, env = "INTEGRATION_HEALTH_INTERVAL_SECS", default_value_t = 1)]
    health_interval_secs: u64,

    /// IP address and port to serve Prometheus metrics on (`GET /metrics`,
    /// plain HTTP); off when unset.
    #[arg(long, env = "INTEGRATION_METRICS_LISTEN", value_parser = parse_address)]
    metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    web: WebArgs,

    #[command(flatten)]
    access: AccessArgs,

    #[command(flatten)]
    database: DatabaseArgs,

    #[command(flatten)]
    log: LogArgs,
}

/// Who may call, and over what.
#[derive(Debug, Args)]
struct AccessArgs {
    /// File of admin tokens (CreateIntegration, GetIntegration,
    /// GenerateSecret, ActivateSecret), one per line; `#` starts a comment.
    /// Tokens may also come from the INTEGRATION_ADMIN_TOKENS variable
    /// (comma-separated); never from the command line, where other users of
    /// the machine could read them.
    #[arg(long, env = "INTEGRATION_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,

    /// File of validator tokens (ValidateClient only), one per line; also
    /// INTEGRATION_VALIDATOR_TOKENS.
    #[arg(long, env = "INTEGRATION_VALIDATOR_TOKEN_FILE")]
    validator_token_file: Option<PathBuf>,

    /// Serve without tokens on an address other than loopback. Anyone who
    /// can reach the port can then change secrets: only for networks where
    /// something else (a mesh, mutual TLS) decides who connects.
    #[arg(long, env = "INTEGRATION_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,

    /// PEM certificate chain to serve TLS with (needs --tls-key).
    #[arg(long, env = "INTEGRATION_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "INTEGRATION_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// PEM certificates of the CAs whose client certificates are accepted:
    /// with it, every caller must present one (mutual TLS).
    #[arg(long, env = "INTEGRATION_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

/// What browsers may do.
#[derive(Debug, Args)]
struct WebArgs {
    /// Accept gRPC-Web (for a dashboard calling from the browser) besides
    /// gRPC, over HTTP/1.1 as well as HTTP/2. Every call still needs its
    /// token.
    #[arg(long, env = "INTEGRATION_GRPC_WEB")]
    grpc_web: bool,

    /// An origin (`https://dashboard.example.com`) whose pages may call the
    /// service from a browser; repeat the flag, or separate origins with
    /// commas. None by default: no cross-origin call is allowed.
    #[arg(
        long = "cors-allow-origin",
        env = "INTEGRATION_CORS_ALLOW_ORIGIN",
        value_delimiter = ',',
        requires = "grpc_web"
    )]
    cors_allow_origins: Vec<String>,
}

impl WebArgs {
    fn settings(self) -> Result<WebSettings, String> {
        let origins = self
            .cors_allow_origins
            .iter()
            .map(|origin| origin.trim())
            .filter(|origin| !origin.is_empty())
            .map(parse_origin)
            .collect::<Result<_, _>>()?;
        Ok(WebSettings {
            grpc_web: self.grpc_web,
            cors_allow_origins: origins,
        })
    }
}

/// An IP address and a port to listen on or call; `localhost:PORT` is the
/// IPv4 loopback (a name is not looked up: what a server binds must not
/// depend on DNS).
fn parse_address(address: &str) -> Result<SocketAddr, String> {
    if let Ok(parsed) = address.parse() {
        return Ok(parsed);
    }
    if let Some(port) = address.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    Err(
        "give an IP address and a port, such as 127.0.0.1:50051, [::1]:50051, 0.0.0.0:50051 \
         or localhost:50051"
            .to_owned(),
    )
}

/// An OTLP/gRPC endpoint: `http` or `https`, a host, and a port or none.
fn parse_otlp_endpoint(endpoint: &str) -> Result<url::Url, String> {
    const EXAMPLE: &str = "give the collector's OTLP/gRPC address, \
                           such as http://otel-collector:4317";
    let url = url::Url::parse(endpoint).map_err(|e| format!("{e}: {EXAMPLE}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("it is not an http or https address: {EXAMPLE}"));
    }
    if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "it has more than a scheme, a host, a port and a path: {EXAMPLE}"
        ));
    }
    Ok(url)
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after.
fn parse_origin(origin: &str) -> Result<String, String> {
    let refuse = |why: &str| {
        Err(format!(
            "--cors-allow-origin {origin:?} {why}: give an origin as a browser sends it, \
             such as https://dashboard.example.com or http://localhost:5173"
        ))
    };
    if origin == "*" {
        return refuse(
            "would let every web page call the service with a token it holds; \
             name each origin instead",
        );
    }
    let Ok(url) = url::Url::parse(origin) else {
        return refuse("is not a URL");
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return refuse("is not an http or https origin");
    }
    if url.path() != "/"
        || origin.ends_with('/')
        || url.query().is_some()
        || !url.username().is_empty()
    {
        return refuse("has more than a scheme, a host and a port");
    }
    Ok(url.origin().ascii_serialization())
}

#[derive(Debug, Args)]
struct HealthCheckArgs {
    /// The server's gRPC address; 0.0.0.0 or [::] means this machine. Reads
    /// the server's own INTEGRATION_LISTEN, so in the server's container
    /// the default is right.
    #[arg(long, env = "INTEGRATION_LISTEN", default_value = "127.0.0.1:50051", value_parser = parse_address)]
    address: SocketAddr,

    /// The service to ask about; empty for the server as a whole.
    #[arg(long, default_value = "")]
    service: String,

    /// Seconds the check may take before it fails.
    #[arg(long, default_value_t = 3)]
    timeout_secs: u64,

    #[command(flatten)]
    log: LogArgs,
}

/// Where tokens come from besides files: variables only.
pub const ADMIN_TOKENS_VAR: &str = "INTEGRATION_ADMIN_TOKENS";
pub const VALIDATOR_TOKENS_VAR: &str = "INTEGRATION_VALIDATOR_TOKENS";

#[derive(Debug, Args)]
struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseArgs,

    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Args)]
struct DatabaseArgs {
    /// `postgres://user:password@host/db` or `sqlite://path?mode=rwc`.
    /// Defaults to an SQLite file under ./data/, created on first start.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// Most database connections this process opens.
    #[arg(
        long,
        env = "INTEGRATION_DATABASE_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    database_max_connections: u32,

    /// Seconds a call waits for a database connection before it fails
    /// UNAVAILABLE.
    #[arg(long, env = "INTEGRATION_DATABASE_TIMEOUT_SECS", default_value_t = 5)]
    database_timeout_secs: u64,
}

#[derive(Debug, Args)]
struct LogArgs {
    /// Log line format; what is logged is chosen by RUST_LOG
    /// (default "info,sqlx=warn").
    #[arg(long, env = "INTEGRATION_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,

    /// OTLP/gRPC endpoint of an OpenTelemetry collector
    /// (`http://otel-collector:4317`, or `https://` for TLS checked against
    /// the system's roots) to export each call's span to; none when unset.
    #[arg(long, env = "INTEGRATION_OTLP_ENDPOINT", value_parser = parse_otlp_endpoint)]
    otlp_endpoint: Option<url::Url>,
}

impl Cli {
    /// How to log and trace, whatever the subcommand.
    pub fn telemetry(&self) -> TelemetrySettings {
        let log = match &self.command {
            Some(Command::Serve(args)) => &args.log,
            Some(Command::Migrate(args)) => &args.log,
            Some(Command::HealthCheck(args)) => &args.log,
            None => &self.serve.log,
        };
        TelemetrySettings {
            log_format: log.log_format,
            otlp_endpoint: log.otlp_endpoint.clone(),
        }
    }

    /// Turns the command line into what to do, refusing settings that make
    /// no sense (argon2 below its floor, unreadable or weak tokens). Token
    /// variables are read from the process's environment.
    pub fn action(self) -> Result<Action, String> {
        self.action_with(|name| std::env::var(name).ok())
    }

    /// [`Cli::action`], with variables looked up by `var`.
    pub fn action_with(self, var: impl Fn(&str) -> Option<String>) -> Result<Action, String> {
        match self.command {
            Some(Command::Migrate(args)) => Ok(Action::Migrate(args.database.settings())),
            Some(Command::HealthCheck(args)) => Ok(Action::HealthCheck(HealthCheckSettings {
                address: args.address,
                service: args.service,
                timeout: Duration::from_secs(args.timeout_secs.max(1)),
            })),
            Some(Command::Serve(args)) => args.settings(&var).map(Action::Serve),
            None => self.serve.settings(&var).map(Action::Serve),
        }
    }
}

impl AccessArgs {
    fn settings(self, var: &dyn Fn(&str) -> Option<String>) -> Result<AccessSettings, String> {
        let tokens = |file: Option<PathBuf>, variable: &str, role: &str| {
            let mut tokens = Vec::new();
            if let Some(path) = file {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!("cannot read the {role} token file {}: {e}", path.display())
                })?;
                tokens
                    .extend(Token::parse_list(&text).map_err(|e| {
                        format!("in the {role} token file {}: {e}", path.display())
                    })?);
            }
            if let Some(text) = var(variable) {
                tokens.extend(Token::parse_list(&text).map_err(|e| format!("in {variable}: {e}"))?);
            }
            Ok::<_, String>(tokens)
        };
        let admin = tokens(self.admin_token_file, ADMIN_TOKENS_VAR, "admin")?;
        let validator = tokens(self.validator_token_file, VALIDATOR_TOKENS_VAR, "validator")?;
        let tokens = Tokens::new(&admin, &validator)?;
        if self.insecure_no_auth && !tokens.is_empty() {
            return Err(
                "--insecure-no-auth and tokens were both given; drop one: with tokens, every \
                 call needs one"
                    .into(),
            );
        }
        Ok(AccessSettings {
            tokens,
            insecure_no_auth: self.insecure_no_auth,
            tls: self.tls_cert.zip(self.tls_key).map(|(cert, key)| TlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca,
            }),
        })
    }
}

impl ServeArgs {
    fn settings(self, var: &dyn Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let hash_params = HashParams::new(
            self.argon2_memory_kib,
            self.argon2_iterations,
            self.argon2_parallelism,
        )
        .map_err(|e| e.0)?;
        let threads = available_cores();
        Ok(Settings {
            listen: self.listen,
            database: self.database.settings(),
            migrate: !self.no_migrate,
            default_domain: self.default_domain,
            max_message_bytes: self.max_message_bytes as usize,
            request_timeout: Duration::from_secs(self.request_timeout_secs.max(1)),
            max_concurrent_streams: self.max_concurrent_streams.max(1),
            change_stream_capacity: crate::changes::DEFAULT_CAPACITY,
            hashing: HashingSettings {
                params: hash_params,
                threads,
                queue_capacity: self.argon2_queue.max(threads),
                queue_timeout: Duration::from_millis(self.argon2_timeout_ms.max(1)),
                priority: self.argon2_priority,
            },
            access: self.access.settings(var)?,
            lifecycle: LifecycleSettings {
                pending_secret_ttl: Duration::from_secs(self.pending_secret_ttl_secs),
                dns_resolver: self.dns_resolver,
            },
            cache: CacheSettings {
                capacity: self.cache_capacity,
                revalidate: Duration::from_millis(self.cache_revalidate_ms),
            },
            throttle: ThrottleSettings {
                per_client_per_second: self.throttle_client_per_second,
                per_client_burst: self.throttle_client_burst,
                per_source_per_second: self.throttle_source_per_second,
                per_source_burst: self.throttle_source_burst,
                overall_per_second: self.throttle_overall_per_second,
                tracked_clients: self.cache_capacity,
                activation_failures_per_minute: self.throttle_activation_failures_per_minute,
            },
            health_interval: Duration::from_secs(self.health_interval_secs.max(1)),
            usage: UsageSettings {
                interval: USAGE_RECORDED_EVERY,
                tracked_secrets: self.cache_capacity,
            },
            metrics_listen: self.metrics_listen,
            web: self.web.settings()?,
        })
    }
}

impl DatabaseArgs {
    fn settings(self) -> DatabaseSettings {
        DatabaseSettings {
            url: self
                .database_url
                .unwrap_or_else(|| DEFAULT_SQLITE_URL.to_owned()),
            max_connections: self.database_max_connections.max(1),
            acquire_timeout: Duration::from_secs(self.database_timeout_secs.max(1)),
        }
    }
}

/// How often a secret's use is written, at most, per replica: what the
/// contract promises of `Secret.last_use_time` ("at most once a minute").
const USAGE_RECORDED_EVERY: Duration = Duration::from_secs(60);

const fn nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// Cores this process may use: the bound on concurrent argon2 work.
fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Action, String> {
        parse_with(args, &[])
    }

    /// Parses `args` with `vars` as the only token variables set.
    fn parse_with(args: &[&str], vars: &[(&str, &str)]) -> Result<Action, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("integration-service").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        cli.action_with(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn serve_settings(args: &[&str], vars: &[(&str, &str)]) -> Result<Settings, String> {
        match parse_with(args, vars)? {
            Action::Serve(settings) => Ok(settings),
            Action::Migrate(_) => Err("migrate".into()),
            Action::HealthCheck(_) => Err("health-check".into()),
        }
    }

    #[test]
    fn tokens_come_from_files_and_variables_per_role() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("admin");
        std::fs::write(
            &file,
            format!("# admins\n{}\n{}\n", "a".repeat(32), "b".repeat(32)),
        )
        .expect("written");
        let validator = "v".repeat(40);
        let settings = serve_settings(
            &["--admin-token-file", file.to_str().expect("UTF-8")],
            &[(VALIDATOR_TOKENS_VAR, &validator)],
        )
        .expect("valid");
        assert_eq!(settings.access.tokens.counts(), (2, 1));
        assert!(!settings.access.insecure_no_auth);
        assert!(settings.access.tls.is_none());
    }

    #[test]
    fn addresses_are_ip_and_port_or_localhost() {
        let listen = |value: &str| match serve_settings(&["--listen", value], &[]) {
            Ok(settings) => Ok(settings.listen),
            Err(message) => Err(message),
        };
        assert_eq!(
            listen("localhost:6000"),
            Ok("127.0.0.1:6000".parse().unwrap())
        );
        assert_eq!(listen("[::1]:6000"), Ok("[::1]:6000".parse().unwrap()));
        for bad in ["localhost", "example.com:6000", "localhost:99999", "6000"] {
            let refused = listen(bad).expect_err(bad);
            assert!(refused.contains("--listen"), "{refused}");
            assert!(refused.contains("127.0.0.1:50051"), "{refused}");
        }
    }

    #[test]
    fn an_otlp_endpoint_is_an_http_or_https_address() {
        for good in [
            "http://otel-collector:4317",
            "https://collector.example.com",
        ] {
            let cli = Cli::try_parse_from(["integration-service", "--otlp-endpoint", good])
                .expect("accepted");
            let endpoint = cli.telemetry().otlp_endpoint.expect("set");
            assert_eq!(
                endpoint.host_str(),
                url::Url::parse(good).unwrap().host_str()
            );
        }
        for bad in [
            "otel-collector:4317",
            "grpc://otel:4317",
            "http://user@otel:4317",
            "4317",
        ] {
            let refused = Cli::try_parse_from(["integration-service", "--otlp-endpoint", bad])
                .expect_err(bad)
                .to_string();
            assert!(refused.contains("--otlp-endpoint"), "{refused}");
            assert!(refused.contains("http://otel-collector:4317"), "{refused}");
        }
        let unset = Cli::try_parse_from(["integration-service"]).expect("accepted");
        assert!(unset.telemetry().otlp_endpoint.is_none());
    }

    #[test]
    fn cors_origins_are_exact_origins_and_need_grpc_web() {
        let settings = serve_settings(
            &[
                "--grpc-web",
                "--cors-allow-origin",
                "HTTPS://Dash.Example.com,http://localhost:5173",
            ],
            &[],
        )
        .expect("valid");
        assert!(settings.web.grpc_web);
        assert_eq!(
            settings.web.cors_allow_origins,
            ["https://dash.example.com", "http://localhost:5173"]
        );
        for origin in [
            "*",
            "https://dash.example.com/",
            "https://a.example/path",
            "ftp://a.example",
            "dash",
        ] {
            let refused = serve_settings(&["--grpc-web", "--cors-allow-origin", origin], &[])
                .expect_err(origin);
            assert!(refused.contains("--cors-allow-origin"), "{refused}");
        }
        assert!(serve_settings(&["--cors-allow-origin", "http://localhost:5173"], &[]).is_err());
    }

    #[test]
    fn without_tokens_authentication_is_off() {
        let settings = serve_settings(&[], &[]).expect("valid");
        assert!(settings.access.tokens.is_empty());
    }

    #[test]
    fn weak_shared_or_unreadable_tokens_and_contradictions_stop_the_start() {
        let same = "s".repeat(32);
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: [(&[&str], Vars); 4] = [
            (&[], &[(ADMIN_TOKENS_VAR, "short")]),
            (
                &[],
                &[(ADMIN_TOKENS_VAR, &same), (VALIDATOR_TOKENS_VAR, &same)],
            ),
            (&["--admin-token-file", "/nonexistent/tokens"], &[]),
            (&["--insecure-no-auth"], &[(ADMIN_TOKENS_VAR, &same)]),
        ];
        for (args, vars) in cases {
            let message = serve_settings(args, vars).expect_err("refused");
            assert!(!message.contains(&same), "the message repeats a token");
        }
    }

    #[test]
    fn tls_needs_a_certificate_and_its_key() {
        assert!(parse(&["--tls-key", "k.pem"]).is_err());
        assert!(parse(&["--tls-client-ca", "ca.pem"]).is_err());
        let settings =
            serve_settings(&["--tls-cert", "c.pem", "--tls-key", "k.pem"], &[]).expect("valid");
        let tls = settings.access.tls.expect("TLS on");
        assert_eq!(tls.cert, PathBuf::from("c.pem"));
        assert!(tls.client_ca.is_none());
    }

    #[test]
    fn without_a_subcommand_it_serves_with_the_documented_defaults() {
        let Ok(Action::Serve(settings)) = parse(&[]) else {
            panic!("no arguments should mean serve");
        };
        assert_eq!(settings.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(settings.default_domain.as_str(), "centralauth.com");
        assert!(settings.migrate, "migrations apply at start by default");
        assert_eq!(settings.hashing.params, HashParams::MINIMUM);
        assert_eq!(settings.hashing.priority, Priority::Idle);
        assert_eq!(settings.cache.revalidate, Duration::from_millis(500));
        // DATABASE_URL may be set in the environment of the test run.
        if std::env::var_os("DATABASE_URL").is_none() {
            assert_eq!(settings.database.url, DEFAULT_SQLITE_URL);
        }
    }

    #[test]
    fn serve_flags_work_with_and_without_the_subcommand() {
        for args in [
            &["--listen", "0.0.0.0:6000", "--no-migrate"][..],
            &["serve", "--listen", "0.0.0.0:6000", "--no-migrate"][..],
        ] {
            let Ok(Action::Serve(settings)) = parse(args) else {
                panic!("{args:?} should serve");
            };
            assert_eq!(settings.listen.to_string(), "0.0.0.0:6000", "{args:?}");
            assert!(!settings.migrate, "{args:?}");
        }
    }

    #[test]
    fn migrate_takes_a_database_url() {
        let Ok(Action::Migrate(options)) = parse(&["migrate", "--database-url", "postgres://db/x"])
        else {
            panic!("migrate should parse");
        };
        assert_eq!(options.url, "postgres://db/x");
    }

    #[test]
    fn argon2_below_the_floor_and_bad_domains_are_refused() {
        for args in [
            &["--argon2-memory-kib", "4096"][..],
            &["--argon2-iterations", "1"][..],
            &["--default-domain", "not a domain"][..],
            &["--max-message-bytes", "10"][..],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be refused");
        }
    }
}
