//! The load generator every phase goes through: groups of workers over the
//! HTTP/2 connections, a warm-up, one measured window, and the figures of
//! each group over it (throughput, positive answers, latency percentiles,
//! statuses, the CPU of the server, of this process and of the rest).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::ServerProcess;
use tonic::Code;

use crate::{
    Context, Res, machine,
    ops::{Op, Outcome, Stubs, WorkerState},
    options::Options,
    server::Connection,
};

/// A request that takes longer than this is counted as `CLIENT_TIMEOUT`
/// instead of hanging the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Most requests one open-loop worker keeps in flight.
const MAX_OUTSTANDING: usize = 256;

/// A set of workers with one purpose, measured together.
pub struct Group {
    pub name: String,
    pub connections: Vec<Connection>,
    pub streams: usize,
    pub op: Op,
    /// Requests per second for the whole group; `None`: as fast as answers
    /// come back.
    pub rate: Option<f64>,
    pub start: Start,
}

/// When a group's workers send their first call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the warm-up, so that the window measures a steady state.
    WarmUp,
    /// When the measured window opens, so that its first call is measured
    /// (the lockout's victim, whose first call meets a flood under way).
    Window,
}

/// The figures of one group over one measured window.
#[derive(Debug, Clone)]
pub struct Measured {
    pub name: String,
    pub streams: usize,
    connections: usize,
    seconds: f64,
    pub requests: u64,
    /// Every answer, whatever its status, per second.
    pub throughput: f64,
    /// Positive answers (OK and valid=true, SERVING, an integration) per
    /// second: what the goals compare.
    pub goodput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    codes: BTreeMap<&'static str, u64>,
    pub positive: u64,
    /// From the start of the first recorded call to the end of the first
    /// positive answer; `None` if none was positive.
    pub first_positive_ms: Option<f64>,
    /// Shared by every group of the phase.
    pub server_cpu_ms_per_request: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    pub bench_cpu_cores: Option<f64>,
    /// CPU used by every other process meanwhile (PostgreSQL, or anything
    /// else running on the machine).
    pub other_cpu_cores: Option<f64>,
    /// CPU the host took from this machine meanwhile (`steal`).
    pub steal_cpu_cores: Option<f64>,
    server_rss_mib: Option<f64>,
    pub note: Option<String>,
}

impl Measured {
    pub fn ok(&self) -> u64 {
        self.codes.get("OK").copied().unwrap_or(0)
    }

    pub fn positive_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.positive as f64 / self.requests as f64
        }
    }

    pub fn codes_text(&self) -> String {
        self.codes
            .iter()
            .map(|(code, n)| format!("{code}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn to_json(&self) -> Value {
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
            "first_positive_ms": self.first_positive_ms,
            "server_cpu_ms_per_request": self.server_cpu_ms_per_request,
            "server_cpu_cores": self.server_cpu_cores,
            "bench_cpu_cores": self.bench_cpu_cores,
            "other_cpu_cores": self.other_cpu_cores,
            "steal_cpu_cores": self.steal_cpu_cores,
            "server_rss_mib": self.server_rss_mib,
            "note": self.note,
        })
    }
}

impl Measured {
    /// The figures of a phase measured outside the generator (the watch
    /// phase's deliveries): `samples_ns` sorted, each one answer; `codes`
    /// name what they were. The CPU columns are the caller's to fill.
    pub fn of_samples(
        name: &str,
        streams: usize,
        connections: usize,
        seconds: f64,
        samples_ns: Vec<u64>,
        codes: BTreeMap<&'static str, u64>,
    ) -> Self {
        let requests = samples_ns.len() as u64;
        Self {
            name: name.to_owned(),
            streams,
            connections,
            seconds,
            requests,
            throughput: requests as f64 / seconds,
            goodput: requests as f64 / seconds,
            p50_ms: percentile_ms(&samples_ns, 0.50),
            p99_ms: percentile_ms(&samples_ns, 0.99),
            max_ms: samples_ns.last().map_or(0.0, |&ns| ns as f64 / 1e6),
            codes,
            positive: requests,
            first_positive_ms: None,
            server_cpu_ms_per_request: None,
            server_cpu_cores: None,
            bench_cpu_cores: None,
            other_cpu_cores: None,
            steal_cpu_cores: None,
            server_rss_mib: None,
            note: None,
        }
    }
}

pub struct Generator<'a> {
    pub options: &'a Options,
    pub server: &'a mut ServerProcess,
    pub ticks: f64,
    pub seed: u64,
}

