//! The service around the RPCs: health, reflection, restarts, shutdown.

use integration_service::{
    config::Settings,
    domain::{ClientSecret, HashParams},
    proto,
};
use support::{Backend, TestApp, expect_code, health_status, on_every_backend, spawn_app};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const SERVICE: &str = "centralauth.integration.v1.IntegrationService";

async fn health(app: &TestApp, service: &str) -> ServingStatus {
    health_status(app.channel().await, service)
        .await
        .expect("health answers")
}

on_every_backend! {
    async fn health_reports_serving_for_the_server_and_the_service(app: TestApp) {
        assert_eq!(health(&app, "").await, ServingStatus::Serving, "the server");
        assert_eq!(health(&app, SERVICE).await, ServingStatus::Serving, "the service");
        assert_eq!(health(&app, "liveness").await, ServingStatus::Serving, "liveness");
    }
}

on_every_backend! {
    async fn state_survives_a_restart(app: TestApp) {
        let (client_id, active) = app.ready("org-durable").await;
        let (pending, _) = app.generate("org-durable").await.expect("generated");
        let app = app.restart().await;
        assert!(app.is_valid(&client_id, &active).await, "the active secret still validates");
        let integration = app.get("org-durable").await.expect("readable");
        assert_eq!(integration.client_id, client_id, "the client ID is kept");
        assert!(integration.pending_secret.is_some(), "the pending secret is still there");
        app.activate("org-durable", &pending).await.expect("and still activates");
        assert!(app.is_valid(&client_id, &pending).await, "the activated secret validates");
        assert!(!app.is_valid(&client_id, &active).await, "the one before is revoked");
    }
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    let mut v1_client =
        v1::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = v1_client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("v1 reflection answers")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("a response")
        .expect("one message");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("v1 reflection did not list services");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == SERVICE), "v1 lists {names:?}");
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "v1 lists {names:?}"
    );

    let mut alpha_client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                SERVICE.to_owned(),
            ),
        ),
    };
    let mut responses = alpha_client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("v1alpha reflection answers")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("a response")
        .expect("one message");
    assert!(
        matches!(
            response.message_response,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        "v1alpha describes the service: {response:?}"
    );
}

/// PostgreSQL only: SQLite is a file and cannot go away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_away_calls_are_unavailable_and_health_says_so() {
    let Some(app) = spawn_app(Backend::Postgres).await else {
        return;
    };
    let (client_id, value) = app.ready("org-outage").await;
    let name = app
        .database
        .name()
        .expect("a PostgreSQL database has a name")
        .to_owned();

    app.database.allow_connections(false).await;
    wait_for_health(&app, ServingStatus::NotServing).await;
    assert_eq!(
        health(&app, SERVICE).await,
        ServingStatus::NotServing,
        "the service too"
    );
    assert_eq!(
        health(&app, "liveness").await,
        ServingStatus::Serving,
        "alive all the same: a restart would not bring the database back"
    );
    let message = expect_code(app.get("org-outage").await, Code::Unavailable);
    assert!(
        !message.contains(&name),
        "the message keeps internals: {message}"
    );
    expect_code(app.validate(&client_id, &value).await, Code::Unavailable);

    app.database.allow_connections(true).await;
    wait_for_health(&app, ServingStatus::Serving).await;
    assert!(
        app.is_valid(&client_id, &value).await,
        "recovered without a restart"
    );
    app.get("org-outage").await.expect("recovered");
}

/// Polls health until it reports `status`, for at most ten seconds.
async fn wait_for_health(app: &TestApp, status: ServingStatus) {
    for _ in 0..100 {
        if health(app, "").await == status {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("health never reported {status:?}");
}

/// Hashing at 128 MiB and 10 passes takes about a second here: long enough to
/// stop the server while a generation is in flight.
fn slow_hashing(settings: &mut Settings) {
    settings.hashing.params = HashParams::new(128 * 1024, 10, 1).expect("valid");
}

on_every_backend! {
    async fn shutdown_finishes_the_calls_in_flight_and_refuses_new_ones(mut app: TestApp)
    with slow_hashing
    {
        app.create("org-shutdown").await.expect("created");
        let in_flight = {
            let mut client = app.raw();
            tokio::spawn(async move {
                client
                    .generate_secret(proto::GenerateSecretRequest {
                        organization_id: "org-shutdown".into(),
                    })
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        app.stop().await;
        let response = in_flight.await.expect("the task completes");
        let value = response
            .expect("the call in flight completed")
            .into_inner()
            .client_secret;
        assert!(ClientSecret::parse(&value).is_ok(), "and returned a whole secret");
        assert!(app.get("org-shutdown").await.is_err(), "a stopped server takes no new calls");
        let app = app.restart().await;
        app.activate("org-shutdown", &value)
            .await
            .expect("the returned secret was committed");
    }
}
