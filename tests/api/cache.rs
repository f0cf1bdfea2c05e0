//! The gateway's hot path: what the cache answers, when it stops, and the
//! throttle in front of everything it cannot answer.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use integration_service::{
    config::Settings,
    domain::{ClientId, ClientSecret, OrganizationId},
    invalidation,
    store::Store,
    validation::{
        ValidClient,
        cache::{CredentialCache, Lookup, Verified},
    },
};
use sea_orm::ConnectionTrait;
use support::{Backend, ServerCommand, TestApp, TestDatabase, on_every_backend, test_settings};
use tonic::Code;

use crate::BINARY;

/// The cache trusts an entry for a minute here: only the activation's own
/// invalidation can make the old secret fail at once.
fn trust_for_a_minute(settings: &mut Settings) {
    settings.cache.revalidate = Duration::from_secs(60);
}

on_every_backend! {
    async fn a_revoked_secret_stops_validating_at_once_on_the_activating_replica(app: TestApp)
    with trust_for_a_minute
    {
        let (client_id, old) = app.ready("org-hot").await;
        for _ in 0..3 {
            assert!(app.is_valid(&client_id, &old).await, "warm");
        }
        let (new, _) = app.generate("org-hot").await.expect("generated");
        assert!(app.is_valid(&client_id, &old).await, "a pending secret changes nothing");
        app.activate("org-hot", &new).await.expect("activated");
        assert!(!app.is_valid(&client_id, &old).await, "revoked at once, cached or not");
        assert!(app.is_valid(&client_id, &new).await, "the new secret validates");
    }
}

/// The listener, on its own: notices from other replicas make the cache
/// forget a client, its own are ignored, and losing its connection (when
/// notices may be missed) makes the cache stop trusting what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_keeps_the_cache_honest() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let store = Store::connect(&test_settings(database.url()).database)
        .await
        .expect("connected");
    store.migrate().await.expect("migrated");
    let cache = Arc::new(
        CredentialCache::new(&integration_service::config::CacheSettings {
            capacity: 10,
            revalidate: Duration::from_secs(60),
        })
        .expect("RNG"),
    );
    let listening = invalidation::subscribe(&store)
        .await
        .expect("subscribed")
        .expect("PostgreSQL has notifications")
        .follow(Arc::clone(&cache));
    let admin = store.connection();
    let notify = |client_id: &ClientId, replica: uuid::Uuid| {
        let sql = format!(
            "SELECT pg_notify('integration_secret_activated', '{} {replica}')",
            client_id.as_str()
        );
        async move { admin.execute_unprepared(&sql).await }
    };
    let remember = |client_id: &ClientId, secret: &ClientSecret| {
        let verified = Verified {
            secret_id: uuid::Uuid::now_v7(),
            answer: ValidClient {
                organization_id: OrganizationId::parse("org".into()).expect("valid"),
                domain: "login.example".into(),
            },
        };
        let read = cache.before_read(client_id);
        cache.remember(read, cache.fingerprint(client_id, secret), verified);
    };
    let (a, b) = (
        ClientId::generate().expect("RNG"),
        ClientId::generate().expect("RNG"),
    );
    let secret = ClientSecret::generate().expect("RNG");
    remember(&a, &secret);
    remember(&b, &secret);

    // Its own notice: nothing to do.
    notify(&a, store.replica()).await.expect("notified");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        matches!(
            cache.lookup(&a, &cache.fingerprint(&a, &secret)),
            Lookup::Fresh(_)
        ),
        "its own notice is ignored"
    );

    // Another replica's notice: forget that client, and only it.
    notify(&a, uuid::Uuid::new_v4()).await.expect("notified");
    eventually(
        || {
            matches!(
                cache.lookup(&a, &cache.fingerprint(&a, &secret)),
                Lookup::Miss
            )
        },
        "a is forgotten",
    )
    .await;
    assert!(
        matches!(
            cache.lookup(&b, &cache.fingerprint(&b, &secret)),
            Lookup::Fresh(_)
        ),
        "b is untouched"
    );

    // The listening connection is cut: whatever was cached is not trusted
    // until the database confirms it.
    let name = database.name().expect("a PostgreSQL database has a name");
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND query LIKE 'LISTEN%'"
        ))
        .await
        .expect("the listener's connection terminated");
    eventually(
        || {
            matches!(
                cache.lookup(&b, &cache.fingerprint(&b, &secret)),
                Lookup::Stale { .. }
            )
        },
        "b is not trusted",
    )
    .await;
    listening.abort();
}

/// Polls `done` for up to three seconds.
async fn eventually(done: impl Fn() -> bool, what: &str) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 3 s");
}

