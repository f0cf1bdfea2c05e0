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
//!
//! Where things are:
//!
//! - `options.rs`: the flags (clap) and the checks that span several of
//!   them; the server's connection pool size.
//! - `machine.rs`: the machine under the run: CPU ticks and the `/proc`
//!   readings (CPU time, memory, load), the header's facts (commit, CPU
//!   model), and the reference of the cold goal, one argon2id verify timed
//!   in this process.
//! - `server.rs`: how the server process is started (tokens, flags, how
//!   much of its log is kept) and the HTTP/2 connections to it, with a
//!   client per role on each.
//! - `seed.rs`: the reference organization made through the API, the bulk
//!   seeding straight into the tables, and the read-back of seeded rows.
//! - `ops.rs`: what a worker sends: health checks, warm and cold
//!   validations, GetIntegration, the flood.
//! - `generator.rs`: the load generator: workers, their samples, the
//!   percentiles and CPU shares of one measured window.
//! - `pgbench.rs`: `pgbench -S` on a scratch database, the reference of the
//!   GetIntegration ÷ pgbench goal.
//! - `phases.rs`: one backend from start to end: the warm, scale and cold
//!   phases in order, each with its goals.
//! - `attack.rs`: the attack phase: the real client and the flood.
//! - `lockout.rs`: the lockout phase: on a restarted server, an
//!   application's right secret from its own address while another address
//!   floods its client ID and the service.
//! - `watch.rs`: the watch phase: change streams on the server while a
//!   second replica rotates secrets; every delivery's delay, and what was
//!   lost.
//! - `report.rs`: the goals' rows and the report, as text and as JSON.
//!
//! The support crate, shared with the tests, drives the real binary: it
//! makes the databases (a temporary SQLite file, PostgreSQL
//! `bench_<random>` and pgbench's `bench_pgbench_<random>`, each dropped
//! with its value), runs the server process (ready once its health
//! answers, its log read to the end and counted, its pid for `/proc`,
//! killed when dropped), and provides the clients that carry a token and
//! the `Backend`.
//!
//! This file runs every backend, prints the report, and cleans up.

// A benchmark may stop on a broken precondition (the OS has no random
// numbers, argon2 cannot hash); what can fail in a run returns an error.
#![allow(clippy::expect_used)]

mod attack;
mod generator;
mod lockout;
mod machine;
mod ops;
mod options;
mod pgbench;
mod phases;
mod report;
mod seed;
mod server;
mod watch;

use serde_json::json;

use crate::{
    options::Options,
    report::{RunInfo, report_json, report_text},
};

/// Every failure of a run is a sentence for the person running it.
type Res<T> = Result<T, String>;

trait Context<T> {
    fn context(self, what: &str) -> Res<T>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: &str) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

async fn run(options: Options) -> Res<bool> {
    let ticks = machine::clock_ticks_per_second();
    let run = RunInfo {
        date: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        cpu: machine::cpu_model(),
        commit: machine::commit(),
        machine_before: format!(
            "load average {}, {} in the second before",
            machine::load_average(),
            machine::machine_busy_now(ticks)
                .await
                .map_or("?".into(), |m| format!(
                    "{:.2} cores busy, {:.2} stolen by the host",
                    m.busy, m.steal
                ))
        ),
    };
    eprintln!("measuring one argon2id verify in this process...");
    let verify = tokio::task::spawn_blocking(machine::measure_verify)
        .await
        .context("measuring argon2id")?;
    eprintln!(
        "  median {:.2} ms on {} cores",
        verify.median().as_secs_f64() * 1e3,
        verify.cores
    );

    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for &backend in options.backends() {
        match phases::run_backend(backend, &options, ticks).await {
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
    let options = match Options::from_command_line() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // An interruption drops the run's future here, before the process
    // exits: its server and any pgbench are killed, and every database it
    // created is dropped with its value (support's TestDatabase), the one
    // being created included.
    let outcome = tokio::select! {
        outcome = run(options) => outcome,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    match outcome {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
