//! Logs and traces of the `corral` process: a `tracing` subscriber that writes logs (pretty or
//! JSON, filtered by `CORRAL_LOG` / `RUST_LOG`) and, with an OTLP endpoint, exports the spans
//! of target [`corral_adapter_nats::trace::TARGET`] to an OpenTelemetry collector.
//!
//! Export never blocks the data path: ended spans go into the SDK's bounded batch queue (a
//! full queue drops them) and a dedicated thread posts batches with a blocking HTTP client
//! (built before the async runtime exists, as that client requires). A collector that is down
//! costs the failed batches, counted in `corral_trace_spans_total{outcome="dropped"}`.

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use corral_adapter_nats::trace::{TARGET, span_counts};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor},
};
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::Targets, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

use crate::LogFormat;

/// How long the exporter may take to post one batch (unless `OTEL_EXPORTER_OTLP_TIMEOUT` says
/// otherwise): short, so a stuck collector holds at most a few batches and a clean exit waits
/// little.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a clean exit waits for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// What [`init`] set up; [`Telemetry::shutdown`] flushes the spans still queued.
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still queued, waiting at most a few seconds.
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            tracing::warn!(%err, "trace export did not finish at exit");
        }
    }
}

/// The OTLP endpoint to export to: `--otlp-endpoint`, else the standard variables; `None`
/// turns trace export off.
fn endpoint(flag: Option<String>) -> Option<Endpoint> {
    if let Some(base) = flag.filter(|f| !f.is_empty()) {
        return Some(Endpoint::Base(base));
    }
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|e| !e.is_empty()))
    .then_some(Endpoint::FromEnvironment)
}

enum Endpoint {
    /// A collector's base URL (`http://collector:4318`); traces go to `/v1/traces` under it.
    Base(String),
    /// The SDK reads `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    FromEnvironment,
}

/// Installs the process's subscriber: logs always, traces to `otlp` (or the standard
/// variables) as service `service` (unless `OTEL_SERVICE_NAME` names another). A trace setup
/// that fails (a bad endpoint, an unsupported protocol) is an error: the operator asked for it.
pub(crate) fn init(
    format: LogFormat,
    default_level: &str,
    service: Option<&str>,
    otlp: Option<String>,
) -> anyhow::Result<Telemetry> {
    let filter = std::env::var("CORRAL_LOG")
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    let ansi = std::io::stderr().is_terminal();
    let logs = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let (traces, provider) = match (service, endpoint(otlp)) {
        (Some(service), Some(endpoint)) => {
            let provider = tracer_provider(service, endpoint)?;
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("corral"))
                .with_threads(false)
                .with_location(false)
                .with_filter(Targets::new().with_target(TARGET, tracing::Level::DEBUG));
            (Some(layer), Some(provider))
        }
        _ => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()?;
    if provider.is_some() {
        tracing::info!(service, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

fn tracer_provider(service: &str, endpoint: Endpoint) -> anyhow::Result<SdkTracerProvider> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Endpoint::Base(base) = &endpoint {
        builder = builder.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let protocol_set = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok());
    match protocol_set.as_deref() {
        // The standard default; the SDK would pick JSON because that feature is built in.
        None => builder = builder.with_protocol(Protocol::HttpBinary),
        Some("http/protobuf" | "http/json") => {}
        Some(other) => anyhow::bail!(
            "OTLP protocol {other:?} is not supported: use http/protobuf (the default) or http/json"
        ),
    }
    if std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT").is_err()
        && std::env::var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_err()
    {
        builder = builder.with_timeout(EXPORT_TIMEOUT);
    }
    let exporter = CountingExporter {
        inner: builder.build()?,
        failing: AtomicBool::new(false),
    };
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_owned());
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    // The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default: parent
    // based, always on).
    Ok(SdkTracerProvider::builder()
        .with_span_processor(CountingProcessor(
            BatchSpanProcessor::builder(exporter).build(),
        ))
        .with_resource(resource)
        .build())
}

/// Counts the spans whose batch the collector accepted or that were lost with a failed one,
/// and says when export starts failing and when it works again (not once per batch).
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        let outcome = if result.is_ok() {
            "exported"
        } else {
            "dropped"
        };
        span_counts().with_label_values(&[outcome]).inc_by(n);
        let failing = result.is_err();
        if self.failing.swap(failing, Ordering::Relaxed) != failing {
            match &result {
                Err(err) => tracing::warn!(
                    %err,
                    "trace export failing: spans are dropped until the collector answers"
                ),
                Ok(()) => tracing::info!("trace export works again"),
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts the spans that ended (and were handed to the batch queue).
#[derive(Debug)]
struct CountingProcessor<P>(P);

impl<P: SpanProcessor> SpanProcessor for CountingProcessor<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        span_counts().with_label_values(&["ended"]).inc();
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}
