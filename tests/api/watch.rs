//! WatchIntegrations: a RESYNC first, then one event per committed change
//! of any replica, a RESYNC wherever changes may have been missed, and an
//! end when the server stops.

use std::time::{Duration, SystemTime};

use integration_service::{
    auth::{Token, Tokens},
    config::Settings,
    proto::{ChangeKind, WatchIntegrationsResponse},
};
use sea_orm::ConnectionTrait;
use support::{Backend, Client, TestApp, expect_code, on_every_backend};
use tonic::{Code, Streaming, transport::Channel};

type Stream = Streaming<WatchIntegrationsResponse>;

/// How long an event may take to arrive on a machine busy with the suite.
const ARRIVES_WITHIN: Duration = Duration::from_secs(10);

/// How long a stream must stay silent to show that nothing was sent.
const QUIET_FOR: Duration = Duration::from_millis(500);

/// The stream's next message; panics if it ends, fails or keeps silent.
async fn next(stream: &mut Stream) -> WatchIntegrationsResponse {
    match tokio::time::timeout(ARRIVES_WITHIN, stream.message()).await {
        Ok(Ok(Some(message))) => message,
        Ok(Ok(None)) => panic!("the stream ended"),
        Ok(Err(status)) => panic!("the stream failed: {status:?}"),
        Err(_) => panic!("no message within {ARRIVES_WITHIN:?}"),
    }
}

/// The stream's next message, which must be of `kind` (for `what`).
async fn next_of(stream: &mut Stream, kind: ChangeKind, what: &str) -> WatchIntegrationsResponse {
    let message = next(stream).await;
    assert_eq!(message.kind(), kind, "{what}: {message:?}");
    message
}

/// Asserts that the stream sends nothing for a while.
async fn quiet(stream: &mut Stream, after: &str) {
    if let Ok(message) = tokio::time::timeout(QUIET_FOR, stream.message()).await {
        panic!("{after}: the stream sent {message:?}");
    }
}

/// Opens a stream and reads its first message, which must be RESYNC.
async fn watching(client: &Client, organization_id: &str) -> Stream {
    let mut stream = client.watch(organization_id).await.expect("watching");
    let first = next_of(&mut stream, ChangeKind::Resync, "the first message").await;
    assert!(
        first.organization_id.is_empty() && first.client_id.is_empty(),
        "a RESYNC concerns no organization: {first:?}"
    );
    assert!(
        first.integration.is_none() && first.change_time.is_none(),
        "a RESYNC carries no integration nor time: {first:?}"
    );
    stream
}

fn time_of(message: &WatchIntegrationsResponse) -> SystemTime {
    let time = message.change_time.expect("a change has its time");
    SystemTime::try_from(time).expect("a valid time")
}

on_every_backend! {
    async fn the_first_message_is_resync_and_changes_follow(app: TestApp) {
        let mut stream = watching(&app, "").await;
        quiet(&mut stream, "after the RESYNC, nothing changed").await;
        let created = app.create("org-first").await.expect("created");
        let event = next_of(&mut stream, ChangeKind::Created, "a creation").await;
        assert_eq!(event.client_id, created.client_id, "its client ID");
    }
}

