//! `pgbench -S`: what PostgreSQL itself serves on this machine, one
//! primary-key select per transaction, over as many connections as the
//! server's pool. GetIntegration can at best make one such round trip per
//! call, so GetIntegration ÷ pgbench shows how much of the database's
//! ceiling the service reaches.
//!
//! pgbench runs on a scratch database of its own (`pgbench -i -q`, scale 1)
//! on the server of BENCH_DATABASE_URL, right after the GetIntegration
//! phase it is compared with and for as long (whole seconds, rounded up).
//! If pgbench is missing or fails, the result says why instead of failing
//! the run.

use std::{io, path::PathBuf, process::Stdio, time::Duration};

use serde_json::{Value, json};
use support::TestDatabase;
use tokio::process::Command;

use crate::{Res, machine, options::Options};

/// The prefix of pgbench's scratch database, which the server never sees.
const DATABASE_PREFIX: &str = "bench_pgbench";

/// pgbench's scratch database: created and filled before the phase, dropped
/// after the measurement.
pub struct SelectOnly {
    plan: Plan,
    prepared: Result<Prepared, Unmeasured>,
}

/// How pgbench is run, from the options.
struct Plan {
    program: PathBuf,
    /// The server's pool size.
    clients: u32,
    /// One per core, at most one per client.
    threads: usize,
    seconds: u64,
}

impl Plan {
    /// The command line as the report shows it (without the database).
    fn command(&self) -> String {
        format!(
            "{} -S -M prepared -c {} -j {} -T {}",
            self.program.display(),
            self.clients,
            self.threads,
            self.seconds
        )
    }
}

struct Prepared {
    database: TestDatabase,
    target: Target,
}

/// Where pgbench connects: BENCH_DATABASE_URL with the scratch database's
/// name and without its password, which goes in PGPASSWORD so that it
/// stays out of the process list.
struct Target {
    uri: String,
    password: Option<String>,
}

impl Target {
    fn from_url(url: &str) -> Result<Self, Unmeasured> {
        let mut parsed = url::Url::parse(url)
            .map_err(|e| Unmeasured::Failed(format!("BENCH_DATABASE_URL: {e}")))?;
        let password = parsed.password().map(|encoded| {
            percent_encoding::percent_decode_str(encoded)
                .decode_utf8_lossy()
                .into_owned()
        });
        parsed
            .set_password(None)
            .map_err(|()| Unmeasured::Failed("BENCH_DATABASE_URL has no host".into()))?;
        Ok(Self {
            uri: parsed.to_string(),
            password,
        })
    }
}

/// Why there is no pgbench figure.
#[derive(Debug, Clone)]
pub enum Unmeasured {
    NotFound(String),
    Failed(String),
}

impl Unmeasured {
    /// For the goal's row.
    pub fn short(&self) -> &'static str {
        match self {
            Unmeasured::NotFound(_) => "pgbench not found",
            Unmeasured::Failed(_) => "pgbench failed",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Unmeasured::NotFound(program) => format!("{program} not found: not measured"),
            Unmeasured::Failed(why) => format!("failed: {why}"),
        }
    }
}

/// pgbench's throughput.
#[derive(Debug, Clone)]
pub struct Tps {
    pub per_second: f64,
    /// pgbench's own words for what it counts, e.g. "without initial
    /// connection time".
    pub basis: String,
}

/// One pgbench measurement, for the report.
pub struct PgbenchRun {
    pub command: String,
    /// The server's pool size.
    pub clients: u32,
    /// The phase it ran right after.
    pub after: String,
    pub database: Option<String>,
    pub result: Result<Tps, Unmeasured>,
}

impl PgbenchRun {
    pub fn to_json(&self) -> Value {
        let (tps, basis, error) = match &self.result {
            Ok(tps) => (Some(tps.per_second), Some(tps.basis.as_str()), None),
            Err(why) => (None, None, Some(why.describe())),
        };
        json!({
            "command": self.command,
            "clients": self.clients,
            "after": self.after,
            "database": self.database,
            "tps": tps,
            "tps_basis": basis,
            "error": error,
        })
    }
}

