//! The harness the integration service's tests and benchmarks share: one
//! way to make a database, start the service, call it and read its tables.
//!
//! A test starts from a database. [`database`] makes a fresh one per test:
//! an SQLite file in a temporary directory, or a PostgreSQL database
//! created on the server `TEST_DATABASE_URL` names (or any admin URL the
//! caller gives, such as the benchmark's `BENCH_DATABASE_URL`) and dropped
//! with it. Without `TEST_DATABASE_URL`, the PostgreSQL half of the suite
//! passes without running, after one notice on stderr.
//!
//! On that database it runs the service one of two ways. [`app`] builds it
//! in the test's own process ([`TestApp`]: settings of its own, restarts,
//! replicas, the server's store at hand). [`process`] runs the binary as an
//! operator does ([`ServerProcess`]: flags, environment, JSON logs, SIGKILL
//! and SIGTERM, its pid for `/proc`), ready once its health answers
//! SERVING. Either hands out a [`Client`] ([`client`]): one typed method per
//! RPC returning `Result<_, Status>`, optionally carrying a bearer token and
//! a call timeout, with the generated client underneath for requests made
//! by hand.
//!
//! The harness panics on what a test cannot go on without; a caller that
//! must go on (the benchmark runs its other backend, then reports) makes its
//! databases and servers with [`TestDatabase::try_postgres`] and
//! [`ServerCommand::try_start`], which say what went wrong instead.
//!
//! What the service stored is read straight from the tables by [`tables`],
//! over any connection to the database, with the invariant every test
//! checks (at most one ACTIVE and one PENDING secret per organization).
//! [`checks`] holds the small assertions several test files make.
//!
//! [`proxy`] stands between a server process and PostgreSQL and loses what
//! the database says back when told to: a `COMMIT`'s acknowledgement, or a
//! listening connection's notifications.
//!
//! [`on_every_backend!`] turns one scenario into a test per backend; its
//! parameter's type says what the scenario gets (see [`Fixture`]), and an
//! adjuster may change the settings first ([`scenario`]).

// Test code: panicking on a broken precondition is what a harness should do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod checks;
pub mod client;
pub mod database;
pub mod dns;
pub mod process;
pub mod proxy;
pub mod scenario;
pub mod tables;

pub use app::{DEFAULT_DOMAIN, TestApp, spawn_app, spawn_app_with, test_settings};
pub use checks::{expect_code, health_status};
pub use client::{Authorization, Client, RawClient};
pub use database::{
    Backend, CreateDatabaseError, TEST_DATABASE_URL, TestDatabase, test_postgres_url,
};
pub use dns::TestDns;
pub use process::{Finished, LogCounts, ServerCommand, ServerFailure, ServerProcess, run_to_exit};
pub use proxy::PostgresProxy;
pub use scenario::{Adjust, Fixture};
#[doc(hidden)]
pub use scenario::{run_blocking_on, run_on};
pub use tables::{SecretRow, secret_id_key};
