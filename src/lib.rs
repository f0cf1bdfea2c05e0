//! CentralAuth's integration service: each organization's login domain,
//! client ID and client secret, behind a gRPC API.
//!
//! # How a request flows
//!
//! ```text
//! tonic ─▶ auth        (a bearer token of the role the method needs)
//!       ─▶ codec       (protobuf in, size limit: bad bytes become a status)
//!       ─▶ grpc        (parse once into domain types, one call, map the result, log the outcome)
//!            ├─▶ integrations  (the Integration tab: create, get, generate, activate, revoke,
//!            │                  history, audit, custom domain (─▶ dns), delete)
//!            └─▶ validation    (the gateway's ValidateClient, in order of cost)
//!                  ├─▶ validation::cache  (verified pairs, answered in microseconds)
//!                  ├─▶ throttle           (rations what the cache cannot answer)
//!                  └─▶ hashing            (argon2id on threads of its own, idle priority, good standing first)
//!            both ─▶ store     (SeaORM on SQLite or PostgreSQL; one transaction per change)
//!                  └─▶ invalidation (a change on any replica empties every cache)
//! ```
//!
//! # Where each rule lives
//!
//! | rule | file |
//! | --- | --- |
//! | the cache's consistency (what is trusted, when, after which read) | `validation/cache.rs` |
//! | the order of a check: malformed, cached, throttled, verified | `validation/mod.rs` |
//! | the throttles (failed cache misses per client and source, per source, overall; failed activation verifies) | `throttle.rs` |
//! | the secret state machine and its transactions | `store/secrets.rs` (states: `domain/secret_state.rs`) |
//! | what each request must hold (parse once, `INVALID_ARGUMENT`) | `grpc/requests.rs` |
//! | the mapping of every error to a gRPC status | `error.rs` |
//! | the log level of every outcome | `grpc/outcome.rs` |
//! | who may call what; how refused calls are logged | `auth.rs`, `auth/refusals.rs` |
//! | the shape of a secret, its checksum, its hash | `domain/client_secret.rs`, `domain/secret_hash.rs` |
//! | when a stored hash is hashed again at the configured cost, and stored | `rehash.rs` |
//! | what the audit trail records, and who the caller is | `audit.rs`, `store/audit.rs` |
//! | when a pending secret expires, and that it expires once | `expiry.rs`, `store/expiry.rs` |
//! | a custom domain's rules and proof | `domain/custom_domain.rs`, `integrations/domains.rs`, `store/domains.rs` |
//! | what a page token binds | `grpc/page_token.rs` |
//! | what a change announces, to whom | `store/changes.rs` |
//!
//! # The modules
//!
//! - [`config`]: every settings type, and ([`config::cli`]) the flags and
//!   environment variables they come from.
//! - [`startup`]: `Application::build` connects, migrates and binds;
//!   `run_until_stopped` serves until a shutdown future resolves.
//! - [`telemetry`]: the tracing subscriber.
//! - [`auth`]: bearer tokens per role, checked before any handler runs.
//! - [`codec`]: what the wire may send (malformed and oversized messages).
//! - [`grpc`]: the handlers, their parsing, their responses, their log.
//! - [`integrations`]: the dashboard's operations, in domain terms.
//! - [`audit`]: what an audit event records, and the `x-actor` it names.
//! - [`dns`]: TXT look-ups for VerifyDomain, never cached.
//! - [`expiry`]: the sweeper that discards pending secrets past their time.
//! - [`changes`]: the feed of every replica's committed changes that the
//!   change streams (WatchIntegrations) read.
//! - [`usage`]: when each secret was last used, or presented once retired,
//!   written off the request path.
//! - [`validation`]: the gateway's check, and its cache.
//! - [`domain`]: organization and client ids, secrets and their hashes,
//!   each parsed once and trusted after.
//! - [`hashing`]: where argon2id runs, and how long a call may wait for it.
//! - [`rehash`]: hashes stored below the configured cost, replaced as their
//!   values are verified.
//! - [`throttle`]: every limit on work that costs argon2.
//! - [`invalidation`]: PostgreSQL notifications that keep every replica's
//!   cache honest.
//! - [`store`]: the tables, every query, the transactions.
//! - [`health`]: the health service, following the database.
//! - [`metrics`]: what is counted, and the Prometheus endpoint.
//! - [`request_id`]: every call's request id, in its log lines and its answer.
//! - [`error`]: the error type and its one mapping to a gRPC status.
//! - [`proto`]: the generated contract.

pub mod audit;
pub mod auth;
pub mod changes;
pub mod codec;
pub mod config;
pub mod dns;
pub mod domain;
pub mod error;
pub mod expiry;
/// Property checks of the fuzz targets and of their corpus test.
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod hashing;
pub mod health;
pub mod integrations;
pub mod invalidation;
pub mod metrics;
pub mod proto;
pub mod rehash;
pub mod request_id;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod usage;
pub mod validation;
