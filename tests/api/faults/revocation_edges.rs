//! Revocation bounds at their edges: no `valid: true` rests on a database
//! read older than `--cache-revalidate-ms` when it is answered, even for
//! checks that shared one verify which waited in a saturated argon2 queue;
//! and the activating replica forgets the client whatever the activation's
//! outcome, even when its commit's acknowledgement is lost, and when a
//! retry finds the value already active. The replica under test is behind
//! a proxy that holds back its notifications, so that what another replica
//! did never reaches it that way: each test shows the one rule it is about
//! at work. PostgreSQL only: these need two replicas on one database or the
//! database behind a proxy.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use integration_service::domain::{ClientId, ClientSecret};
use support::{
    Backend, Client, PostgresProxy, ServerCommand, ServerProcess, TestDatabase, secret_id_key,
    tables,
};
use tonic::Code;

use super::{LOG, client_of, start_server};
use crate::BINARY;

/// The saturated replica's `--cache-revalidate-ms`.
const REVALIDATE: Duration = Duration::from_millis(200);
/// Checks the flood keeps waiting for the argon2 threads at every moment,
/// on [`FLOOD_CONNECTIONS`] connections: with two threads and verifies of
/// tens of milliseconds, a check that joins the queue waits half a second
/// or more.
const FLOOD_IN_FLIGHT: usize = 64;
const FLOOD_CONNECTIONS: usize = 4;
/// A check queued behind the flood must wait at least this long for the
/// test to go on: twice the bound, so that a rotation fits in the wait.
const SATURATED: Duration = Duration::from_millis(400);

/// Keeps [`FLOOD_IN_FLIGHT`] wrong secrets for random client IDs waiting
/// on `client`s until `running` is cleared. Without a source, and under a
/// generous overall throttle, every one of them reaches the queue.
fn flood(clients: &[Client], running: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..FLOOD_IN_FLIGHT)
        .map(|n| {
            let (client, running) = (clients[n % clients.len()].clone(), running.clone());
            tokio::spawn(async move {
                while running.load(Ordering::SeqCst) {
                    let (client_id, secret) = (
                        ClientId::generate().expect("RNG"),
                        ClientSecret::generate().expect("RNG"),
                    );
                    let answer = client.validate(client_id.as_str(), secret.expose()).await;
                    if answer.is_err() {
                        // The server may be gone (a failed assertion drops
                        // it): a call that fails at once must not spin, or
                        // the test could not end.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    assert!(
                        !answer.is_ok_and(|a| a.valid),
                        "a wrong secret for a random client ID is never valid"
                    );
                }
            })
        })
        .collect()
}

/// A check of `secret` for `client_id`: what it answered, and when it was
/// sent and answered, from `epoch`.
struct Timed {
    answer: Result<bool, Code>,
    sent: Duration,
    answered: Duration,
}

impl Timed {
    fn waited(&self) -> Duration {
        self.answered - self.sent
    }
}

fn timed_check(
    client: &Client,
    client_id: &str,
    secret: &str,
    epoch: Instant,
) -> tokio::task::JoinHandle<Timed> {
    let (client, client_id, secret) = (client.clone(), client_id.to_owned(), secret.to_owned());
    tokio::spawn(async move {
        let sent = epoch.elapsed();
        let answer = client
            .validate(&client_id, &secret)
            .await
            .map(|a| a.valid)
            .map_err(|s| s.code());
        Timed {
            answer,
            sent,
            answered: epoch.elapsed(),
        }
    })
}

/// Rotations the saturated-queue test may try before it gives up on
/// seeing a check answered rather than failed.
const ROUNDS: usize = 3;

