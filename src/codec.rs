//! What the wire may send: the protobuf codec and the message size limit.
//!
//! Three of tonic's answers to bad input are wrong for a public API, and this
//! module corrects them:
//! - a request that is not valid protobuf (a truncated field, invalid UTF-8 in
//!   a string) is the caller's mistake, so it gets `INVALID_ARGUMENT`, not the
//!   `INTERNAL` that tonic-prost answers and that would page an operator;
//! - a request whose gRPC framing is broken (a message cut short, a flag byte
//!   other than 0 or 1, a compressed message without `grpc-encoding`) is the
//!   caller's mistake too: `INVALID_ARGUMENT` rather than tonic's `INTERNAL`.
//!   (gRPC's compression document asks for `INTERNAL` in the last case; here
//!   `INTERNAL` means a bug in this service, so a caller's broken frame must
//!   not look like one);
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

/// Corrects the statuses tonic gives bad requests before any handler runs:
/// "message too large" (`OUT_OF_RANGE`) becomes `RESOURCE_EXHAUSTED`, with a
/// message naming the limit and the setting that raises it, and a broken
/// gRPC frame (`INTERNAL`) becomes `INVALID_ARGUMENT`. The server maps every
/// response through it, with its `--max-message-bytes` as `limit`; both
/// refusals are logged like any refused call (within the call's span).
///
/// tonic answers both as a trailers-only response whose status sits in the
/// response headers. None of the services here answers `OUT_OF_RANGE` for
/// any other reason, so every such status is the size rejection. A broken
/// frame is told from this service's own `INTERNAL` (whose message is
/// always "internal error; ...") by tonic's messages for it, which the wire
/// tests pin: should a tonic upgrade reword them, those tests fail.
pub fn corrected_status<B>(mut response: http::Response<B>, limit: usize) -> http::Response<B> {
    let headers = response.headers_mut();
    let Some(status) = headers.get(GRPC_STATUS) else {
        return response;
    };
    if status == HeaderValue::from(Code::OutOfRange as i32) {
        let found = headers
            .get(GRPC_MESSAGE)
            .and_then(|message| found_bytes(message.as_bytes()));
        let message = too_large(found, limit);
        tracing::info!(
            code = ?Code::ResourceExhausted,
            reason = %message,
            "request refused"
        );
        headers.insert(
            GRPC_STATUS,
            HeaderValue::from(Code::ResourceExhausted as i32),
        );
        if let Ok(value) = HeaderValue::from_str(&message) {
            headers.insert(GRPC_MESSAGE, value);
        }
    } else if status == HeaderValue::from(Code::Internal as i32)
        && headers
            .get(GRPC_MESSAGE)
            .is_some_and(|message| is_broken_framing(message.as_bytes()))
    {
        tracing::info!(
            code = ?Code::InvalidArgument,
            reason = BROKEN_FRAMING,
            "request refused"
        );
        headers.insert(GRPC_STATUS, HeaderValue::from(Code::InvalidArgument as i32));
        headers.insert(GRPC_MESSAGE, HeaderValue::from_static(BROKEN_FRAMING));
    }
    response
}

/// What a caller whose message was too large is told. Printable ASCII
/// without `%`, so it is a `grpc-message` as it is.
fn too_large(found: Option<u64>, limit: usize) -> String {
    let size = found.map_or_else(String::new, |bytes| format!(" ({bytes} bytes)"));
    format!(
        "the request message{size} is larger than this server accepts, {limit} bytes; send a \
         smaller one, or run the server with a larger --max-message-bytes \
         (INTEGRATION_MAX_MESSAGE_BYTES)"
    )
}

/// The size tonic found, from its (percent-encoded) message "... found N
/// bytes, the limit is: M bytes".
fn found_bytes(message: &[u8]) -> Option<u64> {
    let message = percent_encoding::percent_decode(message).decode_utf8_lossy();
    let (_, after) = message.split_once("found ")?;
    after.split_whitespace().next()?.parse().ok()
}

/// Whether a (percent-encoded) `grpc-message` is one of tonic's complaints
/// about the framing of a received message.
fn is_broken_framing(message: &[u8]) -> bool {
    let message = percent_encoding::percent_decode(message).decode_utf8_lossy();
    message.starts_with("Unexpected EOF decoding stream")
        || message.starts_with("protocol error: received message with")
}

/// What a caller with a broken frame is told. `grpc-message` allows printable
/// ASCII as it is (but `%`).
const BROKEN_FRAMING: &str = "the request is not a well-formed gRPC message: each message is a \
     flag byte (0 = uncompressed), a 4-byte big-endian length, then that many bytes, and the \
     body ended early or the flag byte was wrong";

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: Code, message: &str) -> http::Response<()> {
        Status::new(code, message).into_http()
    }

    fn code_of(response: &http::Response<()>) -> Option<&HeaderValue> {
        response.headers().get(GRPC_STATUS)
    }

    #[test]
    fn the_size_rejection_becomes_resource_exhausted_and_names_the_setting() {
        let response = corrected_status(
            answer(
                Code::OutOfRange,
                "Error, decoded message length too large: found 20000 bytes, the limit is: 16384 \
                 bytes",
            ),
            16384,
        );
        assert_eq!(
            code_of(&response),
            Some(&HeaderValue::from(Code::ResourceExhausted as i32))
        );
        let told = response.headers().get(GRPC_MESSAGE).expect("a message");
        let told = told.to_str().expect("ASCII");
        assert!(told.contains("(20000 bytes)"), "{told}");
        assert!(told.contains("16384 bytes"), "{told}");
        assert!(told.contains("--max-message-bytes"), "{told}");
        let unknown = corrected_status(answer(Code::OutOfRange, "too large"), 100);
        let told = unknown.headers().get(GRPC_MESSAGE).expect("a message");
        assert!(told.to_str().expect("ASCII").contains("accepts, 100 bytes"));
    }

    #[test]
    fn broken_framing_becomes_invalid_argument_with_a_message_that_says_why() {
        for message in [
            "Unexpected EOF decoding stream.",
            "protocol error: received message with invalid compression flag: 7 (valid flags are \
             0 and 1), while sending request",
        ] {
            let response = corrected_status(answer(Code::Internal, message), 16384);
            assert_eq!(
                code_of(&response),
                Some(&HeaderValue::from(Code::InvalidArgument as i32)),
                "{message}"
            );
            let told = response.headers().get(GRPC_MESSAGE).expect("a message");
            assert!(told.to_str().expect("ASCII").contains("gRPC message"));
        }
    }

    #[test]
    fn the_services_own_internal_errors_stay_internal() {
        let response = corrected_status(
            answer(
                Code::Internal,
                "internal error; the service logged the details",
            ),
            16384,
        );
        assert_eq!(
            code_of(&response),
            Some(&HeaderValue::from(Code::Internal as i32))
        );
    }
}
