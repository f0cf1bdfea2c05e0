//! One backend from start to end: a fresh database and server, the
//! reference organization, then the phases in their order (warm, scale,
//! cold, attack, lockout, watch), each adding its figures and its goal
//! rows.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use sea_orm::{Database, DatabaseConnection};
use support::{Backend, LogCounts, TestDatabase};

use crate::{
    Context, Res, attack,
    generator::{Generator, Measured},
    lockout,
    machine::{self, VerifyReference},
    ops::Op,
    options::{Options, Phase, Scale},
    pgbench::{PgbenchRun, SelectOnly},
    report::{BackendReport, Check, Verdict},
    seed::{self, COLD, Reference, SCALE, Seeding},
    server::{self, Connection},
    watch,
};

/// The prefix of the PostgreSQL database a run's server works on.
const DATABASE_PREFIX: &str = "bench";

/// One backend on a database of its own, dropped at the end (the SQLite
/// file's directory removed): when this returns, or when an interrupted
/// run drops this future.
pub async fn run_backend(backend: Backend, options: &Options, ticks: f64) -> Res<BackendReport> {
    let database = match backend {
        Backend::Sqlite => TestDatabase::sqlite(),
        Backend::Postgres => {
            let admin_url = options.postgres_url().ok_or("no BENCH_DATABASE_URL")?;
            TestDatabase::try_postgres(admin_url, DATABASE_PREFIX)
                .await
                .context("creating a database on BENCH_DATABASE_URL")?
        }
    };
    let label = label(&database);
    eprintln!("\n== {} ({label})", backend.name());
    run_phases(&database, label, options, ticks).await
}

/// What the report calls a database: the SQLite file, or `database <name>`.
fn label(database: &TestDatabase) -> String {
    match (database.name(), database.file()) {
        (Some(name), _) => format!("database {name}"),
        (None, Some(file)) => file.display().to_string(),
        (None, None) => database.to_string(),
    }
}

/// What the phases found so far, in the order they ran.
#[derive(Default)]
struct Findings {
    phases: Vec<Measured>,
    checks: Vec<Check>,
    seeding: Vec<Seeding>,
    cold_verify: Option<VerifyReference>,
    pgbench: Option<PgbenchRun>,
}

/// What every phase of one backend works with.
pub struct Bench<'a> {
    pub backend: Backend,
    pub options: &'a Options,
    /// Where a second replica (the watch phase's) connects.
    pub database_url: &'a str,
    pub connections: Vec<Connection>,
    pub reference: Reference,
    db: DatabaseConnection,
    /// Warm ValidateClient of the reference client.
    pub warm_op: Op,
    pub generator: Generator<'a>,
    /// What the server processes that a restart replaced logged, and the
    /// most memory any of them held.
    retired: Retired,
}

/// The figures of server processes that are gone, kept for the report.
#[derive(Default)]
struct Retired {
    log: LogCounts,
    peak_rss_mib: Option<f64>,
}

async fn run_phases(
    database: &TestDatabase,
    label: String,
    options: &Options,
    ticks: f64,
) -> Res<BackendReport> {
    let backend = database.backend();
    let mut server = server::start(database.url(), &options.server_args).await?;
    eprintln!("  server pid {} on {}", server.pid(), server.address());
    let connections = server::connect(&server, options.connections).await?;
    let reference = seed::create_reference(&connections[0]).await?;
    let db = Database::connect(database.url())
        .await
        .context("the bench's own connection to the database")?;
    let warm_op = Op::Validate {
        client_id: reference.client_id.as_str().into(),
        secret: reference.secret.as_str().into(),
        remote_address: "".into(),
    };
    let mut bench = Bench {
        backend,
        options,
        database_url: database.url(),
        connections,
        reference,
        db,
        warm_op,
        generator: Generator {
            options,
            server: &mut server,
            ticks,
            seed: 0x5EED_u64 ^ (backend as u64),
        },
        retired: Retired::default(),
    };
    let mut found = Findings::default();

    // Seed up to LOW integrations in all (the reference is one of them).
    found
        .seeding
        .push(bench.seed_scale(1, options.scale.low - 1, 1).await?);
    if options.runs(Phase::Warm) {
        bench.warm(&mut found).await?;
    }
    // Scale before cold, so that the cold organizations are added last and
    // never touched before.
    if options.runs(Phase::Scale) {
        bench.scale(&mut found).await?;
    }
    if options.runs(Phase::Cold) {
        bench.cold(&mut found).await?;
    }
    // The attack last: whatever throttling state the flood leaves behind
    // cannot affect another phase.
    if options.runs(Phase::Attack) {
        let (phases, checks) = attack::run(&mut bench).await?;
        found.phases.extend(phases);
        found.checks.extend(checks);
    }
    // On a server started for it, after everything else.
    if options.runs(Phase::Lockout) {
        let (phases, checks) = lockout::run(&mut bench).await?;
        found.phases.extend(phases);
        found.checks.extend(checks);
    }
    // Changes of its own, on organizations no other phase uses.
    if options.runs(Phase::Watch) {
        let (phases, checks) = watch::run(&mut bench).await?;
        found.phases.extend(phases);
        found.checks.extend(checks);
    }

    let _ = bench.db.close().await;
    let Retired {
        log: retired_log,
        peak_rss_mib: retired_rss,
    } = bench.retired;
    let server_peak_rss_mib = max(machine::memory_mib(server.pid(), "VmHWM:"), retired_rss);
    let server_log = add(server.log_counts(), retired_log);
    server.kill().await;
    Ok(BackendReport {
        backend,
        database: label,
        phases: found.phases,
        checks: found.checks,
        seeding: found.seeding,
        server_peak_rss_mib,
        server_log,
        cold_verify: found.cold_verify,
        pgbench: found.pgbench,
    })
}

