//! Prometheus metrics: what the service counts, and the endpoint that
//! serves them (`--metrics-listen`, `GET /metrics`, plain HTTP).
//!
//! Everything is recorded through the `metrics` facade. Until a server with
//! `--metrics-listen` installs the Prometheus recorder, every record is a
//! no-op. The recorder is process-wide: every server of a process reports
//! into the same registry.
//!
//! Labels only ever take values from fixed sets (a method of the contract,
//! a status code, an outcome): never a client ID, an organization or a
//! caller's string, so an attacker cannot grow the registry.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `integration_grpc_requests_total` | counter | `method`, `code` |
//! | `integration_grpc_request_duration_seconds` | histogram | `method` |
//! | `integration_validations_total` | counter | `outcome` (valid, invalid, throttled, unavailable, error), `reason` |
//! | `integration_cache_hits_total`, `integration_cache_misses_total`, `integration_cache_revalidations_total` | counter | |
//! | `integration_cache_entries` | gauge | |
//! | `integration_argon2_queue_depth` | gauge | |
//! | `integration_argon2_wait_seconds` | histogram | |
//! | `integration_db_pool_connections` | gauge | `state` (in_use, idle) |
//! | `integration_db_pool_max_connections` | gauge | |
//! | `integration_retired_secret_uses_total` | counter | |
//! | `integration_change_streams_open` | gauge | |

pub mod endpoint;
pub mod requests;

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::Error;
use crate::validation::Rejection;

pub const REQUESTS: &str = "integration_grpc_requests_total";
pub const REQUEST_DURATION: &str = "integration_grpc_request_duration_seconds";
pub const VALIDATIONS: &str = "integration_validations_total";
pub const CACHE_HITS: &str = "integration_cache_hits_total";
pub const CACHE_MISSES: &str = "integration_cache_misses_total";
pub const CACHE_REVALIDATIONS: &str = "integration_cache_revalidations_total";
pub const CACHE_ENTRIES: &str = "integration_cache_entries";
pub const ARGON2_QUEUE_DEPTH: &str = "integration_argon2_queue_depth";
pub const ARGON2_WAIT: &str = "integration_argon2_wait_seconds";
pub const DB_POOL_CONNECTIONS: &str = "integration_db_pool_connections";
pub const DB_POOL_MAX_CONNECTIONS: &str = "integration_db_pool_max_connections";
pub const RETIRED_SECRET_USES: &str = "integration_retired_secret_uses_total";
pub const CHANGE_STREAMS_OPEN: &str = "integration_change_streams_open";

/// Bucket bounds of the latency histograms, in seconds: from a cache hit
/// (tens of microseconds) to the request timeout.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// Installs the Prometheus recorder, once per process, and returns the
/// handle that renders it. `None` if another recorder was installed first
/// (only possible in a process that embeds the service).
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(REQUESTS, "gRPC calls finished, by method and status code.");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from a call's request headers to its status, by method."
    );
    describe_counter!(
        VALIDATIONS,
        "ValidateClient answers: valid, invalid (by reason), throttled, unavailable, error."
    );
    describe_counter!(CACHE_HITS, "ValidateClient checks answered from the cache.");
    describe_counter!(
        CACHE_MISSES,
        "ValidateClient checks the cache could not answer (argon2 and a database read)."
    );
    describe_counter!(
        CACHE_REVALIDATIONS,
        "Cached answers past their revalidation interval, confirmed by a database read."
    );
    describe_gauge!(CACHE_ENTRIES, "Verified credentials held in the cache.");
    describe_gauge!(
        ARGON2_QUEUE_DEPTH,
        "argon2 computations waiting for a thread."
    );
    describe_histogram!(
        ARGON2_WAIT,
        Unit::Seconds,
        "Time an argon2 computation waited for a thread."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database connections of the pool, in use or idle."
    );
    describe_gauge!(
        DB_POOL_MAX_CONNECTIONS,
        "The most connections the pool opens."
    );
    describe_counter!(
        RETIRED_SECRET_USES,
        "ValidateClient calls that presented a revoked, discarded or expired secret."
    );
    describe_gauge!(CHANGE_STREAMS_OPEN, "WatchIntegrations streams open.");
}

/// Counts one ValidateClient answer. `rejected` is the reason of a
/// `valid: false`; `failed` the error of a call that had no answer.
pub(crate) fn validation(rejected: Option<Rejection>, failed: Option<&Error>) {
    let (outcome, reason) = match (rejected, failed) {
        (_, Some(error)) => match error {
            Error::ResourceExhausted(_) => ("throttled", "throttled"),
            Error::Overloaded(_) => ("throttled", "argon2_busy"),
            Error::Unavailable(_) | Error::Unreachable(_) => ("unavailable", "database"),
            Error::InvalidArgument(_) => ("invalid", "invalid_argument"),
            _ => ("error", "internal"),
        },
        (Some(rejection), None) => {
            if rejection == Rejection::RetiredSecret {
                counter!(RETIRED_SECRET_USES).increment(1);
            }
            ("invalid", rejection.as_str())
        }
        (None, None) => ("valid", ""),
    };
    counter!(VALIDATIONS, "outcome" => outcome, "reason" => reason).increment(1);
}

pub(crate) fn cache_hit() {
    counter!(CACHE_HITS).increment(1);
}

pub(crate) fn cache_miss() {
    counter!(CACHE_MISSES).increment(1);
}

pub(crate) fn cache_revalidation() {
    counter!(CACHE_REVALIDATIONS).increment(1);
}

pub(crate) fn argon2_waited(waited: Duration) {
    histogram!(ARGON2_WAIT).record(waited.as_secs_f64());
}

/// A gauge of open change streams, raised while this value lives.
#[derive(Debug)]
pub(crate) struct OpenStream(());

impl OpenStream {
    pub(crate) fn open() -> Self {
        gauge!(CHANGE_STREAMS_OPEN).increment(1.0);
        Self(())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        gauge!(CHANGE_STREAMS_OPEN).decrement(1.0);
    }
}

/// What the gauges sampled at each scrape read.
#[derive(Clone)]
pub struct Sampled {
    pub cache: std::sync::Arc<crate::validation::cache::CredentialCache>,
    pub hasher: crate::hashing::Hasher,
    pub store: crate::store::Store,
}

impl Sampled {
    /// Sets the gauges that are read rather than counted.
    pub fn sample(&self) {
        gauge!(CACHE_ENTRIES).set(self.cache.len() as f64);
        gauge!(ARGON2_QUEUE_DEPTH).set(self.hasher.waiting() as f64);
        if let Some(pool) = self.store.pool_connections() {
            gauge!(DB_POOL_CONNECTIONS, "state" => "in_use").set(pool.in_use as f64);
            gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(pool.idle as f64);
            gauge!(DB_POOL_MAX_CONNECTIONS).set(f64::from(pool.max));
        }
    }
}
