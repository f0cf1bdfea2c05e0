//! Nobody can lock out a client whose secret they do not hold: a flood
//! from one address spends that address's budgets and no one else's, a
//! pair that verified once needs no budget again, and trying every value
//! one holds activates the right one. On server processes, called as a
//! gateway calls them (with the address of the party that presented the
//! credentials); the floods print their figures (run with `--nocapture`).
//! No test prints a secret value.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use integration_service::domain::{ClientId, ClientSecret, random_bytes};
use sea_orm::ConnectionTrait;
use support::{Client, ServerCommand, ServerProcess, TestDatabase, on_every_backend};
use tokio::{task::JoinSet, time::MissedTickBehavior};
use tonic::Code;

use crate::BINARY;

/// Where the attacker's calls come from, as the gateway saw them.
const ATTACKER: &str = "203.0.113.7";
/// Where the application that holds the secret calls from.
const APPLICATION: &str = "198.51.100.20";

/// The issue: the right secret, from its own address, gets `valid: true`
/// within a second of its first attempt.
const WITHIN: Duration = Duration::from_secs(1);
/// How long the application keeps trying, past [`WITHIN`], so that a
/// failure says what it met.
const GIVE_UP: Duration = Duration::from_secs(3);
/// How long a flood runs before the application's first attempt (its
/// victim's budgets are spent by then), and after it got through.
const FLOOD_BEFORE: Duration = Duration::from_secs(1);
const FLOOD_AFTER: Duration = Duration::from_millis(500);
/// A flood sends this many times what argon2 can verify ("several times");
/// a run that could not send at least [`FLOOD_AT_LEAST`] times proves
/// nothing and fails.
const FLOOD_TIMES: f64 = 8.0;
const FLOOD_AT_LEAST: f64 = 4.0;
/// Callers of a flood, each on a connection of its own, each with at most
/// [`FLOOD_IN_FLIGHT`] calls under way.
const FLOOD_CALLERS: usize = 8;
const FLOOD_IN_FLIGHT: usize = 32;
/// Longer than any answer should take: a call still unanswered then
/// counts as hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A server process on `database` with `args` added. The argon2 threads
/// run at normal priority, as in the in-process tests: on a machine busy
/// with other work, idle-priority threads wait for every other process,
/// and these tests are about the throttle, not the scheduler.
async fn start(database: &TestDatabase, args: &[&str]) -> ServerProcess {
    ServerCommand::new(BINARY, database.url())
        .log_filter("info")
        .args(&["--argon2-priority", "normal"])
        .args(args)
        .start()
        .await
}

/// A client of `server` on a connection of its own, whose calls fail
/// rather than hang.
async fn client_of(server: &ServerProcess) -> Client {
    server.client().await.with_call_timeout(CALL_TIMEOUT)
}

/// Creates one integration with an active secret per organization on a
/// first server process, then stops it and starts another with the same
/// `args`: a freshly started replica, whose cache holds nothing and which
/// has never verified these clients. Returns it, and each client's ID and
/// secret.
async fn ready_then_restart(
    database: &TestDatabase,
    organizations: &[&str],
    args: &[&str],
) -> (ServerProcess, Vec<(String, String)>) {
    let first = start(database, args).await;
    let admin = client_of(&first).await;
    let mut clients = Vec::new();
    for organization in organizations {
        clients.push(admin.ready(organization).await);
    }
    first.terminate().await;
    (start(database, args).await, clients)
}

fn wrong_secret() -> String {
    ClientSecret::generate().expect("RNG").expose().to_owned()
}

fn random_client_id() -> String {
    ClientId::generate().expect("RNG").as_str().to_owned()
}

/// What a call answered: `Ok(valid)` or the status code.
type Answer = Result<bool, Code>;

async fn validate_from(client: &Client, client_id: &str, secret: &str, source: &str) -> Answer {
    client
        .validate_from(client_id, secret, source)
        .await
        .map(|answer| answer.valid)
        .map_err(|status| status.code())
}

