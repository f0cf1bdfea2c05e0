//! The server as the benchmark runs it: the binary Cargo built with the
//! bench profile, started by the support crate as in production (a token
//! per role, JSON logs, its default log filter); and the HTTP/2
//! connections to it, with a client per role on each.

use std::time::Duration;

use support::{Client, ServerCommand, ServerProcess};
use tonic::transport::Channel;

use crate::{Context, Res};

pub const BINARY: &str = env!("CARGO_BIN_EXE_integration-service");

/// The server runs as in production, with a token per role; every call
/// carries the token its method needs, so the figures include the check.
const ADMIN_TOKEN: &str = "bench-admin-token-00000000000000000000000000000000";
const VALIDATOR_TOKEN: &str = "bench-validator-token-0000000000000000000000000000";

/// Lines of the server's output kept for a failure's message; every line
/// is counted.
const KEPT_LINES: usize = 40;

/// Starts `serve` on `database_url`, with `extra_args` after its own flags,
/// and returns once its health answers SERVING. A large database may take
/// long to open and migrate.
pub async fn start(database_url: &str, extra_args: &[String]) -> Res<ServerProcess> {
    let command = ServerCommand::new(BINARY, database_url);
    let command = extra_args
        .iter()
        .fold(command, |command, arg| command.arg(arg));
    command
        .env("INTEGRATION_ADMIN_TOKENS", ADMIN_TOKEN)
        .env("INTEGRATION_VALIDATOR_TOKENS", VALIDATOR_TOKEN)
        .keep_tail(KEPT_LINES)
        .startup_timeout(Duration::from_secs(120))
        .try_start()
        .await
        .map_err(|failure| failure.to_string())
}

/// One HTTP/2 connection to the server. Clones share it.
#[derive(Clone)]
pub struct Connection {
    /// For health checks, which need no token.
    pub channel: Channel,
    /// Calls with the admin token: every method but ValidateClient.
    pub admin: Client,
    /// Calls with the validator token: ValidateClient.
    pub validator: Client,
}

/// `connections` HTTP/2 connections to the server.
pub async fn connect(server: &ServerProcess, connections: usize) -> Res<Vec<Connection>> {
    let mut opened = Vec::with_capacity(connections);
    for _ in 0..connections {
        // One Endpoint::connect is one HTTP/2 connection.
        let channel = server
            .endpoint()
            .tcp_nodelay(true)
            .connect()
            .await
            .context("connecting to the server")?;
        opened.push(Connection {
            admin: Client::new(channel.clone()).with_token(ADMIN_TOKEN),
            validator: Client::new(channel.clone()).with_token(VALIDATOR_TOKEN),
            channel,
        });
    }
    Ok(opened)
}
