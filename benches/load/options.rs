//! The flags, parsed by hand, and the checks that span several of them.

use std::path::PathBuf;

use crate::Res;

/// Where the server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A part of the run that `--phases` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Warm,
    Cold,
    Attack,
    Scale,
}

/// Integrations in the database for the two scale measurements.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub low: u64,
    pub high: u64,
}

#[derive(Debug, Clone)]
pub struct Options {
    backends: Vec<Backend>,
    postgres_url: Option<String>,
    pub seconds: f64,
    pub warmup: f64,
    pub scale: Scale,
    pub cold_orgs: u64,
    pub connections: usize,
    pub concurrency: usize,
    pub attack_streams: usize,
    /// Requests per second of the paced flood (the goal's); the closed-loop
    /// flood that saturates the machine is measured too, for information.
    pub flood_rate: f64,
    /// Requests per second of the real client while the paced flood runs.
    pub real_rate: f64,
    phases: Vec<Phase>,
    pub json: Option<PathBuf>,
    pub server_args: Vec<String>,
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
    pub fn from_command_line() -> Res<Self> {
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
            scale: Scale {
                low: 1_000,
                high: 1_000_000,
            },
            cold_orgs: 20_000,
            connections: 8,
            concurrency: 64,
            attack_streams: 4,
            flood_rate: 2_000.0,
            real_rate: 1_000.0,
            phases: vec![Phase::Warm, Phase::Cold, Phase::Attack, Phase::Scale],
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
                    options.scale = Scale {
                        low: number(&flag, low)?,
                        high: number(&flag, high)?,
                    };
                }
                "--cold-orgs" => options.cold_orgs = number(&flag, &value()?)?,
                "--connections" => options.connections = number(&flag, &value()?)?,
                "--concurrency" => options.concurrency = number(&flag, &value()?)?,
                "--attack-streams" => options.attack_streams = number(&flag, &value()?)?,
                "--flood-rate" => options.flood_rate = number(&flag, &value()?)?,
                "--real-rate" => options.real_rate = number(&flag, &value()?)?,
                "--phases" => {
                    let list = value()?;
                    options.phases.clear();
                    for phase in list.split(',') {
                        options.phases.push(match phase.trim() {
                            "warm" => Phase::Warm,
                            "cold" => Phase::Cold,
                            "attack" => Phase::Attack,
                            "scale" => Phase::Scale,
                            other => return Err(format!("unknown phase {other:?}")),
                        });
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
        if options.scale.low < 2 || options.scale.high <= options.scale.low {
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

    /// The backends to run, PostgreSQL first.
    pub fn backends(&self) -> Vec<Backend> {
        self.backends.clone()
    }

    pub fn postgres_url(&self) -> Option<&str> {
        self.postgres_url.as_deref()
    }

    pub fn runs(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Res<T> {
    text.trim()
        .parse()
        .map_err(|_| format!("{flag}: {text:?} is not a number"))
}
