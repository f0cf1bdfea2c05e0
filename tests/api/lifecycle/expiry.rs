use std::time::{Duration, Instant};

use integration_service::{
    config::Settings,
    proto::{AuditAction, SecretState},
};
use sea_orm::ConnectionTrait;
use support::{TestApp, expect_code, on_every_backend};
use tonic::Code;

use super::actions;

/// Pending secrets live two seconds.
fn short_ttl(settings: &mut Settings) {
    settings.lifecycle.pending_secret_ttl = Duration::from_secs(2);
}

/// Waits until `organization` has no pending secret; how long that took.
async fn pending_gone(app: &TestApp, organization: &str, within: Duration) -> Duration {
    let started = Instant::now();
    while app
        .get(organization)
        .await
        .expect("read")
        .pending_secret
        .is_some()
    {
        assert!(started.elapsed() < within, "still pending after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

on_every_backend! {
    async fn a_pending_secret_expires_at_its_expire_time_and_says_so(app: TestApp) with short_ttl {
        let (client_id, active_value) = app.ready("org-exp").await;
        let (value, pending) = app.generate("org-exp").await.expect("generated");
        let created = pending.create_time.expect("created");
        let expires = pending.expire_time.expect("a pending secret says when it expires");
        assert_eq!(expires.seconds - created.seconds, 2, "the TTL after its creation");

        let waited = pending_gone(&app, "org-exp", Duration::from_secs(6)).await;
        println!("pending secret discarded {waited:?} after generation (TTL 2 s)");
        assert!(waited >= Duration::from_millis(1500), "not before its time: {waited:?}");

        let history = app.all_secrets("org-exp", 0).await.expect("listed");
        let expired = history.iter().find(|s| s.id == pending.id).expect("listed");
        assert_eq!(expired.state, SecretState::Discarded as i32);
        assert!(expired.expire_time.is_none(), "expire_time is for pending secrets");
        let discarded_at = expired.revoke_time.expect("when it was discarded");
        assert!(
            discarded_at.seconds - expires.seconds <= 1,
            "discarded within about a second of its expiry"
        );
        let message = expect_code(app.activate("org-exp", &value).await, Code::FailedPrecondition);
        assert!(!message.contains(&value), "{message}");
        assert!(app.is_valid(&client_id, &active_value).await, "the active secret is untouched");

        let trail = app.all_audit("org-exp").await.expect("listed");
        assert_eq!(actions(&trail)[0], AuditAction::SecretExpired);
        assert_eq!(trail[0].caller, "system", "the service expired it by itself");
        assert_eq!(trail[0].secret_id, pending.id);
    }
}

on_every_backend! {
    async fn a_secret_past_its_expiry_is_never_activated_even_if_no_sweep_saw_it(app: TestApp) {
        app.create("org-exp-late").await.expect("created");
        let (value, _) = app.generate("org-exp-late").await.expect("generated");
        // As if every replica had been down when it expired: the activation
        // below races the sweeper, and whichever comes first discards it.
        app.tables()
            .execute_unprepared(
                "UPDATE secrets SET expires_at = created_at \
                 WHERE organization_id = 'org-exp-late' AND state = 'pending'",
            )
            .await
            .expect("backdated");
        expect_code(app.activate("org-exp-late", &value).await, Code::FailedPrecondition);
        let integration = app.get("org-exp-late").await.expect("read");
        assert!(integration.active_secret.is_none() && integration.pending_secret.is_none());
        let trail = app.all_audit("org-exp-late").await.expect("listed");
        assert_eq!(
            actions(&trail),
            [
                AuditAction::SecretExpired,
                AuditAction::SecretGenerated,
                AuditAction::IntegrationCreated
            ]
        );
    }
}

on_every_backend! {
    async fn racing_replicas_expire_each_secret_once(app: TestApp) with short_ttl {
        let replicas = [app.replica().await, app.replica().await];
        let organizations: Vec<String> = (0..12).map(|i| format!("org-exp-race-{i}")).collect();
        for organization in &organizations {
            app.create(organization).await.expect("created");
            app.generate(organization).await.expect("generated");
        }
        for organization in &organizations {
            pending_gone(&app, organization, Duration::from_secs(8)).await;
        }
        for organization in &organizations {
            let trail = app.all_audit(organization).await.expect("listed");
            let expired = actions(&trail)
                .into_iter()
                .filter(|a| *a == AuditAction::SecretExpired)
                .count();
            assert_eq!(expired, 1, "{organization}: expired {expired} times");
        }
        drop(replicas);
    }
}
