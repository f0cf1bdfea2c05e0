//! What the wire may send: the protobuf codec and the message size limit.
//!
//! Two of tonic's answers to bad input are wrong for a public API, and this
//! module corrects them:
//! - a request that is not valid protobuf (a truncated field, invalid UTF-8 in
//!   a string) is the caller's mistake, so it gets `INVALID_ARGUMENT`, not the
//!   `INTERNAL` that tonic-prost answers and that would page an operator;
//! - a request over the decode limit gets `RESOURCE_EXHAUSTED`, the status gRPC
//!   specifies for it, not tonic's `OUT_OF_RANGE`.

use std::marker::PhantomData;

use http::HeaderValue;
use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The prost codec, with malformed messages answered `INVALID_ARGUMENT`.
///
/// build.rs names it as the codec of every generated method.
#[derive(Debug, Clone)]
pub struct ProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(ProstDecoder::default())
    }
}

/// A prost decoder whose failures are the sender's fault.
#[derive(Debug, Clone)]
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            // prost's message names the field and the fault, never the bytes.
            Status::invalid_argument(format!(
                "the message is not valid protobuf for this method: {}",
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// Rewrites tonic's "message too large" `OUT_OF_RANGE` into
/// `RESOURCE_EXHAUSTED`; the server maps every response through it.
///
/// tonic rejects an oversized request before any handler runs, as a
/// trailers-only response whose status sits in the response headers. None of
/// the services here answers `OUT_OF_RANGE` for any other reason, so every
/// such status is that rejection.
pub fn resource_exhausted_when_too_large<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    if headers.get(GRPC_STATUS) == Some(&HeaderValue::from(Code::OutOfRange as i32)) {
        headers.insert(
            GRPC_STATUS,
            HeaderValue::from(Code::ResourceExhausted as i32),
        );
    }
    response
}

const GRPC_STATUS: &str = "grpc-status";
