//! Faults, on real server processes: the database going away under load,
//! `kill -9` in the middle of rotations, and replicas racing on one
//! database (SPEC §4, "Faults" and "Races").
//!
//! Each test prints its figures (run with `--nocapture`); the README quotes
//! them. No test prints a secret value.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use integration_service::{
    domain::ClientSecret,
    proto::{self, integration_service_client::IntegrationServiceClient},
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio::task::JoinHandle;
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{Backend, TestDatabase};
use crate::process::ServerProcess;

type Client = IntegrationServiceClient<Channel>;

/// Longer than any answer should take, even one that waits the server's
/// whole `--database-timeout-secs` (5 s) for a connection: a call still
/// unanswered then counts as hung, and fails the test.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// What the server processes log: enough to see what they did (state
/// changes, failures, warnings), not every frame.
const LOG: &str = "info";

// ---------------------------------------------------------------------------
// 1. The database goes away for 10 s under load.
// ---------------------------------------------------------------------------

/// How long the database stays away.
const OUTAGE: Duration = Duration::from_secs(10);
/// The server's `--cache-revalidate-ms` (its default).
const REVALIDATE: Duration = Duration::from_millis(500);
/// SPEC §4: the service recovers by itself within 2 s of the database's
/// return.
const RECOVERY: Duration = Duration::from_secs(2);
/// README: health reports NOT_SERVING within two probe intervals (1 s each,
/// the default) of the database going away; one more for a busy machine.
const HEALTH_DOWN: Duration = Duration::from_secs(3);

