//! Every call's request id: the caller's `x-request-id` when it sends a
//! usable one, a new UUID otherwise. Every log line of the call carries it
//! (the call runs inside a `request` span with it and the method), and the
//! response's metadata returns it, so a caller can quote it to an operator.
//!
//! ValidateClient, the gateway's hot path, runs without the span unless
//! DEBUG is logged (or spans are exported): its one log line, if any,
//! carries `request_id` as a field of its own.
//!
//! While spans are exported (`--otlp-endpoint`), the `request` span is also
//! the call's OpenTelemetry server span: named after the method, a child of
//! the caller's `traceparent`, with the gRPC status it ended with.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use opentelemetry::trace::Status;
use tonic::codegen::Service;
use tower::Layer;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::requests::Method;
use crate::telemetry;

/// The header, in requests and responses.
pub const HEADER: &str = "x-request-id";

/// The longest id taken from a caller; a longer one is replaced.
const LONGEST: usize = 128;

/// The caller's id if it is 1 to [`LONGEST`] visible ASCII characters
/// (what a log line can carry as it is), else a new one.
fn request_id(sent: Option<&HeaderValue>) -> HeaderValue {
    sent.filter(|value| {
        let bytes = value.as_bytes();
        !bytes.is_empty() && bytes.len() <= LONGEST && bytes.iter().all(u8::is_ascii_graphic)
    })
    .cloned()
    .unwrap_or_else(new_id)
}

/// A new id in UUID form: this process's random half, then a count. Unique
/// without asking the OS for randomness on every call (a system call on
/// the hot path); ids only need to be unique, not unguessable.
fn new_id() -> HeaderValue {
    static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&process.to_be_bytes());
    bytes[8..].copy_from_slice(&count.to_be_bytes());
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    HeaderValue::from_str(
        id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    )
    .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestId { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestId<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = request_id(request.headers().get(HEADER));
        // Found once per call; the metrics layer inside reads it.
        let method = Method::of(request.uri().path());
        request.extensions_mut().insert(method);
        let request_id = id.to_str().unwrap_or_default();
        let span = if telemetry::exporting() {
            let span = tracing::info_span!(
                "request",
                request_id,
                method = method.name(),
                otel.name = method.full_name(),
                otel.kind = "server",
            );
            // An invalid or absent traceparent leaves the span a root.
            let _ = span.set_parent(telemetry::caller_context(request.headers()));
            span.set_attribute("rpc.system", "grpc");
            span.set_attribute("rpc.service", method.service());
            span.set_attribute("rpc.method", method.name());
            // The metrics layer ends it with the call's status.
            request.extensions_mut().insert(RequestSpan(span.clone()));
            span
        } else if method.is_hot_path() && !tracing::enabled!(tracing::Level::DEBUG) {
            // The gateway's check answers without a span: a span costs its
            // fields' formatting and its bookkeeping on every poll, a
            // quarter of a warm check's CPU, and the check logs one line at
            // most, which carries the id itself.
            request.extensions_mut().insert(Unspanned(id.clone()));
            tracing::Span::none()
        } else {
            tracing::info_span!("request", request_id, method = method.name())
        };
        let answer = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let mut response = answer.await?;
            // Unique to the call: kept out of HPACK's dynamic table, where
            // it would only push out the headers every answer repeats.
            let mut id = id;
            id.set_sensitive(true);
            response.headers_mut().insert(HEADER, id);
            Ok(response)
        })
    }
}

/// The request id of a call that runs without a `request` span: its
/// handler puts it on the call's log line.
#[derive(Debug, Clone)]
pub struct Unspanned(HeaderValue);

impl Unspanned {
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

/// A call's exported span, held until the call's status is known.
#[derive(Debug, Clone)]
pub struct RequestSpan(tracing::Span);

impl RequestSpan {
    /// Records the call's gRPC status and lets the span end. As
    /// OpenTelemetry's conventions for a gRPC server have it, the codes that
    /// mean the server failed mark the span as an error; a caller's mistake
    /// (`NOT_FOUND`, `INVALID_ARGUMENT`, …) does not.
    pub fn finish(self, code: tonic::Code, name: &'static str) {
        use tonic::Code::*;
        self.0.set_attribute("rpc.grpc.status_code", code as i64);
        if matches!(
            code,
            Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
        ) {
            self.0.set_status(Status::error(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_id_is_kept_and_anything_else_replaced() {
        let kept = HeaderValue::from_static("req-42.abc");
        assert_eq!(request_id(Some(&kept)), kept);
        for unusable in [
            HeaderValue::from_static(""),
            HeaderValue::from_static("has space"),
            HeaderValue::from_str(&"x".repeat(LONGEST + 1)).expect("ASCII"),
        ] {
            let replaced = request_id(Some(&unusable));
            assert_ne!(replaced, unusable);
            assert!(uuid::Uuid::parse_str(replaced.to_str().expect("ASCII")).is_ok());
        }
        let (first, second) = (request_id(None), request_id(None));
        assert_ne!(first, second, "every new id is another");
        assert!(uuid::Uuid::parse_str(first.to_str().expect("ASCII")).is_ok());
    }
}
