//! Integration tests: the real server on a free port, called through the
//! generated tonic client, on SQLite and on PostgreSQL.

// A test that meets a broken precondition should fail loudly, right there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod activate_secret;
mod auth;
mod cache;
mod create_integration;
mod faults;
mod generate_secret;
mod get_integration;
mod model;
mod process;
mod races;
mod service;
mod validate_client;
mod wire;
