//! The load benchmark of the integration service (SPEC section 4).
//!
//! `cargo bench --bench load` starts the real server binary (built with the
//! bench profile) on a fresh database, seeds it straight into the tables, and
//! drives it with one closed-loop load generator: 64 requests in flight, over
//! 8 HTTP/2 connections, for a fixed time after a warm-up that is not
//! measured. Every phase goes through the same generator, so their ratios
//! compare like with like. See `benches/README.md` for the phases, the flags
//! and how to read the output; `cargo bench --bench load -- --help` lists the
//! flags.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use integration_service::{
    domain::{ClientSecret, HashParams, Memory, SecretHash},
    proto::{self, integration_service_client::IntegrationServiceClient},
};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::oneshot,
};
use tonic::{
    Code, Status,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tower::util::MapRequest;

const BINARY: &str = env!("CARGO_BIN_EXE_integration-service");

/// The server runs as in production, with a token per role; every call
/// carries the token its method needs, so the figures include the check.
const ADMIN_TOKEN: &str = "bench-admin-token-00000000000000000000000000000000";
const VALIDATOR_TOKEN: &str = "bench-validator-token-0000000000000000000000000000";

/// A connection whose calls carry the token of the role their method
/// needs (health and reflection ignore it).
type Transport = MapRequest<Channel, fn(HttpRequest) -> HttpRequest>;
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

/// A request that takes longer than this is counted as `CLIENT_TIMEOUT`
/// instead of hanging the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The organization created through the API; every seeded organization
/// copies its secret's hash, hint and timestamps.
const REFERENCE_ORG: &str = "bench-reference";
/// Organizations seeded for the scale phases: `bench-scale-<n>`, client ID
/// `S` and `n` on 23 digits.
const SCALE_ORG: &str = "bench-scale-";
const SCALE_CLIENT: &str = "S";
/// Organizations seeded for the cold phase, used once each.
const COLD_ORG: &str = "bench-cold-";
const COLD_CLIENT: &str = "C";

type Res<T> = Result<T, String>;

trait Context<T> {
    fn context(self, what: &str) -> Res<T>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: &str) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
struct Options {
    backends: Vec<Backend>,
    postgres_url: Option<String>,
    seconds: f64,
    warmup: f64,
    scale: (u64, u64),
    cold_orgs: u64,
    connections: usize,
    concurrency: usize,
    attack_streams: usize,
    /// Requests per second of the paced flood (the goal's); the closed-loop
    /// flood that saturates the machine is measured too, for information.
    flood_rate: f64,
    /// Requests per second of the real client while the paced flood runs.
    real_rate: f64,
    warm: bool,
    cold: bool,
    attack: bool,
    scale_phase: bool,
    json: Option<PathBuf>,
    server_args: Vec<String>,
}

const USAGE: &str = "\
Load benchmark of the integration service.

usage: cargo bench --bench load -- [flags]

  --backend sqlite|postgres|both   default: both when BENCH_DATABASE_URL is set, else sqlite
  --seconds S          measured time of each phase (default 10)
  --warmup S           unmeasured warm-up before each phase (default 2)
  --scale LOW,HIGH     integrations in the database for the scale phase (default 1000,1000000)
  --cold-orgs N        organizations seeded for the cold phase, each used once (default 20000)
  --phases LIST        any of warm,cold,attack,scale (default all)
  --connections N      HTTP/2 connections (default 8)
  --concurrency N      requests in flight (default 64)
  --attack-streams N   in-flight requests of the real client under attack (default 4)
  --flood-rate R       requests per second of the paced flood (default 2000)
  --real-rate R        requests per second of the real client during it (default 1000)
  --json PATH          also write the results as JSON
  --server-arg ARG     pass ARG to `integration-service serve` (repeatable)

BENCH_DATABASE_URL=postgres://user@host:port/db names a PostgreSQL server; each
run creates a database bench_<random> there and drops it at the end.";

impl Options {
    fn parse() -> Res<Self> {
        let postgres_url = std::env::var("BENCH_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty());
        let mut options = Options {
            backends: if postgres_url.is_some() {
                vec![Backend::Postgres, Backend::Sqlite]
            } else {
                vec![Backend::Sqlite]
            },
            postgres_url,
            seconds: 10.0,
            warmup: 2.0,
            scale: (1_000, 1_000_000),
            cold_orgs: 20_000,
            connections: 8,
            concurrency: 64,
            attack_streams: 4,
            flood_rate: 2_000.0,
            real_rate: 1_000.0,
            warm: true,
            cold: true,
            attack: true,
            scale_phase: true,
            json: None,
            server_args: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_owned(), Some(value.to_owned()))
                }
                _ => (arg.clone(), None),
            };
            let mut value = || -> Res<String> {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                // `cargo bench` passes --bench to every bench target.
                "--bench" => {}
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                "--backend" => {
                    options.backends = match value()?.as_str() {
                        "sqlite" => vec![Backend::Sqlite],
                        "postgres" => vec![Backend::Postgres],
                        "both" => vec![Backend::Postgres, Backend::Sqlite],
                        other => return Err(format!("unknown backend {other:?}")),
                    }
                }
                "--seconds" => options.seconds = number(&flag, &value()?)?,
                "--warmup" => options.warmup = number(&flag, &value()?)?,
                "--scale" => {
                    let text = value()?;
                    let (low, high) = text
                        .split_once(',')
                        .ok_or("--scale takes LOW,HIGH, e.g. 1000,1000000")?;
                    options.scale = (number(&flag, low)?, number(&flag, high)?);
                }
                "--cold-orgs" => options.cold_orgs = number(&flag, &value()?)?,
                "--connections" => options.connections = number(&flag, &value()?)?,
                "--concurrency" => options.concurrency = number(&flag, &value()?)?,
                "--attack-streams" => options.attack_streams = number(&flag, &value()?)?,
                "--flood-rate" => options.flood_rate = number(&flag, &value()?)?,
                "--real-rate" => options.real_rate = number(&flag, &value()?)?,
                "--phases" => {
                    let list = value()?;
                    options.warm = false;
                    options.cold = false;
                    options.attack = false;
                    options.scale_phase = false;
                    for phase in list.split(',') {
                        match phase.trim() {
                            "warm" => options.warm = true,
                            "cold" => options.cold = true,
                            "attack" => options.attack = true,
                            "scale" => options.scale_phase = true,
                            other => return Err(format!("unknown phase {other:?}")),
                        }
                    }
                }
                "--json" => options.json = Some(PathBuf::from(value()?)),
                "--server-arg" => options.server_args.push(value()?),
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
            }
        }
        if options.backends.contains(&Backend::Postgres) && options.postgres_url.is_none() {
            return Err("--backend postgres needs BENCH_DATABASE_URL".into());
        }
        if options.scale.0 < 2 || options.scale.1 <= options.scale.0 {
            return Err("--scale needs 2 <= LOW < HIGH".into());
        }
        if options.connections < 2 || options.concurrency < options.connections {
            return Err("need at least 2 connections and one stream per connection".into());
        }
        if options.attack_streams == 0 || options.attack_streams >= options.concurrency {
            return Err("--attack-streams must leave some of the concurrency to the flood".into());
        }
        for rate in [options.flood_rate, options.real_rate] {
            if !rate.is_finite() || rate <= 0.0 {
                return Err("--flood-rate and --real-rate must be positive".into());
            }
        }
        if options.cold_orgs < 2 {
            return Err("--cold-orgs must be at least 2".into());
        }
        Ok(options)
    }
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Res<T> {
    text.trim()
        .parse()
        .map_err(|_| format!("{flag}: {text:?} is not a number"))
}

