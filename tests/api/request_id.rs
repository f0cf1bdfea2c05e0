//! Request ids: the caller's `x-request-id` is returned in the response's
//! metadata and carried by the call's log lines; a caller that sends none,
//! or one that is not usable, gets a new one.

use integration_service::proto;
use support::{ServerCommand, TestDatabase, on_every_backend};

use crate::BINARY;

fn get(
    organization: &str,
    request_id: Option<&str>,
) -> tonic::Request<proto::GetIntegrationRequest> {
    let mut request = tonic::Request::new(proto::GetIntegrationRequest {
        organization_id: organization.to_owned(),
    });
    if let Some(id) = request_id {
        request
            .metadata_mut()
            .insert("x-request-id", id.parse().expect("ASCII"));
    }
    request
}

fn returned(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .expect("the response names its request id")
        .to_str()
        .expect("ASCII")
        .to_owned()
}

on_every_backend! {
    async fn the_callers_request_id_is_returned_and_logged(database: TestDatabase) {
        let server = ServerCommand::new(BINARY, database.url())
            .log_filter("info")
            .start()
            .await;
        let client = server.client().await;
        client.create("org-request-id").await.expect("created");

        let answer = client
            .raw()
            .get_integration(get("org-request-id", Some("trace-me-0042")))
            .await
            .expect("found");
        assert_eq!(returned(answer.metadata()), "trace-me-0042");

        // A failed call returns it too (in its trailers-only answer).
        let failed = client
            .raw()
            .get_integration(get("org-nobody", Some("trace-me-0043")))
            .await
            .expect_err("no such organization");
        assert_eq!(returned(failed.metadata()), "trace-me-0043");

        // None sent, or one with a space: a new UUID.
        for sent in [None, Some("not usable")] {
            let answer = client
                .raw()
                .get_integration(get("org-request-id", sent))
                .await
                .expect("found");
            let id = returned(answer.metadata());
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{sent:?} gave {id}");
        }

        // The gateway's check runs without the request span; its line
        // carries the id as a field of its own.
        let integration = client.get("org-request-id").await.expect("found");
        // Well formed, and not active: refused, and logged at INFO.
        let (pending, _) = client.generate("org-request-id").await.expect("generated");
        let mut check = tonic::Request::new(proto::ValidateClientRequest {
            client_id: integration.client_id.clone(),
            client_secret: pending,
            remote_address: String::new(),
        });
        check
            .metadata_mut()
            .insert("x-request-id", "trace-me-0044".parse().expect("ASCII"));
        let answer = client.raw().validate_client(check).await.expect("answered");
        assert_eq!(returned(answer.metadata()), "trace-me-0044");

        let (_, log) = server.terminate().await;
        assert!(
            log.iter().any(|line| line.contains("trace-me-0044")
                && line.contains("client validation failed")),
            "the check's line carries its id: {log:#?}"
        );
        let lines: Vec<&String> = log.iter().filter(|line| line.contains("trace-me-0042")).collect();
        assert!(!lines.is_empty(), "the call's log line carries its id: {log:#?}");
        assert!(lines.iter().all(|line| line.contains("GetIntegration")), "{lines:#?}");
        assert!(
            log.iter().any(|line| line.contains("trace-me-0043") && line.contains("NOT_FOUND")
                || line.contains("trace-me-0043") && line.contains("NotFound")),
            "the failed call's line too: {log:#?}"
        );
    }
}
