//! Stronger hashes over time: after the argon2id cost is raised, a secret
//! stored below it is hashed again at the new cost once a verify proves its
//! value, and stored only over the same hash of a secret still ACTIVE.

use integration_service::domain::{
    ClientId, ClientSecret, HashParams, Memory, OrganizationId, SecretHash,
};
use support::{SecretRow, TestApp, on_every_backend, secret_id_key};
use uuid::Uuid;

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

/// The organization's secret `id`, as stored.
async fn row(app: &TestApp, organization: &str, id: Uuid) -> SecretRow {
    let key = secret_id_key(&id.to_string());
    app.secret_rows(organization)
        .await
        .into_iter()
        .find(|row| row.id == key)
        .expect("the secret is stored")
}
