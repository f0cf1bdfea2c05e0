//! Counts every gRPC call by method and status, and times it from its
//! request headers to its status: a status in the response headers (a
//! trailers-only answer, as every error is) or in the trailers at the end
//! of the body. A call whose body is dropped before its status (the caller
//! went away) counts as CANCELLED.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::Frame;
use metrics::{counter, histogram};
use tonic::body::Body;
use tonic::codegen::Service;
use tower::Layer;

use super::{REQUEST_DURATION, REQUESTS};
use crate::request_id::RequestSpan;

/// Every method a label may name; any other path is `unknown`.
const METHODS: [&str; 16] = [
    "/centralauth.integration.v1.IntegrationService/CreateIntegration",
    "/centralauth.integration.v1.IntegrationService/GetIntegration",
    "/centralauth.integration.v1.IntegrationService/GenerateSecret",
    "/centralauth.integration.v1.IntegrationService/ActivateSecret",
    "/centralauth.integration.v1.IntegrationService/ValidateClient",
    "/centralauth.integration.v1.IntegrationService/UpdateDomain",
    "/centralauth.integration.v1.IntegrationService/VerifyDomain",
    "/centralauth.integration.v1.IntegrationService/ListSecrets",
    "/centralauth.integration.v1.IntegrationService/RevokeSecret",
    "/centralauth.integration.v1.IntegrationService/ListAuditEvents",
    "/centralauth.integration.v1.IntegrationService/WatchIntegrations",
    "/centralauth.integration.v1.IntegrationService/DeleteIntegration",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// A call's method: its path for the methods served, `unknown` otherwise.
/// The request-id layer finds it once and leaves it in the request's
/// extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method(&'static str);

impl Method {
    pub fn of(path: &str) -> Self {
        Self(
            METHODS
                .iter()
                .find(|method| **method == path)
                .map_or("unknown", |method| method),
        )
    }

    /// Whether this is ValidateClient, the gateway's hot path.
    pub fn is_hot_path(self) -> bool {
        self.0.ends_with("IntegrationService/ValidateClient")
    }

    /// The name after the last `/` (`ValidateClient`), as labels and logs
    /// name it; `unknown` for a path not served.
    pub fn name(self) -> &'static str {
        self.0.rsplit_once('/').map_or(self.0, |(_, name)| name)
    }

    /// The fully qualified name, `package.Service/Method`, as a span is
    /// named; `unknown` for a path not served.
    pub fn full_name(self) -> &'static str {
        self.0.strip_prefix('/').unwrap_or(self.0)
    }

    /// The service's fully qualified name; `unknown` for a path not served.
    pub fn service(self) -> &'static str {
        self.full_name()
            .split_once('/')
            .map_or(self.0, |(service, _)| service)
    }
}

/// The canonical name of a gRPC status code, as the spec writes it.
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_in(headers: &HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|value| tonic::Code::from_bytes(value.as_bytes()))
}

/// The layer, outside the handlers, authentication and the codec, so that
/// calls refused before a handler are counted too.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestMetricsLayer;

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestMetrics<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RequestMetrics<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let method = match request.extensions().get::<Method>() {
            Some(method) => *method,
            None => Method::of(request.uri().path()),
        };
        let call = Call {
            method: method.name(),
            started: Instant::now(),
            done: false,
            span: request.extensions_mut().remove::<RequestSpan>(),
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let mut call = call;
            if let Some(code) = status_in(response.headers()) {
                call.finish(code);
                return Ok(response);
            }
            Ok(response.map(|body| Body::new(Observed { inner: body, call })))
        })
    }
}

/// A call whose status is not yet known.
struct Call {
    method: &'static str,
    started: Instant,
    done: bool,
    /// The call's exported span, while spans are exported: it ends with
    /// the status, which it records.
    span: Option<RequestSpan>,
}

impl Call {
    fn finish(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        counter!(REQUESTS, "method" => self.method, "code" => code_label(code)).increment(1);
        histogram!(REQUEST_DURATION, "method" => self.method)
            .record(self.started.elapsed().as_secs_f64());
        if let Some(span) = self.span.take() {
            span.finish(code, code_label(code));
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

/// A response body that reports the status its trailers carry.
struct Observed {
    inner: Body,
    call: Call,
}

impl http_body::Body for Observed {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    self.call.finish(code);
                }
            }
            Some(Err(status)) => self.call.finish(status.code()),
            None => self.call.finish(tonic::Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method_label(path: &str) -> &'static str {
        Method::of(path).name()
    }

    #[test]
    fn only_the_methods_served_are_labels() {
        assert_eq!(
            method_label("/centralauth.integration.v1.IntegrationService/ValidateClient"),
            "ValidateClient"
        );
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(method_label("/attacker/chosen-0123456789"), "unknown");
        assert_eq!(
            method_label("/centralauth.integration.v1.IntegrationService/Nope"),
            "unknown"
        );
    }

    #[test]
    fn spans_name_the_method_in_full() {
        let method = Method::of("/centralauth.integration.v1.IntegrationService/ValidateClient");
        assert_eq!(
            method.full_name(),
            "centralauth.integration.v1.IntegrationService/ValidateClient"
        );
        assert_eq!(
            method.service(),
            "centralauth.integration.v1.IntegrationService"
        );
        let unknown = Method::of("/attacker/chosen");
        assert_eq!(
            (unknown.full_name(), unknown.service(), unknown.name()),
            ("unknown", "unknown", "unknown")
        );
    }

    #[test]
    fn codes_are_named_as_the_spec_names_them() {
        assert_eq!(code_label(tonic::Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(code_label(tonic::Code::Ok), "OK");
    }
}
