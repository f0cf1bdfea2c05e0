//! When secrets were last used: `Secret.last_use_time`, written off the
//! request path within a second of a secret's first valid check and then at
//! most once per interval; and `Secret.last_retired_use_time`, when a
//! revoked or discarded value was presented anyway, which answers exactly
//! as a wrong value does.

use std::{
    future::Future,
    path::Path,
    time::{Duration, Instant},
};

use integration_service::{
    config::Settings,
    domain::{ClientId, ClientSecret},
    proto,
    store::schema::secret,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use support::{
    ServerCommand, ServerProcess, TestApp, TestDatabase, on_every_backend, secret_id_key,
};
use uuid::Uuid;

use crate::BINARY;

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

/// The secret of `organization` whose hint `value` ends with.
fn shown<'a>(secrets: &'a [proto::Secret], value: &str) -> &'a proto::Secret {
    let hint = &value[value.len() - ClientSecret::HINT_LEN..];
    secrets
        .iter()
        .find(|secret| secret.hint == hint)
        .expect("the secret is listed")
}

/// Validates `value` for `client_id` and requires the answer of a wrong
/// secret: `valid: false` and nothing else.
async fn refused(app: &TestApp, what: &str, client_id: &str, value: &str) {
    let answer = app.validate(client_id, value).await.expect("answered");
    assert_eq!(
        answer,
        Default::default(),
        "{what}: answered as a wrong secret is"
    );
}

/// A well-formed value nobody was given, whose hint is none of `others`'.
fn wrong_value_with_a_hint_unlike(others: &[&str]) -> String {
    loop {
        let value = ClientSecret::generate().expect("RNG");
        if others.iter().all(|other| !other.ends_with(value.hint())) {
            return value.expose().to_owned();
        }
    }
}

/// Stores `hint` as the hint of the secret `id`, as if its value had ended
/// that way.
async fn set_hint(app: &TestApp, id: &str, hint: &str) {
    let id = Uuid::parse_str(id).expect("a secret id");
    let updated = secret::Entity::update_many()
        .col_expr(secret::Column::Hint, Expr::value(hint))
        .filter(secret::Column::Id.eq(id))
        .exec(app.tables())
        .await
        .expect("the secrets table is writable");
    assert_eq!(updated.rows_affected, 1, "the secret's row");
}

on_every_backend! {
    async fn revoked_and_discarded_values_answer_as_a_wrong_one_does_and_are_recorded(
        app: TestApp,
    ) {
        let org = "org-retired-use";
        let (client_id, revoked) = app.ready(org).await;
        let (discarded, _) = app.generate(org).await.expect("generated");
        let (active, _) = app.generate(org).await.expect("generated");
        app.activate(org, &active).await.expect("activated");
        let wrong = wrong_value_with_a_hint_unlike(&[&revoked, &discarded, &active]);

        for (what, value) in [
            ("a wrong value", &wrong),
            ("the revoked value", &revoked),
            ("the discarded value", &discarded),
        ] {
            refused(&app, what, &client_id, value).await;
        }
        let listed = within("both retired uses", || async {
            let listed = secrets(&app, org).await;
            let recorded = [&revoked, &discarded]
                .iter()
                .all(|value| shown(&listed, value).last_retired_use_time.is_some());
            recorded.then_some(listed)
        })
        .await;
        let active_shown = shown(&listed, &active);
        assert_eq!(active_shown.last_retired_use_time, None, "the active secret is not retired");
        for value in [&revoked, &discarded, &active] {
            assert_eq!(shown(&listed, value).last_use_time, None, "nothing validated");
        }

        // Presented again within the interval: still refused, not written
        // again.
        for value in [&revoked, &discarded] {
            refused(&app, "a retired value again", &client_id, value).await;
        }
        tokio::time::sleep(NOTHING_WRITTEN_WITHIN).await;
        let again = secrets(&app, org).await;
        for value in [&revoked, &discarded] {
            assert_eq!(
                time(shown(&again, value).last_retired_use_time.as_ref()),
                time(shown(&listed, value).last_retired_use_time.as_ref()),
                "not moved within the interval"
            );
        }
        assert!(app.is_valid(&client_id, &active).await, "the active secret still validates");
    }
}

on_every_backend! {
    async fn a_wrong_value_records_nothing_even_with_a_retired_secrets_hint(app: TestApp) {
        let org = "org-same-hint";
        let (client_id, old) = app.ready(org).await;
        let (active, _) = app.generate(org).await.expect("generated");
        app.activate(org, &active).await.expect("activated");
        let listed = secrets(&app, org).await;
        let old_id = shown(&listed, &old).id.clone();

        // A value nobody was given, ending as the revoked secret's hint
        // says: making one with a valid checksum would take millions of
        // tries, so the stored hint moves to it instead.
        let wrong = wrong_value_with_a_hint_unlike(&[&old, &active]);
        set_hint(&app, &old_id, &wrong[wrong.len() - ClientSecret::HINT_LEN..]).await;
        let unlike_any = wrong_value_with_a_hint_unlike(&[&old, &active, &wrong]);
        refused(&app, "a wrong value with the revoked secret's hint", &client_id, &wrong).await;
        refused(&app, "a wrong value with no secret's hint", &client_id, &unlike_any).await;
        tokio::time::sleep(NOTHING_WRITTEN_WITHIN).await;
        for secret in secrets(&app, org).await {
            assert_eq!(secret.last_retired_use_time, None, "{}: no retired use", secret.hint);
            assert_eq!(secret.last_use_time, None, "{}: no use", secret.hint);
        }

        // The revoked secret's own value, with its own hint back, is seen.
        set_hint(&app, &old_id, &old[old.len() - ClientSecret::HINT_LEN..]).await;
        refused(&app, "the revoked value", &client_id, &old).await;
        within("the revoked value's use", || async {
            shown(&secrets(&app, org).await, &old).last_retired_use_time.map(|_| ())
        })
        .await;
    }
}

