//! CentralAuth's integration service: each organization's login domain,
//! client ID and client secret, behind a gRPC API.
//!
//! # How a request flows
//!
//! ```text
//! tonic ─▶ auth       (a bearer token of the role the method needs)
//!       ─▶ codec      (protobuf in, size limit: bad bytes become a status)
//!       ─▶ grpc       (parse into domain types, one call, map the result)
//!       ─▶ integrations (the operations: create, get, generate, activate, validate)
//!            ├─▶ cache    (ValidateClient: verified pairs, answered in microseconds)
//!            ├─▶ throttle (ValidateClient: rations what the cache cannot answer)
//!            ├─▶ hashing  (argon2id on threads of its own, one per core, idle priority)
//!            └─▶ store    (SeaORM on SQLite or PostgreSQL; one transaction per change)
//!                  └─▶ invalidation (activations on any replica empty every cache)
//! ```
//!
//! # The modules
//!
//! - [`config`]: flags and environment variables.
//! - [`startup`]: `Application::build` connects, migrates and binds;
//!   `run_until_stopped` serves until a shutdown future resolves.
//! - [`telemetry`]: the tracing subscriber.
//! - [`auth`]: bearer tokens per role, checked before any handler runs.
//! - [`codec`]: what the wire may send (malformed and oversized messages).
//! - [`grpc`]: the handlers, and the one log event per request.
//! - [`integrations`]: what each operation does, in domain terms.
//! - [`domain`]: organization and client ids, secrets and their hashes,
//!   each parsed once and trusted after.
//! - [`hashing`]: where argon2id runs, and how long a call may wait for it.
//! - [`cache`]: successful verifications, so the gateway's hot path needs
//!   neither argon2 nor the database.
//! - [`throttle`]: per-client and overall limits on cache misses, and the
//!   per-organization limit on failed activations.
//! - [`single_flight`]: identical checks under way verified once.
//! - [`invalidation`]: PostgreSQL notifications that keep every replica's
//!   cache honest.
//! - [`store`]: the tables, every query, the transactions.
//! - [`health`]: the health service, following the database.
//! - [`error`]: the error type and its one mapping to a gRPC status.
//! - [`proto`]: the generated contract.

pub mod auth;
pub mod cache;
pub mod codec;
pub mod config;
pub mod domain;
pub mod error;
/// Property checks of the fuzz targets and of their corpus test.
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod hashing;
pub mod health;
pub mod integrations;
pub mod invalidation;
pub mod proto;
pub mod single_flight;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod throttle;