// ---------------------------------------------------------------------------
// The reference: one argon2id verify, measured in this process
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct VerifyReference {
    cores: usize,
    /// Every single-threaded verify timed, sorted.
    times: Vec<Duration>,
    /// Verifies per second with one thread per core, all verifying at once,
    /// one figure per measurement: the hardware's own ceiling, for
    /// comparison only.
    parallel_rates: Vec<f64>,
    params: String,
}

impl VerifyReference {
    fn median(&self) -> Duration {
        self.times[self.times.len() / 2]
    }

    /// cores ÷ the median verify: the goal's reference.
    fn rate(&self) -> f64 {
        self.cores as f64 / self.median().as_secs_f64()
    }

    fn parallel_rate(&self) -> f64 {
        self.parallel_rates.iter().sum::<f64>() / self.parallel_rates.len() as f64
    }

    /// Both measurements as one: the samples of a measurement before and one
    /// after a phase bracket it, which evens out a drift of the machine's
    /// speed.
    fn merge(mut self, other: Self) -> Self {
        self.times.extend(other.times);
        self.times.sort();
        self.parallel_rates.extend(other.parallel_rates);
        self
    }

    fn describe(&self) -> String {
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        format!(
            "median {:.2} ms of {} in this process ({:.2} to {:.2}) -> cores / verify = {:.1}/s; \
             all cores verifying in-process: {:.1}/s",
            ms(&self.median()),
            self.times.len(),
            self.times.first().map_or(0.0, ms),
            self.times.last().map_or(0.0, ms),
            self.rate(),
            self.parallel_rate()
        )
    }

    fn to_json(&self) -> Value {
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        json!({
            "params": self.params,
            "median_ms": ms(&self.median()),
            "min_ms": self.times.first().map(ms),
            "max_ms": self.times.last().map(ms),
            "samples": self.times.len(),
            "cores": self.cores,
            "cores_per_verify_per_s": self.rate(),
            "in_process_all_cores_per_s": self.parallel_rates,
        })
    }
}

/// Times `SecretHash::matches` of a secret hashed at the minimum (default)
/// parameters: 31 times on one thread, then one thread per core at once.
fn measure_verify() -> VerifyReference {
    const SAMPLES: usize = 31;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let secret = ClientSecret::generate().expect("the OS RNG");
    // Memory reused between computations, as the server's threads do.
    let mut memory = Memory::default();
    let hash =
        SecretHash::compute(&secret, HashParams::MINIMUM, &mut memory).expect("argon2id hashes");
    let params = hash.as_str().split('$').nth(3).unwrap_or("?").to_owned();
    for _ in 0..2 {
        assert!(
            hash.matches(&secret, &mut memory)
                .expect("argon2id verifies")
        );
    }
    let mut times: Vec<Duration> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            let matched = hash
                .matches(&secret, &mut memory)
                .expect("argon2id verifies");
            let elapsed = start.elapsed();
            assert!(matched);
            elapsed
        })
        .collect();
    times.sort();

    // Every core verifying at once, each thread warmed up first: how far the
    // hardware itself falls short of `cores / median` (memory bandwidth,
    // shared caches, a noisy neighbour).
    let per_thread = 60;
    let barrier = std::sync::Barrier::new(cores + 1);
    let parallel = std::thread::scope(|scope| {
        for _ in 0..cores {
            scope.spawn(|| {
                let mut memory = Memory::default();
                assert!(
                    hash.matches(&secret, &mut memory)
                        .expect("argon2id verifies")
                );
                barrier.wait();
                for _ in 0..per_thread {
                    assert!(
                        hash.matches(&secret, &mut memory)
                            .expect("argon2id verifies")
                    );
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    });
    VerifyReference {
        cores,
        times,
        parallel_rates: vec![(cores * per_thread) as f64 / parallel.as_secs_f64()],
        params,
    }
}

// ---------------------------------------------------------------------------
// Processes: CPU time and memory from /proc
// ---------------------------------------------------------------------------

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU seconds of a process, all threads.
fn cpu_seconds(pid: &str, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

/// Busy CPU seconds of the whole machine (every core, every process).
fn machine_busy_seconds(ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = fields.iter().sum::<f64>() - fields.get(3)? - fields.get(4)?;
    Some(busy / ticks)
}

/// Cores' worth of CPU the rest of the machine is using right now, over one
/// second: anything well above zero makes every figure of the run suspect.
async fn machine_busy_now(ticks: f64) -> Option<f64> {
    let before = machine_busy_seconds(ticks)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Some(machine_busy_seconds(ticks)? - before)
}

/// The commit the server was built from, `-dirty` with uncommitted changes.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if changes.is_empty() => hash,
            _ => format!("{hash}-dirty"),
        },
        None => "?".into(),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

/// A `Vm…` line of /proc/<pid>/status, in MiB.
fn memory_mib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

// ---------------------------------------------------------------------------
// The database: a temporary SQLite file or a fresh PostgreSQL database
// ---------------------------------------------------------------------------

/// PostgreSQL databases to drop if the run is interrupted: (admin URL, name).
static PENDING_DROPS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct BenchDatabase {
    backend: Backend,
    url: String,
    label: String,
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl BenchDatabase {
    async fn create(backend: Backend, options: &Options) -> Res<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().context("a temporary directory")?;
                let path = dir.path().join("bench.db");
                Ok(Self {
                    backend,
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    label: path.display().to_string(),
                    postgres: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = options
                    .postgres_url
                    .clone()
                    .ok_or("no BENCH_DATABASE_URL")?;
                let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .context("connecting to BENCH_DATABASE_URL")?;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .context("CREATE DATABASE")?;
                let _ = admin.close().await;
                PENDING_DROPS
                    .lock()
                    .unwrap()
                    .push((admin_url.clone(), name.clone()));
                Ok(Self {
                    backend,
                    url: with_database(&admin_url, &name)?,
                    label: format!("database {name}"),
                    postgres: Some((admin_url, name)),
                    _dir: None,
                })
            }
        }
    }

    async fn remove(self) {
        if let Some((admin_url, name)) = &self.postgres {
            drop_postgres_database(admin_url, name).await;
            PENDING_DROPS.lock().unwrap().retain(|(_, n)| n != name);
        }
    }
}

async fn drop_postgres_database(admin_url: &str, name: &str) {
    match Database::connect(admin_url).await {
        Ok(admin) => {
            if let Err(e) = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
            {
                eprintln!("warning: could not drop database {name}: {e}");
            }
            let _ = admin.close().await;
        }
        Err(e) => eprintln!("warning: could not drop database {name}: {e}"),
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> Res<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base
        .find("://")
        .map(|i| i + 3)
        .ok_or("BENCH_DATABASE_URL has the form postgres://user@host:port/database")?;
    let server = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    Ok(match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    })
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

#[derive(Default)]
struct ServerLog {
    lines: u64,
    warnings: u64,
    errors: u64,
    /// The last lines, shown if the server dies.
    tail: VecDeque<String>,
}

struct Server {
    child: Child,
    pid: u32,
    address: SocketAddr,
    log: Arc<Mutex<ServerLog>>,
}

impl Server {
    async fn start(database_url: &str, extra_args: &[String]) -> Res<Self> {
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
        drain(child.stdout.take().unwrap(), log.clone(), found.clone());
        drain(child.stderr.take().unwrap(), log.clone(), found);

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
                let tail = log.lock().unwrap().tail.iter().cloned().collect::<Vec<_>>();
                Err(format!(
                    "the server never said it was serving; its last output:\n{}",
                    tail.join("\n")
                ))
            }
        }
    }

    fn rss_mib(&self) -> Option<f64> {
        memory_mib(self.pid, "VmRSS:")
    }

    fn peak_rss_mib(&self) -> Option<f64> {
        memory_mib(self.pid, "VmHWM:")
    }

    fn cpu_seconds(&self, ticks: f64) -> Option<f64> {
        cpu_seconds(&self.pid.to_string(), ticks)
    }

    /// Checks the server still runs.
    fn alive(&mut self) -> Res<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                let tail = self
                    .log
                    .lock()
                    .unwrap()
                    .tail
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>();
                Err(format!(
                    "the server exited ({status}); its last output:\n{}",
                    tail.join("\n")
                ))
            }
            Err(e) => Err(format!("cannot poll the server process: {e}")),
        }
    }

    async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
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
                    && let Some(sender) = found.lock().unwrap().take()
                {
                    let _ = sender.send(address);
                }
            }
            let mut log = log.lock().unwrap();
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

