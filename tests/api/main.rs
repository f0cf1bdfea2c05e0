//! Integration tests: the real server on a free port, called through the
//! generated tonic client, on SQLite and on PostgreSQL. The harness is the
//! `support` crate.

// A test that meets a broken precondition should fail loudly, right there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod activate_secret;
mod auth;
mod binary;
mod cache;
mod create_integration;
mod dns;
mod faults;
mod first_start;
mod generate_secret;
mod get_integration;
mod lifecycle;
mod lockout;
mod metrics;
mod model;
mod otlp;
mod races;
mod rehash;
mod request_id;
mod service;
mod tls;
mod usage;
mod validate_client;
mod watch;
mod web;
mod wire;

/// The service binary this test crate was built with: only the crate that
/// builds it can name it, so the tests hand it to the harness.
pub const BINARY: &str = env!("CARGO_BIN_EXE_integration-service");
