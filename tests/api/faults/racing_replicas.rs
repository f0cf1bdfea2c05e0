//! Three replicas racing on one PostgreSQL database: at every moment at
//! most one active and one pending secret, and of racing activations of
//! different values exactly one wins.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use integration_service::domain::ClientSecret;
use sea_orm::DatabaseConnection;
use support::{
    Backend, SecretRow, ServerCommand, ServerProcess, TestDatabase, secret_id_key, tables,
};
use tonic::{Code, Status};

use super::{LOG, Rpc, assert_no_panic, client_of};
use crate::BINARY;

/// A replica with every setting at its default but one: a budget of wrong
/// activations that the rounds below cannot spend. They send some thirty
/// wrong values within seconds, a dozen to one replica, over the default
/// ten a minute; this scenario is about the race, and the throttle has tests
/// of its own (`activate_secret.rs`).
async fn start_replica(database: &TestDatabase) -> ServerProcess {
    ServerCommand::new(BINARY, database.url())
        .log_filter(LOG)
        .args(&["--throttle-activation-failures-per-minute", "1000"])
        .start()
        .await
}

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
/// deployment the documentation offers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_racing_keep_the_invariants_and_let_exactly_one_activation_win() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    // Started together, so they also migrate together, taking turns.
    let (a, b, c) = tokio::join!(
        start_replica(&database),
        start_replica(&database),
        start_replica(&database),
    );
    let replicas = [a, b, c];
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(client_of(replica).await);
    }
    let tables = database.connect().await;
    let raced: Vec<String> = (0..RACED_ORGANIZATIONS)
        .map(|n| format!("org-race-{n}"))
        .collect();
    for organization in raced.iter().map(String::as_str).chain(["org-round"]) {
        clients[0].ready(organization).await;
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
                for tables::LiveSecrets {
                    organization_id: organization,
                    active,
                    pending,
                } in tables::live_secrets(&tables).await
                {
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
            let client = clients[n % REPLICAS].clone();
            let organization = raced[n % RACED_ORGANIZATIONS].clone();
            let tally = tally.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..RACER_ROTATIONS {
                    let generated = client.generate(&organization).await;
                    tally.note(Rpc::GenerateSecret, &generated);
                    let (value, secret) = generated.expect("every generation succeeds");
                    let activated = client.activate(&organization, &value).await.map(drop);
                    tally.note(Rpc::ActivateSecret, &activated);
                    outcomes.push((organization.clone(), secret_id_key(&secret.id), activated));
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
    let rows = tables::secret_rows(&tables).await;
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
        assert_eq!(count("active"), 1, "{organization}: one active secret");
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
        let (discarded, discarded_secret) = clients[round % REPLICAS]
            .generate(organization)
            .await
            .expect("generated");
        let (pending, pending_secret) = clients[(round + 1) % REPLICAS]
            .generate(organization)
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
                let client = clients[n % REPLICAS].clone();
                let barrier = barrier.clone();
                let tally = tally.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let outcome = client.activate(organization, &value).await.map(drop);
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
        let rows = tables::secret_rows(&tables).await;
        let state_of = |id: &str| {
            rows.iter()
                .find(|row| row.id == id)
                .map(|row| row.state.as_str())
        };
        assert_eq!(
            state_of(&secret_id_key(&pending_secret.id)),
            Some("active"),
            "the pending secret"
        );
        assert_eq!(state_of(&active), Some("revoked"), "the old active secret");
        assert_eq!(
            state_of(&secret_id_key(&discarded_secret.id)),
            Some("discarded"),
            "the secret the pending one replaced"
        );
        active = secret_id_key(&pending_secret.id);
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
            *activations.entry(secret_id_key(id)).or_default() += 1;
        }
    }
    let rows = tables::secret_rows(&tables).await;
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
    let rows = tables::secret_rows(tables).await;
    let row = rows
        .iter()
        .find(|row| row.organization_id == organization && row.state == state)
        .expect("a secret in that state");
    row.id.clone()
}
