//! The service binary as an operator runs it: `serve` started as a process
//! of its own, ready once it says where it serves and its health answers
//! SERVING; or any command run to its end.
//!
//! Only the crate that builds the binary can name it
//! (`env!("CARGO_BIN_EXE_integration-service")`), so the caller passes its
//! path: tests the debug build, the benchmark the release one.

use std::{
    collections::VecDeque,
    error::Error,
    fmt,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
    task::JoinHandle,
    time::Instant,
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{checks::health_status, client::Client};

/// How `serve` is to be started: built up, then [`ServerCommand::start`]ed.
///
/// It runs `<binary> serve --listen 127.0.0.1:0 --log-format json` with
/// `DATABASE_URL` in the environment (never on the command line, where the
/// process list would show a password), and the server's own default log
/// filter unless [`ServerCommand::log_filter`] says otherwise: whatever
/// `RUST_LOG` the caller's shell has is not passed on.
#[derive(Clone)]
pub struct ServerCommand {
    binary: PathBuf,
    listen: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log_filter: Option<String>,
    keep: Keep,
    startup_timeout: Duration,
}

/// How a start ended: the process said where it serves (or its output
/// ended without saying so), or it exited.
enum Started {
    Announced(Option<SocketAddr>),
    Exited(ExitStatus),
}

/// Names the environment's variables but not their values, which hold
/// tokens and database passwords.
impl fmt::Debug for ServerCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let envs: Vec<&str> = self.envs.iter().map(|(key, _)| key.as_str()).collect();
        f.debug_struct("ServerCommand")
            .field("binary", &self.binary)
            .field("listen", &self.listen)
            .field("args", &self.args)
            .field("envs", &envs)
            .field("log_filter", &self.log_filter)
            .field("keep", &self.keep)
            .field("startup_timeout", &self.startup_timeout)
            .finish()
    }
}

/// What a process keeps of its output.
#[derive(Debug, Clone, Copy)]
enum Keep {
    Everything,
    Tail(usize),
}

impl ServerCommand {
    pub fn new(binary: impl AsRef<Path>, database_url: &str) -> Self {
        Self {
            binary: binary.as_ref().to_owned(),
            listen: "127.0.0.1:0".to_owned(),
            args: Vec::new(),
            envs: vec![("DATABASE_URL".to_owned(), database_url.to_owned())],
            log_filter: None,
            keep: Keep::Everything,
            startup_timeout: Duration::from_secs(15),
        }
    }

    /// Listens on `address` instead of a free port of loopback. Readiness
    /// is still checked on loopback, so an unspecified address (`0.0.0.0:0`)
    /// works.
    pub fn listen(mut self, address: &str) -> Self {
        address.clone_into(&mut self.listen);
        self
    }

    /// One more flag or value after `serve`'s own.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|arg| (*arg).to_owned()));
        self
    }

    /// One more environment variable (token lists, settings).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The `RUST_LOG` filter to log with. It must let `info` through: the
    /// start waits for the `serving` event.
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = Some(filter.to_owned());
        self
    }

    /// Keeps only the last `lines` lines of output (and counts every line,
    /// warning and error), for a long run that would otherwise grow without
    /// bound. By default every line is kept.
    pub fn keep_tail(mut self, lines: usize) -> Self {
        self.keep = Keep::Tail(lines);
        self
    }

    /// How long the start may take, until the server answers SERVING
    /// (15 s unless set).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .args(["--listen", &self.listen, "--log-format", "json"])
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        match &self.log_filter {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        command
    }

    /// Starts the server and returns once it has logged `serving` with its
    /// address and its health check answers SERVING there. Panics, with
    /// what the process wrote, if it exits first or is not ready within
    /// the startup timeout.
    pub async fn start(self) -> ServerProcess {
        match self.try_start().await {
            Ok(server) => server,
            Err(failure) => panic!("{}: {:#?}", failure.what, failure.output),
        }
    }

    /// Like [`ServerCommand::start`], for a caller that reports a start
    /// that failed instead of stopping (the benchmark goes on with its
    /// other backend): what went wrong, with what the process wrote.
    pub async fn try_start(self) -> Result<ServerProcess, ServerFailure> {
        let deadline = Instant::now() + self.startup_timeout;
        let spawned = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = spawned.map_err(|e| ServerFailure {
            what: format!("starting {}: {e}", self.binary.display()),
            output: Vec::new(),
        })?;
        let pid = child.id().expect("a process that just started has an id");
        let log = Arc::new(Mutex::new(Log::new(self.keep)));
        let (serving, found) = oneshot::channel();
        let serving = Arc::new(Mutex::new(Some(serving)));
        let readers = vec![
            read_lines(child.stdout.take().expect("stdout"), &log, &serving),
            read_lines(child.stderr.take().expect("stderr"), &log, &serving),
        ];
        let mut server = ServerProcess {
            child,
            pid,
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            log,
            readers,
        };

        // Decided first, handled after: the handlers need the process the
        // raced futures borrow.
        let started = tokio::select! {
            found = tokio::time::timeout_at(deadline, found) => {
                Started::Announced(found.ok().and_then(Result::ok))
            }
            status = server.child.wait() => Started::Exited(status.expect("exit status")),
        };
        let announced = match started {
            Started::Announced(Some(address)) => address,
            Started::Announced(None) => {
                return Err(server.fail("the server never said it was serving").await);
            }
            Started::Exited(status) => return Err(server.exited(status).await),
        };
        server.address = reachable(announced);
        server.wait_until_serving(deadline).await?;
        Ok(server)
    }

    /// Runs the same command to its end, for a start that must be refused:
    /// see [`run_to_exit`].
    pub async fn run_to_exit(self, within: Duration) -> Finished {
        let mut command = self.command();
        finish(&mut command, within).await
    }
}