async fn connect(address: SocketAddr, connections: usize) -> Res<Vec<Transport>> {
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

// ---------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------

/// What the reference organization, created through the API, gives the
/// seeded ones.
struct Reference {
    client_id: String,
    secret: String,
}

async fn create_reference(channel: &Transport) -> Res<Reference> {
    let mut client = IntegrationServiceClient::new(channel.clone());
    let integration = client
        .create_integration(proto::CreateIntegrationRequest {
            organization_id: REFERENCE_ORG.into(),
        })
        .await
        .context("CreateIntegration of the reference organization")?
        .into_inner()
        .integration
        .ok_or("CreateIntegration returned no integration")?;
    let secret = client
        .generate_secret(proto::GenerateSecretRequest {
            organization_id: REFERENCE_ORG.into(),
        })
        .await
        .context("GenerateSecret")?
        .into_inner()
        .client_secret;
    client
        .activate_secret(proto::ActivateSecretRequest {
            organization_id: REFERENCE_ORG.into(),
            client_secret: secret.clone(),
        })
        .await
        .context("ActivateSecret")?;
    // One validation, as a gateway's first call: the phases measure the
    // steady state, not the first miss (and this checks that it validates).
    let answer = client
        .validate_client(proto::ValidateClientRequest {
            client_id: integration.client_id.clone(),
            client_secret: secret.clone(),
            ..Default::default()
        })
        .await
        .context("ValidateClient of the reference organization")?
        .into_inner();
    if !answer.valid {
        return Err("the reference organization's secret does not validate".into());
    }
    Ok(Reference {
        client_id: integration.client_id,
        secret,
    })
}

/// Inserts organizations `<org_prefix><n>` for n in `from..=to`, each with an
/// active secret: the reference organization's hash, hint and timestamps
/// (so every seeded organization has the reference's secret value, and the
/// rows are in exactly the format SeaORM wrote), in two bulk statements,
/// then refreshes the planner's statistics.
async fn seed(
    db: &DatabaseConnection,
    backend: Backend,
    (org_prefix, client_prefix): (&str, &str),
    from: u64,
    to: u64,
) -> Res<Seeding> {
    let what = format!("{org_prefix}{{{from}..={to}}}");
    let (series, client_id, secret_id) = match backend {
        Backend::Postgres => (
            format!("generate_series({from}::bigint, {to}::bigint) AS seq(n)"),
            format!("'{client_prefix}' || lpad(n::text, 23, '0')"),
            "gen_random_uuid()",
        ),
        Backend::Sqlite => (
            "seq".to_owned(),
            format!("'{client_prefix}' || substr('00000000000000000000000' || n, -23)"),
            // SeaORM stores a uuid as a 16-byte BLOB on SQLite.
            "randomblob(16)",
        ),
    };
    let with = match backend {
        Backend::Postgres => String::new(),
        Backend::Sqlite => format!(
            "WITH RECURSIVE seq(n) AS (SELECT {from} UNION ALL SELECT n + 1 FROM seq WHERE n < {to}) "
        ),
    };
    let integrations = format!(
        "{with}INSERT INTO integrations (organization_id, client_id, custom_domain, created_at, updated_at) \
         SELECT '{org_prefix}' || n, {client_id}, NULL, r.created_at, r.updated_at \
         FROM {series}, (SELECT created_at, updated_at FROM integrations \
                         WHERE organization_id = '{REFERENCE_ORG}') AS r"
    );
    let secrets = format!(
        "{with}INSERT INTO secrets (id, organization_id, state, hash, hint, created_at, activated_at, revoked_at) \
         SELECT {secret_id}, '{org_prefix}' || n, 'active', r.hash, r.hint, r.created_at, r.activated_at, NULL \
         FROM {series}, (SELECT hash, hint, created_at, activated_at FROM secrets \
                         WHERE organization_id = '{REFERENCE_ORG}' AND state = 'active') AS r"
    );
    // Fresh statistics, as a long-lived database would have (and on SQLite
    // the bulk insert moved from the write-ahead log into the database).
    let analyze = match backend {
        Backend::Postgres => "VACUUM ANALYZE integrations, secrets",
        Backend::Sqlite => "ANALYZE; PRAGMA wal_checkpoint(TRUNCATE)",
    };
    let mut steps = [0.0; 3];
    if from <= to {
        for (i, sql) in [integrations.as_str(), &secrets, analyze]
            .iter()
            .enumerate()
        {
            let started = Instant::now();
            db.execute_unprepared(sql)
                .await
                .map_err(|e| format!("seeding {what}: {e}"))?;
            steps[i] = started.elapsed().as_secs_f64();
        }
    }
    let seeding = Seeding {
        rows: (to + 1).saturating_sub(from),
        total: count_integrations(db).await?,
        seconds: steps.iter().sum(),
        steps,
        what,
    };
    eprintln!(
        "  seeded {} in {:.1} s: {} rows, {} integrations in all",
        seeding.what, seeding.seconds, seeding.rows, seeding.total
    );
    Ok(seeding)
}

async fn count_integrations(db: &DatabaseConnection) -> Res<u64> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM integrations",
        ))
        .await
        .context("counting integrations")?
        .ok_or("no count")?;
    let n: i64 = row.try_get("", "n").context("count")?;
    Ok(n as u64)
}

fn scale_org(n: u64) -> String {
    format!("{SCALE_ORG}{n}")
}

fn seeded_client_id(prefix: &str, n: u64) -> String {
    format!("{prefix}{n:023}")
}

