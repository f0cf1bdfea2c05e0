//! Logging and tracing: `tracing` events to standard output, filtered by
//! `RUST_LOG`, as plain lines or JSON objects; and, with `--otlp-endpoint`,
//! each call's `request` span to an OpenTelemetry collector over OTLP/gRPC,
//! as a child of the caller's W3C `traceparent` when it sends one.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::config::{LogFormat, TelemetrySettings};

/// What is logged when `RUST_LOG` is unset: the service's events, and only
/// warnings from the database driver, whose statements at INFO would drown
/// them, and from the migrator, whose steps the service logs itself.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,sea_orm_migration=warn";

/// The `service.name` of exported spans unless `OTEL_SERVICE_NAME` says
/// otherwise.
const SERVICE_NAME: &str = "integration-service";

/// Whether spans are exported; read on every call, so that a process that
/// exports nothing does no tracing work beyond its log lines.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether `--otlp-endpoint` is set and spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// What must outlive the process's work: the span exporter, flushed by
/// [`Telemetry::shutdown`].
#[must_use = "call shutdown before exiting, or the last spans are lost"]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued, waiting a few seconds at most.
    pub async fn shutdown(self) {
        let Some(provider) = self.tracer else {
            return;
        };
        // The exporter's own thread sends the last batch; waiting for it
        // blocks, so not on a runtime thread.
        let flushed = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(std::time::Duration::from_secs(5))
        })
        .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot export the last spans"),
            Err(e) => tracing::warn!(error = %e, "cannot export the last spans"),
        }
    }
}

/// Installs the global subscriber. Call once, first thing in `main`, within
/// the Tokio runtime (the exporter's channel runs on it). The logs are set up
/// even when the exporter cannot be, so that the error can be logged.
pub fn init(settings: &TelemetrySettings) -> Result<Telemetry, String> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let logs = match settings.log_format {
        LogFormat::Plain => fmt::layer()
            .with_target(false)
            .with_ansi(colour(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    }
    .with_filter(filter);
    let (tracer, exporter_error) = match &settings.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => match tracer_provider(endpoint) {
            Ok(provider) => (Some(provider), None),
            Err(message) => (None, Some(message)),
        },
    };
    // The service's own spans and events only: RUST_LOG chooses what is
    // logged, not what is traced, and the exporter's own events must not
    // become spans to export.
    let spans = tracer.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE_NAME))
            .with_location(false)
            .with_threads(false)
            .with_filter(Targets::new().with_target("integration_service", Level::INFO))
    });
    tracing_subscriber::registry().with(logs).with(spans).init();
    if let Some(message) = exporter_error {
        return Err(message);
    }
    if let Some(endpoint) = &settings.otlp_endpoint {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(%endpoint, "exporting spans over OTLP");
    }
    Ok(Telemetry { tracer })
}

/// Whether plain log lines are coloured: only on a terminal, and never when
/// `NO_COLOR` is set to anything but the empty string (<https://no-color.org>),
/// so that a file or a pipe gets no escape codes.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

fn tracer_provider(endpoint: &url::Url) -> Result<SdkTracerProvider, String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.as_str());
    if endpoint.scheme() == "https" {
        exporter =
            exporter.with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots());
    }
    let exporter = exporter
        .build()
        .map_err(|e| format!("cannot export spans to {endpoint}: {e}"))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The caller's trace context (`traceparent`, `tracestate`) from a request's
/// headers; empty when it sent none or an invalid one.
pub fn caller_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Headers(headers))
    })
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(std::ffi::OsStr::new(""))));
        assert!(!colour(true, Some(std::ffi::OsStr::new("1"))));
        assert!(!colour(false, None), "a file or a pipe");
    }
}