/// Two identical checks of a client's secret wait, sharing one verify,
/// behind a flood in replica R1's argon2 queue; while they wait the secret
/// is rotated through replica R2. R1 is behind a proxy that holds back its
/// notifications meanwhile, so R1 does not hear of the rotation: only the
/// age of the checks' read (older than `--cache-revalidate-ms` once they
/// get a thread) can keep them from answering `valid: true` on it. A check
/// may fail with an error status (the confirming read has the same bound
/// to meet); the test takes up to [`ROUNDS`] rotations, of clients of
/// their own, to see one answered `valid: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_sharing_a_verify_that_waited_in_a_saturated_queue_never_answer_on_a_stale_read() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let proxy = PostgresProxy::start(database.url()).await;
    let revalidate_ms = REVALIDATE.as_millis().to_string();
    let saturated = ServerCommand::new(BINARY, &proxy.url())
        .log_filter(LOG)
        .args(&[
            "--cache-revalidate-ms",
            &revalidate_ms,
            // Every flood check reaches the queue, none times out in it.
            "--throttle-overall-per-second",
            "100000",
            "--argon2-timeout-ms",
            "10000",
            // On a machine busy with other work, idle-priority threads would
            // wait for every other process: the queue is what is tested.
            "--argon2-priority",
            "normal",
        ])
        .start()
        .await;
    let other = start_server(&database).await;
    let admin = client_of(&other).await;
    // Made on R2, so that R1 has never cached these clients: their checks
    // verify.
    let mut rotations = Vec::new();
    for round in 0..ROUNDS {
        let org = format!("org-queued-{round}");
        let (client_id, old) = admin.ready(&org).await;
        let (new, _) = admin.generate(&org).await.expect("generated");
        rotations.push((org, client_id, old, new));
    }

    let mut flood_clients = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        flood_clients.push(client_of(&saturated).await);
    }
    let running = Arc::new(AtomicBool::new(true));
    let flooding = flood(&flood_clients, &running);
    let gateway = client_of(&saturated).await;

    // Saturated once a wrong secret waits long enough.
    let saturating = Instant::now();
    let probe = loop {
        let secret = ClientSecret::generate().expect("RNG");
        let sent = Instant::now();
        let answer = gateway
            .validate(ClientId::generate().expect("RNG").as_str(), secret.expose())
            .await;
        let waited = sent.elapsed();
        assert!(answer.is_ok(), "a probe is answered: {answer:?}");
        if waited >= SATURATED {
            break waited;
        }
        assert!(
            saturating.elapsed() < Duration::from_secs(10),
            "the queue never made a check wait {SATURATED:?} (the last waited {waited:?})"
        );
    };
    println!("saturated queue: a probe waited {probe:?}");

    let mut answered_invalid = false;
    for (round, (org, client_id, old, new)) in rotations.iter().enumerate() {
        // From now until the checks are answered, R1 hears nothing.
        proxy.freeze_notices(true);
        let epoch = Instant::now();
        let first = timed_check(&gateway, client_id, old, epoch);
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Identical, while the first is under way: it joins the first's
        // verify.
        let second = timed_check(&gateway, client_id, old, epoch);
        // Both have read the old secret as the active one and wait for a
        // thread.
        tokio::time::sleep(Duration::from_millis(50)).await;
        admin.activate(org, new).await.expect("activated");
        let rotated = epoch.elapsed();
        let (first, second) = (
            first.await.expect("answered"),
            second.await.expect("answered"),
        );
        proxy.freeze_notices(false);

        println!(
            "saturated queue, round {round}: the rotation committed at {rotated:?}; the checks, \
             sent at {:?} and {:?}, answered {:?} at {:?} and {:?} at {:?}",
            first.sent, second.sent, first.answer, first.answered, second.answer, second.answered,
        );
        for (which, check) in [("first", &first), ("second", &second)] {
            assert!(
                check.answered > rotated,
                "round {round}: the {which} check was answered before the rotation committed: \
                 the queue was too short for the test to prove anything"
            );
            assert!(
                check.waited() > REVALIDATE,
                "round {round}: the {which} check waited only {:?}, not longer than the bound",
                check.waited()
            );
            assert!(
                check.answer != Ok(true),
                "round {round}: the {which} check answered valid: true after waiting {:?}, on a \
                 read made before the rotation that revoked its secret (and of which its \
                 replica had heard nothing)",
                check.waited()
            );
        }
        assert!(
            admin.is_valid(client_id, new).await,
            "round {round}: the new secret validates"
        );
        if first.answer == Ok(false) || second.answer == Ok(false) {
            answered_invalid = true;
            break;
        }
    }
    running.store(false, Ordering::SeqCst);
    for task in flooding {
        task.await.expect("the flood ends cleanly");
    }
    assert!(
        answered_invalid,
        "in {ROUNDS} rounds no check was answered valid: false, only errors: the test never saw \
         the bound answer"
    );
}