/// Sends every `(client ID, secret, source)` at once, each on a task of its
/// own: the throttle decides before any verify, so the answers do not
/// depend on how fast verifies run on a busy machine.
async fn at_once(client: &Client, calls: Vec<(String, String, &str)>) -> Vec<Answer> {
    let mut tasks = Vec::new();
    for (client_id, secret, source) in calls {
        let (client, source) = (client.clone(), source.to_owned());
        tasks.push(tokio::spawn(async move {
            validate_from(&client, &client_id, &secret, &source).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("the call completes"));
    }
    answers
}

fn count(answers: &[Answer], wanted: Answer) -> usize {
    answers.iter().filter(|a| **a == wanted).count()
}

/// What the server said of its argon2 threads at start.
#[derive(Debug, Clone, Copy)]
struct Argon2 {
    threads: u32,
    verify: Duration,
    /// Cache misses a second the throttle admits overall.
    overall_per_second: f64,
}

impl Argon2 {
    /// From the server's `argon2id ready` event.
    fn of(server: &ServerProcess) -> Self {
        let event = server
            .output()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|event| event["message"] == "argon2id ready")
            .expect("the server says when argon2id is ready");
        Self {
            threads: event["threads"].as_u64().expect("threads") as u32,
            verify: Duration::from_secs_f64(event["verify_ms"].as_f64().expect("verify_ms") / 1e3),
            overall_per_second: event["cache_misses_per_second"]
                .as_f64()
                .expect("cache_misses_per_second"),
        }
    }

    /// Verifies a second the threads can do.
    fn capacity(&self) -> f64 {
        f64::from(self.threads) / self.verify.as_secs_f64()
    }
}

/// The CPU time so far of the server's gateway argon2 threads
/// (`argon2-<n>`, not the dashboard's), and how many there are.
fn argon2_cpu(pid: u32) -> (usize, Duration) {
    let mut threads = 0;
    let mut cpu = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads") {
        let task = task.expect("a thread").path();
        let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
            continue; // it ended
        };
        let gateway = comm
            .trim()
            .strip_prefix("argon2-")
            .is_some_and(|n| n.parse::<u32>().is_ok());
        if let (true, Some(used)) = (gateway, thread_cpu(&task)) {
            cpu += used;
            threads += 1;
        }
    }
    (threads, cpu)
}

/// The CPU time a thread (`/proc/<pid>/task/<tid>`) has used: from
/// `schedstat`, in nanoseconds, so that a single verify shows; where the
/// kernel keeps no scheduler statistics, from `stat` (utime + stime, in
/// clock ticks).
fn thread_cpu(task: &Path) -> Option<Duration> {
    if let Ok(schedstat) = std::fs::read_to_string(task.join("schedstat")) {
        let on_cpu = schedstat.split_whitespace().next()?.parse().ok()?;
        return Some(Duration::from_nanos(on_cpu));
    }
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    // The fields after the command's closing parenthesis, from the third
    // (state): utime is the 14th, stime the 15th.
    let (_, fields) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = field(14)? + field(15)?;
    let ticks_per_second: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0);
    Some(Duration::from_secs_f64(ticks as f64 / ticks_per_second))
}

/// Where the calls that measure a verify come from.
const CALIBRATION: &str = "192.0.2.1";
/// How many verifies that measure takes.
const CALIBRATION_VERIFIES: u32 = 4;

