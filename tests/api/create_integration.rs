use std::collections::HashSet;

use support::{DEFAULT_DOMAIN, TestApp, expect_code, on_every_backend};
use tonic::Code;

on_every_backend! {
    async fn a_new_integration_has_a_client_id_the_default_domain_and_no_secret(app: TestApp) {
        let integration = app.create("org-new").await.expect("created");
        assert_eq!(integration.organization_id, "org-new", "the organization it was created for");
        assert_eq!(integration.domain, DEFAULT_DOMAIN, "default domain");
        assert!(!integration.custom_domain, "no custom domain yet");
        assert!(integration.active_secret.is_none(), "no active secret");
        assert!(integration.pending_secret.is_none(), "no pending secret");
        assert!(
            integration.create_time.is_some() && integration.update_time.is_some(),
            "it has its times"
        );
        let id = &integration.client_id;
        assert!(
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "client ID {id:?} is URL-safe and at most 64 characters"
        );
        assert!(!id.contains("org-new"), "client ID {id:?} is not derived from the organization");

        let read = app.get("org-new").await.expect("readable");
        assert_eq!(read, integration, "GetIntegration returns what creation returned");
    }
}

on_every_backend! {
    async fn a_second_creation_for_the_same_organization_is_refused(app: TestApp) {
        let first = app.create("org-twice").await.expect("created");
        let message = expect_code(app.create("org-twice").await, Code::AlreadyExists);
        assert!(message.contains("org-twice"), "message names the organization: {message}");
        let read = app.get("org-twice").await.expect("readable");
        assert_eq!(read.client_id, first.client_id, "the first client ID is kept");
    }
}

on_every_backend! {
    async fn client_ids_are_unique_across_organizations(app: TestApp) {
        let mut seen = HashSet::new();
        for n in 0..20 {
            let integration = app.create(&format!("org-{n}")).await.expect("created");
            assert!(seen.insert(integration.client_id.clone()), "{} reused", integration.client_id);
        }
    }
}

on_every_backend! {
    async fn concurrent_creations_for_one_organization_create_exactly_one(app: TestApp) {
        let attempts: Vec<_> = (0..8)
            .map(|_| {
                let app_client = app.raw();
                tokio::spawn(async move {
                    let mut client = app_client;
                    client
                        .create_integration(integration_service::proto::CreateIntegrationRequest {
                            organization_id: "org-race".into(),
                        })
                        .await
                })
            })
            .collect();
        let mut created = 0;
        for attempt in attempts {
            match attempt.await.expect("the task completes") {
                Ok(_) => created += 1,
                Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
            }
        }
        assert_eq!(created, 1, "exactly one creation succeeds");
    }
}

on_every_backend! {
    async fn malformed_organization_ids_are_invalid_arguments(app: TestApp) {
        let too_long = "x".repeat(129);
        let cases = [
            ("", "required"),
            ("has space", "whitespace"),
            ("tab\t", "whitespace"),
            ("naïve", "printable ASCII"),
            (too_long.as_str(), "at most 128"),
        ];
        for (id, expected) in cases {
            let message = expect_code(app.create(id).await, Code::InvalidArgument);
            assert!(message.contains(expected), "message for {id:?}: {message}");
        }
        let longest = "y".repeat(128);
        app.create(&longest).await.expect("128 characters is allowed");
    }
}
