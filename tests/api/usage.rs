//! When secrets were last used: `Secret.last_use_time`, written off the
//! request path within a second of a secret's first valid check and then at
//! most once per interval.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use integration_service::{config::Settings, proto, store::schema::secret};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use support::{TestApp, on_every_backend};
use uuid::Uuid;

/// How soon a first use must show: the contract's second, and room for a
/// busy machine.
const RECORDED_WITHIN: Duration = Duration::from_millis(1_500);

/// Long enough for several of the writer's batches: what has not been
/// written by then was not going to be.
const NOTHING_WRITTEN_WITHIN: Duration = Duration::from_millis(1_200);

/// A protobuf time, comparable.
type Time = (i64, i32);

fn time(timestamp: Option<&prost_types::Timestamp>) -> Option<Time> {
    timestamp.map(|t| (t.seconds, t.nanos))
}

/// Polls `probe` until it answers, for at most [`RECORDED_WITHIN`].
async fn within<T, F: Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            started.elapsed() < RECORDED_WITHIN,
            "{what}: not recorded within {RECORDED_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The last use of `organization`'s active secret, as GetIntegration shows
/// it.
async fn last_use(app: &TestApp, organization: &str) -> Option<Time> {
    let integration = app.get(organization).await.expect("readable");
    let active = integration.active_secret.expect("an active secret");
    time(active.last_use_time.as_ref())
}

/// Every secret of `organization`, as ListSecrets shows it.
async fn secrets(app: &TestApp, organization: &str) -> Vec<proto::Secret> {
    app.all_secrets(organization, 0).await.expect("listed")
}

on_every_backend! {
    async fn a_secret_has_no_last_use_until_it_validates_and_then_within_a_second(app: TestApp) {
        let org = "org-first-use";
        let (client_id, value) = app.ready(org).await;
        assert_eq!(last_use(&app, org).await, None, "activated, never validated: unset");

        assert!(app.is_valid(&client_id, &value).await, "the active secret validates");
        let first = within("the first use", || async { last_use(&app, org).await }).await;

        // Within the interval (a minute), further uses, from the cache or
        // confirmed by a read, are not written again.
        for _ in 0..5 {
            assert!(app.is_valid(&client_id, &value).await, "still valid");
        }
        tokio::time::sleep(NOTHING_WRITTEN_WITHIN).await;
        assert!(app.is_valid(&client_id, &value).await, "still valid");
        assert_eq!(last_use(&app, org).await, Some(first), "not moved within the interval");
    }
}

/// A 300 ms interval between recorded uses, and a cache that trusts what it
/// holds for a minute, so that every check after the first is a cache hit.
fn a_short_interval_and_a_trusting_cache(settings: &mut Settings) {
    settings.usage.interval = Duration::from_millis(300);
    settings.cache.revalidate = Duration::from_secs(60);
}

on_every_backend! {
    async fn a_use_after_the_interval_moves_the_last_use_even_when_the_cache_answers(app: TestApp)
    with a_short_interval_and_a_trusting_cache
    {
        let org = "org-later-use";
        let (client_id, value) = app.ready(org).await;
        assert!(app.is_valid(&client_id, &value).await, "the active secret validates");
        let first = within("the first use", || async { last_use(&app, org).await }).await;

        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(app.is_valid(&client_id, &value).await, "answered from the cache");
        let later = within("a use after the interval", || async {
            last_use(&app, org).await.filter(|&later| later > first)
        })
        .await;
        assert!(later > first, "moved forward: {first:?} to {later:?}");
    }
}

/// The last use of the secret `id`, read from its row.
async fn stored_last_use(app: &TestApp, id: Uuid) -> Option<chrono::DateTime<chrono::Utc>> {
    secret::Entity::find_by_id(id)
        .one(app.tables())
        .await
        .expect("readable")
        .expect("the secret")
        .last_used_at
}

/// Writes `at` as the last use of the secret `id`, as another replica
/// would have.
async fn set_last_use(app: &TestApp, id: Uuid, at: chrono::DateTime<chrono::Utc>) {
    secret::Entity::update_many()
        .col_expr(secret::Column::LastUsedAt, Expr::value(at))
        .filter(secret::Column::Id.eq(id))
        .exec(app.tables())
        .await
        .expect("the secrets table is writable");
}

on_every_backend! {
    async fn a_recorded_time_only_ever_moves_forward(app: TestApp) {
        let org = "org-forward";
        app.ready(org).await;
        let listed = secrets(&app, org).await;
        let id = Uuid::parse_str(&listed[0].id).expect("a secret id");
        let later = chrono::Utc::now() + chrono::Duration::hours(1);
        let earlier = chrono::Utc::now() - chrono::Duration::hours(1);
        // As another replica with a clock ahead would have left it.
        set_last_use(&app, id, later).await;
        assert_eq!(app.store.record_uses(&[id]).await.expect("written"), 0, "not moved back");
        let kept = stored_last_use(&app, id).await.expect("a last use");
        assert!((kept - later).num_milliseconds().abs() < 1, "kept: {kept} against {later}");

        set_last_use(&app, id, earlier).await;
        assert_eq!(app.store.record_uses(&[id]).await.expect("written"), 1, "moved forward");
        let moved = stored_last_use(&app, id).await.expect("a last use");
        assert!(moved > earlier + chrono::Duration::minutes(59), "moved to now: {moved}");
        assert_eq!(
            app.store.record_retired_uses(&[id]).await.expect("written"),
            0,
            "an active secret has no retired use"
        );
    }
}

on_every_backend! {
    async fn uses_still_queued_when_the_server_stops_are_written_first(app: TestApp) {
        let mut app = app;
        let mut clients = Vec::new();
        for org in ["org-stop-a", "org-stop-b", "org-stop-c"] {
            clients.push((org, app.ready(org).await));
        }
        // The first write goes at once; the uses right after it wait for
        // the next batch, which the stop must not lose.
        for (_, (client_id, value)) in &clients {
            assert!(app.is_valid(client_id, value).await, "valid");
        }
        app.stop().await;
        let tables = app.database.connect().await;
        for (org, _) in &clients {
            let rows = secret::Entity::find()
                .filter(secret::Column::OrganizationId.eq(*org))
                .all(&tables)
                .await
                .expect("readable");
            assert_eq!(rows.len(), 1, "{org}: one secret");
            assert!(rows[0].last_used_at.is_some(), "{org}: its use was written before the stop");
        }
    }
}