/// The CPU one verify costs the argon2 threads, on this machine, now: the
/// mean over [`CALIBRATION_VERIFIES`] wrong secrets for random client IDs
/// sent one after the other from [`CALIBRATION`]. (The server's own
/// `verify_ms` is the wall time of one computation at start, often while
/// other processes compete with it: several times this.)
async fn cpu_of_one_verify(server: &ServerProcess) -> Duration {
    let client = client_of(server).await;
    let (_, before) = argon2_cpu(server.pid());
    let started = Instant::now();
    let mut verified = 0;
    while verified < CALIBRATION_VERIFIES {
        match validate_from(&client, &random_client_id(), &wrong_secret(), CALIBRATION).await {
            Ok(false) => verified += 1,
            // Refused before any verify (a test's overall budget may be
            // small), or a verify that did not finish in time: neither is
            // counted, and a verify that ran only makes the measure higher.
            Err(Code::ResourceExhausted | Code::Unavailable) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => panic!("a wrong secret for a random client ID answered {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "only {verified} of {CALIBRATION_VERIFIES} verifies to measure were admitted in 10 s"
        );
    }
    let (_, after) = argon2_cpu(server.pid());
    after.saturating_sub(before) / CALIBRATION_VERIFIES
}

/// The per-address budget of the flood tests: the defaults, stated so
/// that a test knows how much one address may have verified.
const SOURCE_PER_SECOND: u32 = 5;
const SOURCE_BURST: u32 = 20;

/// The flags of a flood test: its per-address budget, then `args`.
fn flood_flags(args: &[&str]) -> Vec<String> {
    let mut flags = vec![
        "--throttle-source-per-second".to_owned(),
        SOURCE_PER_SECOND.to_string(),
        "--throttle-source-burst".to_owned(),
        SOURCE_BURST.to_string(),
    ];
    flags.extend(args.iter().map(|arg| (*arg).to_owned()));
    flags
}

/// How many cache misses the throttle may admit in `window` from
/// `sources` addresses: the least of what the overall budget lets through
/// (a second's worth at once, then its rate) and what the addresses' own
/// budgets let through together (their burst, then their rate).
fn admissible(argon2: &Argon2, sources: usize, window: Duration) -> f64 {
    let seconds = window.as_secs_f64();
    let overall = argon2.overall_per_second * (1.0 + seconds);
    let own = sources as f64 * (f64::from(SOURCE_BURST) + f64::from(SOURCE_PER_SECOND) * seconds);
    overall.min(own)
}

/// How much more than the verifies the throttle may admit the argon2
/// threads may use before a flood test fails: a verify costs more while
/// other processes compete for the caches and the memory bus.
const CPU_SLACK: f64 = 1.5;

/// What a flood aims at, every call with a new well-formed wrong secret.
#[derive(Debug, Clone)]
enum Target {
    /// A new random well-formed client ID each call.
    RandomClients,
    /// The victim's client ID and random ones, by turns.
    VictimAndRandomClients(String),
}

impl Target {
    fn client_id(&self, n: u64) -> String {
        match self {
            Self::VictimAndRandomClients(victim) if n.is_multiple_of(2) => victim.clone(),
            _ => random_client_id(),
        }
    }
}

/// How a flood's calls were answered.
#[derive(Debug, Default)]
struct Tally {
    answers: BTreeMap<String, u64>,
}

impl Tally {
    fn note(&mut self, answer: Answer) {
        let key = match answer {
            Ok(true) => "valid".to_owned(),
            Ok(false) => "invalid".to_owned(),
            Err(code) => format!("{code:?}"),
        };
        *self.answers.entry(key).or_default() += 1;
    }

    fn add(&mut self, other: Tally) {
        for (key, n) in other.answers {
            *self.answers.entry(key).or_default() += n;
        }
    }

    fn get(&self, key: &str) -> u64 {
        self.answers.get(key).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.answers.values().sum()
    }
}

/// A flood under way: [`FLOOD_CALLERS`] callers sending at `per_second`
/// between them, from `sources` by turns.
struct Flood {
    running: Arc<AtomicBool>,
    callers: Vec<tokio::task::JoinHandle<Tally>>,
    started: Instant,
}

impl Flood {
    async fn start(
        server: &ServerProcess,
        target: Target,
        sources: &[String],
        per_second: f64,
    ) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let period = Duration::from_secs_f64(FLOOD_CALLERS as f64 / per_second);
        let sources: Arc<[String]> = sources.into();
        // The first caller sends while the others connect.
        let started = Instant::now();
        let mut callers = Vec::new();
        for caller in 0..FLOOD_CALLERS {
            let (client, target, running, sources) = (
                client_of(server).await,
                target.clone(),
                running.clone(),
                Arc::clone(&sources),
            );
            callers.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut calls = JoinSet::new();
                let mut ticks = tokio::time::interval(period);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
                let mut n = 0_u64;
                while running.load(Ordering::SeqCst) {
                    ticks.tick().await;
                    while let Some(answer) = calls.try_join_next() {
                        tally.note(answer.expect("a flood call completes"));
                    }
                    if calls.len() >= FLOOD_IN_FLIGHT {
                        continue;
                    }
                    let (client, client_id) = (client.clone(), target.client_id(n));
                    let turn = n as usize * FLOOD_CALLERS + caller;
                    let source = sources[turn % sources.len()].clone();
                    n += 1;
                    calls.spawn(async move {
                        validate_from(&client, &client_id, &wrong_secret(), &source).await
                    });
                }
                while let Some(answer) = calls.join_next().await {
                    tally.note(answer.expect("a flood call completes"));
                }
                tally
            }));
        }
        Self {
            running,
            callers,
            started,
        }
    }

    /// Stops sending; returns the answers, once every call has one, and
    /// how long the flood sent.
    async fn stop(self) -> (Tally, Duration) {
        self.running.store(false, Ordering::SeqCst);
        let sent_for = self.started.elapsed();
        let mut tally = Tally::default();
        for caller in self.callers {
            tally.add(caller.await.expect("a flood caller ends cleanly"));
        }
        (tally, sent_for)
    }
}

