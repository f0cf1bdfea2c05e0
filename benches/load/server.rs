//! The server process: the binary Cargo built with the bench profile, run
//! as in production (a token per role, JSON logs, its default log filter),
//! its output read to the end, its CPU and memory read from `/proc`; and
//! the HTTP/2 connections to it, whose calls carry the tokens.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::oneshot,
};
use tonic::transport::{Channel, Endpoint};
use tower::util::MapRequest;

use crate::{Context, Res, lock, machine};

pub const BINARY: &str = env!("CARGO_BIN_EXE_integration-service");

/// The server runs as in production, with a token per role; every call
/// carries the token its method needs, so the figures include the check.
const ADMIN_TOKEN: &str = "bench-admin-token-00000000000000000000000000000000";
const VALIDATOR_TOKEN: &str = "bench-validator-token-0000000000000000000000000000";

/// A connection whose calls carry the token of the role their method
/// needs (health and reflection ignore it).
pub type Transport = MapRequest<Channel, fn(HttpRequest) -> HttpRequest>;
type HttpRequest = http::Request<tonic::body::Body>;

fn with_token(mut request: HttpRequest) -> HttpRequest {
    let token = if request.uri().path().ends_with("/ValidateClient") {
        VALIDATOR_TOKEN
    } else {
        ADMIN_TOKEN
    };
    let value = http::HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is ASCII");
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, value);
    request
}

/// `connections` HTTP/2 connections to the server.
pub async fn connect(address: SocketAddr, connections: usize) -> Res<Vec<Transport>> {
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        // One Endpoint::connect is one HTTP/2 connection.
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .context("endpoint")?
            .tcp_nodelay(true)
            .connect()
            .await
            .context("connecting to the server")?;
        channels.push(MapRequest::new(channel, with_token as fn(_) -> _));
    }
    Ok(channels)
}

/// What the server wrote, counted.
#[derive(Default)]
struct ServerLog {
    lines: u64,
    warnings: u64,
    errors: u64,
    /// The last lines, shown if the server dies.
    tail: VecDeque<String>,
}

/// Counts of the server's log over the whole run.
#[derive(Debug, Clone, Copy)]
pub struct LogCounts {
    pub lines: u64,
    pub warnings: u64,
    pub errors: u64,
}

pub struct Server {
    child: Child,
    pub pid: u32,
    pub address: SocketAddr,
    log: Arc<Mutex<ServerLog>>,
}

impl Server {
    /// Starts `serve` on a port of its own choosing and waits for the
    /// "serving" event that names it.
    pub async fn start(database_url: &str, extra_args: &[String]) -> Res<Self> {
        let mut child = Command::new(BINARY)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(extra_args)
            // Through the environment rather than --database-url, to keep a
            // password out of the process list.
            .env("DATABASE_URL", database_url)
            .env("INTEGRATION_ADMIN_TOKENS", ADMIN_TOKEN)
            .env("INTEGRATION_VALIDATOR_TOKENS", VALIDATOR_TOKEN)
            // The server's own default filter (info,sqlx=warn), whatever the
            // caller's shell has.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the server binary")?;
        let pid = child.id().ok_or("the server exited at once")?;
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let (found, address) = oneshot::channel();
        let found = Arc::new(Mutex::new(Some(found)));
        let stdout = child.stdout.take().ok_or("no pipe from the server")?;
        let stderr = child.stderr.take().ok_or("no pipe from the server")?;
        drain(stdout, log.clone(), found.clone());
        drain(stderr, log.clone(), found);

        let waited = tokio::time::timeout(Duration::from_secs(120), address).await;
        match waited {
            Ok(Ok(address)) => Ok(Self {
                child,
                pid,
                address,
                log,
            }),
            _ => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(format!(
                    "the server never said it was serving; its last output:\n{}",
                    tail(&log)
                ))
            }
        }
    }

    pub fn rss_mib(&self) -> Option<f64> {
        machine::memory_mib(self.pid, "VmRSS:")
    }

    pub fn peak_rss_mib(&self) -> Option<f64> {
        machine::memory_mib(self.pid, "VmHWM:")
    }

    pub fn cpu_seconds(&self, ticks: f64) -> Option<f64> {
        machine::cpu_seconds(&self.pid.to_string(), ticks)
    }

    pub fn log_counts(&self) -> LogCounts {
        let log = lock(&self.log);
        LogCounts {
            lines: log.lines,
            warnings: log.warnings,
            errors: log.errors,
        }
    }

    /// Checks the server still runs.
    pub fn alive(&mut self) -> Res<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "the server exited ({status}); its last output:\n{}",
                tail(&self.log)
            )),
            Err(e) => Err(format!("cannot poll the server process: {e}")),
        }
    }

    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn tail(log: &Mutex<ServerLog>) -> String {
    let log = lock(log);
    log.tail.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// Reads the server's output line by line for as long as it runs, so that
/// the pipe never fills; reports the address of the "serving" event.
fn drain(
    stream: impl AsyncRead + Unpin + Send + 'static,
    log: Arc<Mutex<ServerLog>>,
    found: Arc<Mutex<Option<oneshot::Sender<SocketAddr>>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"serving\"") {
                let address = serde_json::from_str::<Value>(&line).ok().and_then(|event| {
                    (event["message"] == "serving")
                        .then(|| event["address"].as_str()?.parse().ok())?
                });
                if let Some(address) = address
                    && let Some(sender) = lock(&found).take()
                {
                    let _ = sender.send(address);
                }
            }
            let mut log = lock(&log);
            log.lines += 1;
            if line.contains("\"level\":\"WARN\"") {
                log.warnings += 1;
            } else if line.contains("\"level\":\"ERROR\"") {
                log.errors += 1;
            }
            if log.tail.len() == 40 {
                log.tail.pop_front();
            }
            log.tail.push_back(line);
        }
    });
}