/// Reads a seeded organization back through the API (GetIntegration decodes
/// every column, uuids and timestamps included) and, when `validate`, checks
/// that its client ID and the shared secret validate.
async fn check_seeded(
    channel: &Transport,
    reference: &Reference,
    organization: &str,
    client_id: &str,
    validate: bool,
) -> Res<()> {
    let mut client = IntegrationServiceClient::new(channel.clone());
    let integration = client
        .get_integration(proto::GetIntegrationRequest {
            organization_id: organization.to_owned(),
        })
        .await
        .map_err(|s| format!("GetIntegration of seeded {organization}: {s}"))?
        .into_inner()
        .integration
        .ok_or("no integration")?;
    let active = integration
        .active_secret
        .ok_or_else(|| format!("seeded {organization} has no active secret"))?;
    let hint = &reference.secret[reference.secret.len() - 4..];
    if integration.client_id != client_id || active.hint != hint || active.create_time.is_none() {
        return Err(format!(
            "seeded {organization} reads back wrong: client_id {}, hint {}",
            integration.client_id, active.hint
        ));
    }
    if validate {
        let answer = client
            .validate_client(proto::ValidateClientRequest {
                client_id: client_id.to_owned(),
                client_secret: reference.secret.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| format!("ValidateClient of seeded {organization}: {s}"))?
            .into_inner();
        if !answer.valid || answer.organization_id != organization {
            return Err(format!("seeded {organization} does not validate"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------

/// What a worker sends, over and over.
#[derive(Clone)]
enum Op {
    /// `grpc.health.v1.Health/Check` of "".
    Health,
    /// ValidateClient of one client with its active secret.
    Validate {
        client_id: Arc<str>,
        secret: Arc<str>,
    },
    /// ValidateClient of a different seeded client each call.
    ValidateCold {
        next: Arc<AtomicU64>,
        pool: u64,
        repeats: Arc<AtomicU64>,
        secret: Arc<str>,
    },
    /// GetIntegration of a seeded organization drawn at random from 1..=count.
    GetIntegration { count: u64 },
    /// Well-formed wrong secrets for `client_id`, unknown client IDs with
    /// well-formed secrets, and some secrets with a broken checksum.
    Flood {
        client_id: Arc<str>,
        kind: FloodKind,
    },
}

/// What a flood worker sends; each is a group of its own, so that cheap
/// refusals are not held up behind expensive misses in the same worker.
#[derive(Debug, Clone, Copy)]
enum FloodKind {
    /// A fresh, well-formed (valid checksum) wrong secret for the real
    /// client's ID.
    WrongSecret,
    /// A fresh unknown client ID (24 base62 characters) with a fresh,
    /// well-formed secret.
    UnknownClient,
    /// A secret whose checksum fails, for the real client's ID or an unknown
    /// one, alternately.
    BadChecksum,
}

/// The result of one call: the status, and whether the answer was the
/// positive one (valid=true, SERVING, an integration).
type Outcome = Result<bool, Status>;

impl Op {
    async fn call(
        &self,
        client: &mut IntegrationServiceClient<Transport>,
        health: &mut HealthClient<Transport>,
        state: &mut WorkerState,
    ) -> Outcome {
        match self {
            Op::Health => {
                let response = health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
                Ok(response.into_inner().status == ServingStatus::Serving as i32)
            }
            Op::Validate { client_id, secret } => validate(client, client_id, secret).await,
            Op::ValidateCold {
                next,
                pool,
                repeats,
                secret,
            } => {
                // A call refused before it was verified (throttled, timed
                // out) left its organization cold: retry the same one, so
                // that an organization is used up only once answered.
                let n = state.cold.take().unwrap_or_else(|| {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n > *pool {
                        repeats.fetch_add(1, Ordering::Relaxed);
                        (n - 1) % pool + 1
                    } else {
                        n
                    }
                });
                let outcome = validate(client, &seeded_client_id(COLD_CLIENT, n), secret).await;
                if outcome.is_err() {
                    state.cold = Some(n);
                }
                outcome
            }
            Op::GetIntegration { count } => {
                let n = state.rng.below(*count) + 1;
                let response = client
                    .get_integration(proto::GetIntegrationRequest {
                        organization_id: scale_org(n),
                    })
                    .await?;
                Ok(response.into_inner().integration.is_some())
            }
            Op::Flood { client_id, kind } => {
                let fresh = ClientSecret::generate().expect("the OS RNG");
                // 24 base62 characters from the random part of another
                // fresh secret: a well-formed client ID nobody has.
                let unknown =
                    || ClientSecret::generate().expect("the OS RNG").expose()[4..28].to_owned();
                let (client_id, secret) = match kind {
                    FloodKind::WrongSecret => (client_id.to_string(), fresh.expose().to_owned()),
                    FloodKind::UnknownClient => (unknown(), fresh.expose().to_owned()),
                    FloodKind::BadChecksum => {
                        let mut broken = fresh.expose().to_owned();
                        let last = if broken.ends_with('A') { "B" } else { "A" };
                        broken.replace_range(63.., last);
                        let id = if state.rng.below(2) == 0 {
                            client_id.to_string()
                        } else {
                            unknown()
                        };
                        (id, broken)
                    }
                };
                validate(client, &client_id, &secret).await
            }
        }
    }
}

async fn validate(
    client: &mut IntegrationServiceClient<Transport>,
    client_id: &str,
    secret: &str,
) -> Outcome {
    let response = client
        .validate_client(proto::ValidateClientRequest {
            client_id: client_id.to_owned(),
            client_secret: secret.to_owned(),
            ..Default::default()
        })
        .await?;
    Ok(response.into_inner().valid)
}

/// What a worker carries from one call to the next.
struct WorkerState {
    rng: SplitMix,
    /// The cold organization to retry, if the last call was refused.
    cold: Option<u64>,
}

/// A small, fast PRNG for choosing organizations; no cryptography here.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// What one worker (or a whole group, merged) saw.
#[derive(Default)]
struct Sample {
    latencies_ns: Vec<u64>,
    codes: BTreeMap<&'static str, u64>,
    positive: u64,
}

impl Sample {
    fn record(&mut self, outcome: Option<Outcome>, latency: Duration) {
        self.latencies_ns.push(latency.as_nanos() as u64);
        let code = match outcome {
            None => "CLIENT_TIMEOUT",
            Some(Ok(positive)) => {
                if positive {
                    self.positive += 1;
                }
                "OK"
            }
            Some(Err(status)) => code_name(status.code()),
        };
        *self.codes.entry(code).or_default() += 1;
    }

    fn merge(&mut self, other: Sample) {
        self.latencies_ns.extend(other.latencies_ns);
        for (code, n) in other.codes {
            *self.codes.entry(code).or_default() += n;
        }
        self.positive += other.positive;
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One worker until `end`, recording every call that completes inside
/// [measure_start, end], whenever it started.
///
/// Without a `pace` it is closed-loop: it sends a request, waits for its
/// answer, sends the next. With a `pace` it is open-loop, as an attacker
/// is: it starts one request per `pace` without waiting for earlier
/// answers, up to [`MAX_OUTSTANDING`] at once.
async fn worker(
    op: Op,
    channel: Transport,
    seed: u64,
    pace: Option<Duration>,
    measure_start: Instant,
    end: Instant,
) -> Sample {
    let mut client = IntegrationServiceClient::new(channel.clone());
    let mut health = HealthClient::new(channel);
    let mut state = WorkerState {
        rng: SplitMix(seed),
        cold: None,
    };
    let mut sample = Sample::default();
    let record = |sample: &mut Sample, outcome: Option<Outcome>, start: Instant, done: Instant| {
        if done >= measure_start && done <= end {
            sample.record(outcome, done - start);
        }
    };
    let Some(pace) = pace else {
        while Instant::now() < end {
            let start = Instant::now();
            let outcome = tokio::time::timeout(
                REQUEST_TIMEOUT,
                op.call(&mut client, &mut health, &mut state),
            )
            .await
            .ok();
            record(&mut sample, outcome, start, Instant::now());
        }
        return sample;
    };

    let mut ticks = tokio::time::interval(pace);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outstanding = tokio::task::JoinSet::new();
    while Instant::now() < end {
        tokio::select! {
            _ = ticks.tick(), if outstanding.len() < MAX_OUTSTANDING => {
                let (op, mut client, mut health) = (op.clone(), client.clone(), health.clone());
                let mut state = WorkerState { rng: SplitMix(state.rng.next()), cold: None };
                outstanding.spawn(async move {
                    let start = Instant::now();
                    let call = op.call(&mut client, &mut health, &mut state);
                    let outcome = tokio::time::timeout(REQUEST_TIMEOUT, call).await.ok();
                    // Timed here, not when this worker gets round to it.
                    (outcome, start, Instant::now())
                });
            }
            Some(Ok((outcome, start, done))) = outstanding.join_next() => {
                record(&mut sample, outcome, start, done);
            }
        }
    }
    // Calls still in flight end after the window; they are not measured.
    outstanding.abort_all();
    sample
}

/// Most requests one open-loop worker keeps in flight.
const MAX_OUTSTANDING: usize = 256;

/// A set of workers with one purpose, measured together.
struct Group {
    name: String,
    channels: Vec<Transport>,
    streams: usize,
    op: Op,
    /// Requests per second for the whole group; `None`: as fast as answers
    /// come back.
    rate: Option<f64>,
}

/// The figures of one group over one measured window.
#[derive(Debug, Clone)]
struct Measured {
    name: String,
    streams: usize,
    connections: usize,
    seconds: f64,
    requests: u64,
    /// Every answer, whatever its status, per second.
    throughput: f64,
    /// Positive answers (OK and valid=true, SERVING, an integration) per
    /// second: what the goals compare.
    goodput: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    codes: BTreeMap<&'static str, u64>,
    positive: u64,
    /// Shared by every group of the phase.
    server_cpu_ms_per_request: Option<f64>,
    server_cpu_cores: Option<f64>,
    bench_cpu_cores: Option<f64>,
    /// CPU used by every other process meanwhile (PostgreSQL, or anything
    /// else running on the machine).
    other_cpu_cores: Option<f64>,
    server_rss_mib: Option<f64>,
    note: Option<String>,
}

impl Measured {
    fn ok(&self) -> u64 {
        self.codes.get("OK").copied().unwrap_or(0)
    }

    fn positive_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.positive as f64 / self.requests as f64
        }
    }

    fn codes_text(&self) -> String {
        self.codes
            .iter()
            .map(|(code, n)| format!("{code}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "streams": self.streams,
            "connections": self.connections,
            "seconds": self.seconds,
            "requests": self.requests,
            "throughput_per_s": self.throughput,
            "goodput_per_s": self.goodput,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "statuses": self.codes,
            "positive": self.positive,
            "server_cpu_ms_per_request": self.server_cpu_ms_per_request,
            "server_cpu_cores": self.server_cpu_cores,
            "bench_cpu_cores": self.bench_cpu_cores,
            "other_cpu_cores": self.other_cpu_cores,
            "server_rss_mib": self.server_rss_mib,
            "note": self.note,
        })
    }
}

fn percentile_ms(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    // Nearest rank.
    let rank = ((q * sorted_ns.len() as f64).ceil() as usize).clamp(1, sorted_ns.len());
    sorted_ns[rank - 1] as f64 / 1e6
}

/// The flood of an attack phase.
#[derive(Debug, Clone, Copy)]
enum Flood {
    /// None: the real client alone, paced.
    None,
    /// Open-loop at this many requests per second in all; the real client
    /// paced.
    Paced(f64),
    /// Closed-loop, as fast as answers come back; the real client too.
    Saturating,
}

impl Flood {
    fn label(self) -> &'static str {
        match self {
            Flood::None => "no flood",
            Flood::Paced(_) => "paced flood",
            Flood::Saturating => "saturating flood",
        }
    }
}

/// One attack: a real client validating its cached secret on a connection
/// of its own (at `--real-rate` unless the flood saturates), while a flood
/// on the other connections sends 45 % wrong secrets for that client, 45 %
/// unknown client IDs and 10 % values that fail the checksum. Returns the
/// real client's figures and the flood's.
async fn attack(
    generator: &mut Generator<'_>,
    options: &Options,
    channels: &[Transport],
    warm_op: &Op,
    client_id: &str,
    flood: Flood,
) -> Res<(Measured, Vec<Measured>)> {
    let real_streams = options.attack_streams;
    let (real_rate, flood_rate) = match flood {
        Flood::None => (Some(options.real_rate), None),
        Flood::Paced(rate) => (Some(options.real_rate), Some(rate)),
        Flood::Saturating => (None, None),
    };
    let mut groups = vec![Group {
        name: "attack: real client".into(),
        channels: channels[..1].to_vec(),
        streams: real_streams,
        op: warm_op.clone(),
        rate: real_rate,
    }];
    if matches!(flood, Flood::None) {
        let measured = generator.run(groups).await?;
        let real = measured
            .into_iter()
            .next()
            .ok_or("no measurement of the real client")?;
        return Ok((real, Vec::new()));
    }
    let flood_streams = options.concurrency - real_streams;
    let bad_checksum = (flood_streams / 10).max(1);
    let wrong_secret = (flood_streams - bad_checksum) / 2;
    let unknown_client = flood_streams - bad_checksum - wrong_secret;
    let mut flood_channels = channels[1..].to_vec();
    for (name, kind, streams) in [
        (
            "attack: flood wrong secret",
            FloodKind::WrongSecret,
            wrong_secret,
        ),
        (
            "attack: flood unknown id",
            FloodKind::UnknownClient,
            unknown_client,
        ),
        (
            "attack: flood bad checksum",
            FloodKind::BadChecksum,
            bad_checksum,
        ),
    ] {
        if streams == 0 {
            continue;
        }
        groups.push(Group {
            name: name.into(),
            channels: flood_channels.clone(),
            streams,
            op: Op::Flood {
                client_id: client_id.into(),
                kind,
            },
            rate: flood_rate.map(|rate| rate * streams as f64 / flood_streams as f64),
        });
        // Spread the flood's streams evenly over its connections.
        let len = flood_channels.len();
        flood_channels.rotate_left(streams % len);
    }
    let mut measured = generator.run(groups).await?;
    let flood = measured.split_off(1);
    let real = measured.pop().ok_or("no measurement of the real client")?;
    Ok((real, flood))
}

struct Generator<'a> {
    options: &'a Options,
    server: &'a mut Server,
    ticks: f64,
    seed: u64,
}

impl Generator<'_> {
    /// Runs every group at once: warm-up, then the measured window, then
    /// waits for the calls still in flight to finish (not measured), so the
    /// next phase starts on an idle server.
    async fn run(&mut self, groups: Vec<Group>) -> Res<Vec<Measured>> {
        self.server.alive()?;
        let warmup = Duration::from_secs_f64(self.options.warmup);
        let duration = Duration::from_secs_f64(self.options.seconds);
        let begin = Instant::now();
        let measure_start = begin + warmup;
        let end = measure_start + duration;

        let mut handles = Vec::new();
        for group in &groups {
            let mut workers = Vec::new();
            for i in 0..group.streams {
                self.seed = self.seed.wrapping_add(0x9E37_79B9);
                let channel = group.channels[i % group.channels.len()].clone();
                let pace = group
                    .rate
                    .map(|rate| Duration::from_secs_f64(group.streams as f64 / rate));
                workers.push(tokio::spawn(worker(
                    group.op.clone(),
                    channel,
                    self.seed,
                    pace,
                    measure_start,
                    end,
                )));
            }
            handles.push(workers);
        }

        tokio::time::sleep_until(measure_start.into()).await;
        let server_cpu_start = self.server.cpu_seconds(self.ticks);
        let bench_cpu_start = cpu_seconds("self", self.ticks);
        let machine_start = machine_busy_seconds(self.ticks);
        tokio::time::sleep_until(end.into()).await;
        let machine = machine_busy_seconds(self.ticks)
            .zip(machine_start)
            .map(|(b, a)| b - a);
        let server_cpu = self
            .server
            .cpu_seconds(self.ticks)
            .zip(server_cpu_start)
            .map(|(b, a)| b - a);
        let bench_cpu = cpu_seconds("self", self.ticks)
            .zip(bench_cpu_start)
            .map(|(b, a)| b - a);
        let rss = self.server.rss_mib();

        let mut samples = Vec::new();
        for workers in handles {
            let mut merged = Sample::default();
            for handle in workers {
                merged.merge(handle.await.context("a load worker panicked")?);
            }
            samples.push(merged);
        }
        self.server.alive()?;

        let seconds = duration.as_secs_f64();
        let total: u64 = samples.iter().map(|s| s.latencies_ns.len() as u64).sum();
        let mut measured = Vec::new();
        for (group, mut sample) in groups.into_iter().zip(samples) {
            sample.latencies_ns.sort_unstable();
            let requests = sample.latencies_ns.len() as u64;
            measured.push(Measured {
                name: group.name,
                streams: group.streams,
                connections: group.channels.len().min(group.streams),
                seconds,
                requests,
                throughput: requests as f64 / seconds,
                goodput: sample.positive as f64 / seconds,
                p50_ms: percentile_ms(&sample.latencies_ns, 0.50),
                p99_ms: percentile_ms(&sample.latencies_ns, 0.99),
                max_ms: sample
                    .latencies_ns
                    .last()
                    .map_or(0.0, |&ns| ns as f64 / 1e6),
                codes: sample.codes,
                positive: sample.positive,
                server_cpu_ms_per_request: server_cpu
                    .filter(|_| total > 0)
                    .map(|cpu| cpu * 1e3 / total as f64),
                server_cpu_cores: server_cpu.map(|cpu| cpu / seconds),
                bench_cpu_cores: bench_cpu.map(|cpu| cpu / seconds),
                other_cpu_cores: match (machine, server_cpu, bench_cpu) {
                    (Some(all), Some(server), Some(bench)) => {
                        Some(((all - server - bench) / seconds).max(0.0))
                    }
                    _ => None,
                },
                server_rss_mib: rss,
                note: None,
            });
        }
        for m in &measured {
            eprintln!(
                "    {:<24} {:>10.1} req/s {:>10.1} good/s  p50 {:>8.2} ms  p99 {:>8.2} ms  {}",
                m.name,
                m.throughput,
                m.goodput,
                m.p50_ms,
                m.p99_ms,
                m.codes_text(),
            );
        }
        Ok(measured)
    }

    /// One group with all the concurrency over all the connections.
    async fn run_one(&mut self, name: &str, channels: &[Transport], op: Op) -> Res<Measured> {
        let group = Group {
            name: name.to_owned(),
            channels: channels.to_vec(),
            streams: self.options.concurrency,
            op,
            rate: None,
        };
        Ok(self.run(vec![group]).await?.remove(0))
    }
}

// ---------------------------------------------------------------------------
// One backend, every phase
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Check {
    name: String,
    measured: String,
    reference: String,
    ratio: Option<f64>,
    goal: String,
    /// `None` for a figure shown for information, without a goal.
    pass: Option<bool>,
}

impl Check {
    fn ratio(
        name: &str,
        measured: &Measured,
        reference: f64,
        reference_text: String,
        goal: f64,
    ) -> Self {
        let ratio = measured.goodput / reference;
        Self {
            name: name.to_owned(),
            measured: format!("{:.1}/s", measured.goodput),
            reference: reference_text,
            ratio: Some(ratio),
            goal: format!(">= {goal}"),
            pass: Some(ratio >= goal),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "check": self.name,
            "measured": self.measured,
            "reference": self.reference,
            "ratio": self.ratio,
            "goal": self.goal,
            "pass": self.pass,
        })
    }
}

struct Seeding {
    what: String,
    rows: u64,
    /// Integrations in the database afterwards.
    total: u64,
    seconds: f64,
    /// Inserting integrations, inserting secrets, refreshing statistics.
    steps: [f64; 3],
}

struct BackendReport {
    backend: Backend,
    database: String,
    phases: Vec<Measured>,
    checks: Vec<Check>,
    seeding: Vec<Seeding>,
    server_peak_rss_mib: Option<f64>,
    /// Lines, WARN lines, ERROR lines.
    server_log: (u64, u64, u64),
    /// The argon2id verify measured just before and after the cold phase,
    /// which the cold phase is compared with.
    cold_verify: Option<VerifyReference>,
}

async fn run_backend(backend: Backend, options: &Options, ticks: f64) -> Res<BackendReport> {
    let database = BenchDatabase::create(backend, options).await?;
    eprintln!("\n== {} ({})", backend.name(), database.label);
    let result = run_phases(&database, options, ticks).await;
    database.remove().await;
    result
}

async fn run_phases(database: &BenchDatabase, options: &Options, ticks: f64) -> Res<BackendReport> {
    let backend = database.backend;
    let mut server = Server::start(&database.url, &options.server_args).await?;
    eprintln!("  server pid {} on {}", server.pid, server.address);
    let channels = connect(server.address, options.connections).await?;
    let reference = create_reference(&channels[0]).await?;
    let db = Database::connect(&database.url)
        .await
        .context("the bench's own connection to the database")?;

    let mut phases = Vec::new();
    let mut checks = Vec::new();
    let mut seeding = Vec::new();
    let mut cold_verify = None;
    let (low, high) = options.scale;

    // Seed up to LOW integrations in all (the reference is one of them).
    let scale = (SCALE_ORG, SCALE_CLIENT);
    seeding.push(seed(&db, backend, scale, 1, low - 1).await?);
    check_seeded(
        &channels[0],
        &reference,
        &scale_org(1),
        &seeded_client_id(SCALE_CLIENT, 1),
        true,
    )
    .await?;

    let warm_op = Op::Validate {
        client_id: reference.client_id.as_str().into(),
        secret: reference.secret.as_str().into(),
    };
    let mut generator = Generator {
        options,
        server: &mut server,
        ticks,
        seed: 0x5EED_u64 ^ (backend as u64),
    };

    // a. Warm ValidateClient against Health/Check, back to back.
    if options.warm {
        eprintln!("  phase warm (health, then warm ValidateClient)");
        let health = generator.run_one("health", &channels, Op::Health).await?;
        let warm = generator
            .run_one("validate warm", &channels, warm_op.clone())
            .await?;
        checks.push(Check::ratio(
            "warm ValidateClient / Health",
            &warm,
            health.goodput,
            format!("{:.1}/s health", health.goodput),
            0.8,
        ));
        if let (Some(h), Some(w)) = (
            health.server_cpu_ms_per_request,
            warm.server_cpu_ms_per_request,
        ) {
            checks.push(Check {
                name: "  same, by server CPU per call".into(),
                measured: format!("{w:.3} ms"),
                reference: format!("{h:.3} ms health"),
                ratio: Some(h / w),
                goal: "-".into(),
                pass: None,
            });
        }
        phases.push(health);
        phases.push(warm);
    }

    // d. Scale: GetIntegration and warm ValidateClient at LOW, then at HIGH.
    if options.scale_phase {
        eprintln!("  phase scale at {low} integrations");
        let get_low = generator
            .run_one(
                &format!("get @{low}"),
                &channels,
                Op::GetIntegration { count: low - 1 },
            )
            .await?;
        let validate_low = generator
            .run_one(&format!("validate warm @{low}"), &channels, warm_op.clone())
            .await?;

        seeding.push(seed(&db, backend, scale, low, high - 1).await?);
        check_seeded(
            &channels[0],
            &reference,
            &scale_org(high - 1),
            &seeded_client_id(SCALE_CLIENT, high - 1),
            true,
        )
        .await?;

        eprintln!("  phase scale at {high} integrations");
        let get_high = generator
            .run_one(
                &format!("get @{high}"),
                &channels,
                Op::GetIntegration { count: high - 1 },
            )
            .await?;
        let validate_high = generator
            .run_one(
                &format!("validate warm @{high}"),
                &channels,
                warm_op.clone(),
            )
            .await?;
        checks.push(Check::ratio(
            &format!("GetIntegration @{high} / @{low}"),
            &get_high,
            get_low.goodput,
            format!("{:.1}/s @{low}", get_low.goodput),
            0.8,
        ));
        checks.push(Check::ratio(
            &format!("warm ValidateClient @{high} / @{low}"),
            &validate_high,
            validate_low.goodput,
            format!("{:.1}/s @{low}", validate_low.goodput),
            0.8,
        ));
        phases.extend([get_low, validate_low, get_high, validate_high]);
    }

    // b. Cold: a different organization on every call.
    if options.cold {
        let pool = options.cold_orgs;
        seeding.push(seed(&db, backend, (COLD_ORG, COLD_CLIENT), 1, pool).await?);
        // Cold organization 1 is spent on this check; the phase starts at 2.
        check_seeded(
            &channels[0],
            &reference,
            &format!("{COLD_ORG}1"),
            &seeded_client_id(COLD_CLIENT, 1),
            true,
        )
        .await?;

        // The reference, measured right before and right after the phase
        // with the server idle: the machine's speed drifts by more than the
        // goal's margin, between runs and within one.
        eprintln!("  measuring one argon2id verify in this process");
        let before = tokio::task::spawn_blocking(measure_verify)
            .await
            .context("measuring argon2id")?;
        eprintln!("  phase cold");
        let next = Arc::new(AtomicU64::new(2));
        let repeats = Arc::new(AtomicU64::new(0));
        let mut cold = generator
            .run_one(
                "validate cold",
                &channels,
                Op::ValidateCold {
                    next: next.clone(),
                    pool,
                    repeats: repeats.clone(),
                    secret: reference.secret.as_str().into(),
                },
            )
            .await?;
        let used = next.load(Ordering::Relaxed) - 2;
        let repeated = repeats.load(Ordering::Relaxed);
        cold.note = Some(if repeated > 0 {
            format!("{used} organizations asked for, {repeated} repeated: raise --cold-orgs")
        } else {
            format!("{used} distinct organizations, none repeated")
        });
        eprintln!("  measuring one argon2id verify in this process again");
        let after = tokio::task::spawn_blocking(measure_verify)
            .await
            .context("measuring argon2id")?;
        let verify = before.merge(after);
        checks.push(Check::ratio(
            "cold ValidateClient / (cores / verify)",
            &cold,
            verify.rate(),
            format!(
                "{:.1}/s = {} / {:.1} ms",
                verify.rate(),
                verify.cores,
                verify.median().as_secs_f64() * 1e3
            ),
            0.9,
        ));
        checks.push(Check {
            name: "  same, / all cores verifying in-process".into(),
            measured: format!("{:.1}/s", cold.goodput),
            reference: format!("{:.1}/s", verify.parallel_rate()),
            ratio: Some(cold.goodput / verify.parallel_rate()),
            goal: "-".into(),
            pass: None,
        });
        cold_verify = Some(verify);
        phases.push(cold);
    }

    // c. Under attack, last: whatever throttling state the flood leaves
    // behind cannot affect another phase.
    if options.attack {
        // The real client alone first, for the baseline of its latency on
        // this machine. Then the goal: the same client while a flood runs at
        // a stated rate, far beyond what argon2 could verify. Then, for
        // information, both as fast as answers come back, which saturates
        // the machine (generator included) whatever the service does.
        for flood in [
            Flood::None,
            Flood::Paced(options.flood_rate),
            Flood::Saturating,
        ] {
            eprintln!("  phase attack, {}", flood.label());
            let (real, flood_measured) = attack(
                &mut generator,
                options,
                &channels,
                &warm_op,
                &reference.client_id,
                flood,
            )
            .await?;
            let flood_rate: f64 = flood_measured.iter().map(|m| m.throughput).sum();
            let goal = matches!(flood, Flood::Paced(_));
            checks.push(Check {
                name: format!("attack ({}): real client p99", flood.label()),
                measured: format!("{:.2} ms", real.p99_ms),
                reference: format!("{:.1} valid/s, flood {:.0}/s", real.goodput, flood_rate),
                ratio: None,
                goal: if goal { "< 5 ms".into() } else { "-".into() },
                pass: goal.then_some(real.requests > 0 && real.p99_ms < 5.0),
            });
            checks.push(Check {
                name: format!("attack ({}): real client success", flood.label()),
                measured: format!("{:.3} %", real.positive_ratio() * 100.0),
                reference: format!("{} of {} valid", real.positive, real.requests),
                ratio: None,
                goal: "= 100 %".into(),
                pass: Some(real.requests > 0 && real.positive == real.requests),
            });
            let flood = flood_measured;
            phases.push(real);
            phases.extend(flood);
        }
    }

    let _ = db.close().await;
    let server_peak_rss_mib = server.peak_rss_mib();
    let server_log = {
        let log = server.log.lock().unwrap();
        (log.lines, log.warnings, log.errors)
    };
    server.kill().await;
    Ok(BackendReport {
        backend,
        database: database.label.clone(),
        phases,
        checks,
        seeding,
        server_peak_rss_mib,
        server_log,
        cold_verify,
    })
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

/// Where and when the run happened.
struct RunInfo {
    date: String,
    command: String,
    cpu: String,
    commit: String,
    machine_before: String,
}

fn report_text(
    options: &Options,
    verify: &VerifyReference,
    run: &RunInfo,
    reports: &[BackendReport],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nintegration-service load benchmark");
    let _ = writeln!(
        out,
        "date {}   nproc {}   {}   commit {}",
        run.date, verify.cores, run.cpu, run.commit
    );
    let _ = writeln!(
        out,
        "{} requests in flight over {} HTTP/2 connections   {} s per phase after {} s warm-up",
        options.concurrency, options.connections, options.seconds, options.warmup
    );
    let _ = writeln!(out, "before the run: {}", run.machine_before);
    let _ = writeln!(out, "server {BINARY} {}", options.server_args.join(" "));
    let _ = writeln!(
        out,
        "argon2id verify ({}) at start: {}",
        verify.params,
        verify.describe()
    );

    for report in reports {
        let _ = writeln!(
            out,
            "\n[{}] {}   server peak RSS {}   server log: {} lines, {} WARN, {} ERROR",
            report.backend.name(),
            report.database,
            report
                .server_peak_rss_mib
                .map_or("?".into(), |m| format!("{m:.0} MiB")),
            report.server_log.0,
            report.server_log.1,
            report.server_log.2,
        );
        if let Some(v) = &report.cold_verify {
            let _ = writeln!(
                out,
                "  argon2id verify around the cold phase (before and after): {}",
                v.describe()
            );
        }
        for s in &report.seeding {
            let _ = writeln!(
                out,
                "  seeded {:<30} {:>9} rows in {:>6.1} s (integrations {:.1} s, secrets {:.1} s, \
                 statistics {:.1} s): {} integrations in all",
                s.what, s.rows, s.seconds, s.steps[0], s.steps[1], s.steps[2], s.total
            );
        }
        let _ = writeln!(
            out,
            "  {:<26} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>7} {:>7}  statuses",
            "phase",
            "streams",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "good/s",
            "srv ms/r",
            "srv c",
            "bench c",
            "other c"
        );
        for m in &report.phases {
            let _ = writeln!(
                out,
                "  {:<26} {:>7} {:>10.1} {:>9.2} {:>9.2} {:>9.1} {:>9.1} {:>8} {:>6} {:>7} {:>7}  {}",
                m.name,
                m.streams,
                m.throughput,
                m.p50_ms,
                m.p99_ms,
                m.max_ms,
                m.goodput,
                m.server_cpu_ms_per_request
                    .map_or("?".into(), |v| format!("{v:.3}")),
                m.server_cpu_cores.map_or("?".into(), |v| format!("{v:.2}")),
                m.bench_cpu_cores.map_or("?".into(), |v| format!("{v:.2}")),
                m.other_cpu_cores.map_or("?".into(), |v| format!("{v:.2}")),
                m.codes_text()
            );
            if let Some(note) = &m.note {
                let _ = writeln!(out, "  {:<26} {note}", "");
            }
            let failed = m.requests - m.ok();
            if failed > 0 && !m.name.contains("flood") {
                let _ = writeln!(out, "  {:<26} ! {failed} calls did not answer OK", "");
            }
        }
    }

    let _ = writeln!(out, "\ngoals");
    let _ = writeln!(
        out,
        "  {:<9} {:<40} {:>14} {:<32} {:>7} {:<8} result",
        "backend", "check", "measured", "reference", "ratio", "goal"
    );
    for report in reports {
        for c in &report.checks {
            let _ = writeln!(
                out,
                "  {:<9} {:<40} {:>14} {:<32} {:>7} {:<8} {}",
                report.backend.name(),
                c.name,
                c.measured,
                c.reference,
                c.ratio.map_or("-".into(), |r| format!("{r:.3}")),
                c.goal,
                match c.pass {
                    Some(true) => "PASS",
                    Some(false) => "MISS",
                    None => "info",
                }
            );
        }
    }
    out
}

fn report_json(
    options: &Options,
    verify: &VerifyReference,
    run: &RunInfo,
    reports: &[BackendReport],
) -> Value {
    json!({
        "date": run.date,
        "command": run.command,
        "commit": run.commit,
        "cpu": run.cpu,
        "machine_before": run.machine_before,
        "nproc": verify.cores,
        "concurrency": options.concurrency,
        "connections": options.connections,
        "seconds": options.seconds,
        "warmup_seconds": options.warmup,
        "scale": [options.scale.0, options.scale.1],
        "cold_orgs": options.cold_orgs,
        "server_args": options.server_args,
        "argon2id_verify_at_start": verify.to_json(),
        "backends": reports.iter().map(|r| json!({
            "backend": r.backend.name(),
            "database": r.database,
            "server_peak_rss_mib": r.server_peak_rss_mib,
            "server_log": {"lines": r.server_log.0, "warn": r.server_log.1, "error": r.server_log.2},
            "argon2id_verify_around_cold": r.cold_verify.as_ref().map(VerifyReference::to_json),
            "seeding": r.seeding.iter().map(|s| json!({
                "what": s.what, "rows": s.rows, "integrations_after": s.total, "seconds": s.seconds,
                "insert_integrations_seconds": s.steps[0],
                "insert_secrets_seconds": s.steps[1],
                "statistics_seconds": s.steps[2],
            })).collect::<Vec<_>>(),
            "phases": r.phases.iter().map(Measured::to_json).collect::<Vec<_>>(),
            "checks": r.checks.iter().map(Check::to_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

// ---------------------------------------------------------------------------

async fn run(options: Options) -> Res<bool> {
    let ticks = clock_ticks_per_second();
    let run = RunInfo {
        date: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        cpu: cpu_model(),
        commit: commit(),
        machine_before: format!(
            "load average {}, {} cores busy in the second before",
            load_average(),
            machine_busy_now(ticks)
                .await
                .map_or("?".into(), |busy| format!("{busy:.2}"))
        ),
    };
    eprintln!("measuring one argon2id verify in this process...");
    let verify = tokio::task::spawn_blocking(measure_verify)
        .await
        .context("measuring argon2id")?;
    eprintln!(
        "  median {:.2} ms on {} cores",
        verify.median().as_secs_f64() * 1e3,
        verify.cores
    );

    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for &backend in &options.backends {
        match run_backend(backend, &options, ticks).await {
            Ok(report) => reports.push(report),
            Err(e) => {
                eprintln!("\n[{}] FAILED: {e}", backend.name());
                failures.push(format!("{}: {e}", backend.name()));
            }
        }
    }

    println!("{}", report_text(&options, &verify, &run, &reports));
    for failure in &failures {
        println!("FAILED {failure}");
    }
    if let Some(path) = &options.json {
        let mut value = report_json(&options, &verify, &run, &reports);
        value["failures"] = json!(failures);
        let text = serde_json::to_string_pretty(&value).context("JSON")?;
        std::fs::write(path, text + "\n").context("writing --json")?;
        eprintln!("wrote {}", path.display());
    }
    Ok(failures.is_empty())
}

#[tokio::main]
async fn main() {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let outcome = tokio::select! {
        outcome = run(options) => outcome,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    // After an interruption the run's future is dropped (its server killed
    // with it); databases it created are still to be dropped.
    let pending = std::mem::take(&mut *PENDING_DROPS.lock().unwrap());
    for (admin_url, name) in pending {
        drop_postgres_database(&admin_url, &name).await;
    }
    match outcome {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
