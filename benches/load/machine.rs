//! The machine under the run: CPU time and memory from `/proc`, the facts
//! of the report's header, and the reference of the cold goal, one argon2id
//! verify timed in this process.

use std::time::{Duration, Instant};

use integration_service::domain::{ClientSecret, HashParams, Memory, SecretHash};
use serde_json::{Value, json};

/// The cores the server bounds its argon2 threads to, and pgbench's threads.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU seconds of a process (a pid, or `self`), all threads.
pub fn cpu_seconds(pid: &str, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

/// CPU seconds of the whole machine (every core) so far.
#[derive(Debug, Clone, Copy)]
pub struct MachineSeconds {
    /// Busy in this machine, every process.
    pub busy: f64,
    /// Taken by the hypervisor for others while this machine had work
    /// (`steal` in `/proc/stat`): a shared host slowing the run down.
    pub steal: f64,
}

impl std::ops::Sub for MachineSeconds {
    type Output = Self;

    fn sub(self, earlier: Self) -> Self {
        Self {
            busy: self.busy - earlier.busy,
            steal: self.steal - earlier.steal,
        }
    }
}

/// Busy and stolen CPU seconds of the whole machine so far.
pub fn machine_seconds(ticks: f64) -> Option<MachineSeconds> {
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
    let steal = *fields.get(7)?;
    let busy: f64 = fields.iter().sum::<f64>() - fields.get(3)? - fields.get(4)? - steal;
    Some(MachineSeconds {
        busy: busy / ticks,
        steal: steal / ticks,
    })
}

/// Cores' worth of CPU the rest of the machine is using right now, and the
/// host is stealing, over one second: anything well above zero makes every
/// figure of the run suspect.
pub async fn machine_busy_now(ticks: f64) -> Option<MachineSeconds> {
    let before = machine_seconds(ticks)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Some(machine_seconds(ticks)? - before)
}

/// A `Vm…` line of /proc/<pid>/status, in MiB.
pub fn memory_mib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The commit the server was built from, `-dirty` with uncommitted changes.
pub fn commit() -> String {
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

pub fn cpu_model() -> String {
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

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

/// The cold goal's reference: one argon2id verify, measured in this process.
#[derive(Debug, Clone)]
pub struct VerifyReference {
    pub cores: usize,
    /// Every single-threaded verify timed, sorted.
    times: Vec<Duration>,
    /// Verifies per second with one thread per core, all verifying at once,
    /// one figure per measurement: the hardware's own ceiling, for
    /// comparison only.
    parallel_rates: Vec<f64>,
    pub params: String,
}

impl VerifyReference {
    pub fn median(&self) -> Duration {
        self.times[self.times.len() / 2]
    }

    /// cores ÷ the median verify: the goal's reference.
    pub fn rate(&self) -> f64 {
        self.cores as f64 / self.median().as_secs_f64()
    }

    pub fn parallel_rate(&self) -> f64 {
        self.parallel_rates.iter().sum::<f64>() / self.parallel_rates.len() as f64
    }

    /// Both measurements as one: the samples of a measurement before and one
    /// after a phase bracket it, which evens out a drift of the machine's
    /// speed.
    pub fn merge(mut self, other: Self) -> Self {
        self.times.extend(other.times);
        self.times.sort();
        self.parallel_rates.extend(other.parallel_rates);
        self
    }

    pub fn describe(&self) -> String {
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

    pub fn to_json(&self) -> Value {
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
pub fn measure_verify() -> VerifyReference {
    const SAMPLES: usize = 31;
    let cores = cores();
    let secret = ClientSecret::generate().expect("the OS RNG");
    // Memory reused between computations, as the server's threads do.
    let mut memory = Memory::default();
    let hash =
        SecretHash::compute(&secret, HashParams::MINIMUM, &mut memory).expect("argon2id hashes");
    let params = hash.as_str().split('$').nth(3).unwrap_or("?").to_owned();
    let verify = |memory: &mut Memory| {
        let matched = hash.matches(&secret, memory).expect("argon2id verifies");
        assert!(matched, "a secret matches its own hash");
    };
    for _ in 0..2 {
        verify(&mut memory);
    }
    let mut times: Vec<Duration> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            verify(&mut memory);
            start.elapsed()
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
                verify(&mut memory);
                barrier.wait();
                for _ in 0..per_thread {
                    verify(&mut memory);
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
