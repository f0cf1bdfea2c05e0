//! Spans over OTLP (`--otlp-endpoint`): the real binary exports to an OTLP
//! trace receiver run in this test, which keeps what it is sent. Each
//! call's span arrives named after its method, with its gRPC status, as a
//! child of the caller's `traceparent`, and without the secret the call
//! carried. The tracing is the same on both backends, so SQLite only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_service::proto;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message;
use support::{ServerCommand, TestDatabase};

use crate::BINARY;

/// What the receiver was sent: each export as it arrived, and as bytes.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Received {
    fn spans(&self) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|export| &export.resource_spans)
            .flat_map(|resource| &resource.scope_spans)
            .flat_map(|scope| scope.spans.clone())
            .collect()
    }

    fn bytes(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .flat_map(Message::encode_to_vec)
            .collect()
    }

    fn service_names(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|export| &export.resource_spans)
            .filter_map(|resource| resource.resource.as_ref())
            .flat_map(|resource| &resource.attributes)
            .filter(|attribute| attribute.key == "service.name")
            .filter_map(|attribute| string(attribute.value.as_ref()?.value.as_ref()?))
            .collect()
    }

    /// The spans named `name`, once there are `count` of them; fails after
    /// 10 s.
    async fn wait_for(&self, name: &str, count: usize) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let named: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|span| span.name == name)
                .collect();
            if named.len() >= count {
                return named;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} spans named {name} within 10 s; received {:?}",
                self.spans().iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn string(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref()?.value.clone())
}

/// A receiver on a free port of loopback; its endpoint and what it keeps.
async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let address = listener.local_addr().expect("bound");
    let received = Received::default();
    let service = TraceServiceServer::new(received.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .expect("the receiver serves");
    });
    (format!("http://{address}"), received)
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn with_traceparent<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ASCII"));
    request
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test]
async fn each_calls_span_arrives_with_its_method_and_status_and_no_secret() {
    let (endpoint, received) = receiver().await;
    let database = TestDatabase::sqlite();
    let server = ServerCommand::new(BINARY, database.url())
        .args(&["--otlp-endpoint", &endpoint])
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .start()
        .await;
    let client = server.client().await;
    let integration = client.create("org-otlp").await.expect("created");
    let (value, _) = client.generate("org-otlp").await.expect("generated");
    client
        .activate("org-otlp", &value)
        .await
        .expect("activated");

    // A check under the caller's trace.
    let answer = client
        .raw()
        .validate_client(with_traceparent(
            proto::ValidateClientRequest {
                client_id: integration.client_id.clone(),
                client_secret: value.clone(),
                remote_address: String::new(),
            },
            &format!("00-{TRACE_ID}-{PARENT_ID}-01"),
        ))
        .await
        .expect("answered");
    assert!(answer.into_inner().valid);
    // A caller's mistake, under a traceparent that is not one.
    let missing = client
        .raw()
        .get_integration(with_traceparent(
            proto::GetIntegrationRequest {
                organization_id: "org-nobody".to_owned(),
            },
            "00-not-a-trace-01",
        ))
        .await
        .expect_err("no such organization");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let validated = received
        .wait_for(
            "centralauth.integration.v1.IntegrationService/ValidateClient",
            1,
        )
        .await;
    let span = &validated[0];
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(hex(&span.trace_id), TRACE_ID, "the caller's trace");
    assert_eq!(hex(&span.parent_span_id), PARENT_ID, "the caller's span");
    assert_eq!(
        attribute(span, "rpc.method").as_ref().and_then(string),
        Some("ValidateClient".to_owned())
    );
    assert_eq!(
        attribute(span, "rpc.service").as_ref().and_then(string),
        Some("centralauth.integration.v1.IntegrationService".to_owned())
    );
    assert_eq!(
        attribute(span, "rpc.grpc.status_code"),
        Some(Value::IntValue(0))
    );
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano && span.start_time_unix_nano > 0);

    let got = received
        .wait_for(
            "centralauth.integration.v1.IntegrationService/GetIntegration",
            1,
        )
        .await;
    let span = &got[0];
    assert_eq!(
        attribute(span, "rpc.grpc.status_code"),
        Some(Value::IntValue(tonic::Code::NotFound as i64))
    );
    assert!(
        span.parent_span_id.is_empty(),
        "an invalid traceparent: a root span"
    );
    assert_ne!(hex(&span.trace_id), TRACE_ID);
    // NOT_FOUND is the caller's mistake, not the server's failure.
    assert_ne!(
        span.status.as_ref().map(|status| status.code),
        Some(StatusCode::Error as i32)
    );
    assert!(
        received
            .service_names()
            .iter()
            .all(|name| name == "integration-service")
    );
    assert!(!received.service_names().is_empty());

    let sent = received.bytes();
    assert!(
        !sent
            .windows(value.len())
            .any(|window| window == value.as_bytes()),
        "no exported span holds the secret"
    );
    // Not even its random part, in some other encoding of the value.
    let random = value.trim_start_matches("cas_");
    assert!(
        !sent
            .windows(random.len())
            .any(|window| window == random.as_bytes())
    );
}

#[tokio::test]
async fn the_last_spans_are_exported_when_the_server_stops() {
    let (endpoint, received) = receiver().await;
    let database = TestDatabase::sqlite();
    // Batches would wait a minute: only the flush at exit sends this one.
    let server = ServerCommand::new(BINARY, database.url())
        .args(&["--otlp-endpoint", &endpoint])
        .env("OTEL_BSP_SCHEDULE_DELAY", "60000")
        .start()
        .await;
    let client = server.client().await;
    client.create("org-otlp-exit").await.expect("created");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        received.spans().is_empty(),
        "nothing exported before the stop"
    );
    let (status, output) = server.terminate().await;
    assert!(status.success(), "{output:?}");
    received
        .wait_for(
            "centralauth.integration.v1.IntegrationService/CreateIntegration",
            1,
        )
        .await;
}

#[tokio::test]
async fn an_endpoint_that_is_not_a_grpc_address_stops_the_start() {
    let database = TestDatabase::sqlite();
    let finished = ServerCommand::new(BINARY, database.url())
        .args(&["--otlp-endpoint", "ftp://collector:4317"])
        .run_to_exit(Duration::from_secs(10))
        .await;
    assert!(finished.failed(), "{}", finished.output());
    let output = finished.output();
    assert!(output.contains("--otlp-endpoint"), "{output}");
    assert!(output.contains("http://"), "it says what to give: {output}");
}