/// The larger of two figures, either of which may be missing.
fn max(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn add(a: LogCounts, b: LogCounts) -> LogCounts {
    LogCounts {
        lines: a.lines + b.lines,
        warnings: a.warnings + b.warnings,
        errors: a.errors + b.errors,
    }
}

impl Bench<'_> {
    /// Replaces the server with a new process on the same database, as a
    /// freshly started replica: nothing cached, nothing remembered of
    /// earlier verifies, every throttle budget full. The new one is ready
    /// before the old one is killed, as in a rolling deploy; what the old
    /// one logged, and its peak memory, stay in the report.
    pub async fn restart_server(&mut self) -> Res<()> {
        let fresh = server::start(self.database_url, &self.options.server_args).await?;
        self.connections = server::connect(&fresh, self.options.connections).await?;
        let old = std::mem::replace(&mut *self.generator.server, fresh);
        self.retired.log = add(self.retired.log, old.log_counts());
        self.retired.peak_rss_mib = max(
            self.retired.peak_rss_mib,
            machine::memory_mib(old.pid(), "VmHWM:"),
        );
        old.kill().await;
        eprintln!(
            "  server restarted: pid {} on {}",
            self.generator.server.pid(),
            self.generator.server.address()
        );
        Ok(())
    }

    /// Seeds scale organizations `from..=to` and checks that organization
    /// `check` reads back and validates.
    async fn seed_scale(&self, from: u64, to: u64, check: u64) -> Res<Seeding> {
        let seeding = seed::seed(&self.db, self.backend, SCALE, from, to).await?;
        seed::check_seeded(&self.connections[0], &self.reference, SCALE, check).await?;
        Ok(seeding)
    }

    /// Warm ValidateClient against Health/Check, back to back.
    async fn warm(&mut self, found: &mut Findings) -> Res<()> {
        eprintln!("  phase warm (health, then warm ValidateClient)");
        let health = self
            .generator
            .run_one("health", &self.connections, Op::Health)
            .await?;
        let warm = self
            .generator
            .run_one("validate warm", &self.connections, self.warm_op.clone())
            .await?;
        found.checks.push(Check::ratio(
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
            found.checks.push(Check::info(
                "  same, by server CPU per call",
                format!("{w:.3} ms"),
                format!("{h:.3} ms health"),
                h / w,
            ));
        }
        found.phases.extend([health, warm]);
        Ok(())
    }

    /// GetIntegration and warm ValidateClient at LOW integrations, then at
    /// HIGH; on PostgreSQL, `pgbench -S` right after GetIntegration at LOW.
    async fn scale(&mut self, found: &mut Findings) -> Res<()> {
        let Scale { low, high } = self.options.scale;
        let pgbench = match (self.backend, self.options.postgres_url()) {
            (Backend::Postgres, Some(admin_url)) => {
                Some(SelectOnly::prepare(self.options, admin_url).await?)
            }
            _ => None,
        };

        eprintln!("  phase scale at {low} integrations");
        let get_low = self.get(low).await?;
        let pgbench = match pgbench {
            Some(pgbench) => Some(pgbench.run(&get_low.name).await),
            None => None,
        };
        let validate_low = self
            .generator
            .run_one(
                &format!("validate warm @{low}"),
                &self.connections,
                self.warm_op.clone(),
            )
            .await?;

        found
            .seeding
            .push(self.seed_scale(low, high - 1, high - 1).await?);

        eprintln!("  phase scale at {high} integrations");
        let get_high = self.get(high).await?;
        let validate_high = self
            .generator
            .run_one(
                &format!("validate warm @{high}"),
                &self.connections,
                self.warm_op.clone(),
            )
            .await?;
        found.checks.push(Check::ratio(
            &format!("GetIntegration @{high} / @{low}"),
            &get_high,
            get_low.goodput,
            format!("{:.1}/s @{low}", get_low.goodput),
            0.8,
        ));
        if let Some(run) = &pgbench {
            found.checks.push(pgbench_check(&get_low, low, run));
        }
        found.checks.push(Check::ratio(
            &format!("warm ValidateClient @{high} / @{low}"),
            &validate_high,
            validate_low.goodput,
            format!("{:.1}/s @{low}", validate_low.goodput),
            0.8,
        ));
        found
            .phases
            .extend([get_low, validate_low, get_high, validate_high]);
        found.pgbench = pgbench;
        Ok(())
    }

    /// GetIntegration of a seeded organization drawn at random, with
    /// `integrations` in the database (the reference among them).
    async fn get(&mut self, integrations: u64) -> Res<Measured> {
        self.generator
            .run_one(
                &format!("get @{integrations}"),
                &self.connections,
                Op::GetIntegration {
                    count: integrations - 1,
                },
            )
            .await
    }

    /// Cold ValidateClient: a different organization on every call, against
    /// cores ÷ one argon2id verify measured right before and after.
    async fn cold(&mut self, found: &mut Findings) -> Res<()> {
        let pool = self.options.cold_orgs;
        found
            .seeding
            .push(seed::seed(&self.db, self.backend, COLD, 1, pool).await?);
        // Cold organization 1 is spent on this check; the phase starts at 2.
        seed::check_seeded(&self.connections[0], &self.reference, COLD, 1).await?;

        // The reference, measured right before and right after the phase
        // with the server idle: the machine's speed drifts by more than the
        // goal's margin, between runs and within one.
        eprintln!("  measuring one argon2id verify in this process");
        let before = tokio::task::spawn_blocking(machine::measure_verify)
            .await
            .context("measuring argon2id")?;
        eprintln!("  phase cold");
        let next = Arc::new(AtomicU64::new(2));
        let repeats = Arc::new(AtomicU64::new(0));
        let mut cold = self
            .generator
            .run_one(
                "validate cold",
                &self.connections,
                Op::ValidateCold {
                    next: next.clone(),
                    pool,
                    repeats: repeats.clone(),
                    secret: self.reference.secret.as_str().into(),
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
        let after = tokio::task::spawn_blocking(machine::measure_verify)
            .await
            .context("measuring argon2id")?;
        let verify = before.merge(after);
        found.checks.push(Check::ratio(
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
        found.checks.push(Check::info(
            "  same, / all cores verifying in-process",
            format!("{:.1}/s", cold.goodput),
            format!("{:.1}/s", verify.parallel_rate()),
            cold.goodput / verify.parallel_rate(),
        ));
        found.cold_verify = Some(verify);
        found.phases.push(cold);
        Ok(())
    }
}

/// GetIntegration at LOW integrations ÷ `pgbench -S` at the pool's
/// connection count, at least 0.5; without a pgbench figure, the row says
/// why.
fn pgbench_check(get_low: &Measured, low: u64, run: &PgbenchRun) -> Check {
    let name = format!("GetIntegration @{low} / pgbench -S");
    match &run.result {
        Ok(tps) => Check::ratio(
            &name,
            get_low,
            tps.per_second,
            format!("{:.1}/s pgbench -S -c {}", tps.per_second, run.clients),
            0.5,
        ),
        Err(why) => Check {
            name,
            measured: format!("{:.1}/s", get_low.goodput),
            reference: why.short().into(),
            ratio: None,
            goal: ">= 0.5".into(),
            verdict: Verdict::NotMeasured,
        },
    }
}
