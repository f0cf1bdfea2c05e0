//! Bytes the wire tests choose: a codec that sends message bodies as they
//! are, protobuf fields written by hand, HTTP/2 frames, and calls over a
//! raw HTTP/2 connection.

use std::net::SocketAddr;

use bytes::{Buf, BufMut};
use http::uri::PathAndQuery;
use support::TestApp;
use tokio::{io::AsyncReadExt, net::TcpStream, time::timeout};
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

use super::NO_HANG;

/// Sends and receives message bodies as raw bytes, so a test can put
/// anything on the wire.
#[derive(Default)]
pub(super) struct RawCodec;

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

pub(super) async fn send_raw(
    app: &TestApp,
    method: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    send_raw_on(app.channel().await, method, body).await
}

/// Like [`send_raw`], on a connection the caller keeps.
pub(super) async fn send_raw_on(
    channel: Channel,
    method: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
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
pub(super) fn get_request_with(value: &[u8]) -> Vec<u8> {
    message_with(&[value])
}

/// A message whose string fields 1, 2, … hold `fields` as they are, valid
/// UTF-8 or not: every request of the API is one or two strings.
pub(super) fn message_with(fields: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for (number, value) in (1u8..).zip(fields) {
        body.push(number << 3 | 2); // length-delimited
        let mut len = value.len();
        while len >= 0x80 {
            body.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        body.push(len as u8);
        body.extend_from_slice(value);
    }
    body
}

/// What the server did with a connection: the bytes it sent before closing
/// it. Panics if it neither closes nor resets it within [`NO_HANG`].
pub(super) async fn server_closes(mut connection: TcpStream, what: &str) -> usize {
    let mut received = 0;
    let mut buffer = vec![0; 64 * 1024];
    let read_all = async {
        loop {
            match connection.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    };
    timeout(NO_HANG, read_all)
        .await
        .unwrap_or_else(|_| panic!("{what}: the server kept the connection open"));
    received
}

pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("a small frame");
    let mut frame = length.to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

pub(super) const DATA: u8 = 0x0;
pub(super) const HEADERS: u8 = 0x1;
pub(super) const SETTINGS: u8 = 0x4;
pub(super) const END_STREAM: u8 = 0x1;
pub(super) const END_HEADERS: u8 = 0x4;

/// A header block (HPACK, each field a literal without indexing) for a
/// gRPC call of `method`.
pub(super) fn request_header_block(address: SocketAddr, method: &str) -> Vec<u8> {
    let path = format!("/centralauth.integration.v1.IntegrationService/{method}");
    let authority = address.to_string();
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path.as_str()),
        (":authority", authority.as_str()),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        block.push(0x00);
        for string in [name, value] {
            // Every string here is shorter than 127 bytes: its length fits
            // the 7-bit prefix.
            block.push(u8::try_from(string.len()).expect("short"));
            block.extend(string.as_bytes());
        }
    }
    block
}

/// A gRPC message: the uncompressed flag, the length, the bytes.
pub(super) fn grpc_message(body: &[u8]) -> Vec<u8> {
    let mut message = vec![0];
    message.extend(u32::try_from(body.len()).expect("small").to_be_bytes());
    message.extend(body);
    message
}

/// How the server answered a call made over raw HTTP/2.
#[derive(Debug, PartialEq)]
pub(super) enum Answer {
    /// A gRPC status, from the trailers or a trailers-only response.
    Grpc(Code),
    /// An HTTP response without a gRPC status.
    Http(http::StatusCode),
    /// The stream or connection was reset or closed.
    Closed(String),
}

/// Calls `method` over a fresh HTTP/2 connection, with `headers` added to
/// the request's and `body` sent as it is, whatever it holds.
pub(super) async fn call_with_raw_body(
    app: &TestApp,
    method: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Answer {
    let call = async {
        let connection = TcpStream::connect(app.address).await?;
        let (client, connection) = h2::client::handshake(connection).await?;
        tokio::spawn(connection);
        let mut request = http::Request::post(format!(
            "http://{}/centralauth.integration.v1.IntegrationService/{method}",
            app.address
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(()).expect("a request");
        let (response, mut stream) = client.ready().await?.send_request(request, false)?;
        stream.send_data(body.into(), true)?;
        let response = response.await?;
        let grpc_status = |headers: &http::HeaderMap| {
            headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
                .map(|code| Answer::Grpc(Code::from(code)))
        };
        if let Some(answer) = grpc_status(response.headers()) {
            return Ok(answer);
        }
        let status = response.status();
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await?;
        Ok::<_, Box<dyn std::error::Error>>(
            trailers
                .as_ref()
                .and_then(grpc_status)
                .unwrap_or(Answer::Http(status)),
        )
    };
    match timeout(NO_HANG, call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => Answer::Closed(error.to_string()),
        Err(_) => panic!("{method}: no answer within {NO_HANG:?}"),
    }
}
