//! The database goes away for 10 s under load: calls fail UNAVAILABLE,
//! health says NOT_SERVING, and the service recovers by itself.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use support::{Backend, Client, TestDatabase, health_status, secret_id_key, tables};
use tokio::task::JoinHandle;
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;

use super::{CALL_TIMEOUT, Rpc, assert_no_panic, client_of, ms, start_server};

/// How long the database stays away.
const OUTAGE: Duration = Duration::from_secs(10);
/// The server's `--cache-revalidate-ms` (its default).
const REVALIDATE: Duration = Duration::from_millis(500);
/// SPEC §4: the service recovers by itself within 2 s of the database's
/// return.
const RECOVERY: Duration = Duration::from_secs(2);
/// docs/operations.md: health reports NOT_SERVING within two probe intervals (1 s each,
/// the default) of the database going away; one more for a busy machine.
const HEALTH_DOWN: Duration = Duration::from_secs(3);

/// PostgreSQL only: SQLite is a file and cannot go away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_answers_unavailable_and_recovers_within_two_seconds() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let name = database.name().expect("a PostgreSQL database").to_owned();
    // Every setting at its default, as an operator runs it.
    let mut server = start_server(&database).await;

    let client = client_of(&server).await;
    let (client_id, value) = client.ready("org-warm").await;
    assert!(
        client.is_valid(&client_id, &value).await,
        "the active secret validates, and is cached from now on"
    );
    for n in 0..2 {
        client
            .create(&format!("org-generate-{n}"))
            .await
            .expect("created");
    }

    // The load: a gateway's warm validations, the dashboard reading and
    // generating; each task on a connection of its own, for the whole test.
    let running = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let call = Load::Validate(client_id.clone(), value.clone());
        tasks.push(load(client_of(&server).await, call, ms(2), running.clone()));
    }
    for _ in 0..2 {
        let call = Load::Get("org-warm".to_owned());
        tasks.push(load(
            client_of(&server).await,
            call,
            ms(10),
            running.clone(),
        ));
    }
    for n in 0..2 {
        let call = Load::Generate(format!("org-generate-{n}"));
        tasks.push(load(
            client_of(&server).await,
            call,
            ms(100),
            running.clone(),
        ));
    }
    let health = watch_health(server.channel().await, running.clone());

    tokio::time::sleep(Duration::from_secs(3)).await;
    let cut = Instant::now();
    database.allow_connections(false).await;
    let cut_done = Instant::now();
    tokio::time::sleep_until((cut_done + OUTAGE).into()).await;
    // Taken before the database lets connections in again (letting it
    // takes a connection of its own, a statement and a close), so that
    // every call counted as during the outage really was, and the recovery
    // bounds below count the time the database took to come back.
    let restored = Instant::now();
    database.allow_connections(true).await;
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
    let stored = tables::secret_rows(&database.connect().await).await;
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
    client: Client,
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
                    let outcome = client.validate(client_id, value).await.map(|v| v.valid);
                    let valid = outcome.as_ref().ok().copied();
                    (Rpc::ValidateClient, outcome.map(drop), valid, None)
                }
                Load::Get(organization) => (
                    Rpc::GetIntegration,
                    client.get(organization).await.map(drop),
                    None,
                    None,
                ),
                Load::Generate(organization) => {
                    let outcome = client.generate(organization).await;
                    let id = outcome
                        .as_ref()
                        .ok()
                        .map(|(_, secret)| secret_id_key(&secret.id));
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
        let mut seen = Vec::new();
        while running.load(Ordering::SeqCst) {
            let status = within(health_status(channel.clone(), ""))
                .await
                .map_err(|status| status.code());
            seen.push((Instant::now(), status));
            tokio::time::sleep(ms(50)).await;
        }
        seen
    })
}

/// Awaits a call for at most [`CALL_TIMEOUT`].
async fn within<T>(call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => answer,
        Err(_) => Err(Status::deadline_exceeded(
            "no answer within the test's call timeout",
        )),
    }
}
