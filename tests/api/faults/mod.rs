//! Faults, on real server processes (SPEC §4, "Faults" and "Races"): the
//! database going away under load, `kill -9` in the middle of rotations,
//! replicas racing on one database, and revocation at its edges (a
//! saturated argon2 queue, a commit whose acknowledgement is lost), a file
//! each.
//!
//! Each test prints its figures (run with `--nocapture`); docs/reliability.md quotes
//! them. No test prints a secret value.

mod database_outage;
mod kill_9;
mod racing_replicas;
mod revocation_edges;

use std::time::Duration;

use support::{Client, ServerCommand, ServerProcess, TestDatabase};

use crate::BINARY;

/// Longer than any answer should take, even one that waits the server's
/// whole `--database-timeout-secs` (5 s) for a connection: a call still
/// unanswered then counts as hung, and fails the test.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// What the server processes log: enough to see what they did (state
/// changes, failures, warnings), not every frame.
const LOG: &str = "info";

/// A server process on `database`, every setting at its default, as an
/// operator runs it.
async fn start_server(database: &TestDatabase) -> ServerProcess {
    ServerCommand::new(BINARY, database.url())
        .log_filter(LOG)
        .start()
        .await
}

/// A client of `server` on a connection of its own, whose calls fail
/// rather than hang.
async fn client_of(server: &ServerProcess) -> Client {
    server.client().await.with_call_timeout(CALL_TIMEOUT)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Rpc {
    GetIntegration,
    GenerateSecret,
    ActivateSecret,
    ValidateClient,
}

/// Panics if the process wrote that something panicked.
fn assert_no_panic(output: &[String]) {
    let panics: Vec<_> = output
        .iter()
        .filter(|line| line.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "the server panicked: {panics:#?}");
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}
