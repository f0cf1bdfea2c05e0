//! ActivateSecret: the pending secret becomes active and the old one is
//! revoked at once; retries succeed; wrong values fail, and too many of
//! them for one organization are throttled when they cost a verify.

use std::num::NonZeroU32;

use integration_service::{config::Settings, domain::ClientSecret, proto::SecretState};
use sea_orm::ConnectionTrait;
use support::{Backend, TestApp, expect_code, on_every_backend, spawn_app_with};
use tonic::Code;

on_every_backend! {
    async fn activating_the_pending_secret_revokes_the_old_one_at_once(app: TestApp) {
        let (client_id, old) = app.ready("org-rotate").await;
        let (new, new_meta) = app.generate("org-rotate").await.expect("generated");
        assert!(!app.is_valid(&client_id, &new).await, "a pending secret does not validate");

        let integration = app.activate("org-rotate", &new).await.expect("activated");
        let active = integration.active_secret.expect("an active secret");
        assert_eq!(active.id, new_meta.id, "the pending secret is now active");
        assert_eq!(active.state, SecretState::Active as i32, "its state says active");
        assert!(integration.pending_secret.is_none(), "nothing is pending any more");

        assert!(app.is_valid(&client_id, &new).await, "the new secret validates");
        assert!(!app.is_valid(&client_id, &old).await, "the old secret is revoked at once");
        assert_eq!(app.count_in_state("org-rotate", "revoked").await, 1, "the old one is revoked");
        assert_eq!(app.count_in_state("org-rotate", "active").await, 1, "one secret is active");
    }
}

on_every_backend! {
    async fn a_retried_activation_succeeds_and_changes_nothing(app: TestApp) {
        let (client_id, value) = app.ready("org-retry").await;
        let before = app.get("org-retry").await.expect("readable");
        let again = app.activate("org-retry", &value).await.expect("a retry succeeds");
        assert_eq!(again.active_secret, before.active_secret, "the same secret, untouched");
        assert_eq!(again.update_time, before.update_time, "nothing was written");
        assert_eq!(app.count_in_state("org-retry", "revoked").await, 0, "nothing was revoked");
        assert!(app.is_valid(&client_id, &value).await, "the secret still validates");
    }
}

on_every_backend! {
    async fn a_revoked_value_can_never_be_activated_again(app: TestApp) {
        let (client_id, first) = app.ready("org-revoked").await;
        let (second, _) = app.generate("org-revoked").await.expect("generated");
        app.activate("org-revoked", &second).await.expect("activated");

        expect_code(app.activate("org-revoked", &first).await, Code::FailedPrecondition);
        // Not even once a new secret is pending.
        let (third, _) = app.generate("org-revoked").await.expect("generated");
        expect_code(app.activate("org-revoked", &first).await, Code::FailedPrecondition);
        assert!(!app.is_valid(&client_id, &first).await, "the revoked value does not validate");
        assert!(app.is_valid(&client_id, &second).await, "failed attempts change nothing");
        app.activate("org-revoked", &third).await.expect("the pending one still activates");
    }
}

on_every_backend! {
    async fn values_that_match_neither_secret_fail_the_precondition(app: TestApp) {
        let (client_id, active) = app.ready("org-wrong").await;
        let (pending, _) = app.generate("org-wrong").await.expect("generated");
        let other_org = { app.ready("org-other").await.1 };
        let mut typo = pending.clone().into_bytes();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).expect("ASCII");
        let made_up = format!("cas_{}", "A".repeat(60));

        for (what, value) in [
            ("a secret of another organization", other_org.as_str()),
            ("a one-character typo", typo.as_str()),
            ("a made-up value", made_up.as_str()),
            ("a value of the wrong shape", "hunter2"),
        ] {
            let message = expect_code(app.activate("org-wrong", value).await, Code::FailedPrecondition);
            assert!(message.contains("org-wrong"), "{what}: {message}");
            assert!(!message.contains(&value[4.min(value.len())..]), "{what}: message repeats it");
        }
        assert!(app.is_valid(&client_id, &active).await, "nothing changed");
        assert_eq!(app.count_in_state("org-wrong", "pending").await, 1, "still pending");
    }
}

on_every_backend! {
    async fn empty_or_oversized_values_are_invalid_arguments(app: TestApp) {
        app.create("org-args").await.expect("created");
        expect_code(app.activate("org-args", "").await, Code::InvalidArgument);
        let message = expect_code(app.activate("org-args", &"a".repeat(257)).await, Code::InvalidArgument);
        assert!(message.contains("256"), "{message}");
        expect_code(app.activate("", "cas_x").await, Code::InvalidArgument);
    }
}

