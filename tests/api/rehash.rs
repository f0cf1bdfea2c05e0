//! Stronger hashes over time: after the argon2id cost is raised, a secret
//! stored below it is hashed again at the new cost once a verify proves its
//! value, and stored only over the same hash of a secret still ACTIVE.

use std::time::{Duration, Instant};

use integration_service::domain::{
    ClientId, ClientSecret, HashParams, Memory, OrganizationId, SecretHash,
};
use support::{
    ServerCommand, TestApp, TestDatabase, on_every_backend, secret_id_key,
    tables::{self, SecretRow},
};
use uuid::Uuid;

use crate::BINARY;

/// The raised cost, as flags and as the PHC string writes it.
const RAISED: [&str; 4] = ["--argon2-memory-kib", "32768", "--argon2-iterations", "3"];
const RAISED_PHC: &str = "$argon2id$v=19$m=32768,t=3,p=1$";
const DEFAULT_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

/// Longer than a rehash takes on a busy machine; a few hundred
/// milliseconds is usual.
const REHASH_WITHIN: Duration = Duration::from_secs(10);

on_every_backend! {
    async fn a_secret_verified_after_the_cost_was_raised_is_stored_at_the_new_cost(
        database: TestDatabase,
    ) {
        let org = "org-rehash";
        let server = ServerCommand::new(BINARY, database.url()).start().await;
        let (client_id, value) = server.client().await.ready(org).await;
        let (status, _) = server.terminate().await;
        assert!(status.success(), "a clean exit on SIGTERM: {status}");
        let tables = database.connect().await;
        let before = active_row(&tables, org).await;
        assert!(before.hash.starts_with(DEFAULT_PHC), "hashed at the default cost first");

        let raised = ServerCommand::new(BINARY, database.url()).args(&RAISED).start().await;
        let client = raised.client().await;
        assert!(client.is_valid(&client_id, &value).await, "the older hash still verifies");
        let started = Instant::now();
        let after = loop {
            let row = active_row(&tables, org).await;
            if row.hash != before.hash {
                break row;
            }
            assert!(
                started.elapsed() < REHASH_WITHIN,
                "still at the old cost {:?} after a verify",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(after.hash.starts_with(RAISED_PHC), "stored at the raised cost");
        assert_eq!(after.id, before.id, "the same secret");
        assert!(client.is_valid(&client_id, &value).await, "still valid meanwhile");
        let (status, log) = raised.terminate().await;
        assert!(status.success(), "a clean exit on SIGTERM: {status}");

        let rehashed: Vec<serde_json::Value> = log
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|event: &serde_json::Value| event["message"] == "secret rehashed")
            .collect();
        assert_eq!(rehashed.len(), 1, "one rehash is logged: {log:?}");
        let event = &rehashed[0];
        assert_eq!(event["level"], "INFO", "{event}");
        assert_eq!(
            secret_id_key(event["secret_id"].as_str().expect("a secret id")),
            before.id,
            "it names the secret: {event}"
        );
        assert_eq!(event["old"], "m=19456,t=2,p=1", "{event}");
        assert_eq!(event["new"], "m=32768,t=3,p=1", "{event}");
        let log = log.join("\n");
        for hash in [&before.hash, &after.hash] {
            let digest = hash.rsplit('$').next().expect("a PHC string");
            assert!(!log.contains(digest), "a hash is in the log");
        }
        for window in value.as_bytes()[4..60].windows(8) {
            let window = std::str::from_utf8(window).expect("ASCII");
            assert!(!log.contains(window), "a piece of the secret ({window}) is in the log");
        }

        // Back at the default cost, with nothing cached: the new hash alone
        // answers, and is not weakened to the lower cost.
        let restarted = ServerCommand::new(BINARY, database.url()).start().await;
        let client = restarted.client().await;
        assert!(client.is_valid(&client_id, &value).await, "the new hash verifies the value");
        let (status, log) = restarted.terminate().await;
        assert!(status.success(), "a clean exit on SIGTERM: {status}");
        assert_eq!(active_row(&tables, org).await.hash, after.hash, "the stronger hash is kept");
        let rehashes = log
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["message"].as_str().is_some_and(|m| m.contains("rehashed")))
            .count();
        assert_eq!(rehashes, 0, "nothing is rehashed below the stored cost: {log:?}");
    }
}