on_every_backend! {
    async fn every_committed_change_is_one_event_with_the_integration_after_it(app: TestApp) {
        let mut stream = watching(&app, "").await;
        let org = "org-life";

        let created = app.create(org).await.expect("created");
        let event = next_of(&mut stream, ChangeKind::Created, "CreateIntegration").await;
        assert_eq!(event.organization_id, org, "the organization");
        assert_eq!(event.client_id, created.client_id, "its client ID");
        assert_eq!(event.integration.as_ref(), Some(&created), "the integration as created");
        assert_eq!(
            event.change_time, created.create_time,
            "the change's time is the creation's"
        );

        let (value, pending) = app.generate(org).await.expect("generated");
        let event = next_of(&mut stream, ChangeKind::Updated, "GenerateSecret").await;
        let integration = event.integration.clone().expect("an update carries the integration");
        assert_eq!(integration.pending_secret.as_ref(), Some(&pending), "the new pending secret");
        assert_eq!(event.change_time, pending.create_time, "the generation's time");
        assert_eq!(event.client_id, created.client_id, "the same client");

        let activated = app.activate(org, &value).await.expect("activated");
        let event = next_of(&mut stream, ChangeKind::Updated, "ActivateSecret").await;
        assert_eq!(event.integration.as_ref(), Some(&activated), "the integration as activated");
        let active = activated.active_secret.clone().expect("an active secret");
        assert_eq!(event.change_time, active.activate_time, "the activation's time");

        // Neither a retried activation nor a wrong value changes anything;
        // nor does a validation, even one that records a use.
        app.activate(org, &value).await.expect("a retry succeeds");
        expect_code(app.activate(org, "cas_wrong").await, Code::FailedPrecondition);
        assert!(app.is_valid(&created.client_id, &value).await, "valid");
        assert!(app.is_valid(&created.client_id, &value).await, "valid again");
        quiet(&mut stream, "a retry, a refusal and validations").await;

        let revoked = app.revoke(org, &active.id).await.expect("revoked");
        let event = next_of(&mut stream, ChangeKind::Updated, "RevokeSecret").await;
        assert_eq!(event.integration.as_ref(), Some(&revoked), "the integration as revoked");
        assert!(revoked.active_secret.is_none(), "no active secret is left");

        let domain = app.update_domain(org, "login.life.example").await.expect("set");
        let event = next_of(&mut stream, ChangeKind::Updated, "UpdateDomain").await;
        assert_eq!(event.integration.as_ref(), Some(&domain), "the integration with its domain");
        assert!(domain.custom_domain_status.is_some(), "the custom domain is set, unverified");
        app.update_domain(org, "login.life.example").await.expect("the same domain again");
        quiet(&mut stream, "setting the domain it already has").await;

        app.delete(org).await.expect("deleted");
        let event = next_of(&mut stream, ChangeKind::Deleted, "DeleteIntegration").await;
        assert_eq!(event.organization_id, org, "the organization");
        assert_eq!(event.client_id, created.client_id, "the client that is gone");
        assert!(event.integration.is_none(), "a deletion carries no integration");
        let creation = SystemTime::try_from(created.create_time.expect("a time")).expect("valid");
        assert!(time_of(&event) >= creation, "the deletion's time is set, after the creation");
        quiet(&mut stream, "one event per change").await;
    }
}

on_every_backend! {
    async fn a_stream_of_one_organization_sees_its_changes_only(app: TestApp) {
        let mut mine = watching(&app, "org-mine").await;
        let mut every = watching(&app, "").await;
        app.create("org-other").await.expect("created");
        app.create("org-mine").await.expect("created");
        app.generate("org-other").await.expect("generated");
        app.generate("org-mine").await.expect("generated");

        let event = next_of(&mut mine, ChangeKind::Created, "its creation").await;
        assert_eq!(event.organization_id, "org-mine", "another organization's creation is not sent");
        let event = next_of(&mut mine, ChangeKind::Updated, "its generation").await;
        assert_eq!(event.organization_id, "org-mine", "another organization's change is not sent");
        quiet(&mut mine, "its two changes").await;

        let seen: Vec<_> = [
            next(&mut every).await,
            next(&mut every).await,
            next(&mut every).await,
            next(&mut every).await,
        ]
        .iter()
        .map(|event| (event.kind(), event.organization_id.clone()))
        .collect();
        assert_eq!(
            seen,
            [
                (ChangeKind::Created, "org-other".to_owned()),
                (ChangeKind::Created, "org-mine".to_owned()),
                (ChangeKind::Updated, "org-other".to_owned()),
                (ChangeKind::Updated, "org-mine".to_owned()),
            ],
            "the stream of every organization sees all four, in order"
        );
    }
}

