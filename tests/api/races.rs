//! Several replicas on one database, racing on one organization.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use integration_service::proto;
use support::{TestApp, on_every_backend, tables};
use tonic::Code;

on_every_backend! {
    async fn racing_replicas_keep_one_active_and_one_pending_secret(app: TestApp) {
        let replica = app.replica().await;
        let (client_id, first) = app.ready("org-replicas").await;

        // A checker reads the table throughout the race.
        let racing = Arc::new(AtomicBool::new(true));
        let checker = {
            let racing = racing.clone();
            let tables = app.tables().clone();
            tokio::spawn(async move {
                let mut reads = 0;
                while racing.load(Ordering::SeqCst) {
                    let tables::LiveSecrets { active, pending, .. } =
                        tables::live_secrets_of(&tables, "org-replicas").await;
                    assert_eq!(active, 1, "exactly one active secret at every moment");
                    assert!(pending <= 1, "{pending} pending secrets at once");
                    reads += 1;
                }
                reads
            })
        };

        // Eight callers, half on each replica, each generating and at once
        // activating its own value, three times.
        let callers: Vec<_> = (0..8)
            .map(|n| {
                let mut client = if n % 2 == 0 { app.raw() } else { replica.raw() };
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for _ in 0..3 {
                        let value = client
                            .generate_secret(proto::GenerateSecretRequest {
                                organization_id: "org-replicas".into(),
                            })
                            .await
                            .expect("every generation succeeds")
                            .into_inner()
                            .client_secret;
                        let activated = client
                            .activate_secret(proto::ActivateSecretRequest {
                                organization_id: "org-replicas".into(),
                                client_secret: value.clone(),
                            })
                            .await;
                        outcomes.push((value, activated.map(|_| ())));
                    }
                    outcomes
                })
            })
            .collect();
        let mut activated = Vec::new();
        let mut generated = 0;
        for caller in callers {
            for (value, outcome) in caller.await.expect("the caller completes") {
                generated += 1;
                match outcome {
                    Ok(()) => activated.push(value),
                    // Another caller's generation discarded it first.
                    Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
                }
            }
        }
        racing.store(false, Ordering::SeqCst);
        let reads = checker.await.expect("the checker saw no violation");
        assert!(reads > 0, "the checker ran");

        assert!(!activated.is_empty(), "at least one activation won");
        let rows = app.secret_rows("org-replicas").await;
        assert_eq!(rows.len(), generated + 1, "every generated secret was stored once");
        assert_eq!(app.count_in_state("org-replicas", "active").await, 1, "one active secret");
        let pending = app.count_in_state("org-replicas", "pending").await;
        assert!(pending <= 1, "{pending} pending secrets");
        // The replica may have cached a value the other replica revoked
        // last: it learns of that within the revalidation bound (at once on
        // PostgreSQL, by notification; within 500 ms on SQLite).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let valid = loop {
            let mut valid = 0;
            for value in activated.iter().chain([&first]) {
                if replica.is_valid(&client_id, value).await {
                    valid += 1;
                }
            }
            if valid == 1 || std::time::Instant::now() > deadline {
                break valid;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(valid, 1, "of every value ever activated, exactly one validates within the bound");
    }
}

on_every_backend! {
    async fn activating_a_value_while_another_replica_replaces_it_has_one_outcome(app: TestApp) {
        let replica = app.replica().await;
        let (client_id, mut active) = app.ready("org-swap").await;
        for _ in 0..5 {
            let (value, _) = app.generate("org-swap").await.expect("generated");
            // One replica activates the pending value while the other
            // replaces it with a newer one.
            let (activation, generation) =
                tokio::join!(app.activate("org-swap", &value), replica.generate("org-swap"));
            let (newer, _) = generation.expect("the generation succeeds");
            match activation {
                Ok(_) => {
                    // The other replica may have the old secret cached; it
                    // learns of the activation within the revalidation bound.
                    replica.becomes_invalid(&client_id, &active, REPLICA_BOUND).await;
                    active = value;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                    assert!(!replica.is_valid(&client_id, &value).await, "discarded, never valid");
                }
            }
            assert!(replica.is_valid(&client_id, &active).await, "one secret is active");
            assert!(!replica.is_valid(&client_id, &newer).await, "the newest is still pending");
            assert_eq!(app.count_in_state("org-swap", "active").await, 1, "one active secret");
            assert_eq!(app.count_in_state("org-swap", "pending").await, 1, "one pending secret");
        }
    }
}

/// How long another replica may take to stop accepting a revoked secret: the
/// cache's revalidation interval in the test settings (500 ms), and as much
/// again for a check on a busy machine. On PostgreSQL the notification
/// makes it milliseconds.
const REPLICA_BOUND: Duration = Duration::from_secs(1);