/// PostgreSQL only: SQLite is a file and cannot go away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_answers_unavailable_and_recovers_within_two_seconds() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let name = database_name(&database.url);
    let admin = admin_connection().await;
    // Every setting at its default, as an operator runs it.
    let mut server = ServerProcess::start_logging(&database.url, &[], LOG).await;

    let mut client = server.client().await;
    let (client_id, value) = ready(&mut client, "org-warm").await;
    assert!(
        validate(&mut client, &client_id, &value)
            .await
            .expect("answered"),
        "the active secret validates, and is cached from now on"
    );
    for n in 0..2 {
        create(&mut client, &format!("org-generate-{n}"))
            .await
            .expect("created");
    }

    // The load: a gateway's warm validations, the dashboard reading and
    // generating; each task on a connection of its own, for the whole test.
    let running = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let call = Load::Validate(client_id.clone(), value.clone());
        tasks.push(load(server.client().await, call, ms(2), running.clone()));
    }
    for _ in 0..2 {
        let call = Load::Get("org-warm".to_owned());
        tasks.push(load(server.client().await, call, ms(10), running.clone()));
    }
    for n in 0..2 {
        let call = Load::Generate(format!("org-generate-{n}"));
        tasks.push(load(server.client().await, call, ms(100), running.clone()));
    }
    let health = watch_health(server.channel().await, running.clone());

    tokio::time::sleep(Duration::from_secs(3)).await;
    let cut = Instant::now();
    allow_connections(&admin, &name, false).await;
    let cut_done = Instant::now();
    tokio::time::sleep_until((cut_done + OUTAGE).into()).await;
    allow_connections(&admin, &name, true).await;
    let restored = Instant::now();
    // Long enough to see recovery, and a while of calls after it.
    tokio::time::sleep(RECOVERY * 2).await;

    running.store(false, Ordering::SeqCst);
    let mut calls: Vec<Call> = Vec::new();
    for task in tasks {
        calls.extend(task.await.expect("a load task ends cleanly"));
    }
    calls.sort_by_key(|c| c.started);
    let health = health.await.expect("the health watcher ends cleanly");

    // The figures, before the assertions, so that a failure shows them too.
    let phase = |call: &Call| {
        if call.started < cut {
            "1 before"
        } else if call.started < restored {
            "2 outage"
        } else {
            "3 after"
        }
    };
    let mut counts: BTreeMap<(&str, Rpc, String), usize> = BTreeMap::new();
    for call in &calls {
        let outcome = match (call.code, call.valid) {
            (Code::Ok, Some(true)) => "OK valid".to_owned(),
            (Code::Ok, Some(false)) => "OK invalid".to_owned(),
            (code, _) => format!("{code:?}"),
        };
        *counts.entry((phase(call), call.rpc, outcome)).or_default() += 1;
    }
    println!(
        "outage: {} calls; database cut for {:?} (cutting took {:?})",
        calls.len(),
        restored - cut_done,
        cut_done - cut
    );
    for ((phase, rpc, outcome), n) in &counts {
        println!("outage:   {phase:9} {rpc:?} {outcome}: {n}");
    }
    let first_ok_after = |rpc: Rpc| {
        calls
            .iter()
            .filter(|c| c.rpc == rpc && c.code == Code::Ok && c.ended > restored)
            .map(|c| c.ended - restored)
            .min()
    };
    for rpc in [
        Rpc::ValidateClient,
        Rpc::GetIntegration,
        Rpc::GenerateSecret,
    ] {
        println!(
            "outage: first {rpc:?} success {:?} after the database returned",
            first_ok_after(rpc)
        );
    }
    let last_valid_during = calls
        .iter()
        .filter(|c| c.valid == Some(true) && c.started >= cut_done && c.ended < restored)
        .map(|c| c.started - cut_done)
        .max();
    let first_refusal = calls
        .iter()
        .filter(|c| c.rpc == Rpc::ValidateClient && c.code == Code::Unavailable)
        .map(|c| c.started.saturating_duration_since(cut_done))
        .min();
    println!(
        "outage: warm validations: last valid answer to a check started {last_valid_during:?} \
         after the cut, first UNAVAILABLE to one started {first_refusal:?} after it"
    );
    let slowest_refusal = calls
        .iter()
        .filter(|c| c.code == Code::Unavailable)
        .map(|c| c.ended - c.started)
        .max();
    println!("outage: slowest UNAVAILABLE answer took {slowest_refusal:?}");
    let not_serving = health
        .iter()
        .find(|(at, s)| *at > cut && *s == Ok(ServingStatus::NotServing))
        .map(|(at, _)| *at);
    let serving_again = health
        .iter()
        .find(|(at, s)| *at > restored && *s == Ok(ServingStatus::Serving))
        .map(|(at, _)| *at);
    println!(
        "outage: health NOT_SERVING {:?} after the cut, SERVING {:?} after the return \
         ({} checks)",
        not_serving.map(|at| at - cut_done),
        serving_again.map(|at| at - restored),
        health.len()
    );

    // Only OK and UNAVAILABLE, in every phase: never INTERNAL, UNKNOWN, a
    // hung call or anything else.
    for call in &calls {
        assert!(
            matches!(call.code, Code::Ok | Code::Unavailable),
            "{:?} started {:?} after the cut answered {:?}: {}",
            call.rpc,
            call.started.saturating_duration_since(cut),
            call.code,
            call.message
        );
        assert!(
            !call.message.contains(&name),
            "the message keeps internals: {}",
            call.message
        );
    }
    // Fail closed, never "wrong": the correct secret is never refused.
    assert!(
        calls.iter().all(|c| c.valid != Some(false)),
        "the active secret was answered valid=false"
    );
    assert!(
        calls
            .iter()
            .filter(|c| c.ended < cut)
            .all(|c| c.code == Code::Ok),
        "every call before the outage succeeds"
    );
    for rpc in [
        Rpc::ValidateClient,
        Rpc::GetIntegration,
        Rpc::GenerateSecret,
    ] {
        assert!(
            calls
                .iter()
                .any(|c| c.rpc == rpc && c.code == Code::Unavailable),
            "the outage reached {rpc:?}"
        );
    }
    // Nothing answers from the database while it is away. A warm validation
    // may answer from the cache for one revalidation interval after the last
    // database read behind it, which was before the cut; a check that
    // starts later needs the database, and fails closed: UNAVAILABLE, never
    // valid=false. (In practice it is sooner: the connection listening for
    // activations dies with the others, and losing it distrusts the whole
    // cache; valid answers stopped 60 to 220 ms after the cut in runs here.)
    for call in &calls {
        if call.started >= cut_done && call.ended < restored && call.code == Code::Ok {
            assert_eq!(
                call.rpc,
                Rpc::ValidateClient,
                "{:?} succeeded without the database",
                call.rpc
            );
            assert!(
                call.started - cut_done < REVALIDATE,
                "a warm validation started {:?} after the cut answered valid: the cache trusted \
                 an entry past --cache-revalidate-ms",
                call.started - cut_done
            );
        }
    }
    // Recovery by itself: each kind of call succeeds again within 2 s, and
    // from then on every call does.
    for rpc in [
        Rpc::ValidateClient,
        Rpc::GetIntegration,
        Rpc::GenerateSecret,
    ] {
        let first = first_ok_after(rpc).expect("a success after the database returned");
        assert!(
            first <= RECOVERY,
            "the first {rpc:?} success came {first:?} after the database returned"
        );
    }
    for call in calls.iter().filter(|c| c.started >= restored + RECOVERY) {
        assert_eq!(
            call.code,
            Code::Ok,
            "{:?} started {:?} after the database returned: {}",
            call.rpc,
            call.started - restored,
            call.message
        );
    }
    // Health follows the database, both ways, and says nothing else.
    for (at, status) in &health {
        assert!(status.is_ok(), "health did not answer: {status:?}");
        if *at < cut {
            assert_eq!(*status, Ok(ServingStatus::Serving), "before the outage");
        }
    }
    let not_serving = not_serving.expect("health reported NOT_SERVING during the outage");
    assert!(
        not_serving < restored && not_serving - cut_done <= HEALTH_DOWN,
        "health reported NOT_SERVING {:?} after the cut",
        not_serving - cut_done
    );
    assert!(
        health
            .iter()
            .filter(|(at, _)| *at > not_serving && *at < restored)
            .all(|(_, s)| *s == Ok(ServingStatus::NotServing)),
        "health went back to SERVING while the database was away"
    );
    let serving_again = serving_again.expect("health reported SERVING after the outage");
    assert!(
        serving_again - restored <= RECOVERY,
        "health reported SERVING {:?} after the database returned",
        serving_again - restored
    );
    assert!(
        health
            .iter()
            .filter(|(at, _)| *at > serving_again)
            .all(|(_, s)| *s == Ok(ServingStatus::Serving)),
        "health flapped after the recovery"
    );
    // A secret returned to a caller was committed first, outage or not.
    let stored = secret_rows(&database_connection(&database.url).await).await;
    for call in calls.iter().filter(|c| c.rpc == Rpc::GenerateSecret) {
        if let Some(id) = &call.secret_id {
            assert!(
                stored.iter().any(|row| &row.id == id),
                "GenerateSecret returned a secret that is not in the table"
            );
        }
    }
    // No panic, and the process still shuts down cleanly.
    assert!(server.is_running(), "the server process died");
    let (status, output) = server.terminate().await;
    assert_no_panic(&output);
    assert!(status.success(), "a clean exit after the outage: {status}");
}

