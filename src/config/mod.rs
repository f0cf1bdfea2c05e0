//! What the service is configured with: every settings type, built from
//! flags and environment variables by [`cli`] and consumed by
//! `crate::startup`. The types here only hold values; each module that acts
//! on a group of them documents what it does with them.

pub mod cli;

use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use crate::auth::Tokens;
use crate::domain::{DomainName, HashParams};

pub use cli::{Action, Cli};

/// Everything `serve` needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database: DatabaseSettings,
    /// Apply pending migrations before serving.
    pub migrate: bool,
    pub default_domain: DomainName,
    pub max_message_bytes: usize,
    /// Longest a call may take, from its first byte to its answer.
    pub request_timeout: Duration,
    /// Calls in flight per connection, at most.
    pub max_concurrent_streams: u32,
    /// Changes a WatchIntegrations stream may fall behind by before it is
    /// sent RESYNC instead (see `crate::changes`).
    pub change_stream_capacity: usize,
    pub hashing: HashingSettings,
    pub cache: CacheSettings,
    pub throttle: ThrottleSettings,
    pub health_interval: Duration,
    pub access: AccessSettings,
    pub lifecycle: LifecycleSettings,
    pub usage: UsageSettings,
    /// Where Prometheus metrics are served over plain HTTP (`GET
    /// /metrics`); `None` turns the endpoint off (see `crate::metrics`).
    pub metrics_listen: Option<SocketAddr>,
    pub web: WebSettings,
}

/// What browsers may do (see `crate::startup`).
#[derive(Debug, Clone, Default)]
pub struct WebSettings {
    /// Accept gRPC-Web (over HTTP/1.1 as well as HTTP/2) besides gRPC.
    pub grpc_web: bool,
    /// Origins (`scheme://host[:port]`) whose pages may call the service
    /// from a browser; none means no cross-origin call is allowed.
    pub cors_allow_origins: Vec<String>,
}

/// How the process reports what it does: log lines, and spans to an
/// OpenTelemetry collector (see `crate::telemetry`).
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// The OTLP/gRPC endpoint spans are exported to; `None` exports none.
    pub otlp_endpoint: Option<url::Url>,
}

/// What `health-check` asks, of which server.
#[derive(Debug, Clone)]
pub struct HealthCheckSettings {
    /// The server's gRPC address; an unspecified address (`0.0.0.0`, `[::]`)
    /// means this machine.
    pub address: SocketAddr,
    /// The service whose status is asked; empty for the server as a whole.
    pub service: String,
    /// How long the check may take before it counts as failed.
    pub timeout: Duration,
}

/// How the uses of secrets are recorded (see `crate::usage`).
#[derive(Debug, Clone)]
pub struct UsageSettings {
    /// A secret's use is written at most once per this interval per
    /// replica (its first use at once): how old `Secret.last_use_time` may
    /// be.
    pub interval: Duration,
    /// Secrets whose last recorded use is remembered, at most; a secret
    /// forgotten early is only written again early.
    pub tracked_secrets: u64,
}

/// How secrets and custom domains age and are proven (see
/// `crate::expiry` and `crate::dns`).
#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    /// How long a PENDING secret may wait for its activation before it is
    /// DISCARDED.
    pub pending_secret_ttl: Duration,
    /// The DNS server that VerifyDomain asks; `None` for the system's
    /// resolvers (`/etc/resolv.conf`).
    pub dns_resolver: Option<SocketAddr>,
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite://…` or `postgres://…`, password included if any.
    pub url: String,
    pub max_connections: u32,
    /// How long a call waits for a pooled connection (or a new one) before it
    /// fails `UNAVAILABLE`.
    pub acquire_timeout: Duration,
}

/// Where the database lives when no URL is given.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://data/integration-service.db?mode=rwc";

impl DatabaseSettings {
    /// The directory an `sqlite://` URL's file lives in, so it can be created
    /// before the first start. `None` for other databases and in-memory
    /// SQLite.
    pub fn sqlite_directory(&self) -> Option<PathBuf> {
        let path = self.url.strip_prefix("sqlite://")?.split('?').next()?;
        if path.is_empty() || path == ":memory:" {
            return None;
        }
        PathBuf::from(path)
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(PathBuf::from)
    }
}

/// How much argon2 work may run and wait (see `crate::hashing`).
#[derive(Debug, Clone)]
pub struct HashingSettings {
    /// The cost of new hashes.
    pub params: HashParams,
    /// Threads of the gateway's lane: one per core.
    pub threads: usize,
    /// Calls that may wait for a thread of a lane, at most.
    pub queue_capacity: usize,
    /// How long a call may wait for its result before it fails.
    pub queue_timeout: Duration,
    /// The priority of the gateway's lane.
    pub priority: Priority,
}

/// How the argon2 threads of the gateway's lane are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Priority {
    /// Linux `SCHED_IDLE`: run only on CPU nothing else wants.
    Idle,
    /// The same priority as the rest of the service.
    Normal,
}

/// The cache of verified credentials (see `crate::validation::cache`).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Clients whose verified secret is remembered, at most.
    pub capacity: u64,
    /// How long a remembered verification is trusted before it is checked
    /// against the database again.
    pub revalidate: Duration,
}

/// How many attempts that cost argon2 work are admitted (see
/// `crate::throttle`).
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// Failed cache misses per second per client ID and source (per client
    /// ID when the source is unknown), sustained.
    pub per_client_per_second: NonZeroU32,
    /// Failed cache misses one client ID may make from one source at once
    /// before the rate applies.
    pub per_client_burst: NonZeroU32,
    /// Failed cache misses per second per source, over all client IDs.
    pub per_source_per_second: NonZeroU32,
    /// Failed cache misses one source may make at once.
    pub per_source_burst: NonZeroU32,
    /// Cache misses per second overall; `None` sets it from the measured cost
    /// of one verify.
    pub overall_per_second: Option<NonZeroU32>,
    /// Cells of each budget table (per client and source, per source, per
    /// organization's activations), rounded up to a power of two (8 bytes
    /// each).
    pub tracked_clients: u64,
    /// ActivateSecret attempts with a wrong value allowed per organization
    /// per minute, and at once.
    pub activation_failures_per_minute: NonZeroU32,
}

/// Who may call, and over what.
#[derive(Debug, Clone, Default)]
pub struct AccessSettings {
    /// Bearer tokens per role; none means no authentication, which is only
    /// allowed on loopback or with `insecure_no_auth`.
    pub tokens: Tokens,
    /// Serve without tokens on any address.
    pub insecure_no_auth: bool,
    pub tls: Option<TlsFiles>,
}

/// The PEM files TLS is served with.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CAs of the client certificates accepted; with it, mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// How log lines are written to standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Plain,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlite_directory_is_found_in_the_url() {
        let cases = [
            (DEFAULT_SQLITE_URL, Some("data")),
            ("sqlite:///var/lib/x/db.sqlite", Some("/var/lib/x")),
            ("sqlite://db.sqlite?mode=rwc", None),
            ("sqlite::memory:", None),
            ("postgres://localhost/db", None),
        ];
        for (url, expected) in cases {
            let database = DatabaseSettings {
                url: url.to_owned(),
                max_connections: 1,
                acquire_timeout: Duration::from_secs(1),
            };
            assert_eq!(
                database.sqlite_directory(),
                expected.map(PathBuf::from),
                "{url}"
            );
        }
    }
}