impl SelectOnly {
    /// Creates the scratch database and fills it with `pgbench -i -q`.
    pub async fn prepare(options: &Options, admin_url: &str) -> Res<Self> {
        let clients = options.server_pool_size()?;
        let plan = Plan {
            program: options.pgbench.clone(),
            clients,
            threads: machine::cores().min(clients as usize),
            seconds: options.seconds.ceil().max(1.0) as u64,
        };
        eprintln!("  preparing {} on a scratch database", plan.command());
        let prepared = Self::initialize(&plan, admin_url).await;
        Ok(Self { plan, prepared })
    }

    async fn initialize(plan: &Plan, admin_url: &str) -> Result<Prepared, Unmeasured> {
        let database = TestDatabase::try_postgres(admin_url, DATABASE_PREFIX)
            .await
            .map_err(|e| Unmeasured::Failed(format!("creating its database: {e}")))?;
        let initialized = match Target::from_url(database.url()) {
            Ok(target) => pgbench(plan, &target, &["-i", "-q"], Duration::from_secs(600))
                .await
                .map(|_| target),
            Err(why) => Err(why),
        };
        // On failure the database is dropped here, with its value.
        initialized.map(|target| Prepared { database, target })
    }

    /// Runs `pgbench -S` and drops its database; `after` names the phase it
    /// follows.
    pub async fn run(self, after: &str) -> PgbenchRun {
        let command = self.plan.command();
        let (database, result) = match self.prepared {
            Err(why) => (None, Err(why)),
            Ok(Prepared { database, target }) => {
                eprintln!("  {command}");
                let args = [
                    "-S".to_owned(),
                    "-M".to_owned(),
                    "prepared".to_owned(),
                    "-c".to_owned(),
                    self.plan.clients.to_string(),
                    "-j".to_owned(),
                    self.plan.threads.to_string(),
                    "-T".to_owned(),
                    self.plan.seconds.to_string(),
                ];
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                // The run itself, plus connecting and pgbench's vacuum first.
                let limit = Duration::from_secs(self.plan.seconds + 120);
                let result = pgbench(&self.plan, &target, &args, limit)
                    .await
                    .and_then(|stdout| {
                        tps(&stdout).ok_or_else(|| {
                            Unmeasured::Failed("no \"tps = \" line in its output".into())
                        })
                    });
                let name = database.name().map(str::to_owned);
                drop(database);
                (name, result)
            }
        };
        match &result {
            Ok(tps) => eprintln!("    pgbench -S {:.1} tps ({})", tps.per_second, tps.basis),
            Err(why) => eprintln!("    pgbench -S {}", why.describe()),
        }
        PgbenchRun {
            command,
            clients: self.plan.clients,
            after: after.to_owned(),
            database,
            result,
        }
    }
}

/// Runs pgbench with `args` against `target`; its standard output, or why
/// it did not succeed (the last line it wrote to standard error).
async fn pgbench(
    plan: &Plan,
    target: &Target,
    args: &[&str],
    limit: Duration,
) -> Result<String, Unmeasured> {
    let mut command = Command::new(&plan.program);
    command
        .args(args)
        .arg(&target.uri)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // An interrupted run drops this future; pgbench goes with it.
        .kill_on_drop(true);
    if let Some(password) = &target.password {
        command.env("PGPASSWORD", password);
    }
    let program = plan.program.display().to_string();
    let output = match tokio::time::timeout(limit, command.output()).await {
        Err(_) => return Err(Unmeasured::Failed(format!("{program} ran over {limit:?}"))),
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Unmeasured::NotFound(program));
        }
        Ok(Err(e)) => return Err(Unmeasured::Failed(format!("starting {program}: {e}"))),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|line| !line.trim().is_empty());
        return Err(Unmeasured::Failed(format!(
            "{program} {} exited with {}: {}",
            args.join(" "),
            output.status,
            last.unwrap_or("no message").trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The throughput in pgbench's report: the figure without the time spent
/// connecting when it gives one ("without initial connection time" since
/// PostgreSQL 14, "excluding connections establishing" before), else its
/// only `tps = ` line.
fn tps(stdout: &str) -> Option<Tps> {
    let lines: Vec<Tps> = stdout
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("tps = ")?;
            let (number, basis) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(Tps {
                per_second: number.parse().ok()?,
                basis: basis.trim().trim_matches(['(', ')']).to_owned(),
            })
        })
        .collect();
    let without_connecting = lines.iter().position(|tps| {
        tps.basis.contains("without initial connection time")
            || tps.basis.contains("excluding connections establishing")
    });
    let chosen = without_connecting.unwrap_or(0);
    lines.into_iter().nth(chosen)
}