impl Generator<'_> {
    /// Runs every group at once: warm-up, then the measured window, then
    /// waits for the calls still in flight to finish (not measured), so the
    /// next phase starts on an idle server.
    pub async fn run(&mut self, groups: Vec<Group>) -> Res<Vec<Measured>> {
        self.check_server().await?;
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
                let connection = group.connections[i % group.connections.len()].clone();
                let pace = group
                    .rate
                    .map(|rate| Duration::from_secs_f64(group.streams as f64 / rate));
                let first = match group.start {
                    Start::WarmUp => begin,
                    Start::Window => measure_start,
                };
                workers.push(tokio::spawn(worker(
                    group.op.clone(),
                    connection,
                    self.seed,
                    pace,
                    Window {
                        first,
                        measure_start,
                        end,
                    },
                )));
            }
            handles.push(workers);
        }

        tokio::time::sleep_until(measure_start.into()).await;
        let server_cpu_start = self.server_cpu_seconds();
        let bench_cpu_start = machine::cpu_seconds("self", self.ticks);
        let machine_start = machine::machine_seconds(self.ticks);
        tokio::time::sleep_until(end.into()).await;
        let machine = machine::machine_seconds(self.ticks)
            .zip(machine_start)
            .map(|(b, a)| b - a);
        let server_cpu = self
            .server_cpu_seconds()
            .zip(server_cpu_start)
            .map(|(b, a)| b - a);
        let bench_cpu = machine::cpu_seconds("self", self.ticks)
            .zip(bench_cpu_start)
            .map(|(b, a)| b - a);
        let rss = machine::memory_mib(self.server.pid(), "VmRSS:");

        let mut samples = Vec::new();
        for workers in handles {
            let mut merged = Sample::default();
            for handle in workers {
                merged.merge(handle.await.context("a load worker panicked")?);
            }
            samples.push(merged);
        }
        self.check_server().await?;

        let seconds = duration.as_secs_f64();
        let total: u64 = samples.iter().map(|s| s.latencies_ns.len() as u64).sum();
        let mut measured = Vec::new();
        for (group, mut sample) in groups.into_iter().zip(samples) {
            sample.latencies_ns.sort_unstable();
            let requests = sample.latencies_ns.len() as u64;
            measured.push(Measured {
                name: group.name,
                streams: group.streams,
                connections: group.connections.len().min(group.streams),
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
                first_positive_ms: sample
                    .first_positive
                    .zip(sample.first_start)
                    .map(|(done, start)| done.saturating_duration_since(start).as_secs_f64() * 1e3),
                codes: sample.codes,
                positive: sample.positive,
                server_cpu_ms_per_request: server_cpu
                    .filter(|_| total > 0)
                    .map(|cpu| cpu * 1e3 / total as f64),
                server_cpu_cores: server_cpu.map(|cpu| cpu / seconds),
                bench_cpu_cores: bench_cpu.map(|cpu| cpu / seconds),
                other_cpu_cores: match (machine, server_cpu, bench_cpu) {
                    (Some(all), Some(server), Some(bench)) => {
                        Some(((all.busy - server - bench) / seconds).max(0.0))
                    }
                    _ => None,
                },
                steal_cpu_cores: machine.map(|m| m.steal / seconds),
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
    pub async fn run_one(
        &mut self,
        name: &str,
        connections: &[Connection],
        op: Op,
    ) -> Res<Measured> {
        let group = Group {
            name: name.to_owned(),
            connections: connections.to_vec(),
            streams: self.options.concurrency,
            op,
            rate: None,
            start: Start::WarmUp,
        };
        self.run(vec![group])
            .await?
            .pop()
            .ok_or_else(|| format!("no measurement of {name}"))
    }

    /// A server that has exited fails the phase, with its last output.
    async fn check_server(&mut self) -> Res<()> {
        self.server
            .check_running()
            .await
            .map_err(|failure| failure.to_string())
    }

    /// User plus system CPU seconds of the server, all its threads.
    fn server_cpu_seconds(&self) -> Option<f64> {
        machine::cpu_seconds(&self.server.pid().to_string(), self.ticks)
    }
}

/// When a worker sends its first call, and the window it measures.
#[derive(Clone, Copy)]
struct Window {
    first: Instant,
    measure_start: Instant,
    end: Instant,
}

/// One worker from `window.first` until `window.end`, recording every call
/// that completes inside [measure_start, end], whenever it started.
///
/// Without a `pace` it is closed-loop: it sends a request, waits for its
/// answer, sends the next. With a `pace` it is open-loop, as an attacker
/// is: it starts one request per `pace` without waiting for earlier
/// answers, up to [`MAX_OUTSTANDING`] at once.
async fn worker(
    op: Op,
    connection: Connection,
    seed: u64,
    pace: Option<Duration>,
    window: Window,
) -> Sample {
    let Window {
        first,
        measure_start,
        end,
    } = window;
    let mut stubs = Stubs::new(&op, &connection);
    let mut state = WorkerState::new(seed);
    let mut sample = Sample::default();
    let record = |sample: &mut Sample, outcome: Option<Outcome>, start: Instant, done: Instant| {
        if done >= measure_start && done <= end {
            sample.record(outcome, start, done);
        }
    };
    tokio::time::sleep_until(first.into()).await;
    let Some(pace) = pace else {
        while Instant::now() < end {
            let start = Instant::now();
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, op.call(&mut stubs, &mut state))
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
                let (op, mut stubs) = (op.clone(), stubs.clone());
                let mut state = WorkerState::new(state.rng.next());
                outstanding.spawn(async move {
                    let start = Instant::now();
                    let call = op.call(&mut stubs, &mut state);
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

/// What one worker (or a whole group, merged) saw.
#[derive(Default)]
struct Sample {
    latencies_ns: Vec<u64>,
    codes: BTreeMap<&'static str, u64>,
    positive: u64,
    /// When the earliest recorded call started.
    first_start: Option<Instant>,
    /// When the earliest positive answer came.
    first_positive: Option<Instant>,
}

/// The earlier of two instants, either of which may be missing.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Sample {
    fn record(&mut self, outcome: Option<Outcome>, start: Instant, done: Instant) {
        self.latencies_ns.push((done - start).as_nanos() as u64);
        self.first_start = earliest(self.first_start, Some(start));
        let code = match outcome {
            None => "CLIENT_TIMEOUT",
            Some(Ok(positive)) => {
                if positive {
                    self.positive += 1;
                    self.first_positive = earliest(self.first_positive, Some(done));
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
        self.first_start = earliest(self.first_start, other.first_start);
        self.first_positive = earliest(self.first_positive, other.first_positive);
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

/// Nearest rank.
fn percentile_ms(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_ns.len() as f64).ceil() as usize).clamp(1, sorted_ns.len());
    sorted_ns[rank - 1] as f64 / 1e6
}
