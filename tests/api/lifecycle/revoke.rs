use std::time::Duration;

use integration_service::proto::SecretState;
use support::{Backend, TestApp, expect_code, on_every_backend};
use tonic::Code;

on_every_backend! {
    async fn revoking_the_active_secret_stops_it_at_once_and_leaves_none(app: TestApp) {
        let (client_id, value) = app.ready("org-rev").await;
        assert!(app.is_valid(&client_id, &value).await, "valid before");
        let active = app.get("org-rev").await.expect("read").active_secret.expect("active");

        let integration = app.revoke("org-rev", &active.id).await.expect("revoked");
        assert!(integration.active_secret.is_none(), "no active secret remains");
        assert!(!app.is_valid(&client_id, &value).await, "refused at once on this replica");

        let history = app.all_secrets("org-rev", 0).await.expect("listed");
        let revoked = history.iter().find(|s| s.id == active.id).expect("listed");
        assert_eq!(revoked.state, SecretState::Revoked as i32);
        assert!(revoked.revoke_time.is_some(), "it says when");

        let again = app.revoke("org-rev", &active.id).await.expect("already retired: success");
        assert_eq!(again.update_time, integration.update_time, "and nothing changed");
        let message = expect_code(app.activate("org-rev", &value).await, Code::FailedPrecondition);
        assert!(!message.contains(&value), "{message}");
    }
}

on_every_backend! {
    async fn revoking_the_pending_secret_discards_it(app: TestApp) {
        let (client_id, active_value) = app.ready("org-revp").await;
        let (pending_value, pending) = app.generate("org-revp").await.expect("generated");
        let integration = app.revoke("org-revp", &pending.id).await.expect("discarded");
        assert!(integration.pending_secret.is_none(), "no pending secret remains");
        assert!(integration.active_secret.is_some(), "the active one is untouched");
        assert!(app.is_valid(&client_id, &active_value).await, "and still validates");
        expect_code(app.activate("org-revp", &pending_value).await, Code::FailedPrecondition);
        let history = app.all_secrets("org-revp", 0).await.expect("listed");
        assert_eq!(history[0].state, SecretState::Discarded as i32);
    }
}

on_every_backend! {
    async fn only_a_secret_id_of_the_organization_can_be_revoked(app: TestApp) {
        app.ready("org-rev-a").await;
        app.ready("org-rev-b").await;
        let theirs = app.get("org-rev-b").await.expect("read").active_secret.expect("active");
        let message = expect_code(app.revoke("org-rev-a", &theirs.id).await, Code::NotFound);
        assert!(message.contains("ListSecrets"), "{message}");
        assert!(
            app.get("org-rev-b").await.expect("read").active_secret.is_some(),
            "the other organization's secret is untouched"
        );
        expect_code(
            app.revoke("org-rev-a", "0192f0c8-0000-7000-8000-000000000000").await,
            Code::NotFound,
        );
        for bad in ["", "not-a-secret-id", "12345"] {
            let message = expect_code(app.revoke("org-rev-a", bad).await, Code::InvalidArgument);
            assert!(message.contains("secret_id"), "{message}");
        }
        expect_code(app.revoke("org-rev-none", &theirs.id).await, Code::NotFound);
    }
}

on_every_backend! {
    async fn a_revoked_secret_stops_validating_on_other_replicas_within_the_bound(app: TestApp) {
        let replica = app.replica().await;
        let (client_id, value) = app.ready("org-rev-repl").await;
        assert!(replica.is_valid(&client_id, &value).await, "valid and cached on the replica");
        let active = app.get("org-rev-repl").await.expect("read").active_secret.expect("active");
        app.revoke("org-rev-repl", &active.id).await.expect("revoked");
        let bound = match app.backend() {
            // A notification makes the replica forget at once.
            Backend::Postgres => Duration::from_millis(500),
            // No notifications: the revalidation interval (500 ms in tests).
            Backend::Sqlite => Duration::from_secs(2),
        };
        let took = replica.becomes_invalid(&client_id, &value, bound).await;
        println!("revoked secret refused on the other replica after {took:?}");
    }
}
