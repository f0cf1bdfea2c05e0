use integration_service::proto::SecretState;
use support::{TestApp, expect_code, on_every_backend};
use tonic::Code;

on_every_backend! {
    async fn every_secret_is_listed_newest_first_across_pages(app: TestApp) {
        app.create("org-hist").await.expect("created");
        let mut generated = Vec::new();
        for round in 0..5 {
            let (value, secret) = app.generate("org-hist").await.expect("generated");
            if round % 2 == 0 {
                app.activate("org-hist", &value).await.expect("activated");
            }
            generated.push(secret.id);
        }
        generated.reverse();

        let first = app.list_secrets("org-hist", 2, "").await.expect("listed");
        assert_eq!(first.secrets.len(), 2, "a page holds page_size secrets");
        assert!(!first.next_page_token.is_empty(), "more pages follow");
        let all = app.all_secrets("org-hist", 2).await.expect("listed");
        let ids: Vec<_> = all.iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids, generated, "every secret once, newest first");
        let default_page = app.list_secrets("org-hist", 0, "").await.expect("listed");
        assert_eq!(default_page.secrets.len(), 5, "the default page holds them all");
        assert!(default_page.next_page_token.is_empty(), "the last page has no token");
        let huge = app.list_secrets("org-hist", i32::MAX, "").await.expect("listed");
        assert_eq!(huge.secrets.len(), 5, "a page size past the cap is read as the cap");

        let states: Vec<_> = all
            .iter()
            .map(|s| SecretState::try_from(s.state).expect("a state"))
            .collect();
        assert_eq!(
            states,
            [
                SecretState::Active,
                SecretState::Discarded,
                SecretState::Revoked,
                SecretState::Discarded,
                SecretState::Revoked,
            ],
            "rounds 0, 2, 4 were activated, 1 and 3 replaced while pending"
        );
        for secret in &all {
            assert_eq!(secret.hint.len(), 4, "a hint, never more of the value");
            let retired = matches!(
                SecretState::try_from(secret.state),
                Ok(SecretState::Revoked | SecretState::Discarded)
            );
            assert_eq!(secret.revoke_time.is_some(), retired, "revoke_time when retired");
            assert!(secret.expire_time.is_none(), "expire_time only while pending");
        }
    }
}

on_every_backend! {
    async fn page_tokens_are_bound_to_their_list_and_organization(app: TestApp) {
        for org in ["org-tok-a", "org-tok-b"] {
            app.create(org).await.expect("created");
            for _ in 0..3 {
                app.generate(org).await.expect("generated");
            }
        }
        let page = app.list_secrets("org-tok-a", 1, "").await.expect("listed");
        let token = page.next_page_token;
        assert!(!token.is_empty());
        app.list_secrets("org-tok-a", 1, &token).await.expect("its own token is accepted");

        let foreign = expect_code(app.list_secrets("org-tok-b", 1, &token).await, Code::InvalidArgument);
        assert!(foreign.contains("page_token"), "{foreign}");
        expect_code(app.list_audit("org-tok-a", 1, &token).await, Code::InvalidArgument);
        let audit_token = app.list_audit("org-tok-a", 1, "").await.expect("listed").next_page_token;
        expect_code(app.list_secrets("org-tok-a", 1, &audit_token).await, Code::InvalidArgument);
        for bad in ["garbage", "AAAA", &token[..token.len() - 1]] {
            expect_code(app.list_secrets("org-tok-a", 1, bad).await, Code::InvalidArgument);
        }
        let negative = expect_code(app.list_secrets("org-tok-a", -1, "").await, Code::InvalidArgument);
        assert!(negative.contains("page_size"), "{negative}");
    }
}

on_every_backend! {
    async fn an_unknown_or_malformed_organization_has_no_history(app: TestApp) {
        expect_code(app.list_secrets("org-none", 0, "").await, Code::NotFound);
        expect_code(app.list_secrets("", 0, "").await, Code::InvalidArgument);
        expect_code(app.list_secrets("bad org", 0, "").await, Code::InvalidArgument);
        app.create("org-empty").await.expect("created");
        let empty = app.list_secrets("org-empty", 0, "").await.expect("listed");
        assert!(empty.secrets.is_empty() && empty.next_page_token.is_empty());
    }
}