/// A server process and what it has written so far. Killed if dropped.
pub struct ServerProcess {
    child: Child,
    pid: u32,
    address: SocketAddr,
    log: Arc<Mutex<Log>>,
    /// The tasks reading stdout and stderr; they end when the process has
    /// exited and its pipes are drained.
    readers: Vec<JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts `serve` on `database_url` with every other setting at its
    /// default: [`ServerCommand`] says more.
    pub async fn start(binary: impl AsRef<Path>, database_url: &str) -> Self {
        ServerCommand::new(binary, database_url).start().await
    }

    /// Where the server answers: the address it announced, or loopback on
    /// its port if it listens on every interface.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The process id, for reading its CPU time and memory from `/proc`.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's address as an endpoint, for connections the caller
    /// configures itself (the benchmark's `tcp_nodelay`) or whose failure
    /// it reports.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.address)).expect("a URI")
    }

    /// A new HTTP/2 connection to the server.
    pub async fn channel(&self) -> Channel {
        self.endpoint().connect().await.expect("connected")
    }

    /// A client on a new connection of its own.
    pub async fn client(&self) -> Client {
        Client::new(self.channel().await)
    }

    /// How the process ended, if it has (exited, panicked out or been
    /// killed).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("the process can be polled")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// `Ok` while the process runs; once it has exited, how, with the last
    /// of what it wrote (its pipes read to the end first).
    pub async fn check_running(&mut self) -> Result<(), ServerFailure> {
        match self.exit_status() {
            None => Ok(()),
            Some(status) => Err(self.exited(status).await),
        }
    }

    /// What the process has written so far, stdout and stderr as the lines
    /// came: every line, or the last ones with [`ServerCommand::keep_tail`].
    pub fn output(&self) -> Vec<String> {
        self.log
            .lock()
            .expect("lock")
            .lines
            .iter()
            .cloned()
            .collect()
    }

    /// How many lines, warnings and errors the process has written so far.
    pub fn log_counts(&self) -> LogCounts {
        self.log.lock().expect("lock").counts
    }

    /// Kills the process with SIGKILL, as a crash or the OOM killer would:
    /// no signal handler, no shutdown, no flush. Returns what it wrote.
    pub async fn kill(mut self) -> Vec<String> {
        // On Unix, tokio's `start_kill` sends SIGKILL.
        self.child.start_kill().expect("SIGKILL sent");
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("a killed process exits at once")
            .expect("exit status");
        self.drain().await
    }

    /// Sends SIGTERM and waits for the process to exit; returns how it
    /// exited and what it wrote.
    pub async fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        // Through kill(1): sending a signal ourselves would take unsafe code.
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        assert!(sent.is_ok_and(|s| s.success()), "SIGTERM sent");
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the server stops within 10 s of SIGTERM")
            .expect("exit status");
        (status, self.drain().await)
    }

    /// Polls the health check until it answers SERVING.
    async fn wait_until_serving(&mut self, deadline: Instant) -> Result<(), ServerFailure> {
        let channel = self.endpoint().connect_lazy();
        loop {
            let checked =
                tokio::time::timeout_at(deadline, health_status(channel.clone(), "")).await;
            if let Ok(Ok(ServingStatus::Serving)) = checked {
                return Ok(());
            }
            if Instant::now() >= deadline || self.exit_status().is_some() {
                return Err(self.fail("the server never reported SERVING").await);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends a start that failed: kills the process and says `what` went
    /// wrong, or how the process exited if it has.
    async fn fail(&mut self, what: &str) -> ServerFailure {
        if let Some(status) = self.exit_status() {
            return self.exited(status).await;
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        ServerFailure {
            what: what.to_owned(),
            output: self.drain().await,
        }
    }

    /// How the process exited, with what it wrote.
    async fn exited(&mut self, status: ExitStatus) -> ServerFailure {
        ServerFailure {
            what: format!("the server exited with {status}"),
            output: self.drain().await,
        }
    }

    /// Waits for the readers to reach the end of the pipes of the exited
    /// process, then returns what it wrote.
    async fn drain(&mut self) -> Vec<String> {
        for reader in self.readers.drain(..) {
            tokio::time::timeout(Duration::from_secs(10), reader)
                .await
                .expect("the pipes close when the process has exited")
                .expect("the reader ends cleanly");
        }
        self.output()
    }
}

/// A server that did not start, or no longer runs: what happened, and what
/// it wrote (the last lines, with [`ServerCommand::keep_tail`]).
#[derive(Debug)]
pub struct ServerFailure {
    pub what: String,
    pub output: Vec<String>,
}

/// `what`, then the output a line each.
impl fmt::Display for ServerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.output.is_empty() {
            return write!(f, "{}; it wrote nothing", self.what);
        }
        write!(f, "{}; its last output:", self.what)?;
        for line in &self.output {
            write!(f, "\n{line}")?;
        }
        Ok(())
    }
}

impl Error for ServerFailure {}

/// Counts of a process's output lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCounts {
    pub lines: u64,
    /// JSON events at level WARN.
    pub warnings: u64,
    /// JSON events at level ERROR.
    pub errors: u64,
}

