//! Whatever bytes arrive, the caller gets a status and the server keeps
//! serving.

use bytes::{Buf, BufMut};
use http::uri::PathAndQuery;
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

use crate::helpers::{Backend, TestApp, spawn_app};

/// Sends and receives message bodies as raw bytes, so a test can put
/// anything on the wire.
#[derive(Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn send_raw(app: &TestApp, method: &str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(app.channel().await);
    grpc.ready().await.expect("ready");
    let path = PathAndQuery::try_from(format!(
        "/centralauth.integration.v1.IntegrationService/{method}"
    ))
    .expect("a path");
    grpc.unary(Request::new(body), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// A GetIntegrationRequest whose organization_id field holds `value` as is.
fn get_request_with(value: &[u8]) -> Vec<u8> {
    let mut body = vec![0x0a]; // field 1, length-delimited
    let mut len = value.len();
    while len >= 0x80 {
        body.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    body.push(len as u8);
    body.extend_from_slice(value);
    body
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted_and_the_server_keeps_serving() {
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    app.create("org-size").await.expect("created");
    for size in [17 * 1024, 1024 * 1024, 5 * 1024 * 1024] {
        let status = app.get(&"x".repeat(size)).await.expect_err("refused");
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{size} bytes: {status:?}"
        );
        app.get("org-size").await.expect("the server keeps serving");
    }
    // Just under the limit, the message is read and its field refused.
    let status = app.get(&"x".repeat(15 * 1024)).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

#[tokio::test]
async fn malformed_protobuf_is_an_invalid_argument() {
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    app.create("org-wire").await.expect("created");
    let cases: [(&str, Vec<u8>); 5] = [
        ("garbage", vec![0xff, 0xff, 0xff, 0xff]),
        ("a truncated field", vec![0x0a, 0x10, b'a', b'b']),
        ("invalid UTF-8 in a string", get_request_with(&[0xc3, 0x28])),
        ("a lone continuation byte", get_request_with(b"org\x80")),
        ("a wrong wire type", vec![0x08, 0x01]),
    ];
    for (what, body) in cases {
        let status = send_raw(&app, "GetIntegration", body)
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    for method in [
        "ValidateClient",
        "ActivateSecret",
        "GenerateSecret",
        "CreateIntegration",
    ] {
        let status = send_raw(&app, method, vec![0x0a, 0x05, 0xff])
            .await
            .expect_err(method);
        assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status:?}");
    }
    let well_formed = send_raw(&app, "GetIntegration", get_request_with(b"org-wire")).await;
    assert!(well_formed.is_ok(), "the raw client works: {well_formed:?}");
    app.get("org-wire").await.expect("the server keeps serving");
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented() {
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    let status = send_raw(&app, "DeleteEverything", Vec::new())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn health_and_reflection_have_the_same_size_limit() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    let mut health = HealthClient::new(app.channel().await);
    let status = health
        .check(HealthCheckRequest {
            service: "x".repeat(1024 * 1024),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health keeps answering");
}
