//! Every call's request id: the caller's `x-request-id` when it sends a
//! usable one, a new UUID otherwise. Every log line of the call carries it
//! (the call runs inside a `request` span with it and the method), and the
//! response's metadata returns it, so a caller can quote it to an operator.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tonic::codegen::Service;
use tower::Layer;
use tracing::Instrument;

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
    .unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    })
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
        request.headers_mut().insert(HEADER, id.clone());
        let span = tracing::info_span!(
            "request",
            request_id = id.to_str().unwrap_or_default(),
            method = crate::metrics::requests::method_label(request.uri().path()),
        );
        let answer = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let mut response = answer.await?;
            response.headers_mut().insert(HEADER, id);
            Ok(response)
        })
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
        assert!(uuid::Uuid::parse_str(request_id(None).to_str().expect("ASCII")).is_ok());
    }
}