struct Log {
    keep: Keep,
    lines: VecDeque<String>,
    counts: LogCounts,
}

impl Log {
    fn new(keep: Keep) -> Self {
        Self {
            keep,
            lines: VecDeque::new(),
            counts: LogCounts::default(),
        }
    }

    fn push(&mut self, line: String) {
        self.counts.lines += 1;
        if line.contains(r#""level":"WARN""#) {
            self.counts.warnings += 1;
        } else if line.contains(r#""level":"ERROR""#) {
            self.counts.errors += 1;
        }
        if let Keep::Tail(lines) = self.keep {
            if lines == 0 {
                return;
            }
            if self.lines.len() == lines {
                self.lines.pop_front();
            }
        }
        self.lines.push_back(line);
    }
}

/// Reads `stream` line by line for as long as the process runs, so that
/// its pipe never fills; sends the address of the first `serving` event.
fn read_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    log: &Arc<Mutex<Log>>,
    serving: &Arc<Mutex<Option<oneshot::Sender<SocketAddr>>>>,
) -> JoinHandle<()> {
    let (log, serving) = (log.clone(), serving.clone());
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(address) = serving_address(&line)
                && let Some(sender) = serving.lock().expect("lock").take()
            {
                let _ = sender.send(address);
            }
            log.lock().expect("lock").push(line);
        }
    })
}

/// The address of a `serving` event, if `line` is one.
fn serving_address(line: &str) -> Option<SocketAddr> {
    if !line.contains(r#""serving""#) {
        return None;
    }
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if event["message"] != "serving" {
        return None;
    }
    event["address"].as_str()?.parse().ok()
}

/// `address`, with loopback in place of an unspecified IP.
fn reachable(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, v4.port()).into(),
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, v6.port()).into(),
        other => other,
    }
}

/// How a command run to its end ended, and what it wrote.
#[derive(Debug)]
pub struct Finished {
    /// `None` if it was still running when the time was up (it was killed).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// It exited, successfully.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// It exited, unsuccessfully: a refusal, not a hang.
    pub fn failed(&self) -> bool {
        self.status.is_some_and(|status| !status.success())
    }

    /// stdout, then stderr.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `binary` with `args` and `envs` added to the caller's environment
/// until it exits, or for at most `within` (then kills it): a subcommand
/// such as `migrate`, or a start that must be refused.
pub async fn run_to_exit(
    binary: impl AsRef<Path>,
    args: &[&str],
    envs: &[(&str, &str)],
    within: Duration,
) -> Finished {
    let mut command = Command::new(binary.as_ref());
    command.args(args).envs(envs.iter().copied());
    finish(&mut command, within).await
}

async fn finish(command: &mut Command, within: Duration) -> Finished {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    // Read while it runs, so that a full pipe cannot stall it.
    let stdout = tokio::spawn(read_all(child.stdout.take().expect("stdout")));
    let stderr = tokio::spawn(read_all(child.stderr.take().expect("stderr")));
    let status = match tokio::time::timeout(within, child.wait()).await {
        Ok(status) => Some(status.expect("exit status")),
        Err(_) => {
            child.start_kill().expect("SIGKILL sent");
            let _ = child.wait().await;
            None
        }
    };
    Finished {
        status,
        stdout: stdout.await.expect("the reader ends cleanly"),
        stderr: stderr.await.expect("the reader ends cleanly"),
    }
}

async fn read_all(mut stream: impl AsyncRead + Unpin) -> String {
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes).await;
    String::from_utf8_lossy(&bytes).into_owned()
}