on_every_backend! {
    async fn an_unknown_organization_is_not_found(app: TestApp) {
        let (_, value) = app.ready("org-known").await;
        expect_code(app.activate("org-unknown", &value).await, Code::NotFound);
    }
}

on_every_backend! {
    async fn concurrent_activations_of_one_value_all_succeed_with_one_activation(app: TestApp) {
        let (client_id, old) = app.ready("org-act-race").await;
        let (new, new_meta) = app.generate("org-act-race").await.expect("generated");
        let activations: Vec<_> = (0..8)
            .map(|_| {
                let mut client = app.raw();
                let new = new.clone();
                tokio::spawn(async move {
                    client
                        .activate_secret(integration_service::proto::ActivateSecretRequest {
                            organization_id: "org-act-race".into(),
                            client_secret: new,
                        })
                        .await
                })
            })
            .collect();
        let mut activate_times = Vec::new();
        for activation in activations {
            let integration = activation
                .await
                .expect("the task completes")
                .expect("every racing activation succeeds")
                .into_inner()
                .integration
                .expect("an integration");
            let active = integration.active_secret.expect("an active secret");
            assert_eq!(active.id, new_meta.id, "every answer shows the new secret active");
            activate_times.push(active.activate_time);
        }
        activate_times.dedup();
        assert_eq!(activate_times.len(), 1, "it was activated once: {activate_times:?}");
        assert_eq!(app.count_in_state("org-act-race", "revoked").await, 1, "one revocation");
        assert_eq!(app.count_in_state("org-act-race", "active").await, 1, "one active secret");
        assert!(app.is_valid(&client_id, &new).await, "the new secret validates");
        assert!(!app.is_valid(&client_id, &old).await, "the old secret does not");
    }
}

on_every_backend! {
    async fn the_database_refuses_a_second_active_or_pending_secret(app: TestApp) {
        app.ready("org-db").await;
        app.generate("org-db").await.expect("generated");
        for state in ["active", "pending"] {
            let sql = format!(
                "INSERT INTO secrets (id, organization_id, state, hash, hint, created_at) \
                 VALUES ('{}', 'org-db', '{state}', 'x', 'abcd', CURRENT_TIMESTAMP)",
                uuid::Uuid::new_v4()
            );
            let inserted = app
                .tables()
                .execute_raw(sea_orm::Statement::from_string(app.store.backend(), sql))
                .await;
            let error = inserted.expect_err("the unique index refuses a second row");
            assert!(
                matches!(error.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))),
                "a second {state} secret: {error}"
            );
        }
    }
}

/// Three wrong activations a minute per organization, instead of the test
/// settings' thousand.
fn three_wrong_activations_a_minute(settings: &mut Settings) {
    settings.throttle.activation_failures_per_minute = NonZeroU32::new(3).expect("3");
}

on_every_backend! {
    async fn wrong_values_ruled_out_by_their_hint_never_spend_the_budget(app: TestApp)
    with three_wrong_activations_a_minute
    {
        app.create("org-retyping").await.expect("created");
        let (first, _) = app.generate("org-retyping").await.expect("generated");
        app.activate("org-retyping", &first).await.expect("activated");
        let (value, _) = app.generate("org-retyping").await.expect("generated");

        // More wrong values than the budget, well formed or not: each is
        // answered, none costs a verify (their hints match neither secret),
        // and none is charged. A verify that fails does spend the budget
        // (a unit test covers it: a value with a matching hint cannot be
        // made here without millions of tries).
        for _ in 0..4 {
            let made_up = ClientSecret::generate().expect("RNG");
            for wrong in [made_up.expose(), "cas_typo", "x"] {
                let message = expect_code(
                    app.activate("org-retyping", wrong).await,
                    Code::FailedPrecondition,
                );
                assert!(message.contains("neither"), "{message}");
                // A typo is fixed by typing again, not by a new secret that
                // would throw the pending one away.
                assert!(message.contains("enter it again"), "{message}");
                assert!(!message.contains("generate a new secret"), "{message}");
            }
        }
        app.activate("org-retyping", &first)
            .await
            .expect("the active value succeeds and changes nothing");
        app.activate("org-retyping", &value)
            .await
            .expect("the right value activates after any number of wrong ones");
        assert_eq!(app.count_in_state("org-retyping", "active").await, 1);
        assert_eq!(app.count_in_state("org-retyping", "pending").await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_activations_never_spend_the_budget() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.throttle.activation_failures_per_minute = NonZeroU32::MIN;
    })
    .await
    .expect("SQLite");
    app.create("org-busy").await.expect("created");
    for _ in 0..3 {
        let (value, _) = app.generate("org-busy").await.expect("generated");
        app.activate("org-busy", &value).await.expect("activated");
        app.activate("org-busy", &value)
            .await
            .expect("a retried activation succeeds too");
    }
}
