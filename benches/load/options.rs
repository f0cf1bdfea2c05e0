//! The flags, parsed by clap, and the checks that span several of them.

use std::{path::PathBuf, str::FromStr};

use clap::{
    Parser, ValueEnum,
    builder::{PossibleValuesParser, TypedValueParser},
};
use support::Backend;

use crate::Res;

/// `--backend both`: PostgreSQL first.
const BOTH: &[Backend] = &[Backend::Postgres, Backend::Sqlite];

/// The backends `--backend` names: `sqlite`, `postgres`, or `both`.
fn backends() -> impl TypedValueParser<Value = &'static [Backend]> {
    PossibleValuesParser::new(["sqlite", "postgres", "both"]).map(|choice| match choice.as_str() {
        "sqlite" => &[Backend::Sqlite][..],
        "postgres" => &[Backend::Postgres][..],
        // The parser lets no other value through.
        _ => BOTH,
    })
}

/// A part of the run that `--phases` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    Warm,
    Cold,
    Attack,
    Scale,
    Lockout,
    Watch,
}

/// A phase of `--phases`, spaces around it allowed (`warm, cold`).
fn phase(text: &str) -> Result<Phase, String> {
    Phase::from_str(text.trim(), false)
        .map_err(|_| "not one of warm, cold, attack, scale, lockout, watch".to_owned())
}

/// Integrations in the database for the two scale measurements.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub low: u64,
    pub high: u64,
}

impl FromStr for Scale {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (low, high) = text
            .split_once(',')
            .ok_or("takes LOW,HIGH, e.g. 1000,1000000")?;
        let number = |text: &str| {
            text.trim()
                .parse()
                .map_err(|_| format!("{text:?} is not a number"))
        };
        Ok(Self {
            low: number(low)?,
            high: number(high)?,
        })
    }
}

/// The server's flag for its connection pool size, and its default
/// (`src/config/cli.rs`), which pgbench's client count follows.
const POOL_FLAG: &str = "--database-max-connections";
const POOL_ENV: &str = "INTEGRATION_DATABASE_MAX_CONNECTIONS";
const POOL_DEFAULT: u32 = 16;

#[derive(Debug, Parser)]
#[command(
    name = "load",
    about = "Load benchmark of the integration service.",
    override_usage = "cargo bench --bench load -- [FLAGS]",
    // Given twice, a flag takes its last value, as a shell script that
    // appends to a default command line expects.
    args_override_self = true
)]
pub struct Options {
    /// Where the server keeps its data [default: both when
    /// BENCH_DATABASE_URL is set, else sqlite]
    #[arg(long, value_parser = backends(), value_name = "BACKEND")]
    backend: Option<&'static [Backend]>,

    /// PostgreSQL server and a database to connect to first,
    /// postgres://user@host:port/db; each run creates a database
    /// bench_<random> there and drops it at the end
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    postgres_url: Option<String>,

    /// Measured time of each phase, in seconds
    #[arg(long, default_value_t = 10.0, value_name = "S")]
    pub seconds: f64,

    /// Unmeasured warm-up before each phase, in seconds
    #[arg(long, default_value_t = 2.0, value_name = "S")]
    pub warmup: f64,

    /// Integrations in the database for the scale phase
    #[arg(long, default_value = "1000,1000000", value_name = "LOW,HIGH")]
    pub scale: Scale,

    /// Organizations seeded for the cold phase, each used once
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub cold_orgs: u64,