/// A kind of call the load sends over and over.
#[derive(Clone)]
enum Load {
    /// ValidateClient of this client ID and its active secret.
    Validate(String, String),
    Get(String),
    Generate(String),
}

/// Sends `call` in a loop, pausing `pause` between calls, while `running`.
fn load(
    mut client: Client,
    call: Load,
    pause: Duration,
    running: Arc<AtomicBool>,
) -> JoinHandle<Vec<Call>> {
    tokio::spawn(async move {
        let mut calls = Vec::new();
        while running.load(Ordering::SeqCst) {
            let started = Instant::now();
            let (rpc, outcome, valid, secret_id) = match &call {
                Load::Validate(client_id, value) => {
                    let outcome = validate(&mut client, client_id, value).await;
                    let valid = outcome.as_ref().ok().copied();
                    (Rpc::ValidateClient, outcome.map(drop), valid, None)
                }
                Load::Get(organization) => (
                    Rpc::GetIntegration,
                    get(&mut client, organization).await.map(drop),
                    None,
                    None,
                ),
                Load::Generate(organization) => {
                    let outcome = generate(&mut client, organization).await;
                    let id = outcome.as_ref().ok().map(|(_, secret)| id_key(&secret.id));
                    (Rpc::GenerateSecret, outcome.map(drop), None, id)
                }
            };
            let (code, message) = match outcome {
                Ok(()) => (Code::Ok, String::new()),
                Err(status) => (status.code(), status.message().to_owned()),
            };
            calls.push(Call {
                rpc,
                started,
                ended: Instant::now(),
                code,
                message,
                valid,
                secret_id,
            });
            tokio::time::sleep(pause).await;
        }
        calls
    })
}

/// One call the load made, and its answer.
struct Call {
    rpc: Rpc,
    started: Instant,
    ended: Instant,
    code: Code,
    message: String,
    /// ValidateClient's answer, when it answered.
    valid: Option<bool>,
    /// The id of the secret GenerateSecret returned.
    secret_id: Option<String>,
}

/// Checks the server's overall health every 50 ms while `running`; returns
/// when each answer came and what it was.
#[allow(clippy::type_complexity)]
fn watch_health(
    channel: Channel,
    running: Arc<AtomicBool>,
) -> JoinHandle<Vec<(Instant, Result<ServingStatus, Code>)>> {
    tokio::spawn(async move {
        let mut client = HealthClient::new(channel);
        let mut seen = Vec::new();
        while running.load(Ordering::SeqCst) {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            let status = match within(client.check(request)).await {
                Ok(response) => Ok(response.status()),
                Err(status) => Err(status.code()),
            };
            seen.push((Instant::now(), status));
            tokio::time::sleep(ms(50)).await;
        }
        seen
    })
}

/// Lets connections into the database `name` again, or shuts it off: no
/// new connections, and every open one terminated. Only that database: other
/// tests share the server.
async fn allow_connections(admin: &DatabaseConnection, name: &str, allow: bool) {
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {allow}"
        ))
        .await
        .expect("altered");
    if allow {
        return;
    }
    // A backend exits some time after it is told to; the outage begins when
    // none is left.
    let started = Instant::now();
    loop {
        admin
            .execute_unprepared(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ))
            .await
            .expect("backends terminated");
        let left: i64 = admin
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '{name}'"),
            ))
            .await
            .expect("pg_stat_activity is readable")
            .expect("one row")
            .try_get("", "n")
            .expect("a count");
        if left == 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{left} connections to {name} survive pg_terminate_backend"
        );
        tokio::time::sleep(ms(20)).await;
    }
}

// ---------------------------------------------------------------------------
// 2. kill -9 in the middle of rotations.
// ---------------------------------------------------------------------------

