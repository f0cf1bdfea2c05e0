use integration_service::{
    auth::{Token, Tokens},
    proto::{self, AuditAction},
};
use support::{Backend, TestApp, expect_code, on_every_backend, spawn_app_with};
use tonic::{Code, Request};

use super::actions;

/// A GenerateSecret request sent on behalf of `actor`.
fn generate_for(organization_id: &str, actor: &[u8]) -> Request<proto::GenerateSecretRequest> {
    let mut request = Request::new(proto::GenerateSecretRequest {
        organization_id: organization_id.to_owned(),
    });
    request.metadata_mut().insert(
        "x-actor",
        tonic::metadata::MetadataValue::try_from(actor).expect("a header value"),
    );
    request
}

on_every_backend! {
    async fn every_change_is_in_the_trail_newest_first_with_who_made_it(app: TestApp) {
        app.create("org-aud").await.expect("created");
        let generated = app
            .raw()
            .generate_secret(generate_for("org-aud", "jane@example.com".as_bytes()))
            .await
            .expect("generated")
            .into_inner();
        let first = generated.secret.expect("a secret");
        app.activate("org-aud", &generated.client_secret).await.expect("activated");
        let (second_value, second) = app.generate("org-aud").await.expect("generated");
        let (_, third) = app.generate("org-aud").await.expect("generated, discarding the second");
        app.revoke("org-aud", &third.id).await.expect("discarded");
        let _ = second_value;

        let trail = app.all_audit("org-aud").await.expect("listed");
        assert_eq!(
            actions(&trail),
            [
                AuditAction::SecretDiscarded,
                AuditAction::SecretGenerated,
                AuditAction::SecretDiscarded,
                AuditAction::SecretGenerated,
                AuditAction::SecretActivated,
                AuditAction::SecretGenerated,
                AuditAction::IntegrationCreated,
            ]
        );
        let secret_ids: Vec<_> = trail.iter().map(|e| e.secret_id.as_str()).collect();
        assert_eq!(
            secret_ids,
            [
                third.id.as_str(),
                third.id.as_str(),
                second.id.as_str(),
                second.id.as_str(),
                first.id.as_str(),
                first.id.as_str(),
                "",
            ]
        );
        for event in &trail {
            assert_eq!(event.caller, "unauthenticated", "no tokens configured");
            assert_eq!(event.organization_id, "org-aud");
            assert!(event.create_time.is_some() && !event.id.is_empty());
        }
        assert_eq!(trail[5].actor, "jane@example.com", "the x-actor of the generation");
        assert_eq!(trail[4].actor, "", "none sent");

        let page = app.list_audit("org-aud", 3, "").await.expect("listed");
        assert_eq!(page.events.len(), 3);
        let rest = app.list_audit("org-aud", 10, &page.next_page_token).await.expect("listed");
        assert_eq!(rest.events.len(), 4, "the rest, with no overlap");
        assert!(rest.next_page_token.is_empty());
        assert_eq!(rest.events[0].id, trail[3].id);
    }
}

on_every_backend! {
    async fn a_bad_actor_is_refused_and_changes_nothing(app: TestApp) {
        app.create("org-actor").await.expect("created");
        let long = "a".repeat(257);
        for bad in [long.as_bytes(), b"\xff\xfe".as_slice(), b"tab\there".as_slice()] {
            let refused = app.raw().generate_secret(generate_for("org-actor", bad)).await;
            let message = expect_code(refused, Code::InvalidArgument);
            assert!(message.contains("x-actor"), "{message}");
        }
        let integration = app.get("org-actor").await.expect("read");
        assert!(integration.pending_secret.is_none(), "nothing was generated");
        let trail = app.all_audit("org-actor").await.expect("listed");
        assert_eq!(actions(&trail), [AuditAction::IntegrationCreated]);
        let longest = "é".repeat(256);
        app.raw()
            .generate_secret(generate_for("org-actor", longest.as_bytes()))
            .await
            .expect("256 characters are accepted");
    }
}

on_every_backend! {
    async fn an_organization_that_never_had_an_integration_has_no_trail(app: TestApp) {
        let message = expect_code(app.list_audit("org-nobody", 0, "").await, Code::NotFound);
        assert!(message.contains("org-nobody"), "{message}");
        expect_code(app.list_audit("", 0, "").await, Code::InvalidArgument);
        expect_code(app.list_audit("org-nobody", -5, "").await, Code::InvalidArgument);
    }
}

const ADMIN: &str = "admin-token-0123456789abcdefghijklmnopqrstuv";
const GATEWAY: &str = "gateway-token-0123456789abcdefghijklmnopqrst";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_is_its_role_and_a_fingerprint_of_its_token_never_the_token() {
    let parse = |t: &str| Token::parse(t).expect("a valid token");
    let tokens = Tokens::new(&[parse(ADMIN)], &[parse(GATEWAY)]).expect("distinct");
    let app = spawn_app_with(Backend::Sqlite, |s| s.access.tokens = tokens)
        .await
        .expect("SQLite is always available");
    let admin = app.client_with_token(ADMIN);
    admin.create("org-who").await.expect("created");
    let trail = admin.all_audit("org-who").await.expect("listed");
    let caller = &trail[0].caller;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(ADMIN.as_bytes());
    let expected: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(caller, &format!("admin:{expected}"));
    assert!(!caller.contains(&ADMIN[..8]), "no part of the token itself");
    let gateway = app.client_with_token(GATEWAY);
    expect_code(
        gateway.list_audit("org-who", 0, "").await,
        Code::PermissionDenied,
    );
    expect_code(gateway.delete("org-who").await, Code::PermissionDenied);
    expect_code(gateway.revoke("org-who", "x").await, Code::PermissionDenied);
}
