//! `kill -9` in the middle of rotations: the invariants hold after every
//! restart, and a secret returned to a caller was committed first.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use integration_service::domain::ClientSecret;
use sea_orm::DatabaseConnection;
use support::{
    Client, SecretRow, TestDatabase, on_every_backend, secret_id_key,
    tables::{self, assert_one_active_and_one_pending_at_most},
};
use tonic::Code;

use super::{assert_no_panic, client_of, ms, start_server};

/// How many times the server is killed and restarted, per backend.
const ROUNDS: usize = 5;
/// Concurrent clients; each rotates the secrets of organizations of its own.
const WORKERS: usize = 3;
const ORGANIZATIONS_PER_WORKER: usize = 2;

on_every_backend! {
    async fn kill_9_in_the_middle_of_rotations_loses_nothing_returned(database: TestDatabase) {
        kill_9_in_the_middle_of_rotations(database).await;
    }
}

/// Clients generate and activate secrets of several organizations at once
/// while the server is killed with SIGKILL at a random moment; it restarts
/// on the same database, and everything it returned before must be there.
///
/// Each organization has one client, so that "the last value returned" is
/// well defined: concurrent generations for one organization are the
/// subject of the race tests.
async fn kill_9_in_the_middle_of_rotations(database: TestDatabase) {
    let backend = database.backend();
    let mut server = start_server(&database).await;
    let tables = database.connect().await;
    let client = client_of(&server).await;
    let mut workers: Vec<Vec<Ledger>> = Vec::new();
    for w in 0..WORKERS {
        let mut ledgers = Vec::new();
        for o in 0..ORGANIZATIONS_PER_WORKER {
            let organization_id = format!("org-crash-{w}-{o}");
            client.create(&organization_id).await.expect("created");
            ledgers.push(Ledger::new(organization_id));
        }
        workers.push(ledgers);
    }

    let mut figures = CrashFigures::default();
    for round in 1..=ROUNDS {
        let killed = Arc::new(AtomicBool::new(false));
        let mut running = Vec::new();
        for ledgers in workers.drain(..) {
            let client = client_of(&server).await;
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

        server = start_server(&database).await;
        let client = client_of(&server).await;
        let round_figures =
            check_after_restart(&tables, &client, workers.iter_mut().flatten()).await;
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
    assert!(
        status.success(),
        "a clean exit after the last restart: {status}"
    );
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
async fn rotate(client: Client, mut ledgers: Vec<Ledger>, killed: Arc<AtomicBool>) -> Vec<Ledger> {
    loop {
        for ledger in &mut ledgers {
            if killed.load(Ordering::SeqCst) {
                return ledgers;
            }
            match client.generate(&ledger.organization_id).await {
                Ok((value, secret)) => {
                    let id = secret_id_key(&secret.id);
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
                match client.activate(&ledger.organization_id, &value).await {
                    Ok(_) => ledger.activated.push(id),
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
    client: &Client,
    ledgers: impl Iterator<Item = &mut Ledger>,
) -> CrashFigures {
    let rows = tables::secret_rows(tables).await;
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
        match client.activate(&organization, &value).await {
            Ok(_) => ledger.activated.push(id.clone()),
            // The generation under way at the kill committed, though its
            // answer was lost, and so discarded the value returned before.
            Err(status)
                if status.code() == Code::FailedPrecondition && ledger.unanswered_generation =>
            {
                assert_eq!(
                    state_of(&rows, &id).as_deref(),
                    Some("discarded"),
                    "{organization}: the last value returned was discarded"
                );
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
    let rows = tables::secret_rows(tables).await;
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