/// How many times the server is killed and restarted, per backend.
const ROUNDS: usize = 5;
/// Concurrent clients; each rotates the secrets of organizations of its own.
const WORKERS: usize = 3;
const ORGANIZATIONS_PER_WORKER: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_rotations_loses_nothing_returned_on_sqlite() {
    kill_9_in_the_middle_of_rotations(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_rotations_loses_nothing_returned_on_postgres() {
    kill_9_in_the_middle_of_rotations(Backend::Postgres).await;
}

/// Clients generate and activate secrets of several organizations at once
/// while the server is killed with SIGKILL at a random moment; it restarts
/// on the same database, and everything it returned before must be there.
///
/// Each organization has one client, so that "the last value returned" is
/// well defined: concurrent generations for one organization are the
/// subject of the race tests.
async fn kill_9_in_the_middle_of_rotations(backend: Backend) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let mut server = ServerProcess::start_logging(&database.url, &[], LOG).await;
    let tables = database_connection(&database.url).await;
    let mut client = server.client().await;
    let mut workers: Vec<Vec<Ledger>> = Vec::new();
    for w in 0..WORKERS {
        let mut ledgers = Vec::new();
        for o in 0..ORGANIZATIONS_PER_WORKER {
            let organization_id = format!("org-crash-{w}-{o}");
            create(&mut client, &organization_id)
                .await
                .expect("created");
            ledgers.push(Ledger::new(organization_id));
        }
        workers.push(ledgers);
    }

    let mut figures = CrashFigures::default();
    for round in 1..=ROUNDS {
        let killed = Arc::new(AtomicBool::new(false));
        let mut running = Vec::new();
        for ledgers in workers.drain(..) {
            let client = server.client().await;
            running.push(tokio::spawn(rotate(client, ledgers, killed.clone())));
        }
        let delay = ms(rand::random_range(200..1_500));
        tokio::time::sleep(delay).await;
        killed.store(true, Ordering::SeqCst);
        let output = server.kill().await;
        assert_no_panic(&output);
        for worker in running {
            workers.push(worker.await.expect("a client ends cleanly"));
        }

        server = ServerProcess::start_logging(&database.url, &[], LOG).await;
        let mut client = server.client().await;
        let round_figures =
            check_after_restart(&tables, &mut client, workers.iter_mut().flatten()).await;
        println!("crash ({backend:?}) round {round}: killed after {delay:?}: {round_figures:?}");
        figures.add(&round_figures);
    }
    println!(
        "crash ({backend:?}): {ROUNDS} kills; {} generations and {} activations answered OK \
         before them, every one found committed after the restart; {} generations and {} \
         activations in flight at the kills, never answered ({} of those generations had \
         committed)",
        figures.generations_returned,
        figures.activations_returned,
        figures.unanswered_generations,
        figures.unanswered_activations,
        figures.unanswered_generations_committed
    );
    assert!(
        figures.generations_returned > 0 && figures.activations_returned > 0,
        "the clients got answers before the kills"
    );
    let (status, output) = server.terminate().await;
    assert_no_panic(&output);
    assert!(status.success(), "a clean exit after the last restart");
}

/// What one client knows of one organization's secrets: what the server
/// returned to it.
struct Ledger {
    organization_id: String,
    /// Ids of the secrets GenerateSecret returned, in order, and the hint
    /// of each (the value's last four characters).
    returned: Vec<(String, String)>,
    /// Ids of the secrets whose ActivateSecret answered OK.
    activated: Vec<String>,
    /// The value returned last and its id, while it is the one that should
    /// activate.
    last: Option<(String, String)>,
    /// A GenerateSecret was under way at the kill, and never answered.
    unanswered_generation: bool,
    /// The same, for ActivateSecret.
    unanswered_activation: bool,
}

impl Ledger {
    fn new(organization_id: String) -> Self {
        Self {
            organization_id,
            returned: Vec::new(),
            activated: Vec::new(),
            last: None,
            unanswered_generation: false,
            unanswered_activation: false,
        }
    }
}

/// Generates secrets of its organizations in turn, activating about half of
/// them at once (so that the kill finds some pending), until `killed`.
/// Every error before the kill fails the test; after it, the call is
/// noted as unanswered.
async fn rotate(
    mut client: Client,
    mut ledgers: Vec<Ledger>,
    killed: Arc<AtomicBool>,
) -> Vec<Ledger> {
    loop {
        for ledger in &mut ledgers {
            if killed.load(Ordering::SeqCst) {
                return ledgers;
            }
            match generate(&mut client, &ledger.organization_id).await {
                Ok((value, secret)) => {
                    let id = id_key(&secret.id);
                    let hint = value[value.len() - ClientSecret::HINT_LEN..].to_owned();
                    ledger.returned.push((id.clone(), hint));
                    ledger.last = Some((value, id));
                }
                Err(_) if killed.load(Ordering::SeqCst) => {
                    ledger.unanswered_generation = true;
                    return ledgers;
                }
                Err(status) => panic!("GenerateSecret failed before the kill: {status:?}"),
            }
            if rand::random_bool(0.5) {
                if killed.load(Ordering::SeqCst) {
                    return ledgers;
                }
                let (value, id) = ledger.last.clone().expect("just generated");
                match activate(&mut client, &ledger.organization_id, &value).await {
                    Ok(()) => ledger.activated.push(id),
                    Err(_) if killed.load(Ordering::SeqCst) => {
                        ledger.unanswered_activation = true;
                        return ledgers;
                    }
                    Err(status) => panic!("ActivateSecret failed before the kill: {status:?}"),
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct CrashFigures {
    /// GenerateSecret and ActivateSecret calls answered OK before the kill.
    generations_returned: usize,
    activations_returned: usize,
    /// Calls under way at the kill, never answered.
    unanswered_generations: usize,
    unanswered_activations: usize,
    /// Unanswered generations that had committed: their secret replaced
    /// the last one returned.
    unanswered_generations_committed: usize,
}

impl CrashFigures {
    fn add(&mut self, other: &Self) {
        self.generations_returned += other.generations_returned;
        self.activations_returned += other.activations_returned;
        self.unanswered_generations += other.unanswered_generations;
        self.unanswered_activations += other.unanswered_activations;
        self.unanswered_generations_committed += other.unanswered_generations_committed;
    }
}

/// After a restart: the invariants hold, every secret returned before the
/// kill is in the table, every activation answered OK took effect, and the
/// last value returned for each organization activates (or already is
/// active). Returns this round's figures.
async fn check_after_restart(
    tables: &DatabaseConnection,
    client: &mut Client,
    ledgers: impl Iterator<Item = &mut Ledger>,
) -> CrashFigures {
    let rows = secret_rows(tables).await;
    assert_one_active_and_one_pending_at_most(&rows);
    let state_of = |rows: &[SecretRow], id: &str| {
        rows.iter()
            .find(|row| row.id == id)
            .map(|row| row.state.clone())
    };
    let mut figures = CrashFigures::default();
    let mut ledgers: Vec<&mut Ledger> = ledgers.collect();
    for ledger in &mut ledgers {
        let organization = ledger.organization_id.clone();
        figures.generations_returned += ledger.returned.len();
        figures.activations_returned += ledger.activated.len();
        for (id, hint) in &ledger.returned {
            let row = rows.iter().find(|row| &row.id == id);
            assert!(
                row.is_some_and(|row| row.organization_id == organization && &row.hint == hint),
                "a secret GenerateSecret returned for {organization} is not in the table"
            );
        }
        for id in &ledger.activated {
            let state = state_of(&rows, id);
            assert!(
                matches!(state.as_deref(), Some("active" | "revoked")),
                "a secret whose activation answered OK is {state:?}"
            );
        }
        let Some((value, id)) = ledger.last.clone() else {
            continue;
        };
        match activate(client, &organization, &value).await {
            Ok(()) => ledger.activated.push(id.clone()),
            // The generation under way at the kill committed, though its
            // answer was lost, and so discarded the value returned before.
            Err(status)
                if status.code() == Code::FailedPrecondition && ledger.unanswered_generation =>
            {
                assert_eq!(state_of(&rows, &id).as_deref(), Some("discarded"));
                assert!(
                    rows.iter().any(|row| row.organization_id == organization
                        && row.state == "pending"
                        && !ledger.returned.iter().any(|(id, _)| id == &row.id)),
                    "{organization}: the last value returned was discarded by no other secret"
                );
                figures.unanswered_generations_committed += 1;
                ledger.last = None;
            }
            Err(status) => panic!(
                "{organization}: the last value returned before the kill does not activate \
                 after the restart: {status:?}"
            ),
        }
    }
    let rows = secret_rows(tables).await;
    assert_one_active_and_one_pending_at_most(&rows);
    for ledger in &mut ledgers {
        if let Some((_, id)) = &ledger.last {
            assert_eq!(
                state_of(&rows, id).as_deref(),
                Some("active"),
                "{}: the last value returned is active once activated",
                ledger.organization_id
            );
        }
        figures.unanswered_generations += usize::from(ledger.unanswered_generation);
        figures.unanswered_activations += usize::from(ledger.unanswered_activation);
        ledger.unanswered_generation = false;
        ledger.unanswered_activation = false;
        // Each round's figures count what was returned in that round.
        ledger.returned.clear();
        ledger.activated.clear();
    }
    figures
}

// ---------------------------------------------------------------------------
// 3. Three replicas racing on one PostgreSQL database.
// ---------------------------------------------------------------------------

const REPLICAS: usize = 3;
/// Organizations the free-for-all races on, and the callers racing.
const RACED_ORGANIZATIONS: usize = 2;
const RACERS: usize = 12;
const RACER_ROTATIONS: usize = 4;
/// Rounds of the race between activations of one pending value, and how
/// many callers activate it each round.
const RACE_ROUNDS: usize = 5;
const PENDING_ACTIVATIONS: usize = 9;
const MADE_UP_ACTIVATIONS: usize = 3;

/// PostgreSQL only: several processes sharing one SQLite file are no
/// deployment the README offers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_racing_keep_the_invariants_and_let_exactly_one_activation_win() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    // Started together, so they also migrate together, taking turns.
    let (a, b, c) = tokio::join!(
        ServerProcess::start_logging(&database.url, &[], LOG),
        ServerProcess::start_logging(&database.url, &[], LOG),
        ServerProcess::start_logging(&database.url, &[], LOG),
    );
    let replicas = [a, b, c];
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(replica.client().await);
    }
    let tables = database_connection(&database.url).await;
    let raced: Vec<String> = (0..RACED_ORGANIZATIONS)
        .map(|n| format!("org-race-{n}"))
        .collect();
    for organization in raced.iter().map(String::as_str).chain(["org-round"]) {
        ready(&mut clients[0], organization).await;
    }
    let tally = Tally::default();

    // A checker reads the table for as long as anything races.
    let racing = Arc::new(AtomicBool::new(true));
    let checker = {
        let racing = racing.clone();
        let tables = tables.clone();
        tokio::spawn(async move {
            let mut reads = 0_usize;
            while racing.load(Ordering::SeqCst) {
                for (organization, active, pending) in live_secrets(&tables).await {
                    assert_eq!(active, 1, "{organization}: {active} active secrets at once");
                    assert!(
                        pending <= 1,
                        "{organization}: {pending} pending secrets at once"
                    );
                }
                reads += 1;
            }
            reads
        })
    };

    // Free-for-all: every racer generates a secret and at once activates it,
    // on the organization and replica its number picks.
    let started = Instant::now();
    let racers: Vec<_> = (0..RACERS)
        .map(|n| {
            let mut client = clients[n % REPLICAS].clone();
            let organization = raced[n % RACED_ORGANIZATIONS].clone();
            let tally = tally.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..RACER_ROTATIONS {
                    let generated = generate(&mut client, &organization).await;
                    tally.note(Rpc::GenerateSecret, &generated);
                    let (value, secret) = generated.expect("every generation succeeds");
                    let activated = activate(&mut client, &organization, &value).await;
                    tally.note(Rpc::ActivateSecret, &activated);
                    outcomes.push((organization.clone(), id_key(&secret.id), activated));
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.extend(racer.await.expect("a racer ends cleanly"));
    }
    let free_for_all = started.elapsed();
    let rows = secret_rows(&tables).await;
    for organization in &raced {
        let generated: Vec<_> = outcomes
            .iter()
            .filter(|(o, _, _)| o == organization)
            .collect();
        let rows: Vec<_> = rows
            .iter()
            .filter(|row| &row.organization_id == organization)
            .collect();
        assert_eq!(
            rows.len(),
            generated.len() + 1,
            "{organization}: every generation stored once, beside the first secret"
        );
        for (_, id, activated) in &generated {
            let state = rows.iter().find(|row| &row.id == id).map(|row| &row.state);
            match activated {
                Ok(()) => assert!(
                    state.is_some_and(|s| s == "active" || s == "revoked"),
                    "{organization}: an activation answered OK left its secret {state:?}"
                ),
                // Only its own racer activates a value: refused, it can only
                // have been replaced by a newer generation.
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                    assert!(
                        state.is_some_and(|s| s == "discarded"),
                        "{organization}: a refused activation's secret is {state:?}"
                    );
                }
            }
        }
        // The generation that committed last was never replaced, so its
        // racer's activation succeeded: nothing is left pending.
        let count = |state: &str| rows.iter().filter(|row| row.state == state).count();
        assert_eq!(count("active"), 1, "{organization}");
        assert_eq!(
            count("pending"),
            0,
            "{organization}: the last generation was activated"
        );
    }

    // Rounds: one pending value P; at once, across the replicas, many
    // activations of P, of every discarded and revoked value the
    // organization ever had, and of made-up values with a valid checksum.
    let started = Instant::now();
    let organization = "org-round";
    let mut active = current_secret_id(&tables, organization, "active").await;
    let mut old_values: Vec<String> = Vec::new();
    for round in 0..RACE_ROUNDS {
        let (discarded, discarded_secret) = generate(&mut clients[round % REPLICAS], organization)
            .await
            .expect("generated");
        let (pending, pending_secret) =
            generate(&mut clients[(round + 1) % REPLICAS], organization)
                .await
                .expect("generated");
        old_values.push(discarded);
        let mut values: Vec<(String, bool)> = vec![(pending.clone(), true); PENDING_ACTIVATIONS];
        values.extend(old_values.iter().map(|v| (v.clone(), false)));
        for _ in 0..MADE_UP_ACTIVATIONS {
            let made_up = ClientSecret::generate().expect("the OS RNG works");
            values.push((made_up.expose().to_owned(), false));
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(values.len()));
        let calls: Vec<_> = values
            .into_iter()
            .enumerate()
            .map(|(n, (value, is_pending))| {
                let mut client = clients[n % REPLICAS].clone();
                let barrier = barrier.clone();
                let tally = tally.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let outcome = activate(&mut client, organization, &value).await;
                    tally.note(Rpc::ActivateSecret, &outcome);
                    (is_pending, outcome)
                })
            })
            .collect();
        for call in calls {
            match call.await.expect("an activation ends") {
                (true, outcome) => outcome.expect("every activation of the pending value succeeds"),
                (false, outcome) => {
                    let status = outcome.expect_err("an old or made-up value never activates");
                    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                }
            }
        }
        let rows = secret_rows(&tables).await;
        let state_of = |id: &str| {
            rows.iter()
                .find(|row| row.id == id)
                .map(|row| row.state.as_str())
        };
        assert_eq!(state_of(&id_key(&pending_secret.id)), Some("active"));
        assert_eq!(state_of(&active), Some("revoked"), "the old active secret");
        assert_eq!(state_of(&id_key(&discarded_secret.id)), Some("discarded"));
        active = id_key(&pending_secret.id);
    }
    let rounds = started.elapsed();

    racing.store(false, Ordering::SeqCst);
    let reads = checker.await.expect("the checker saw no violation");
    assert!(reads > 0, "the checker ran");

    // Exactly one state change per secret that ever became active: each
    // such secret was logged "secret activated" once, by one replica of the
    // three, and no other was.
    let mut logs = Vec::new();
    for replica in replicas {
        let (status, output) = replica.terminate().await;
        assert_no_panic(&output);
        assert!(status.success(), "a clean exit: {status}");
        logs.extend(output);
    }
    let mut activations: HashMap<String, usize> = HashMap::new();
    for line in &logs {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["message"] == "secret activated" {
            let id = event["secret_id"]
                .as_str()
                .expect("the event names the secret");
            *activations.entry(id_key(id)).or_default() += 1;
        }
    }
    let rows = secret_rows(&tables).await;
    let ever_active: Vec<&SecretRow> = rows
        .iter()
        .filter(|row| row.state == "active" || row.state == "revoked")
        .collect();
    for row in &ever_active {
        assert_eq!(
            activations.get(&row.id).copied().unwrap_or(0),
            1,
            "{}: a secret that became active did so other than once",
            row.organization_id
        );
    }
    assert_eq!(
        activations.len(),
        ever_active.len(),
        "a secret that never became active was logged as activated"
    );

    let totals = tally.totals();
    println!(
        "races: {REPLICAS} replicas; free-for-all of {RACERS} callers on {RACED_ORGANIZATIONS} \
         organizations took {free_for_all:?}; {RACE_ROUNDS} rounds of racing activations took \
         {rounds:?}; {reads} reads of the table by the checker; {} secrets became active",
        ever_active.len()
    );
    for ((rpc, code), n) in &totals {
        println!("races:   {rpc:?} {code}: {n}");
    }
    for (rpc, code) in totals.keys() {
        assert!(
            allowed_by_spec(*rpc)
                .iter()
                .any(|c| format!("{c:?}") == *code),
            "{rpc:?} answered {code}, which SPEC §2 does not list for it"
        );
    }
}

/// The statuses SPEC §2's table allows each RPC, OK included.
fn allowed_by_spec(rpc: Rpc) -> &'static [Code] {
    match rpc {
        Rpc::GetIntegration | Rpc::GenerateSecret => {
            &[Code::Ok, Code::NotFound, Code::InvalidArgument]
        }
        Rpc::ActivateSecret => &[
            Code::Ok,
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::NotFound,
        ],
        Rpc::ValidateClient => &[Code::Ok, Code::InvalidArgument],
    }
}

/// How many calls of each RPC answered each status.
#[derive(Clone, Default)]
struct Tally(Arc<Mutex<BTreeMap<(Rpc, String), usize>>>);

impl Tally {
    fn note<T>(&self, rpc: Rpc, outcome: &Result<T, Status>) {
        let code = match outcome {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        *self
            .0
            .lock()
            .expect("lock")
            .entry((rpc, format!("{code:?}")))
            .or_default() += 1;
    }

    fn totals(&self) -> BTreeMap<(Rpc, String), usize> {
        self.0.lock().expect("lock").clone()
    }
}

/// The id of the organization's secret in `state`.
async fn current_secret_id(tables: &DatabaseConnection, organization: &str, state: &str) -> String {
    let rows = secret_rows(tables).await;
    let row = rows
        .iter()
        .find(|row| row.organization_id == organization && row.state == state)
        .expect("a secret in that state");
    row.id.clone()
}

/// For every organization: how many ACTIVE and PENDING secrets it has, in
/// one read.
async fn live_secrets(tables: &DatabaseConnection) -> Vec<(String, i64, i64)> {
    let sql = "SELECT organization_id, \
                 SUM(CASE WHEN state = 'active' THEN 1 ELSE 0 END) AS active, \
                 SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END) AS pending \
               FROM secrets GROUP BY organization_id";
    tables
        .query_all_raw(Statement::from_string(tables.get_database_backend(), sql))
        .await
        .expect("the secrets table is readable")
        .iter()
        .map(|row| {
            (
                row.try_get("", "organization_id").expect("an organization"),
                row.try_get("", "active").expect("a count"),
                row.try_get("", "pending").expect("a count"),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Shared by the three.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Rpc {
    GetIntegration,
    GenerateSecret,
    ActivateSecret,
    ValidateClient,
}

/// One row of the secrets table, as the test reads it.
struct SecretRow {
    /// Lower-case hex without dashes, as [`id_key`] writes the API's ids.
    id: String,
    organization_id: String,
    state: String,
    hint: String,
}

/// Every secret in the table.
async fn secret_rows(tables: &DatabaseConnection) -> Vec<SecretRow> {
    let backend = tables.get_database_backend();
    let id = match backend {
        DbBackend::Postgres => "replace(id::text, '-', '')",
        _ => {
            "CASE WHEN typeof(id) = 'blob' THEN lower(hex(id)) ELSE lower(replace(id, '-', '')) END"
        }
    };
    let sql = format!("SELECT {id} AS id, organization_id, state, hint FROM secrets");
    tables
        .query_all_raw(Statement::from_string(backend, sql))
        .await
        .expect("the secrets table is readable")
        .iter()
        .map(|row| SecretRow {
            id: row.try_get("", "id").expect("an id"),
            organization_id: row.try_get("", "organization_id").expect("an organization"),
            state: row.try_get("", "state").expect("a state"),
            hint: row.try_get("", "hint").expect("a hint"),
        })
        .collect()
}

/// Panics unless every organization has at most one ACTIVE and at most one
/// PENDING secret.
fn assert_one_active_and_one_pending_at_most(rows: &[SecretRow]) {
    let mut live: HashMap<(&str, &str), usize> = HashMap::new();
    for row in rows {
        if row.state == "active" || row.state == "pending" {
            *live.entry((&row.organization_id, &row.state)).or_default() += 1;
        }
    }
    for ((organization, state), n) in live {
        assert!(n <= 1, "{organization} has {n} {state} secrets");
    }
}

/// A secret id as the API returns it, in the form [`secret_rows`] reads it.
fn id_key(id: &str) -> String {
    id.replace('-', "").to_ascii_lowercase()
}

/// Panics if the process wrote that something panicked.
fn assert_no_panic(output: &[String]) {
    let panics: Vec<_> = output
        .iter()
        .filter(|line| line.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "the server panicked: {panics:#?}");
}

/// The name of a PostgreSQL database from its URL.
fn database_name(url: &str) -> String {
    let path = url.split('?').next().expect("a URL");
    path.rsplit('/').next().expect("a database name").to_owned()
}

/// A connection to the server that holds the test databases, not to any of
/// them.
async fn admin_connection() -> DatabaseConnection {
    sea_orm::Database::connect(
        std::env::var("TEST_DATABASE_URL").expect("set, since the test runs on PostgreSQL"),
    )
    .await
    .expect("an administrative connection")
}

/// The test's own connection to a test database, to read its tables.
async fn database_connection(url: &str) -> DatabaseConnection {
    sea_orm::Database::connect(url)
        .await
        .expect("the test database is reachable")
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Awaits a call for at most [`CALL_TIMEOUT`].
async fn within<T>(
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(
            "no answer within the test's call timeout",
        )),
    }
}

async fn create(client: &mut Client, organization: &str) -> Result<proto::Integration, Status> {
    let request = proto::CreateIntegrationRequest {
        organization_id: organization.to_owned(),
    };
    let response = within(client.create_integration(request)).await?;
    Ok(response.integration.expect("an integration"))
}

async fn get(client: &mut Client, organization: &str) -> Result<proto::Integration, Status> {
    let request = proto::GetIntegrationRequest {
        organization_id: organization.to_owned(),
    };
    let response = within(client.get_integration(request)).await?;
    Ok(response.integration.expect("an integration"))
}

/// The value and the metadata of a new secret.
async fn generate(
    client: &mut Client,
    organization: &str,
) -> Result<(String, proto::Secret), Status> {
    let request = proto::GenerateSecretRequest {
        organization_id: organization.to_owned(),
    };
    let response = within(client.generate_secret(request)).await?;
    Ok((response.client_secret, response.secret.expect("a secret")))
}

async fn activate(client: &mut Client, organization: &str, value: &str) -> Result<(), Status> {
    let request = proto::ActivateSecretRequest {
        organization_id: organization.to_owned(),
        client_secret: value.to_owned(),
    };
    within(client.activate_secret(request)).await.map(drop)
}

async fn validate(client: &mut Client, client_id: &str, value: &str) -> Result<bool, Status> {
    let request = proto::ValidateClientRequest {
        client_id: client_id.to_owned(),
        client_secret: value.to_owned(),
        ..Default::default()
    };
    Ok(within(client.validate_client(request)).await?.valid)
}

/// Creates an integration with an active secret; returns its client ID and
/// the secret's value.
async fn ready(client: &mut Client, organization: &str) -> (String, String) {
    let integration = create(client, organization).await.expect("created");
    let (value, _) = generate(client, organization).await.expect("generated");
    activate(client, organization, &value)
        .await
        .expect("activated");
    (integration.client_id, value)
}
