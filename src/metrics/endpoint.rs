//! The metrics endpoint: `GET /metrics` in Prometheus' text format over
//! plain HTTP/1.1, on a port of its own so that it can be reached by the
//! scraper and nobody else. Anything else is 404; a method other than GET
//! or HEAD is 405.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::debug;

use super::Sampled;

/// The content type of Prometheus' text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `handle` on `listener` until the returned task is aborted,
/// sampling the gauges before each scrape.
pub fn serve(listener: TcpListener, handle: PrometheusHandle, sampled: Sampled) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            let sampled = sampled.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let answer = answer(&request, &handle, &sampled);
                    async move { Ok::<_, Infallible>(answer) }
                });
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%peer, %error, "metrics connection ended");
                }
            });
        }
    })
}

fn answer(
    request: &Request<Incoming>,
    handle: &PrometheusHandle,
    sampled: &Sampled,
) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    sampled.sample();
    let mut response = Response::new(Full::new(Bytes::from(handle.render())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(TEXT_FORMAT),
    );
    response
}