    /// Which phases to run, any of warm,cold,attack,scale,lockout,watch
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "warm,cold,attack,scale,lockout,watch",
        value_parser = phase,
        value_name = "LIST"
    )]
    phases: Vec<Phase>,

    /// HTTP/2 connections
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub connections: usize,

    /// Requests in flight
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub concurrency: usize,

    /// In-flight requests of the real client under attack
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub attack_streams: usize,

    /// Requests per second of the paced flood (the goal's) and of the
    /// lockout's flood; the closed-loop flood that saturates the machine is
    /// measured too, for information
    #[arg(long, default_value_t = 2_000.0, value_name = "R")]
    pub flood_rate: f64,

    /// Requests per second of the real client while the paced flood runs
    #[arg(long, default_value_t = 1_000.0, value_name = "R")]
    pub real_rate: f64,

    /// Validations per second of the lockout's victim, from its own address
    #[arg(long, default_value_t = 100.0, value_name = "R")]
    pub victim_rate: f64,

    /// Change streams the watch phase opens on the server
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    pub watch_streams: usize,

    /// HTTP/2 connections the watch phase's streams share (the server
    /// takes 256 streams per connection by default)
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub watch_connections: usize,

    /// Secret rotations per second of the watch phase (each a generation
    /// and an activation, two changes, two argon2 computations on the
    /// replica that makes them)
    #[arg(long, default_value_t = 10.0, value_name = "R")]
    pub watch_rate: f64,

    /// Organizations whose secrets the watch phase rotates, in turn
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub watch_orgs: usize,

    /// Also write the results as JSON
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Pass ARG to `integration-service serve` (repeatable)
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,

    /// The pgbench program that GetIntegration is compared with on
    /// PostgreSQL; if it is missing, that goal's row says so
    #[arg(long, default_value = "pgbench", value_name = "PROGRAM")]
    pub pgbench: PathBuf,

    /// `cargo bench` passes --bench to every bench target; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Options {
    /// The flags and environment, checked; clap itself answers --help and
    /// exits on a flag it cannot parse.
    pub fn from_command_line() -> Res<Self> {
        let options = Self::parse();
        options.check()?;
        Ok(options)
    }

    fn check(&self) -> Res<()> {
        if self.backends().contains(&Backend::Postgres) && self.postgres_url().is_none() {
            return Err("--backend postgres needs BENCH_DATABASE_URL".into());
        }
        if self.scale.low < 2 || self.scale.high <= self.scale.low {
            return Err("--scale needs 2 <= LOW < HIGH".into());
        }
        if self.connections < 2 || self.concurrency < self.connections {
            return Err("need at least 2 connections and one stream per connection".into());
        }
        if self.attack_streams == 0 || self.attack_streams >= self.concurrency {
            return Err("--attack-streams must leave some of the concurrency to the flood".into());
        }
        for rate in [self.flood_rate, self.real_rate, self.victim_rate] {
            if !rate.is_finite() || rate <= 0.0 {
                return Err("--flood-rate, --real-rate and --victim-rate must be positive".into());
            }
        }
        if self.watch_streams == 0 || self.watch_connections == 0 || self.watch_orgs == 0 {
            return Err(
                "--watch-streams, --watch-connections and --watch-orgs must be positive".into(),
            );
        }
        if !self.watch_rate.is_finite() || self.watch_rate <= 0.0 {
            return Err("--watch-rate must be positive".into());
        }
        if self.cold_orgs < 2 {
            return Err("--cold-orgs must be at least 2".into());
        }
        self.server_pool_size()?;
        Ok(())
    }

    /// The backends to run, PostgreSQL first.
    pub fn backends(&self) -> &'static [Backend] {
        self.backend.unwrap_or(if self.postgres_url().is_some() {
            BOTH
        } else {
            &[Backend::Sqlite]
        })
    }

    /// BENCH_DATABASE_URL; set but empty means none, so that
    /// `BENCH_DATABASE_URL= benches/run.sh` runs SQLite alone.
    pub fn postgres_url(&self) -> Option<&str> {
        self.postgres_url.as_deref().filter(|url| !url.is_empty())
    }

    pub fn runs(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }

    /// The server's connection pool size: the last `--database-max-connections`
    /// among the `--server-arg`s, else the environment the server inherits,
    /// else the server's default; at least 1, as the server makes it.
    pub fn server_pool_size(&self) -> Res<u32> {
        let mut value = None;
        let mut args = self.server_args.iter();
        while let Some(arg) = args.next() {
            if arg == POOL_FLAG {
                value = Some(args.next().map(String::as_str).unwrap_or_default());
            } else if let Some(inline) = arg
                .strip_prefix(POOL_FLAG)
                .and_then(|rest| rest.strip_prefix('='))
            {
                value = Some(inline);
            }
        }
        let from_env = std::env::var(POOL_ENV).ok();
        let size = match value.or(from_env.as_deref()) {
            Some(text) => text.trim().parse::<u32>().map_err(|_| {
                format!(
                    "the server's pool size {text:?} ({POOL_FLAG} or {POOL_ENV}) is not a number"
                )
            })?,
            None => POOL_DEFAULT,
        };
        Ok(size.max(1))
    }
}
