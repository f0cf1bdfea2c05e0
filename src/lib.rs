//! CentralAuth's integration service: each organization's login domain,
//! client ID and client secret, behind a gRPC API.
//!
//! # How a request flows
//!
//! ```text
//! tonic ─▶ codec      (protobuf in, size limit: bad bytes become a status)
//!       ─▶ grpc       (parse into domain types, one call, map the result)
//!       ─▶ integrations (the operations: create, get, generate, activate, validate)
//!            ├─▶ hashing (argon2id on blocking threads, bounded to the cores)
//!            └─▶ store   (SeaORM on SQLite or PostgreSQL; one transaction per change)
//! ```
//!
//! # The modules
//!
//! - [`config`]: flags and environment variables.
//! - [`startup`]: `Application::build` connects, migrates and binds;
//!   `run_until_stopped` serves until a shutdown future resolves.
//! - [`telemetry`]: the tracing subscriber.
//! - [`codec`]: what the wire may send (malformed and oversized messages).
//! - [`grpc`]: the handlers, and the one log event per request.
//! - [`integrations`]: what each operation does, in domain terms.
//! - [`domain`]: organization and client ids, secrets and their hashes,
//!   each parsed once and trusted after.
//! - [`hashing`]: where argon2id runs.
//! - [`store`]: the tables, every query, the transactions.
//! - [`health`]: the health service, following the database.
//! - [`error`]: the error type and its one mapping to a gRPC status.
//! - [`proto`]: the generated contract.

pub mod codec;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod hashing;
pub mod health;
pub mod integrations;
pub mod proto;
pub mod startup;
pub mod store;
pub mod telemetry;