/// How the application's attempts went: how long from its first attempt
/// until `valid: true` (if it came within [`GIVE_UP`]), what the attempts
/// before it answered, and how long the slowest answer took.
#[derive(Debug)]
struct Attempts {
    valid_after: Option<Duration>,
    refused: BTreeMap<String, u32>,
    slowest: Duration,
}

/// The application presents its right secret from its own address,
/// retrying 20 ms after each refusal, until it is valid or [`GIVE_UP`] has
/// passed. A right secret answered `valid: false` fails the test at once.
async fn attempts_until_valid(client: &Client, client_id: &str, secret: &str) -> Attempts {
    let first = Instant::now();
    let mut refused = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    loop {
        let sent = Instant::now();
        let answer = validate_from(client, client_id, secret, APPLICATION).await;
        slowest = slowest.max(sent.elapsed());
        match answer {
            Ok(true) => {
                return Attempts {
                    valid_after: Some(first.elapsed()),
                    refused,
                    slowest,
                };
            }
            Ok(false) => panic!("the right secret was answered invalid"),
            Err(code) => *refused.entry(format!("{code:?}")).or_default() += 1,
        }
        if first.elapsed() > GIVE_UP {
            return Attempts {
                valid_after: None,
                refused,
                slowest,
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Floods `server` from `sources` at [`FLOOD_TIMES`] what argon2 can
/// verify, while the application presents the right secret of `victim`
/// from its own address; then checks what the issue asks: the application
/// got through within a second of its first attempt, the flood was
/// refused, and the argon2 threads did no more work than the verifies the
/// throttle may admit in that time.
async fn the_application_gets_through(
    server: &ServerProcess,
    target: Target,
    sources: &[String],
    victim: &(String, String),
    what: &str,
) {
    let argon2 = Argon2::of(server);
    let rate = (FLOOD_TIMES * argon2.capacity()).max(200.0);
    let one_verify = cpu_of_one_verify(server).await;
    let application = client_of(server).await;
    let (threads, cpu_before) = argon2_cpu(server.pid());

    let flood = Flood::start(server, target, sources, rate).await;
    tokio::time::sleep(FLOOD_BEFORE).await;
    let attempts = attempts_until_valid(&application, &victim.0, &victim.1).await;
    tokio::time::sleep(FLOOD_AFTER).await;
    let (tally, window) = flood.stop().await;
    let (_, cpu_after) = argon2_cpu(server.pid());

    let cpu = cpu_after.saturating_sub(cpu_before);
    let sent_per_second = tally.total() as f64 / window.as_secs_f64();
    let refused = tally.get("ResourceExhausted");
    // Each call answered invalid cost a verify; one that ran out of time
    // may have.
    let verified = tally.get("invalid") + tally.get("Unavailable");
    let admissible = admissible(&argon2, sources.len(), window);
    // What the verifies the throttle may admit cost, and the application's
    // own (its refused attempts cost none).
    let most = one_verify.mul_f64((admissible + 1.0) * CPU_SLACK) + Duration::from_millis(50);
    let could = window.mul_f64(threads as f64);
    println!(
        "{what}: argon2 {} threads, {:.1} ms a verify at start ({:.0}/s), {one_verify:.2?} of \
         CPU a verify now, throttle {:.0} misses/s",
        argon2.threads,
        argon2.verify.as_secs_f64() * 1e3,
        argon2.capacity(),
        argon2.overall_per_second,
    );
    println!(
        "{what}: flood of {} calls from {} addresses in {window:.2?} ({sent_per_second:.0}/s, \
         {:.1} times argon2's capacity): {:?}",
        tally.total(),
        sources.len(),
        sent_per_second / argon2.capacity(),
        tally.answers,
    );
    println!(
        "{what}: argon2 CPU {cpu:.2?} on {threads} threads over {window:.2?} ({:.0}% of what \
         they can do); the throttle may admit {admissible:.0} verifies, {most:.2?} at most",
        100.0 * cpu.as_secs_f64() / could.as_secs_f64(),
    );
    println!(
        "{what}: the application: valid after {:?}, refused before that: {:?}, slowest \
         answer {:?}",
        attempts.valid_after, attempts.refused, attempts.slowest
    );

    let valid_after = attempts.valid_after.unwrap_or(GIVE_UP);
    assert!(
        valid_after <= WITHIN,
        "{what}: the right secret from its own address was not valid within {WITHIN:?} of its \
         first attempt (valid after {:?}; refused before that: {:?})",
        attempts.valid_after,
        attempts.refused,
    );
    assert_eq!(tally.get("valid"), 0, "no wrong secret is ever valid");
    assert!(
        sent_per_second >= FLOOD_AT_LEAST * argon2.capacity(),
        "{what}: the flood sent only {sent_per_second:.0}/s, not {FLOOD_AT_LEAST} times argon2's \
         {:.0}/s: it proves nothing",
        argon2.capacity()
    );
    assert!(
        refused as f64 >= 0.9 * tally.total() as f64,
        "{what}: only {refused} of {} flood calls refused: {:?}",
        tally.total(),
        tally.answers
    );
    // One more for a call sent as the window closed and admitted on its
    // arrival, a moment later.
    assert!(
        verified as f64 <= admissible + 1.0,
        "{what}: {verified} flood calls were verified in {window:?}, more than the {admissible:.0} \
         the budgets admit (overall {:.0} a second and a second's burst; {} addresses with \
         {SOURCE_BURST} at once and {SOURCE_PER_SECOND} a second each)",
        argon2.overall_per_second,
        sources.len(),
    );
    assert!(threads > 0, "the server has argon2 threads");
    assert!(
        most < could,
        "{what}: {most:?}, what the admissible verifies cost, is no less than what {threads} \
         threads can do in {window:?}: the bound below would prove nothing"
    );
    assert!(
        cpu <= most,
        "{what}: the argon2 threads used {cpu:?} of CPU in {window:?}, more than the \
         {admissible:.0} verifies the throttle may admit and the application's cost \
         ({one_verify:?} each, {most:?} with slack): refused calls did argon2 work"
    );
}

/// `args` as [`start`] takes them.
fn as_args(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

on_every_backend! {
    /// The per-client lockout, on a freshly started replica: from
    /// one address, well-formed wrong secrets for the victim's client ID
    /// and random client IDs at several times what argon2 can verify; from
    /// its own address, the application holding the right secret.
    async fn a_flood_of_a_client_id_from_another_address_cannot_lock_its_application_out(
        database: TestDatabase,
    ) {
        let flags = flood_flags(&[]);
        let (server, clients) =
            ready_then_restart(&database, &["org-victim"], &as_args(&flags)).await;
        let victim = &clients[0];
        let target = Target::VictimAndRandomClients(victim.0.clone());
        let attacker = [ATTACKER.to_owned()];
        the_application_gets_through(&server, target, &attacker, victim, "per-client flood").await;
    }
}

on_every_backend! {
    /// The service-wide lockout: from one address, random
    /// well-formed client IDs at several times what argon2 can verify; a
    /// client this replica has never validated gets through from its own
    /// address.
    async fn a_flood_of_random_client_ids_from_one_address_cannot_lock_a_cold_client_out(
        database: TestDatabase,
    ) {
        let flags = flood_flags(&[]);
        let (server, clients) =
            ready_then_restart(&database, &["org-cold"], &as_args(&flags)).await;
        let attacker = [ATTACKER.to_owned()];
        the_application_gets_through(
            &server,
            Target::RandomClients,
            &attacker,
            &clients[0],
            "service-wide flood",
        )
        .await;
    }
}

/// Addresses a flood from many places sends from: `n` of them, from
/// 198.18.0.1 on (a block set aside for benchmarking networks).
fn many_addresses(n: u8) -> Vec<String> {
    (1..=n).map(|host| format!("198.18.0.{host}")).collect()
}

/// An overall budget well below what the argon2 threads can verify, so
/// that the work it admits is a bound that can be exceeded.
const SMALL_OVERALL_BUDGET: [&str; 2] = ["--throttle-overall-per-second", "4"];

on_every_backend! {
    /// From 64 addresses, each within budgets of its own that together
    /// admit far more than argon2 can verify, wrong secrets for random
    /// client IDs: the overall budget bounds the argon2 work. An
    /// application whose pair this replica verified once validates from its
    /// own address throughout: its entry is no longer trusted by then (older
    /// than the revalidation interval), and a pair verified once is
    /// confirmed by a read, without a budget. A pair this replica has never
    /// verified may be refused meanwhile: enough addresses in good standing
    /// spend the overall budget, the limit docs/hot-path.md states.
    async fn a_flood_from_many_addresses_is_bounded_overall_and_spares_a_pair_verified_once(
        database: TestDatabase,
    ) {
        let flags = flood_flags(&SMALL_OVERALL_BUDGET);
        let (server, clients) =
            ready_then_restart(&database, &["org-verified-once"], &as_args(&flags)).await;
        let victim = &clients[0];
        let gateway = client_of(&server).await;
        assert_eq!(
            validate_from(&gateway, &victim.0, &victim.1, APPLICATION).await,
            Ok(true),
            "the application's pair verifies once, before the flood"
        );
        the_application_gets_through(
            &server,
            Target::RandomClients,
            &many_addresses(64),
            victim,
            "many-address flood",
        )
        .await;
    }
}

/// A budget of three misses per client ID, one more a second.
const SMALL_CLIENT_BUDGET: [&str; 4] = [
    "--throttle-client-burst",
    "3",
    "--throttle-client-per-second",
    "1",
];

on_every_backend! {
    /// Without a source the service behaves as it did before sources: a
    /// burst of wrong secrets for one client ID spends that client ID's
    /// budget, and its further misses, the right secret's among them, are
    /// refused (nothing tells the application from the attacker: the
    /// README's reason for a gateway to send the address).
    async fn without_a_source_wrong_secrets_spend_the_client_ids_budget_as_before(
        database: TestDatabase,
    ) {
        let (server, clients) =
            ready_then_restart(&database, &["org-no-source"], &SMALL_CLIENT_BUDGET).await;
        let (client_id, secret) = &clients[0];
        let gateway = client_of(&server).await;

        let burst = (0..6).map(|_| (client_id.clone(), wrong_secret(), "")).collect();
        let answers = at_once(&gateway, burst).await;
        assert_eq!(count(&answers, Ok(false)), 3, "the burst of 3 is verified: {answers:?}");
        assert_eq!(
            count(&answers, Err(Code::ResourceExhausted)),
            3,
            "then refusals: {answers:?}"
        );
        assert_eq!(
            validate_from(&gateway, client_id, &wrong_secret(), "").await,
            Err(Code::ResourceExhausted),
            "a further miss is refused"
        );
        assert_eq!(
            validate_from(&gateway, client_id, secret, "").await,
            Err(Code::ResourceExhausted),
            "so is the right secret, which this replica has never verified"
        );
    }
}

on_every_backend! {
    /// A client ID's budget spent by attempts without a source is not the
    /// budget of the attempts that come with one: the application calling
    /// from its own address still gets through.
    async fn a_client_ids_budget_spent_without_a_source_leaves_each_source_its_own(
        database: TestDatabase,
    ) {
        let (server, clients) =
            ready_then_restart(&database, &["org-no-source-then-one"], &SMALL_CLIENT_BUDGET).await;
        let (client_id, secret) = &clients[0];
        let gateway = client_of(&server).await;

        let burst = (0..6).map(|_| (client_id.clone(), wrong_secret(), "")).collect();
        let answers = at_once(&gateway, burst).await;
        assert_eq!(
            count(&answers, Err(Code::ResourceExhausted)),
            3,
            "the budget without a source is spent: {answers:?}"
        );
        assert_eq!(
            validate_from(&gateway, client_id, secret, APPLICATION).await,
            Ok(true),
            "the right secret from the application's own address"
        );
    }
}

/// The remembered-pair test's flags: a cache of one client, each entry
/// trusted for a minute (an entry still held answers without even a
/// read), and budgets of three failures at once and one more a second.
/// With a cache of one client the throttle's tables have one cell each:
/// every client ID and address here spends the same budgets.
const REMEMBERED: [&str; 12] = [
    "--cache-capacity",
    "1",
    "--cache-revalidate-ms",
    "60000",
    "--throttle-client-burst",
    "3",
    "--throttle-client-per-second",
    "1",
    "--throttle-source-burst",
    "3",
    "--throttle-source-per-second",
    "1",
];

on_every_backend! {
    /// A pair that verified once is remembered beyond its cache entry:
    /// after eviction (a cache of one client here) it costs one read, no
    /// verify and no budget, so it validates from a source whose budget is
    /// spent, right after that source was refused.
    async fn a_pair_verified_once_needs_no_budget_once_its_cache_entry_is_evicted(
        database: TestDatabase,
    ) {
        let (server, clients) =
            ready_then_restart(&database, &["org-remembered", "org-evicting"], &REMEMBERED).await;
        let [(x, x_secret), (y, y_secret)] = &clients[..] else {
            unreachable!("two organizations");
        };
        let gateway = client_of(&server).await;
        let source = "192.0.2.44";
        let cpu = || argon2_cpu(server.pid()).1;

        let before = cpu();
        let first = gateway.validate_from(x, x_secret, source).await.expect("X is answered");
        let one_verify = cpu().saturating_sub(before);
        assert!(first.valid, "X verifies");
        assert!(
            one_verify >= Duration::from_millis(1),
            "X's first check ran a verify ({one_verify:?} of argon2 CPU)"
        );
        // X's login domain changes in the database behind the cache's back:
        // an entry of X still held answers the domain it remembered, while
        // a read of the database answers this one.
        let moved = "moved.login.example";
        database
            .connect()
            .await
            .execute_unprepared(&format!(
                "UPDATE integrations SET custom_domain = '{moved}', domain_state = 'verified', \
                 domain_verification_code = 'code' WHERE organization_id = 'org-remembered'"
            ))
            .await
            .expect("X's domain changed");
        // Y, again and again: the cache holds one client, and Y, used more,
        // takes X's place once the cache has applied what it saw (it does
        // so every few hundred milliseconds).
        for _ in 0..6 {
            assert_eq!(validate_from(&gateway, y, y_secret, source).await, Ok(true), "Y verifies");
            tokio::time::sleep(Duration::from_millis(400)).await;
        }

        // The source's budgets: wrong secrets for random client IDs, one
        // after the other, until one is refused.
        let mut sent = 0;
        loop {
            sent += 1;
            match validate_from(&gateway, &random_client_id(), &wrong_secret(), source).await {
                Err(Code::ResourceExhausted) => break,
                Ok(false) => {}
                // A verify that ran out of time may still be running: let
                // it end, so that it does not count as X's.
                Err(Code::Unavailable) => tokio::time::sleep(Duration::from_secs(1)).await,
                other => panic!("a wrong secret for a random client ID answered {other:?}"),
            }
            assert!(sent < 100, "{sent} wrong secrets from one source and none refused");
        }

        // At once, while nothing of the source's budgets has come back.
        let before = cpu();
        let sent_at = Instant::now();
        let answer = gateway.validate_from(x, x_secret, source).await;
        let took = sent_at.elapsed();
        let x_cpu = cpu().saturating_sub(before);
        println!(
            "remembered pair: refused after {sent} wrong secrets; then X answered {:?} in \
             {took:?}, with {x_cpu:?} of argon2 CPU (a verify: {one_verify:?})",
            answer.as_ref().map(|a| (a.valid, a.domain.clone())).map_err(|s| s.code()),
        );
        let answer = answer.expect(
            "X's right secret, remembered, needs no budget (refused RESOURCE_EXHAUSTED means it \
             was charged)",
        );
        assert!(answer.valid, "X's right secret is valid");
        assert_eq!(
            answer.domain, moved,
            "X was answered from its cache entry (the domain it remembered, not {moved:?}): the \
             entry was not evicted, and the test proves nothing"
        );
        assert!(
            x_cpu < one_verify / 2,
            "a verify ran for X ({x_cpu:?} of argon2 CPU; a verify costs {one_verify:?}): it was \
             not answered from its proof"
        );
    }
}

/// `items` in a random order (Fisher–Yates over the OS's random bytes).
fn shuffled<T>(mut items: Vec<T>) -> Vec<T> {
    for i in (1..items.len()).rev() {
        let draw = u64::from_le_bytes(random_bytes().expect("RNG"));
        items.swap(i, (draw % (i as u64 + 1)) as usize);
    }
    items
}

on_every_backend! {
    /// Trying every value one holds, in any order, activates the right
    /// one: a value whose hint matches neither the pending nor the active
    /// secret is refused FAILED_PRECONDITION without being charged, so
    /// even a budget of one wrong activation a minute is never spent.
    async fn trying_every_value_one_holds_in_any_order_activates_the_pending_one(
        database: TestDatabase,
    ) {
        let server =
            start(&database, &["--throttle-activation-failures-per-minute", "1"]).await;
        let admin = client_of(&server).await;
        let org = "org-every-value";
        let client_id = admin.create(org).await.expect("created").client_id;
        let generate = async || admin.generate(org).await.expect("generated").0;

        // Each generation discards the pending secret before it.
        let mut held: Vec<(&str, String)> = Vec::new();
        for _ in 0..3 {
            held.push(("discarded", generate().await));
        }
        let first_active = generate().await;
        admin.activate(org, &first_active).await.expect("activated");
        for _ in 0..2 {
            held.push(("discarded", generate().await));
        }
        let active = generate().await;
        admin.activate(org, &active).await.expect("activated");
        held.push(("revoked", first_active));
        for _ in 0..3 {
            held.push(("discarded", generate().await));
        }
        let pending = generate().await;
        for _ in 0..12 {
            held.push(("made up", wrong_secret()));
        }
        assert!(held.len() >= 20, "{} wrong values", held.len());
        held.push(("active", active.clone()));

        let order = shuffled(held);
        let kinds: Vec<&str> = order.iter().map(|(kind, _)| *kind).collect();
        println!("activation order: {kinds:?}, then the pending value");
        for (n, (kind, value)) in order.iter().enumerate() {
            let answer = admin.activate(org, value).await;
            match (*kind, answer) {
                ("active", answer) => {
                    answer.expect("the active value is accepted and changes nothing");
                }
                (_, Ok(_)) => panic!("attempt {n}, a {kind} value, was accepted"),
                (_, Err(status)) => assert_eq!(
                    status.code(),
                    Code::FailedPrecondition,
                    "attempt {n}, a {kind} value: {status:?}"
                ),
            }
        }
        let integration = admin
            .activate(org, &pending)
            .await
            .expect("after every other value, the pending one activates");
        assert!(integration.pending_secret.is_none(), "nothing is pending any more");
        let gateway = client_of(&server).await;
        assert!(gateway.is_valid(&client_id, &pending).await, "the activated value validates");
        assert!(!gateway.is_valid(&client_id, &active).await, "the one it replaced does not");
    }
}

on_every_backend! {
    /// `remote_address` is the IP address of the party, as text, or
    /// nothing; anything else is INVALID_ARGUMENT, naming the field. An
    /// address with a zone (`%eth0`) is refused: the zone names an
    /// interface of the gateway's own host, and says nothing of the party.
    async fn remote_address_is_an_ip_address_or_nothing(database: TestDatabase) {
        let server = start(&database, &[]).await;
        let client = client_of(&server).await;
        let (client_id, secret) = client.ready("org-addresses").await;

        for address in ["", "203.0.113.7", "2001:db8::1", "::ffff:203.0.113.7"] {
            let answer = client.validate_from(&client_id, &secret, address).await;
            assert!(
                answer.as_ref().is_ok_and(|a| a.valid),
                "{address:?} is accepted: {answer:?}"
            );
        }
        for address in [
            "not-an-ip",
            "1.2.3.4:80",
            "::1%eth0",
            "[2001:db8::1]",
            "203.0.113.7 ",
            "localhost",
        ] {
            let status = client
                .validate_from(&client_id, &secret, address)
                .await
                .expect_err("refused");
            assert_eq!(status.code(), Code::InvalidArgument, "{address:?}: {status:?}");
            assert!(
                status.message().contains("remote_address"),
                "{address:?}: the message names the field: {status:?}"
            );
        }
    }
}
