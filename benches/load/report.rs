//! The report: each backend's phases, seedings and goal rows, as text on
//! stdout and, with `--json`, as JSON with the same figures.

use std::fmt::Write as _;

use serde_json::{Value, json};
use support::{Backend, LogCounts};

use crate::{
    generator::Measured, machine::VerifyReference, options::Options, pgbench::PgbenchRun,
    seed::Seeding, server::BINARY,
};

/// How a row of the goals table ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Miss,
    /// A figure shown for information, without a goal.
    Info,
    /// A goal whose reference could not be measured in this run.
    NotMeasured,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Info => "info",
            Verdict::NotMeasured => "not measured",
        }
    }

    pub fn of(pass: bool) -> Self {
        if pass { Verdict::Pass } else { Verdict::Miss }
    }
}

/// One row of the goals table.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub measured: String,
    pub reference: String,
    pub ratio: Option<f64>,
    pub goal: String,
    pub verdict: Verdict,
}

impl Check {
    /// `measured`'s positive answers per second ÷ `reference`, at least
    /// `goal`.
    pub fn ratio(
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
            verdict: Verdict::of(ratio >= goal),
        }
    }

    /// A figure for information: `measured ÷ reference`, no goal.
    pub fn info(name: &str, measured: String, reference: String, ratio: f64) -> Self {
        Self {
            name: name.to_owned(),
            measured,
            reference,
            ratio: Some(ratio),
            goal: "-".into(),
            verdict: Verdict::Info,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "check": self.name,
            "measured": self.measured,
            "reference": self.reference,
            "ratio": self.ratio,
            "goal": self.goal,
            "pass": match self.verdict {
                Verdict::Pass => Some(true),
                Verdict::Miss => Some(false),
                Verdict::Info | Verdict::NotMeasured => None,
            },
            "result": self.verdict.text(),
        })
    }
}

/// Everything one backend's run found.
pub struct BackendReport {
    pub backend: Backend,
    pub database: String,
    pub phases: Vec<Measured>,
    pub checks: Vec<Check>,
    pub seeding: Vec<Seeding>,
    pub server_peak_rss_mib: Option<f64>,
    pub server_log: LogCounts,
    /// The argon2id verify measured just before and after the cold phase,
    /// which the cold phase is compared with.
    pub cold_verify: Option<VerifyReference>,
    /// `pgbench -S`, run right after GetIntegration at the low scale
    /// (PostgreSQL only).
    pub pgbench: Option<PgbenchRun>,
}

/// Where and when the run happened.
pub struct RunInfo {
    pub date: String,
    pub command: String,
    pub cpu: String,
    pub commit: String,
    pub machine_before: String,
}

pub fn report_text(
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
        backend_text(&mut out, report);
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
                c.verdict.text()
            );
        }
    }
    out
}

/// One backend's block: the server, the seedings, the phases.
fn backend_text(out: &mut String, report: &BackendReport) {
    let _ = writeln!(
        out,
        "\n[{}] {}   server peak RSS {}   server log: {} lines, {} WARN, {} ERROR",
        report.backend.name(),
        report.database,
        report
            .server_peak_rss_mib
            .map_or("?".into(), |m| format!("{m:.0} MiB")),
        report.server_log.lines,
        report.server_log.warnings,
        report.server_log.errors,
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
    if let Some(run) = &report.pgbench {
        let result = match &run.result {
            Ok(tps) => format!("{:.1} tps ({})", tps.per_second, tps.basis),
            Err(why) => why.describe(),
        };
        let _ = writeln!(
            out,
            "  {}, right after {}: {result}",
            run.command, run.after
        );
    }
    let _ = writeln!(
        out,
        "  {:<26} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>7} {:>7} {:>7}  statuses",
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
        "other c",
        "steal c"
    );
    let figure =
        |v: Option<f64>, decimals: usize| v.map_or("?".into(), |v| format!("{v:.decimals$}"));
    for m in &report.phases {
        let _ = writeln!(
            out,
            "  {:<26} {:>7} {:>10.1} {:>9.2} {:>9.2} {:>9.1} {:>9.1} {:>8} {:>6} {:>7} {:>7} {:>7}  {}",
            m.name,
            m.streams,
            m.throughput,
            m.p50_ms,
            m.p99_ms,
            m.max_ms,
            m.goodput,
            figure(m.server_cpu_ms_per_request, 3),
            figure(m.server_cpu_cores, 2),
            figure(m.bench_cpu_cores, 2),
            figure(m.other_cpu_cores, 2),
            figure(m.steal_cpu_cores, 2),
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

pub fn report_json(
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
        "scale": [options.scale.low, options.scale.high],
        "cold_orgs": options.cold_orgs,
        "server_args": options.server_args,
        "argon2id_verify_at_start": verify.to_json(),
        "backends": reports.iter().map(|r| json!({
            "backend": r.backend.name(),
            "database": r.database,
            "server_peak_rss_mib": r.server_peak_rss_mib,
            "server_log": {
                "lines": r.server_log.lines,
                "warn": r.server_log.warnings,
                "error": r.server_log.errors,
            },
            "argon2id_verify_around_cold": r.cold_verify.as_ref().map(VerifyReference::to_json),
            "seeding": r.seeding.iter().map(|s| json!({
                "what": s.what, "rows": s.rows, "integrations_after": s.total, "seconds": s.seconds,
                "insert_integrations_seconds": s.steps[0],
                "insert_secrets_seconds": s.steps[1],
                "statistics_seconds": s.steps[2],
            })).collect::<Vec<_>>(),
            "pgbench": r.pgbench.as_ref().map(PgbenchRun::to_json),
            "phases": r.phases.iter().map(Measured::to_json).collect::<Vec<_>>(),
            "checks": r.checks.iter().map(Check::to_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}
