use support::{DEFAULT_DOMAIN, TestApp, expect_code, on_every_backend};
use tonic::Code;

on_every_backend! {
    async fn the_active_secret_validates_with_the_organization_and_domain(app: TestApp) {
        let (client_id, value) = app.ready("org-valid").await;
        let response = app.validate(&client_id, &value).await.expect("answered");
        assert!(response.valid, "the active pair validates");
        assert_eq!(response.organization_id, "org-valid", "with its organization");
        assert_eq!(response.domain, DEFAULT_DOMAIN, "and its domain");
    }
}

on_every_backend! {
    async fn every_other_pair_is_invalid_and_says_nothing_more(app: TestApp) {
        let (client_id, active) = app.ready("org-check").await;
        let (discarded, _) = app.generate("org-check").await.expect("generated");
        let (pending, _) = app.generate("org-check").await.expect("generated");
        let (other_client, other_value) = app.ready("org-elsewhere").await;
        let revoked = {
            let (_, old) = app.ready("org-rotated").await;
            let (new, _) = app.generate("org-rotated").await.expect("generated");
            app.activate("org-rotated", &new).await.expect("activated");
            (app.get("org-rotated").await.expect("readable").client_id, old)
        };
        let mut typo = active.clone().into_bytes();
        typo[30] = if typo[30] == b'Z' { b'Y' } else { b'Z' };
        let typo = String::from_utf8(typo).expect("ASCII");
        let unknown_client = "A".repeat(24);

        let cases = [
            ("a pending secret", client_id.as_str(), pending.as_str()),
            ("a discarded secret", &client_id, &discarded),
            ("a revoked secret", &revoked.0, &revoked.1),
            ("another client's secret", &client_id, &other_value),
            ("a secret with another client's ID", &other_client, &active),
            ("a one-character typo", &client_id, &typo),
            ("an unknown client ID", &unknown_client, &active),
            ("a malformed client ID", "not-a-client-id", &active),
            ("a made-up secret", &client_id, "cas_0000000000000000000000000000000000000000000000000000000000"),
            ("a value of the wrong shape", &client_id, "password"),
        ];
        for (what, id, value) in cases {
            let response = app.validate(id, value).await.expect("answered");
            assert!(!response.valid, "{what} validated");
            assert_eq!(response, Default::default(), "{what}: no hint in the answer");
        }
        assert!(app.is_valid(&client_id, &active).await, "the real pair still validates");
    }
}

on_every_backend! {
    async fn a_pending_secret_does_not_validate_until_activated(app: TestApp) {
        let integration = app.create("org-pending").await.expect("created");
        let (value, _) = app.generate("org-pending").await.expect("generated");
        assert!(!app.is_valid(&integration.client_id, &value).await, "pending");
        app.activate("org-pending", &value).await.expect("activated");
        assert!(app.is_valid(&integration.client_id, &value).await, "active");
    }
}

on_every_backend! {
    async fn empty_or_oversized_fields_are_invalid_arguments(app: TestApp) {
        let (client_id, value) = app.ready("org-fields").await;
        let long = "a".repeat(257);
        let cases = [
            ("", value.as_str(), "client_id is required"),
            (client_id.as_str(), "", "client_secret is required"),
            (&long, &value, "client_id must be at most 256 bytes"),
            (&client_id, &long, "client_secret must be at most 256 bytes"),
        ];
        for (id, secret, expected) in cases {
            let message = expect_code(app.validate(id, secret).await, Code::InvalidArgument);
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains(&value[4..]), "the message repeats the secret");
        }
        let exactly_256 = "a".repeat(256);
        let response = app.validate(&client_id, &exactly_256).await.expect("256 bytes is allowed");
        assert!(!response.valid, "an allowed length, and still a wrong secret");
    }
}
