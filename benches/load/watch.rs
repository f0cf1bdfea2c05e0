//! The watch phase: change streams on one replica while another replica
//! changes integrations (SPEC: 1,000 open streams, delivery p99 from commit
//! to every stream under 100 ms, nothing lost).
//!
//! Replica A is the benchmark's server. It gets `--watch-streams`
//! WatchIntegrations streams of every organization (the gateway's role),
//! spread over `--watch-connections` HTTP/2 connections of their own (100
//! each by default, within the server's 256 streams per connection). Each
//! stream must first say RESYNC. Replica B, a second server process on the
//! same PostgreSQL database, then rotates the secrets of `--watch-orgs`
//! organizations in turn, `--watch-rate` rotations a second: a
//! GenerateSecret and an ActivateSecret, two changes, each of which every
//! stream must hear of through PostgreSQL's notifications. On SQLite,
//! which has no notifications, the changes are made through A itself, and
//! the line says so.
//!
//! Every change's time is the one the streams carry (`change_time`): the
//! generation's `create_time` and the activation's `activate_time`, which
//! the responses give B's caller. That time is taken at the start of the
//! change's transaction, so a delay measured from it (to the moment the
//! stream's task reads the message) includes the transaction and its
//! commit: an upper bound of the delay from commit. Server, benchmark and
//! database share one machine and its clock.
//!
//! Changes made during the warm-up are delivered but not counted. After
//! the window, the streams have a grace period to receive what is still
//! on its way, then are dropped. A counted change is **lost** for a stream
//! that neither received it nor was sent a RESYNC (other than its first)
//! after the change's time.
//!
//! The phase line's percentiles are of every delivery's delay, over every
//! stream; its statuses are the deliveries (`OK`), the changes missed but
//! covered by a RESYNC, the changes lost, the RESYNCs after the first, and
//! the streams that failed or ended before they were dropped.
//!
//! ```sh
//! cargo bench --bench load -- --phases watch --backend postgres   # with BENCH_DATABASE_URL
//! cargo bench --bench load -- --phases watch --watch-streams 200 --watch-rate 5
//! ```

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use integration_service::proto::{ChangeKind, WatchIntegrationsResponse};
use support::{Backend, Client, ServerProcess};
use tokio::{
    sync::{Barrier, Mutex, watch},
    task::JoinSet,
};

use crate::{
    Context, Res,
    generator::Measured,
    machine,
    phases::Bench,
    report::{Check, Verdict},
    server,
};

/// The goal: every stream hears of a change this soon after it commits.
const DELIVERY_P99_GOAL_MS: f64 = 100.0;

/// How long after the window the streams may still receive what was
/// changed in it.
const GRACE: Duration = Duration::from_secs(2);

/// The organizations whose secrets B rotates: `bench-watch-<n>`.
const WATCH_ORG: &str = "bench-watch-";

/// A change, by organization and time in microseconds since the epoch, as
/// a stream sees it.
type Key = (String, i64);

/// What one stream saw.
#[derive(Default)]
struct Seen {
    /// Each change, and when it was read, in microseconds since the epoch.
    changes: Vec<(Key, i64)>,
    /// When each RESYNC after the first was read.
    resyncs: Vec<i64>,
    /// How the stream ended before it was dropped, if it did.
    failed: Option<String>,
}

/// One change B made, and whether it counts (made inside the window).
struct Made {
    key: Key,
    counted: bool,
}

