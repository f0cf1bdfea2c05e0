use argon2::{Params, PasswordHash};
use integration_service::{domain::ClientSecret, proto::SecretState};
use support::{TestApp, expect_code, on_every_backend};
use tonic::Code;

on_every_backend! {
    async fn a_generated_secret_is_well_formed_and_pending(app: TestApp) {
        app.create("org-gen").await.expect("created");
        let (value, secret) = app.generate("org-gen").await.expect("generated");
        assert!(ClientSecret::parse(&value).is_ok(), "the value passes its own checksum");
        assert_eq!(value.len(), 64, "64 characters");
        assert!(value.starts_with("cas_"), "the prefix");
        assert_eq!(secret.state, SecretState::Pending as i32, "a new secret is pending");
        assert_eq!(secret.hint, value[60..], "the hint is the last 4 characters");
        assert!(!secret.id.is_empty(), "the secret has an id");

        let integration = app.get("org-gen").await.expect("readable");
        assert_eq!(integration.pending_secret, Some(secret), "GetIntegration shows what was returned");
        assert!(integration.active_secret.is_none(), "nothing is active before activation");
    }
}

on_every_backend! {
    async fn the_value_is_stored_only_as_an_argon2id_hash_at_the_required_cost(app: TestApp) {
        app.create("org-hash").await.expect("created");
        let (value, _) = app.generate("org-hash").await.expect("generated");

        let rows = app.secret_rows("org-hash").await;
        assert_eq!(rows.len(), 1, "one secret row");
        let row = &rows[0];
        let parsed = PasswordHash::new(&row.hash).expect("the stored hash is a PHC string");
        assert_eq!(parsed.algorithm.as_str(), "argon2id", "hashed with argon2id");
        let params = Params::try_from(&parsed).expect("argon2 parameters");
        assert!(params.m_cost() >= 19_456, "memory cost {} KiB", params.m_cost());
        assert!(params.t_cost() >= 2, "time cost {}", params.t_cost());
        assert!(params.p_cost() >= 1, "parallelism {}", params.p_cost());
        assert_eq!(row.hint, value[60..], "the stored hint is the last 4 characters");

        let dump = app.dump_tables().await;
        assert!(dump.contains("argon2id"), "the dump covers the hash column");
        assert!(!dump.contains(&value), "the value is in the database in clear");
        assert!(!dump.contains(&value[4..60]), "the random part is in the database in clear");
    }
}

on_every_backend! {
    async fn an_unknown_or_malformed_organization_gets_no_secret(app: TestApp) {
        expect_code(app.generate("org-missing").await, Code::NotFound);
        expect_code(app.generate("").await, Code::InvalidArgument);
        expect_code(app.generate("bad org").await, Code::InvalidArgument);
    }
}

on_every_backend! {
    async fn a_second_generation_discards_the_first_pending_secret(app: TestApp) {
        let (client_id, active_value) = app.ready("org-regen").await;
        let (first, _) = app.generate("org-regen").await.expect("first");
        let (second, second_meta) = app.generate("org-regen").await.expect("second");

        let integration = app.get("org-regen").await.expect("readable");
        let pending = integration.pending_secret.map(|s| s.id);
        assert_eq!(pending, Some(second_meta.id), "the second is pending");
        assert_eq!(app.count_in_state("org-regen", "discarded").await, 1, "the first is discarded");
        assert_eq!(app.count_in_state("org-regen", "pending").await, 1, "one is pending");
        assert!(app.is_valid(&client_id, &active_value).await, "the active one stays active");

        let message = expect_code(app.activate("org-regen", &first).await, Code::FailedPrecondition);
        assert!(!message.contains(&first[4..]), "the message repeats the value: {message}");
        assert!(app.is_valid(&client_id, &active_value).await, "a failed activation changes nothing");
        app.activate("org-regen", &second).await.expect("the newest pending one activates");
        assert!(app.is_valid(&client_id, &second).await, "the activated one validates");
    }
}

on_every_backend! {
    async fn concurrent_generations_leave_exactly_one_pending_secret(app: TestApp) {
        let (client_id, active_value) = app.ready("org-gen-race").await;
        let generations: Vec<_> = (0..6)
            .map(|_| {
                let mut client = app.raw();
                tokio::spawn(async move {
                    client
                        .generate_secret(integration_service::proto::GenerateSecretRequest {
                            organization_id: "org-gen-race".into(),
                        })
                        .await
                })
            })
            .collect();
        let mut values = Vec::new();
        for generation in generations {
            let response = generation.await.expect("the task completes").expect("generated");
            values.push(response.into_inner().client_secret);
        }
        assert_eq!(app.count_in_state("org-gen-race", "pending").await, 1, "one pending");
        assert_eq!(app.count_in_state("org-gen-race", "discarded").await, 5, "five discarded");
        assert_eq!(app.count_in_state("org-gen-race", "active").await, 1, "one active");
        assert!(app.is_valid(&client_id, &active_value).await, "the active one stays active");

        // Exactly one of the returned values is the pending one.
        let mut activated = 0;
        for value in &values {
            if app.activate("org-gen-race", value).await.is_ok() {
                activated += 1;
                assert!(app.is_valid(&client_id, value).await, "the one that activated validates");
            }
        }
        assert_eq!(activated, 1, "only the surviving pending value activates");
    }
}
