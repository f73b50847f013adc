//! The daemon's own telemetry: its log lines (text or JSON, `--log-format`), and spans
//! exported over OTLP (`observability configure-tracing`), switched on, changed and off while
//! it runs.
//!
//! Spans come from `tracing`: every API request (`POST /api/deploy`, named by method and
//! route), and the steps of a deploy under it: `image.pull` (with `image.unpack`), then for
//! each container `container.start` with `container.network`, `container.run` and
//! `container.ready` (which ends when the container first passes its readiness check). The
//! OpenTelemetry layer sits in a reload slot, so a new endpoint replaces the exporter without
//! a restart; the previous one is flushed first.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// The format of the daemon's log lines on standard output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields, spans).
    Json,
}

type ExportSlot = Option<Box<dyn Layer<Registry> + Send + Sync>>;

static EXPORT: OnceLock<reload::Handle<ExportSlot, Registry>> = OnceLock::new();
/// The exporter's provider and the `(service name, endpoint)` it was made for.
static PROVIDER: Mutex<Option<(SdkTracerProvider, (String, String))>> = Mutex::new(None);

/// How often spans are sent, and the most one request carries.
const EXPORT_DELAY: Duration = Duration::from_secs(1);
const EXPORT_BATCH: usize = 512;

/// Installs the process's subscriber: `filter` for everything, log lines in `format`, and an
/// empty slot for the span exporter.
pub fn init(filter: EnvFilter, format: LogFormat) {
    let (export, handle) = reload::Layer::new(None);
    let _ = EXPORT.set(handle);
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            // Colour codes only for a terminal, never into a log file.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(export)
        .with(filter)
        .with(lines)
        .with(ShipLayer)
        .init();
}

/// Whether the daemon's events are collected for the log shipping.
static COLLECT: AtomicBool = AtomicBool::new(false);
/// The events collected since the shipper's last pass, and how many did not fit.
static COLLECTED: Mutex<(VecDeque<serde_json::Value>, usize)> = Mutex::new((VecDeque::new(), 0));
/// Most events kept between two passes of the shipper.
const MAX_COLLECTED: usize = 10_000;

/// Starts (or stops, dropping what waits) collecting the daemon's events for the shipper.
pub fn collect_daemon_events(on: bool) {
    COLLECT.store(on, Ordering::Relaxed);
    if !on {
        *COLLECTED.lock().unwrap_or_else(|p| p.into_inner()) = (VecDeque::new(), 0);
    }
}

/// The daemon's events collected since the last call, and how many were dropped for want of
/// room.
pub fn take_daemon_events() -> (Vec<serde_json::Value>, usize) {
    let mut collected = COLLECTED.lock().unwrap_or_else(|p| p.into_inner());
    let (events, dropped) = std::mem::take(&mut *collected);
    (events.into(), dropped)
}

/// Collects the daemon's events for the log shipping (`shipping`) while it is on, as
/// documents: time, level, target, message, and the other fields under `fields`.
struct ShipLayer;

impl<S: tracing::Subscriber> Layer<S> for ShipLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if !COLLECT.load(Ordering::Relaxed) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let doc = serde_json::json!({
            "@timestamp": crate::logfile::now_rfc3339(),
            "level": metadata.level().as_str(),
            "target": metadata.target(),
            "message": fields.message,
            "fields": fields.rest,
            "source": "daemon",
        });
        let mut collected = COLLECTED.lock().unwrap_or_else(|p| p.into_inner());
        if collected.0.len() >= MAX_COLLECTED {
            collected.1 += 1;
        } else {
            collected.0.push_back(doc);
        }
    }
}

/// An event's fields: its message, and the rest by name.
#[derive(Default)]
struct Fields {
    message: String,
    rest: serde_json::Map<String, serde_json::Value>,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        self.record_value(field, serde_json::Value::String(text));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record_value(field, value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.record_value(field, value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.record_value(field, value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.record_value(field, value.into());
    }
}

impl Fields {
    fn record_value(&mut self, field: &tracing::field::Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = match value {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
        } else {
            self.rest.insert(field.name().to_string(), value);
        }
    }
}

/// The URL spans go to: `endpoint` as given when it names a path (a collector's own, like
/// Jaeger's `/api/traces`), else OTLP's `/v1/traces` under it.
pub fn traces_url(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    match rest.find('/') {
        Some(slash) if rest.len() > slash + 1 => endpoint.to_string(),
        _ => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
    }
}

/// The `(service name, endpoint)` spans go to now, if any.
pub fn exporting() -> Option<(String, String)> {
    PROVIDER
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|(_, to)| to.clone())
}

/// Exports spans as `service_name` to `endpoint` (OTLP over HTTP, protobuf), with `node` as
/// the resource's `host.name`; `None` stops exporting. Nothing changes when that is the export
/// already; otherwise what the previous exporter holds is flushed first. Blocks (the
/// exporter's HTTP client is a blocking one): call it off the async runtime's workers.
pub fn set_export(export: Option<(&str, &str)>, node: &str) -> Result<(), String> {
    let wanted = export.map(|(s, e)| (s.to_string(), e.to_string()));
    let mut slot = PROVIDER.lock().unwrap_or_else(|p| p.into_inner());
    if slot.as_ref().map(|(_, to)| to) == wanted.as_ref() {
        return Ok(());
    }
    let handle = EXPORT
        .get()
        .ok_or("this process did not set up tracing (telemetry::init)")?;
    handle
        .reload(None)
        .map_err(|e| format!("tracing layer: {e}"))?;
    if let Some((previous, _)) = slot.take() {
        // What it still holds goes out now; a collector that is gone only costs the timeout.
        let _ = previous.shutdown();
    }
    let Some((service_name, endpoint)) = export else {
        return Ok(());
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url(endpoint))
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_DELAY)
                .with_max_export_batch_size(EXPORT_BATCH)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_string())
                .with_attribute(KeyValue::new("host.name", node.to_string()))
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("hivemind"))
        .boxed();
    handle
        .reload(Some(layer))
        .map_err(|e| format!("tracing layer: {e}"))?;
    *slot = Some((provider, (service_name.to_string(), endpoint.to_string())));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_endpoint_gets_the_otlp_path_and_a_collector_path_is_kept() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://jaeger:14268/api/traces"),
            "http://jaeger:14268/api/traces"
        );
    }
}