pub async fn run(bench: &mut Bench<'_>) -> Res<(Vec<Measured>, Vec<Check>)> {
    let options = bench.options;
    let streams = options.watch_streams;
    let remote = bench.backend == Backend::Postgres;
    eprintln!(
        "  phase watch: {streams} streams, {} rotations/s of {} organizations {}",
        options.watch_rate,
        options.watch_orgs,
        if remote {
            "on replica B"
        } else {
            "on the same server (SQLite)"
        }
    );

    // Replica B, ready before the streams open.
    let replica_b = if remote {
        Some(server::start(bench.database_url, &options.server_args).await?)
    } else {
        None
    };
    let changer = match &replica_b {
        Some(b) => server::connect(b, 1).await?.remove(0).admin,
        None => bench.connections[0].admin.clone(),
    };
    let orgs: Vec<String> = (1..=options.watch_orgs)
        .map(|n| format!("{WATCH_ORG}{n}"))
        .collect();
    for org in &orgs {
        changer
            .create(org)
            .await
            .context("CreateIntegration on B")?;
    }

    // The streams, each first saying RESYNC.
    let a = &*bench.generator.server;
    let connections = server::connect(a, options.watch_connections).await?;
    let opened = Arc::new(Barrier::new(streams + 1));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for i in 0..streams {
        let client = connections[i % connections.len()].validator.clone();
        tasks.spawn(follow(client, Arc::clone(&opened), stopped.clone()));
    }
    tokio::time::timeout(Duration::from_secs(60), opened.wait())
        .await
        .context("opening the streams (each says RESYNC first)")?;

    // B rotates secrets: warm-up, then the window.
    let ticks = bench.generator.ticks;
    let warmup = Duration::from_secs_f64(options.warmup);
    let window = Duration::from_secs_f64(options.seconds);
    let begin = Instant::now();
    let measure_start = begin + warmup;
    let end = measure_start + window;
    let made = Arc::new(Mutex::new(Vec::<Made>::new()));
    let failures = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut rotations = JoinSet::new();
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / options.watch_rate));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cpu_start = None;
    let mut n = 0usize;
    while Instant::now() < end {
        pace.tick().await;
        if cpu_start.is_none() && Instant::now() >= measure_start {
            cpu_start = Some(Cpu::now(a, replica_b.as_ref(), ticks));
        }
        let counted = Instant::now() >= measure_start;
        let org = orgs[n % orgs.len()].clone();
        n += 1;
        let (changer, made, failures) = (changer.clone(), made.clone(), failures.clone());
        rotations.spawn(async move {
            match rotate(&changer, &org).await {
                Ok(times) => made.lock().await.extend(times.into_iter().map(|at| Made {
                    key: (org.clone(), at),
                    counted,
                })),
                Err(why) => *failures.lock().await.entry(why).or_default() += 1,
            }
        });
    }
    let cpu = cpu_start.map(|start| Cpu::now(a, replica_b.as_ref(), ticks).since(&start));
    while rotations.join_next().await.is_some() {}
    tokio::time::sleep(GRACE).await;
    let _ = stop.send(true);
    let mut seen = Vec::with_capacity(streams);
    while let Some(stream) = tasks.join_next().await {
        seen.push(stream.context("a stream's task")?);
    }
    drop(connections);

    let made = std::mem::take(&mut *made.lock().await);
    let failures = std::mem::take(&mut *failures.lock().await);
    let tally = tally(&made, &seen);
    let b_log = replica_b.as_ref().map(ServerProcess::log_counts);
    if let Some(b) = replica_b {
        b.kill().await;
    }
    bench
        .generator
        .server
        .check_running()
        .await
        .map_err(|f| f.to_string())?;

    let name = if remote {
        "watch: deliveries"
    } else {
        "watch: deliveries (1 server)"
    };
    let seconds = window.as_secs_f64();
    let mut codes = BTreeMap::new();
    codes.insert("OK", tally.delays_ns.len() as u64);
    codes.insert("resync", tally.resyncs);
    codes.insert("covered", tally.covered);
    codes.insert("lost", tally.lost);
    codes.insert("stream_failed", tally.failed);
    let mut measured = Measured::of_samples(
        name,
        streams,
        connections_used(options),
        seconds,
        tally.delays_ns,
        codes,
    );
    if let Some(cpu) = &cpu {
        cpu.fill(&mut measured, seconds);
    }
    let counted = made.iter().filter(|m| m.counted).count();
    let mut note = format!(
        "{counted} changes in the window ({:.1}/s) x {streams} streams = {} deliveries expected; \
         worst stream's p99 {:.2} ms",
        counted as f64 / seconds,
        counted * streams,
        tally.worst_stream_p99_ms,
    );
    if let Some(cores) = cpu.as_ref().and_then(|cpu| cpu.b_cores(seconds)) {
        note.push_str(&format!("; replica B {cores:.2} cores (in other c)"));
    }
    if let Some(log) = b_log {
        note.push_str(&format!(
            "; B's log {} WARN, {} ERROR",
            log.warnings, log.errors
        ));
    }
    if !failures.is_empty() {
        note.push_str(&format!("; rotations failed: {failures:?}"));
    }
    measured.note = Some(note);

    let expected = (counted * streams) as u64;
    let checks = vec![
        Check {
            name: "watch: delivery p99".into(),
            measured: format!("{:.2} ms", measured.p99_ms),
            reference: format!(
                "{streams} streams, {:.1} changes/s",
                counted as f64 / seconds
            ),
            ratio: None,
            goal: format!("< {DELIVERY_P99_GOAL_MS} ms"),
            verdict: Verdict::of(measured.requests > 0 && measured.p99_ms < DELIVERY_P99_GOAL_MS),
        },
        Check {
            name: "watch: lost".into(),
            measured: format!("{}", tally.lost),
            reference: format!("of {expected}, {} covered by RESYNC", tally.covered),
            ratio: None,
            goal: "= 0".into(),
            verdict: Verdict::of(counted > 0 && tally.lost == 0 && tally.failed == 0),
        },
    ];
    Ok((vec![measured], checks))
}