/// Two server processes on one database; the second holds the first secret
/// warm while the first rotates it. Returns how long the second took to
/// stop accepting the revoked secret.
async fn another_replica_stops_accepting(
    backend: Backend,
    second_replica_args: &[&str],
) -> Option<Duration> {
    let database = TestDatabase::create(backend).await?;
    let replica = |args: &[&str]| {
        ServerCommand::new(BINARY, database.url())
            .log_filter("trace")
            .args(args)
            .start()
    };
    let first = replica(&[]).await;
    let second = replica(second_replica_args).await;
    let (admin, gateway) = (first.client().await, second.client().await);
    let org = "org-two-replicas";

    let client_id = admin.create(org).await.expect("created").client_id;
    let (old, _) = admin.generate(org).await.expect("generated");
    admin.activate(org, &old).await.expect("activated");
    for _ in 0..3 {
        let answer = gateway.validate(&client_id, &old).await.expect("answered");
        assert!(answer.valid, "warm on the second replica");
    }

    let (new, _) = admin.generate(org).await.expect("generated");
    admin.activate(org, &new).await.expect("activated");
    let activated = std::time::Instant::now();
    loop {
        let answer = gateway.validate(&client_id, &old).await.expect("answered");
        if !answer.valid {
            break;
        }
        assert!(
            activated.elapsed() < Duration::from_secs(5),
            "the old secret never stopped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = activated.elapsed();
    let answer = gateway.validate(&client_id, &new).await.expect("answered");
    assert!(
        answer.valid,
        "the new secret validates on the second replica"
    );
    first.terminate().await;
    second.terminate().await;
    Some(took)
}

/// On PostgreSQL the activation's notification reaches the other replica:
/// its revalidation interval is set to a minute here, so only the
/// notification can make it stop within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_postgresql_replica_stops_accepting_a_revoked_secret_within_a_second() {
    let Some(took) =
        another_replica_stops_accepting(Backend::Postgres, &["--cache-revalidate-ms", "60000"])
            .await
    else {
        return;
    };
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// SQLite has no notifications: another process sharing the file stops at
/// its revalidation interval (300 ms here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sqlite_process_stops_accepting_a_revoked_secret_within_its_interval() {
    let took = another_replica_stops_accepting(Backend::Sqlite, &["--cache-revalidate-ms", "300"])
        .await
        .expect("SQLite is always available");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

fn strict_throttle(settings: &mut Settings) {
    settings.throttle.per_client_per_second = NonZeroU32::MIN;
    settings.throttle.per_client_burst = NonZeroU32::new(3).expect("non-zero");
    settings.throttle.overall_per_second = NonZeroU32::new(10);
}

/// Validates `client_id` with a different wrong secret `times` times at
/// once: the throttle decides before any verify, so the answers do not
/// depend on how fast verifies run on a busy machine.
async fn flood_at_once(
    app: &TestApp,
    client_ids: impl IntoIterator<Item = String>,
) -> Vec<Result<bool, Code>> {
    let calls: Vec<_> = client_ids
        .into_iter()
        .map(|client_id| {
            let mut client = app.raw();
            let wrong = ClientSecret::generate().expect("RNG").expose().to_owned();
            tokio::spawn(async move {
                client
                    .validate_client(integration_service::proto::ValidateClientRequest {
                        client_id,
                        client_secret: wrong,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().valid)
                    .map_err(|s| s.code())
            })
        })
        .collect();
    let mut codes = Vec::new();
    for call in calls {
        codes.push(call.await.expect("the call completes"));
    }
    codes
}

fn count(codes: &[Result<bool, Code>], wanted: Result<bool, Code>) -> usize {
    codes.iter().filter(|c| **c == wanted).count()
}

on_every_backend! {
    async fn throttling_refuses_floods_but_never_a_warm_client(app: TestApp)
    with strict_throttle
    {
        let (client_id, value) = app.ready("org-flooded").await;
        assert!(
            app.is_valid(&client_id, &value).await,
            "warm since its activation"
        );

        let codes = flood_at_once(&app, std::iter::repeat_n(client_id.clone(), 6)).await;
        // Activating warmed the cache, so the flood meets the whole burst of 3.
        assert_eq!(count(&codes, Ok(false)), 3, "the burst: {codes:?}");
        assert_eq!(
            count(&codes, Err(Code::ResourceExhausted)),
            3,
            "then refusals: {codes:?}"
        );
        assert!(
            app.is_valid(&client_id, &value).await,
            "the warm client is never refused"
        );

        // An unknown client ID is throttled exactly like a known one.
        let (other_client, _) = app.ready("org-flooded-too").await;
        let unknown = ClientId::generate().expect("RNG");
        let known_codes = flood_at_once(&app, std::iter::repeat_n(other_client, 6)).await;
        let unknown_codes =
            flood_at_once(&app, std::iter::repeat_n(unknown.as_str().to_owned(), 6)).await;
        for codes in [&known_codes, &unknown_codes] {
            assert_eq!(count(codes, Ok(false)), 3, "{codes:?}");
            assert_eq!(count(codes, Err(Code::ResourceExhausted)), 3, "{codes:?}");
        }

        // Many client IDs exhaust the overall limit (10 a second, as a burst).
        let fresh = (0..30).map(|_| ClientId::generate().expect("RNG").as_str().to_owned());
        let codes = flood_at_once(&app, fresh).await;
        let refused = count(&codes, Err(Code::ResourceExhausted));
        assert_eq!(
            refused + count(&codes, Ok(false)),
            30,
            "answered or refused, nothing else: {codes:?}"
        );
        assert!(refused >= 15, "only {refused} of 30 refused");
        assert!(
            app.is_valid(&client_id, &value).await,
            "the warm client is still never refused"
        );
        let malformed = app
            .validate(&client_id, "cas_short")
            .await
            .expect("answered");
        assert!(
            !malformed.valid,
            "malformed values cost nothing and are not throttled"
        );
    }
}