on_every_backend! {
    async fn a_malformed_organization_is_an_invalid_argument(app: TestApp) {
        for bad in ["has space", &"x".repeat(129)] {
            let message = expect_code(app.watch(bad).await, Code::InvalidArgument);
            assert!(message.contains("organization_id"), "{message}");
            assert!(message.contains("leave it empty"), "says how to watch all: {message}");
        }
    }
}

on_every_backend! {
    async fn a_change_on_another_replica_reaches_the_stream(app: TestApp) {
        if app.backend() == Backend::Sqlite {
            // SQLite has no notifications: a process sharing the file
            // cannot tell this one of its changes, so only this process's
            // own changes reach its streams.
            return;
        }
        let mut stream = watching(&app, "").await;
        let replica = app.replica().await;
        let created = replica.create("org-remote").await.expect("created on the replica");
        let event = next_of(&mut stream, ChangeKind::Created, "the replica's creation").await;
        assert_eq!(event.integration.as_ref(), Some(&created), "read after the commit");

        let (value, _) = replica.generate("org-remote").await.expect("generated");
        next_of(&mut stream, ChangeKind::Updated, "the replica's generation").await;
        let activated = replica.activate("org-remote", &value).await.expect("activated");
        let event = next_of(&mut stream, ChangeKind::Updated, "the replica's activation").await;
        assert_eq!(event.integration.as_ref(), Some(&activated), "the integration as activated");
        // The activation is also announced on the channel of earlier
        // versions: this version's replica is known, no RESYNC for it.
        quiet(&mut stream, "one event per change, from either channel").await;
    }
}

/// Streams fall four events behind at most.
fn four_events_behind(settings: &mut Settings) {
    settings.change_stream_capacity = 4;
}