/// HTTP/2 connections the streams use.
fn connections_used(options: &crate::options::Options) -> usize {
    options.watch_connections.min(options.watch_streams)
}

/// One stream: opened, its first RESYNC awaited, then every message until
/// told to stop.
async fn follow(client: Client, opened: Arc<Barrier>, mut stop: watch::Receiver<bool>) -> Seen {
    let mut seen = Seen::default();
    let first = match client.watch("").await {
        Ok(mut stream) => match stream.message().await {
            Ok(Some(first)) if first.kind() == ChangeKind::Resync => Ok(stream),
            Ok(other) => Err(format!("first message {other:?}, not RESYNC")),
            Err(status) => Err(format!("{:?}", status.code())),
        },
        Err(status) => Err(format!("{:?}", status.code())),
    };
    opened.wait().await;
    let mut stream = match first {
        Ok(stream) => stream,
        Err(why) => {
            seen.failed = Some(why);
            return seen;
        }
    };
    loop {
        let message = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return seen,
            message = stream.message() => message,
        };
        match message {
            Ok(Some(message)) => record(&mut seen, &message, micros(SystemTime::now())),
            Ok(None) => {
                seen.failed = Some("ended".into());
                return seen;
            }
            Err(status) => {
                seen.failed = Some(format!("{:?}", status.code()));
                return seen;
            }
        }
    }
}

fn record(seen: &mut Seen, message: &WatchIntegrationsResponse, read_at: i64) {
    match message.kind() {
        ChangeKind::Resync => seen.resyncs.push(read_at),
        _ => {
            if let Some(at) = message.change_time.and_then(timestamp_micros) {
                seen.changes
                    .push(((message.organization_id.clone(), at), read_at));
            }
        }
    }
}

/// A rotation on B: the times of its two changes, generation and
/// activation.
async fn rotate(client: &Client, org: &str) -> Result<[i64; 2], String> {
    let status = |status: tonic::Status| format!("{:?}", status.code());
    let (value, pending) = client.generate(org).await.map_err(status)?;
    let generated = pending
        .create_time
        .and_then(timestamp_micros)
        .ok_or("no create_time")?;
    let integration = client.activate(org, &value).await.map_err(status)?;
    let activated = integration
        .active_secret
        .and_then(|secret| secret.activate_time)
        .and_then(timestamp_micros)
        .ok_or("no activate_time")?;
    Ok([generated, activated])
}

