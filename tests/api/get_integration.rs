use prost::Message;
use tonic::Code;

use integration_service::proto::SecretState;
use support::{TestApp, expect_code, on_every_backend};

on_every_backend! {
    async fn an_unknown_organization_is_not_found(app: TestApp) {
        let message = expect_code(app.get("org-nobody").await, Code::NotFound);
        assert!(message.contains("org-nobody"), "{message}");
        expect_code(app.get("").await, Code::InvalidArgument);
    }
}

on_every_backend! {
    async fn it_shows_the_metadata_of_the_active_and_pending_secrets(app: TestApp) {
        let (_, active_value) = app.ready("org-tab").await;
        let (pending_value, pending) = app.generate("org-tab").await.expect("generated");

        let integration = app.get("org-tab").await.expect("readable");
        let active = integration.active_secret.expect("an active secret");
        assert_eq!(active.state, SecretState::Active as i32, "the active secret says so");
        assert_eq!(active.hint, active_value[60..], "hint is the last 4 characters");
        assert!(active.activate_time.is_some() && active.create_time.is_some(), "it has its times");
        assert!(active.revoke_time.is_none(), "it was never revoked");

        let shown_pending = integration.pending_secret.expect("a pending secret");
        assert_eq!(shown_pending.id, pending.id, "the pending secret is the one generated");
        assert_eq!(shown_pending.state, SecretState::Pending as i32, "the pending secret says so");
        assert_eq!(shown_pending.hint, pending_value[60..], "its hint is the last 4 characters");
        assert!(shown_pending.activate_time.is_none(), "it was never activated");
        assert_ne!(shown_pending.id, active.id, "two secrets, two ids");
    }
}

on_every_backend! {
    async fn it_never_returns_a_secret_value_or_hash(app: TestApp) {
        let (_, active_value) = app.ready("org-leak").await;
        let (pending_value, _) = app.generate("org-leak").await.expect("generated");

        let encoded = app.get("org-leak").await.expect("readable").encode_to_vec();
        let encoded = String::from_utf8_lossy(&encoded);
        for value in [&active_value, &pending_value] {
            assert!(!encoded.contains(&value[4..60]), "a value is in the response");
        }
        assert!(!encoded.contains("argon2"), "a hash is in the response");
    }
}