on_every_backend! {
    async fn a_rehash_is_stored_only_over_the_same_hash_of_a_secret_still_active(app: TestApp) {
        let org = "org-replace";
        let (client_id, value) = app.ready(org).await;
        let client_id = ClientId::parse(&client_id).expect("a client ID");
        let value = ClientSecret::parse(&value).expect("a secret");
        let active = app
            .store
            .active_credentials(&client_id)
            .await
            .expect("readable")
            .expect("an active secret");
        let (id, stored) = (active.secret_id, active.hash);
        let stronger = HashParams::new(32_768, 3, 1).expect("valid");
        let rehash = |secret: &ClientSecret| {
            SecretHash::compute(secret, stronger, &mut Memory::default()).expect("hashing works")
        };
        let (new, newer) = (rehash(&value), rehash(&value));
        let replace = |old: &SecretHash, new: &SecretHash| {
            let (store, old, new) = (app.store.clone(), old.clone(), new.clone());
            async move { store.replace_active_hash(id, &old, &new).await.expect("the write runs") }
        };
        let other = rehash(&ClientSecret::generate().expect("RNG"));

        assert!(!replace(&other, &new).await, "not over another hash");
        assert!(
            !app.store.replace_active_hash(Uuid::now_v7(), &stored, &new).await.expect("runs"),
            "not for an unknown secret"
        );
        assert_eq!(row(&app, org, id).await.hash, stored.as_str(), "unchanged so far");

        assert!(replace(&stored, &new).await, "over the same hash of the active secret");
        let row_now = row(&app, org, id).await;
        assert_eq!(row_now.hash, new.as_str(), "the new hash is stored");
        assert_eq!(row_now.state, "active", "and the secret is still active");
        assert!(!replace(&stored, &newer).await, "not twice: another rehash got there first");
        assert_eq!(row(&app, org, id).await.hash, new.as_str(), "the first one stays");

        // Rotated between a verify and its rehash: the revoked row is left alone.
        let (next, _) = app.generate(org).await.expect("generated");
        app.activate(org, &next).await.expect("activated");
        assert!(!replace(&new, &newer).await, "not once the secret is revoked");
        let revoked = row(&app, org, id).await;
        assert_eq!(revoked.state, "revoked", "rotated");
        assert_eq!(revoked.hash, new.as_str(), "a revoked secret keeps its hash");

        // Nor a pending secret, even over its own hash.
        let (_, pending) = app.generate(org).await.expect("generated");
        let pending_id: Uuid = pending.id.parse().expect("a uuid");
        let organization = OrganizationId::parse(org.to_owned()).expect("an organization");
        let pending_hash = app
            .store
            .secret_hash(&organization, pending_id)
            .await
            .expect("readable")
            .expect("the pending secret's hash");
        let replaced = app.store.replace_active_hash(pending_id, &pending_hash, &newer).await;
        assert!(!replaced.expect("the write runs"), "not a pending secret");
        assert_eq!(
            row(&app, org, pending_id).await.hash,
            pending_hash.as_str(),
            "the pending secret keeps its hash"
        );
        let rows = app.secret_rows(org).await;
        assert!(rows.iter().all(|row| row.hash != newer.as_str()), "no secret took the refused hash");
    }
}

/// The organization's ACTIVE secret, as stored.
async fn active_row(tables: &sea_orm::DatabaseConnection, organization: &str) -> SecretRow {
    tables::secret_rows_of(tables, organization)
        .await
        .into_iter()
        .find(|row| row.state == "active")
        .expect("an active secret")
}

/// The organization's secret `id`, as stored.
async fn row(app: &TestApp, organization: &str, id: Uuid) -> SecretRow {
    let key = secret_id_key(&id.to_string());
    app.secret_rows(organization)
        .await
        .into_iter()
        .find(|row| row.id == key)
        .expect("the secret is stored")
}
