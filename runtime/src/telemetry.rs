//! Logging, human-readable for terminals or JSON for log pipelines, and spans exported
//! over OTLP when the standard `OTEL_*` variables ask for it.
//!
//! Spans are the `tracing` spans the code opens; the OpenTelemetry bridge gives each a
//! W3C trace and span id whether or not anything is exported, so the `traceparent` and
//! `tracestate` a process puts on what it sends always continue the trace it received.
//! Export starts when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_SDK_DISABLED` and
//! `OTEL_TRACES_EXPORTER=none` do not turn it off); the exporter itself reads the
//! endpoint, headers, timeout and compression variables, the SDK the sampler
//! (`OTEL_TRACES_SAMPLER`, parent-based always-on by default), and the resource reads
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::prelude::*;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, global = true, env = "JETWAY_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Which logs to print, as a tracing filter such as `info` or `info,jetway=debug`.
    /// Exported spans are chosen separately: every span at info or above.
    #[arg(long, global = true, env = "JETWAY_LOG", default_value = "info,async_nats=warn")]
    pub log_filter: String,
}

/// Where spans go; flushes what is still buffered when dropped.
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// The endpoint spans are sent to, when they are sent.
    pub exporting_to: Option<String>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if self.exporting_to.is_some()
            && let Err(error) = self.provider.shutdown()
        {
            eprintln!("spans not all exported: {error}");
        }
    }
}

/// Installs the global subscriber and trace propagator for the process named
/// `service` (the `service.name` spans carry unless `OTEL_SERVICE_NAME` says
/// otherwise). Fails on a log filter that does not parse and on an OTLP setting this
/// build cannot honour, before the process starts work.
pub fn init(args: &LogArgs, service: &'static str) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(&args.log_filter)?;
    let exporting_to = otlp_endpoint(|name| std::env::var(name).ok())?;
    let mut provider = SdkTracerProvider::builder().with_resource(resource(service));
    if exporting_to.is_some() {
        // One process-wide TLS provider for an https endpoint, the one kube uses too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exporter = SpanExporter::builder().with_http().build().context("the OTLP span exporter")?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let spans = tracing_opentelemetry::layer().with_tracer(provider.tracer("jetway")).with_filter(
        Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target("opentelemetry", LevelFilter::OFF)
            // Its span covers starting a reconcile, not running it: the operator's
            // own `reconcile` span is the one exported.
            .with_target("kube_runtime", LevelFilter::OFF),
    );
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match args.log_format {
        LogFormat::Human => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).boxed(),
    };
    tracing_subscriber::registry().with(logs.with_filter(filter)).with(spans).try_init()?;
    if let Some(endpoint) = &exporting_to {
        tracing::info!(%endpoint, "exporting spans over OTLP");
    }
    Ok(Telemetry { provider, exporting_to })
}

fn resource(service: &'static str) -> Resource {
    let resource = Resource::builder();
    match std::env::var_os("OTEL_SERVICE_NAME") {
        Some(_) => resource.build(),
        None => resource.with_service_name(service).build(),
    }
}

/// The OTLP endpoint the environment names, when export is on; an error for a
/// protocol other than `http/protobuf`, which is the one this build speaks.
fn otlp_endpoint(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<String>> {
    let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
    let disabled = set("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|value| value.trim().eq_ignore_ascii_case("none"));
    let endpoint = match set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some(traces) => traces,
        None => match set("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(base) => format!("{}/v1/traces", base.trim_end_matches('/')),
            None => return Ok(None),
        },
    };
    if disabled {
        return Ok(None);
    }
    if let Some(exporter) = set("OTEL_TRACES_EXPORTER").filter(|value| value.trim() != "otlp") {
        bail!("OTEL_TRACES_EXPORTER={exporter}: this build exports spans with otlp only (or none)");
    }
    for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(protocol) = set(name) {
            if protocol.trim() != "http/protobuf" {
                bail!("{name}={protocol}: this build speaks OTLP over http/protobuf only (the collector's port 4318)");
            }
            break;
        }
    }
    Ok(Some(endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(vars: &[(&str, &str)]) -> anyhow::Result<Option<String>> {
        otlp_endpoint(|name| vars.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned()))
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_named() {
        assert_eq!(endpoint(&[]).unwrap(), None);
        assert_eq!(endpoint(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(), None);
        assert_eq!(endpoint(&[("OTEL_TRACES_EXPORTER", "otlp")]).unwrap(), None);
    }

    #[test]
    fn the_traces_endpoint_is_used_as_given_and_the_base_gets_the_signal_path() {
        let base = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")];
        assert_eq!(endpoint(&base).unwrap().as_deref(), Some("http://collector:4318/v1/traces"));
        let both = [base[0], ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://tempo/otlp/traces")];
        assert_eq!(endpoint(&both).unwrap().as_deref(), Some("https://tempo/otlp/traces"));
    }

    #[test]
    fn export_can_be_turned_off() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(endpoint(&[base, ("OTEL_SDK_DISABLED", "TRUE")]).unwrap(), None);
        assert_eq!(endpoint(&[base, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(), None);
    }

    #[test]
    fn settings_this_build_cannot_honour_are_refused_by_name() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        let grpc = endpoint(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err().to_string();
        assert!(grpc.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "{grpc}");
        let zipkin = endpoint(&[base, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err().to_string();
        assert!(zipkin.starts_with("OTEL_TRACES_EXPORTER=zipkin"), "{zipkin}");
        // The signal's own protocol wins over the general one.
        let signal =
            [base, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        assert!(endpoint(&signal).unwrap().is_some());
    }
}