/// The CPU time so far of the server's gateway argon2 threads
/// (`argon2-<n>`), from `/proc`: what tells one verify from two.
fn argon2_cpu(pid: u32) -> Duration {
    let mut cpu = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads") {
        let task = task.expect("a thread").path();
        let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
            continue; // it ended
        };
        let gateway = comm
            .trim()
            .strip_prefix("argon2-")
            .is_some_and(|n| n.parse::<u32>().is_ok());
        if gateway {
            cpu += thread_cpu(&task).expect("the kernel keeps scheduler statistics");
        }
    }
    cpu
}

/// Nanoseconds a thread ran, from `schedstat`, precise enough to show one
/// verify.
fn thread_cpu(task: &Path) -> Option<Duration> {
    let schedstat = std::fs::read_to_string(task.join("schedstat")).ok()?;
    let on_cpu = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(on_cpu))
}

/// How many checks each measure takes.
const MEASURED: u32 = 6;

/// The argon2 CPU of one check of `client_id` with a value from `value`,
/// the mean of [`MEASURED`] checks one after the other, each answered
/// `valid: false`.
async fn argon2_cpu_per_check(
    server: &ServerProcess,
    client_id: &str,
    value: impl Fn() -> String,
) -> Duration {
    let client = server.client().await;
    let before = argon2_cpu(server.pid());
    for _ in 0..MEASURED {
        let answer = client
            .validate(client_id, &value())
            .await
            .expect("answered");
        assert!(!answer.valid, "refused");
    }
    argon2_cpu(server.pid()).saturating_sub(before) / MEASURED
}

on_every_backend! {
    async fn a_retired_value_costs_one_verify_and_is_logged_once_without_the_value(
        database: TestDatabase,
    ) {
        let org = "org-retired-cost";
        // Normal priority, so that a busy machine delays the verifies
        // rather than starving them; budgets no measure comes near.
        let server = ServerCommand::new(BINARY, database.url())
            .args(&[
                "--argon2-priority",
                "normal",
                "--throttle-client-burst",
                "1000",
                "--throttle-source-burst",
                "1000",
            ])
            .start()
            .await;
        let admin = server.client().await;
        let (client_id, revoked) = admin.ready(org).await;
        let (active, _) = admin.generate(org).await.expect("generated");
        admin.activate(org, &active).await.expect("activated");
        let wrong = || wrong_value_with_a_hint_unlike(&[&revoked, &active]);
        let unknown = ClientId::generate().expect("RNG");

        // Every argon2 thread has its working memory before measuring.
        argon2_cpu_per_check(&server, &client_id, wrong).await;
        let wrong_cpu = argon2_cpu_per_check(&server, &client_id, wrong).await;
        let retired_cpu = argon2_cpu_per_check(&server, &client_id, || revoked.clone()).await;
        let unknown_cpu = argon2_cpu_per_check(&server, unknown.as_str(), wrong).await;
        let ratio = retired_cpu.as_secs_f64() / wrong_cpu.as_secs_f64();
        let decoy_ratio = unknown_cpu.as_secs_f64() / wrong_cpu.as_secs_f64();
        assert!(
            (0.6..1.5).contains(&ratio),
            "a retired value cost {retired_cpu:?} of argon2 a check, a wrong one {wrong_cpu:?}: \
             not one verify each"
        );
        assert!(
            (0.6..1.5).contains(&decoy_ratio),
            "an unknown client cost {unknown_cpu:?} of argon2 a check, a wrong secret \
             {wrong_cpu:?}"
        );
        assert!(admin.is_valid(&client_id, &active).await, "the active secret still validates");

        let revoked_id = {
            let listed = admin.all_secrets(org, 0).await.expect("listed");
            let hint = &revoked[revoked.len() - ClientSecret::HINT_LEN..];
            let shown = listed.iter().find(|s| s.hint == hint).expect("listed");
            assert!(shown.last_retired_use_time.is_some(), "its use was recorded");
            shown.id.clone()
        };
        let (status, log) = server.terminate().await;
        assert!(status.success(), "a clean exit on SIGTERM: {status}");
        let warnings: Vec<serde_json::Value> = log
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|event: &serde_json::Value| {
                event["message"]
                    .as_str()
                    .is_some_and(|message| message.starts_with("a retired secret was presented"))
            })
            .collect();
        assert_eq!(warnings.len(), 1, "{MEASURED} presentations, one warning: {warnings:?}");
        let warning = &warnings[0];
        assert_eq!(warning["level"], "WARN", "{warning}");
        assert_eq!(warning["client_id"], client_id.as_str(), "it names the client: {warning}");
        assert_eq!(
            secret_id_key(warning["secret_id"].as_str().expect("a secret id")),
            secret_id_key(&revoked_id),
            "it names the secret: {warning}"
        );
        let log = log.join("\n");
        for window in revoked.as_bytes()[4..60].windows(8) {
            let window = std::str::from_utf8(window).expect("ASCII");
            assert!(!log.contains(window), "a piece of the value ({window}) is in the log");
        }
    }
}