on_every_backend! {
    async fn a_stream_that_falls_behind_gets_resync_and_goes_on(app: TestApp)
    with four_events_behind
    {
        // A connection whose window holds a few messages: once it is full,
        // the server stops reading the stream until this test reads.
        let channel = Channel::from_shared(format!("http://{}", app.address))
            .expect("a URI")
            .initial_stream_window_size(Some(1024))
            .connect()
            .await
            .expect("connected");
        let slow = Client::new(channel);
        let mut stream = watching(&slow, "").await;
        let mut another = watching(&app, "").await;

        const CHANGES: usize = 40;
        for n in 0..CHANGES {
            app.create(&format!("org-behind-{n}")).await.expect("created");
            // The other stream is read: it is not held back.
            let event = next_of(&mut another, ChangeKind::Created, "a stream that is read").await;
            assert_eq!(event.organization_id, format!("org-behind-{n}"), "in order, none lost");
        }

        let mut seen = Vec::new();
        let mut resynced = false;
        loop {
            let message = next(&mut stream).await;
            match message.kind() {
                ChangeKind::Resync => resynced = true,
                ChangeKind::Created => {
                    seen.push(message.organization_id);
                    if seen.last().is_some_and(|org| org == &format!("org-behind-{}", CHANGES - 1)) {
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(resynced, "the stream was told it fell behind");
        assert!(seen.len() < CHANGES, "it did fall behind: {} of {CHANGES} sent", seen.len());
        let numbers: Vec<usize> = seen
            .iter()
            .map(|org| org.trim_start_matches("org-behind-").parse().expect("a number"))
            .collect();
        assert!(numbers.is_sorted(), "what it was sent is in order: {numbers:?}");

        app.create("org-after").await.expect("created");
        let event = next_of(&mut stream, ChangeKind::Created, "after the RESYNC").await;
        assert_eq!(event.organization_id, "org-after", "the stream goes on");
    }
}

const ADMIN: &str = "admin-token-0123456789abcdef0123456789abcdef";
const GATEWAY: &str = "validator-token-0123456789abcdef0123456789ab";

fn with_tokens(settings: &mut Settings) {
    let parse = |t: &str| Token::parse(t).expect("a valid token");
    settings.access.tokens = Tokens::new(&[parse(ADMIN)], &[parse(GATEWAY)]).expect("distinct");
}

on_every_backend! {
    async fn the_gateway_and_the_dashboard_may_watch_and_nobody_else(app: TestApp)
    with with_tokens
    {
        let mut gateway = watching(&app.client_with_token(GATEWAY), "").await;
        let mut dashboard = watching(&app.client_with_token(ADMIN), "org-tokens").await;
        expect_code(app.watch("").await, Code::Unauthenticated);
        expect_code(
            app.client_with_token(&"x".repeat(ADMIN.len())).watch("").await,
            Code::Unauthenticated,
        );

        app.client_with_token(ADMIN).create("org-tokens").await.expect("created");
        next_of(&mut gateway, ChangeKind::Created, "the gateway's stream").await;
        next_of(&mut dashboard, ChangeKind::Created, "the dashboard's stream").await;
    }
}

/// Calls must be answered within a second; a stream is answered at once
/// and may stay open for as long as it is read.
fn a_one_second_request_timeout(settings: &mut Settings) {
    settings.request_timeout = Duration::from_secs(1);
}

on_every_backend! {
    async fn a_stream_outlives_the_request_timeout(app: TestApp)
    with a_one_second_request_timeout
    {
        let mut stream = watching(&app, "").await;
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        app.create("org-later").await.expect("created");
        let event = next_of(&mut stream, ChangeKind::Created, "long after the timeout").await;
        assert_eq!(event.organization_id, "org-later", "the stream is still open");
    }
}

on_every_backend! {
    async fn stopping_the_server_ends_open_streams(mut app: TestApp) {
        let mut every = watching(&app, "").await;
        let mut one = watching(&app, "org-stop").await;
        tokio::time::timeout(Duration::from_secs(10), app.stop())
            .await
            .expect("the server stops, open streams and all");
        for stream in [&mut every, &mut one] {
            let ended = tokio::time::timeout(ARRIVES_WITHIN, stream.message())
                .await
                .expect("the stream ends");
            let status = ended.expect_err("the stream ends with a status");
            assert_eq!(status.code(), Code::Unavailable, "watch again elsewhere: {status:?}");
            assert!(status.message().contains("shutting down"), "{status:?}");
        }
    }
}

on_every_backend! {
    async fn a_lost_notification_connection_resyncs_the_streams(app: TestApp) {
        let Some(name) = app.database.name() else {
            // SQLite: no notification connection to lose.
            return;
        };
        let mut stream = watching(&app, "").await;
        app.tables()
            .execute_unprepared(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND query LIKE 'LISTEN%'"
            ))
            .await
            .expect("the listener's connection terminated");
        next_of(&mut stream, ChangeKind::Resync, "the connection is lost").await;
        next_of(&mut stream, ChangeKind::Resync, "listening again").await;

        // Listening again: another replica's changes arrive as before.
        let replica = app.replica().await;
        replica.create("org-again").await.expect("created on the replica");
        let event = next_of(&mut stream, ChangeKind::Created, "after the reconnection").await;
        assert_eq!(event.organization_id, "org-again", "heard");
    }
}

on_every_backend! {
    async fn an_activation_by_a_replica_of_an_earlier_version_resyncs_the_streams(app: TestApp) {
        if app.backend() == Backend::Sqlite {
            // SQLite: replicas announce nothing to one another.
            return;
        }
        let (client_id, _) = app.ready("org-old").await;
        let mut stream = watching(&app, "").await;
        // What an earlier version sends when it activates: the older
        // channel only, with the client ID and its replica's id.
        app.tables()
            .execute_unprepared(&format!(
                "SELECT pg_notify('integration_secret_activated', '{client_id} {}')",
                uuid::Uuid::new_v4()
            ))
            .await
            .expect("notified");
        next_of(&mut stream, ChangeKind::Resync, "a change no event describes").await;
    }
}