/// The activation's `COMMIT` reaches the database, but the connection is
/// cut before its answer comes back, and the replica hears nothing through
/// its notification listener (held back by the proxy): only its own
/// forgetting can stop the old secret, and it must, at once, whatever the
/// activation answered. The retry finds the value already active (what
/// that path forgets, the two tests after this one show: here the old
/// secret is gone from the cache before the retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_whose_commit_acknowledgement_is_lost_still_revokes_on_its_replica() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let proxy = PostgresProxy::start(database.url()).await;
    // A cached secret is trusted for a minute: the revalidation cannot be
    // what stops the old one.
    let server = ServerCommand::new(BINARY, &proxy.url())
        .log_filter(LOG)
        // Verifies compete for the CPU, so that a busy test machine does not
        // starve them into UNAVAILABLE (idle priority's documented price).
        .args(&[
            "--cache-revalidate-ms",
            "60000",
            "--argon2-priority",
            "normal",
        ])
        .start()
        .await;
    let client = client_of(&server).await;
    let org = "org-lost-ack";
    let (client_id, old) = client.ready(org).await;
    assert!(
        client.is_valid(&client_id, &old).await,
        "the first secret validates, and is cached from now on"
    );
    let (new, new_meta) = client.generate(org).await.expect("generated");

    proxy.freeze_notices(true);
    proxy.cut_next_commit();
    let lost = client.activate(org, &new).await;
    let cut = !proxy.is_armed();
    proxy.disarm();
    assert!(cut, "the activation sent COMMIT through the proxy");
    let status = lost.expect_err("an activation whose COMMIT went unanswered fails");
    println!(
        "lost acknowledgement: ActivateSecret answered {:?} ({} connection cut)",
        status.code(),
        proxy.commits_cut()
    );
    assert!(
        matches!(status.code(), Code::Unavailable | Code::Internal),
        "the lost acknowledgement answers UNAVAILABLE or INTERNAL: {status:?}"
    );
    let tables = database.connect().await;
    let state = |rows: &[support::SecretRow]| {
        rows.iter()
            .find(|row| row.id == secret_id_key(&new_meta.id))
            .map(|row| row.state.clone())
    };
    assert_eq!(
        state(&tables::secret_rows_of(&tables, org).await).as_deref(),
        Some("active"),
        "the transaction committed"
    );

    assert!(
        !client.is_valid(&client_id, &old).await,
        "the old secret still validates on the activating replica after its activation \
         committed without an acknowledgement"
    );
    let again = client
        .activate(org, &new)
        .await
        .expect("the retry finds the value already active");
    assert_eq!(
        again.active_secret.map(|s| s.id),
        Some(new_meta.id.clone()),
        "the new secret is the active one"
    );
    assert!(
        client.is_valid(&client_id, &new).await,
        "the new secret validates"
    );
    assert_eq!(
        state(&tables::secret_rows_of(&tables, org).await).as_deref(),
        Some("active"),
        "the new secret is ACTIVE in the database"
    );
    proxy.freeze_notices(false);
    server.terminate().await;
}

/// Replica R1, behind a proxy that can hold back its notifications, with
/// cached secrets trusted for a minute: only what R1 forgets by itself can
/// stop an old secret there. A verify of a slow hash has twenty seconds.
async fn replica_behind(proxy: &PostgresProxy) -> ServerProcess {
    ServerCommand::new(BINARY, &proxy.url())
        .log_filter(LOG)
        .args(&[
            "--cache-revalidate-ms",
            "60000",
            "--argon2-timeout-ms",
            "20000",
            // Verifies compete for the CPU, so that a busy test machine does
            // not starve them into UNAVAILABLE (idle priority's price).
            "--argon2-priority",
            "normal",
        ])
        .start()
        .await
}