fn timestamp_micros(time: prost_types::Timestamp) -> Option<i64> {
    Some(time.seconds.checked_mul(1_000_000)? + i64::from(time.nanos / 1_000))
}

fn micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as i64)
}

/// Every stream's deliveries of the counted changes, and what it missed.
struct Tally {
    delays_ns: Vec<u64>,
    worst_stream_p99_ms: f64,
    covered: u64,
    lost: u64,
    resyncs: u64,
    failed: u64,
}

fn tally(made: &[Made], seen: &[Seen]) -> Tally {
    let counted: Vec<&Key> = made.iter().filter(|m| m.counted).map(|m| &m.key).collect();
    let wanted: HashSet<&Key> = counted.iter().copied().collect();
    let mut tally = Tally {
        delays_ns: Vec::new(),
        worst_stream_p99_ms: 0.0,
        covered: 0,
        lost: 0,
        resyncs: 0,
        failed: 0,
    };
    for stream in seen {
        tally.resyncs += stream.resyncs.len() as u64;
        tally.failed += u64::from(stream.failed.is_some());
        let mut received = HashSet::new();
        let mut delays = Vec::new();
        for (key, read_at) in &stream.changes {
            if wanted.contains(key) && received.insert(key) {
                delays.push(((read_at - key.1).max(0) as u64) * 1_000);
            }
        }
        for key in &counted {
            if !received.contains(*key) {
                if stream.resyncs.iter().any(|&at| at >= key.1) {
                    tally.covered += 1;
                } else {
                    tally.lost += 1;
                }
            }
        }
        delays.sort_unstable();
        if let Some(p99) = nearest_rank(&delays, 0.99) {
            tally.worst_stream_p99_ms = tally.worst_stream_p99_ms.max(p99 as f64 / 1e6);
        }
        tally.delays_ns.extend(delays);
    }
    tally.delays_ns.sort_unstable();
    tally
}

fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// CPU seconds so far: replica A, replica B (if a process of its own),
/// this benchmark, and the machine.
struct Cpu {
    a: Option<f64>,
    b: Option<f64>,
    bench: Option<f64>,
    machine: Option<machine::MachineSeconds>,
}

impl Cpu {
    fn now(a: &ServerProcess, b: Option<&ServerProcess>, ticks: f64) -> Self {
        Self {
            a: machine::cpu_seconds(&a.pid().to_string(), ticks),
            b: b.and_then(|b| machine::cpu_seconds(&b.pid().to_string(), ticks)),
            bench: machine::cpu_seconds("self", ticks),
            machine: machine::machine_seconds(ticks),
        }
    }

    fn since(&self, start: &Self) -> Self {
        let minus = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
        Self {
            a: minus(self.a, start.a),
            b: minus(self.b, start.b),
            bench: minus(self.bench, start.bench),
            machine: self.machine.zip(start.machine).map(|(a, b)| a - b),
        }
    }

    fn b_cores(&self, seconds: f64) -> Option<f64> {
        self.b.map(|b| b / seconds)
    }

    /// The phase's CPU columns: A is the server; B, PostgreSQL and
    /// anything else are `other`.
    fn fill(&self, measured: &mut Measured, seconds: f64) {
        let deliveries = measured.requests;
        measured.server_cpu_ms_per_request = self
            .a
            .filter(|_| deliveries > 0)
            .map(|cpu| cpu * 1e3 / deliveries as f64);
        measured.server_cpu_cores = self.a.map(|cpu| cpu / seconds);
        measured.bench_cpu_cores = self.bench.map(|cpu| cpu / seconds);
        measured.other_cpu_cores = match (self.machine, self.a, self.bench) {
            (Some(all), Some(a), Some(bench)) => Some(((all.busy - a - bench) / seconds).max(0.0)),
            _ => None,
        };
        measured.steal_cpu_cores = self.machine.map(|m| m.steal / seconds);
    }
}
