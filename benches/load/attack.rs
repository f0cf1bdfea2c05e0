//! The attack phase: a real client validating its cached secret on a
//! connection of its own while a flood on the other connections sends 45 %
//! wrong secrets for that client, 45 % unknown client IDs and 10 % values
//! that fail the checksum.

use crate::{
    Res,
    generator::{Group, Measured, Start},
    ops::{FloodKind, Op},
    phases::Bench,
    report::{Check, Verdict},
};

/// The goal of the real client's p99 under the paced flood, in
/// milliseconds.
const PACED_P99_GOAL_MS: f64 = 2.0;

/// The flood of one attack.
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

/// The three attacks, in order: the real client alone first, for the
/// baseline of its latency on this machine. Then the goal: the same client
/// while a flood runs at a stated rate, far beyond what argon2 could
/// verify. Then, for information, both as fast as answers come back, which
/// saturates the machine (generator included) whatever the service does.
pub async fn run(bench: &mut Bench<'_>) -> Res<(Vec<Measured>, Vec<Check>)> {
    let mut phases = Vec::new();
    let mut checks = Vec::new();
    for flood in [
        Flood::None,
        Flood::Paced(bench.options.flood_rate),
        Flood::Saturating,
    ] {
        eprintln!("  phase attack, {}", flood.label());
        let (real, flood_measured) = attack(bench, flood).await?;
        let flood_rate: f64 = flood_measured.iter().map(|m| m.throughput).sum();
        let goal = matches!(flood, Flood::Paced(_));
        checks.push(Check {
            name: format!("attack ({}): real client p99", flood.label()),
            measured: format!("{:.2} ms", real.p99_ms),
            reference: format!("{:.1} valid/s, flood {:.0}/s", real.goodput, flood_rate),
            ratio: None,
            goal: if goal {
                format!("< {PACED_P99_GOAL_MS} ms")
            } else {
                "-".into()
            },
            verdict: if goal {
                Verdict::of(real.requests > 0 && real.p99_ms < PACED_P99_GOAL_MS)
            } else {
                Verdict::Info
            },
        });
        checks.push(Check {
            name: format!("attack ({}): real client success", flood.label()),
            measured: format!("{:.3} %", real.positive_ratio() * 100.0),
            reference: format!("{} of {} valid", real.positive, real.requests),
            ratio: None,
            goal: "= 100 %".into(),
            verdict: Verdict::of(real.requests > 0 && real.positive == real.requests),
        });
        phases.push(real);
        phases.extend(flood_measured);
    }
    Ok((phases, checks))
}

/// One attack: the real client on connection 1 (at `--real-rate` unless
/// the flood saturates), the flood's groups over the others. Returns the
/// real client's figures and the flood's.
async fn attack(bench: &mut Bench<'_>, flood: Flood) -> Res<(Measured, Vec<Measured>)> {
    let options = bench.options;
    let connections = &bench.connections;
    let real_streams = options.attack_streams;
    let (real_rate, flood_rate) = match flood {
        Flood::None => (Some(options.real_rate), None),
        Flood::Paced(rate) => (Some(options.real_rate), Some(rate)),
        Flood::Saturating => (None, None),
    };
    let mut groups = vec![Group {
        name: "attack: real client".into(),
        connections: connections[..1].to_vec(),
        streams: real_streams,
        op: bench.warm_op.clone(),
        rate: real_rate,
        start: Start::WarmUp,
    }];
    if matches!(flood, Flood::None) {
        let measured = bench.generator.run(groups).await?;
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
    let mut flood_connections = connections[1..].to_vec();
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
            connections: flood_connections.clone(),
            streams,
            op: Op::Flood {
                client_id: bench.reference.client_id.as_str().into(),
                kind,
                remote_address: "".into(),
            },
            rate: flood_rate.map(|rate| rate * streams as f64 / flood_streams as f64),
            start: Start::WarmUp,
        });
        // Spread the flood's streams evenly over its connections.
        let len = flood_connections.len();
        flood_connections.rotate_left(streams % len);
    }
    let mut measured = bench.generator.run(groups).await?;
    let flood = measured.split_off(1);
    let real = measured.pop().ok_or("no measurement of the real client")?;
    Ok((real, flood))
}
