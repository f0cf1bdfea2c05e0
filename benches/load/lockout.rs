//! The lockout phase: on a freshly started replica, an application
//! validates its right secret from its own address while another address
//! floods its client ID with well-formed wrong secrets and the service with
//! well-formed client IDs nobody has, open-loop, at many times what argon2
//! can verify. The flood runs through the warm-up, so the application's
//! first call, a cache miss that needs a verify, meets it under way.

use crate::{
    Res,
    generator::{Group, Measured, Start},
    ops::{FloodKind, Op},
    phases::Bench,
    report::{Check, Verdict},
};

/// Where the application that holds the secret calls from, as the gateway
/// saw it (documentation addresses, RFC 5737, as in the tests).
const VICTIM_ADDRESS: &str = "198.51.100.20";
/// Where the flood comes from.
const ATTACKER_ADDRESS: &str = "203.0.113.7";

/// The bound on the victim's first `valid: true`, from its first
/// attempt, in milliseconds.
const FIRST_VALID_GOAL_MS: f64 = 1_000.0;

/// Restarts the server, then measures the victim (one paced worker on
/// connection 1, its first call when the window opens) while the flood
/// (paced over the other connections, from the warm-up on) runs.
pub async fn run(bench: &mut Bench<'_>) -> Res<(Vec<Measured>, Vec<Check>)> {
    eprintln!("  phase lockout, on a restarted server");
    bench.restart_server().await?;
    let options = bench.options;
    let client_id = bench.reference.client_id.as_str();
    let mut groups = vec![Group {
        name: "lockout: victim".into(),
        connections: bench.connections[..1].to_vec(),
        streams: 1,
        op: Op::Validate {
            client_id: client_id.into(),
            secret: bench.reference.secret.as_str().into(),
            remote_address: VICTIM_ADDRESS.into(),
        },
        rate: Some(options.victim_rate),
        start: Start::Window,
    }];
    let flood_streams = options.concurrency - 1;
    let wrong_secret = flood_streams / 2;
    for (name, kind, streams) in [
        (
            "lockout: flood wrong secret",
            FloodKind::WrongSecret,
            wrong_secret,
        ),
        (
            "lockout: flood unknown id",
            FloodKind::UnknownClient,
            flood_streams - wrong_secret,
        ),
    ] {
        groups.push(Group {
            name: name.into(),
            connections: bench.connections[1..].to_vec(),
            streams,
            op: Op::Flood {
                client_id: client_id.into(),
                kind,
                remote_address: ATTACKER_ADDRESS.into(),
            },
            rate: Some(options.flood_rate * streams as f64 / flood_streams as f64),
            start: Start::WarmUp,
        });
    }
    let mut measured = bench.generator.run(groups).await?;
    let flood = measured.split_off(1);
    let mut victim = measured.pop().ok_or("no measurement of the victim")?;
    let flood_rate: f64 = flood.iter().map(|m| m.throughput).sum();

    let first_valid = victim.first_positive_ms;
    victim.note = Some(match first_valid {
        Some(ms) => format!("first valid: true {ms:.1} ms after its first attempt"),
        None => "never valid: true".into(),
    });
    let checks = vec![
        Check {
            name: "lockout: victim success".into(),
            measured: format!("{:.3} %", victim.positive_ratio() * 100.0),
            reference: format!("{} of {} valid", victim.positive, victim.requests),
            ratio: None,
            goal: "= 100 %".into(),
            verdict: Verdict::of(victim.requests > 0 && victim.positive == victim.requests),
        },
        Check {
            name: "lockout: victim first valid".into(),
            measured: first_valid.map_or("never".into(), |ms| format!("{ms:.1} ms")),
            reference: format!("after its first try, flood {flood_rate:.0}/s"),
            ratio: None,
            goal: "< 1 s".into(),
            verdict: Verdict::of(first_valid.is_some_and(|ms| ms < FIRST_VALID_GOAL_MS)),
        },
        Check {
            name: "lockout: victim p99".into(),
            measured: format!("{:.2} ms", victim.p99_ms),
            reference: format!("{:.1} valid/s", victim.goodput),
            ratio: None,
            goal: "-".into(),
            verdict: Verdict::Info,
        },
    ];
    let mut phases = vec![victim];
    phases.extend(flood);
    Ok((phases, checks))
}