/// R1 has cached the old secret when the new one is activated through R2,
/// and hears nothing of it (the proxy holds its notifications back). The
/// same activation sent to R1 then (a retry after a lost acknowledgement,
/// on another replica than the first attempt's) finds the value already
/// active: R1 must forget the old secret at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_activation_that_finds_the_value_already_active_forgets_the_old_secret() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let proxy = PostgresProxy::start(database.url()).await;
    let r1 = replica_behind(&proxy).await;
    let r2 = start_server(&database).await;
    let (on_r1, on_r2) = (client_of(&r1).await, client_of(&r2).await);
    let org = "org-already-active";
    let (client_id, old) = on_r2.ready(org).await;
    assert!(
        on_r1.is_valid(&client_id, &old).await,
        "the old secret validates on R1, and is cached there from now on"
    );
    let (new, _) = on_r2.generate(org).await.expect("generated");

    proxy.freeze_notices(true);
    on_r2
        .activate(org, &new)
        .await
        .expect("activated through R2");
    assert!(
        on_r1.is_valid(&client_id, &old).await,
        "R1 heard nothing and still trusts its entry (else the test proves nothing)"
    );
    let again = on_r1
        .activate(org, &new)
        .await
        .expect("R1 finds the value already active");
    assert!(again.pending_secret.is_none(), "nothing is pending");
    assert!(
        !on_r1.is_valid(&client_id, &old).await,
        "the old secret still validates on R1 after an activation there found the new one \
         already active"
    );
    assert!(
        on_r1.is_valid(&client_id, &new).await,
        "the new secret validates on R1"
    );
    proxy.freeze_notices(false);
    r1.terminate().await;
}

/// What the server said one argon2id computation took at start.
fn verify_time_of(server: &ServerProcess) -> Duration {
    let event = server
        .output()
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["message"] == "argon2id ready")
        .expect("the server says when argon2id is ready");
    Duration::from_secs_f64(event["verify_ms"].as_f64().expect("verify_ms") / 1e3)
}

/// A check of the old secret on R1 has read it as the active one and is
/// still verifying it (a hash stored at a high cost, by a replica
/// configured so) when the new secret is activated through R2 and the same
/// activation, sent to R1, finds it already active. R1 hears nothing
/// through its notifications (held back by the proxy), and trusts a read
/// for a minute: only the retry's forgetting can keep the check from
/// answering `valid: true`, and from caching the old secret again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_under_way_when_a_retry_finds_the_value_already_active_does_not_answer_valid() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let proxy = PostgresProxy::start(database.url()).await;
    let r1 = replica_behind(&proxy).await;
    // About fifty times the floor's work: a verify of the old secret
    // outlasts both activations of the new one (hashed at the floor by R1),
    // even while other tests load the machine.
    let slow = ServerCommand::new(BINARY, database.url())
        .log_filter(LOG)
        .args(&[
            "--argon2-memory-kib",
            "131072",
            "--argon2-iterations",
            "16",
            "--argon2-timeout-ms",
            "30000",
        ])
        .start()
        .await;
    let (on_r1, on_r2) = (client_of(&r1).await, client_of(&slow).await);
    let org = "org-retried-under-way";
    let (client_id, old) = on_r2.ready(org).await;
    let (new, _) = on_r1.generate(org).await.expect("generated");
    let slow_verify = verify_time_of(&slow);

    proxy.freeze_notices(true);
    let epoch = Instant::now();
    let check = timed_check(&on_r1, &client_id, &old, epoch);
    // It has read the old secret as the active one, and verifies it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    on_r2
        .activate(org, &new)
        .await
        .expect("activated through R2");
    on_r1
        .activate(org, &new)
        .await
        .expect("R1 finds the value already active");
    let retried = epoch.elapsed();
    let check = check.await.expect("answered");
    let after = on_r1.is_valid(&client_id, &old).await;
    proxy.freeze_notices(false);

    println!(
        "check under way: a verify of the old secret takes {slow_verify:?} where it was hashed; \
         the retry on R1 returned at {retried:?}; the check, sent at {:?}, answered {:?} at \
         {:?}; then the old secret was valid: {after}",
        check.sent, check.answer, check.answered,
    );
    assert!(
        check.answered > retried,
        "the check was answered before the retry returned: the verify was too short for the \
         test to prove anything"
    );
    // The verify time was measured at the slow replica's start, when other
    // tests may have loaded the machine more or less than now (4.6 s then
    // against a 2.1 s verify in one CI run); an answer from the cache takes
    // milliseconds, so a quarter of it still tells the two apart.
    assert!(
        check.waited() >= slow_verify / 4,
        "the check took {:?}, far less than a verify of the old secret ({slow_verify:?} at \
         start): it did not verify it",
        check.waited()
    );
    assert_eq!(
        check.answer,
        Ok(false),
        "a check that read the old secret before the retry found the new one already active \
         must not answer valid: true after it"
    );
    assert!(!after, "R1 cached the old secret again");
    assert!(
        on_r1.is_valid(&client_id, &new).await,
        "the new secret validates on R1"
    );
    r1.terminate().await;
}
