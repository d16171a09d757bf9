//! W3C trace context (`traceparent` and `tracestate`) read from and written to HTTP
//! and NATS headers, so one order's trace runs from the HTTP request at intake through
//! every worker as one tree. The spans are `tracing` spans; `jetway_runtime::telemetry`
//! gives them their ids and exports them when asked to. Each span that continues a
//! trace records its `trace_id`, so log lines of one order can be joined as well.

use opentelemetry::propagation::{Extractor, Injector};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header name, the same in HTTP and in NATS.
pub const TRACEPARENT: &str = "traceparent";

/// Makes `span` (just created, not yet entered, with an empty `trace_id` field) a
/// child of the span whose context `headers` carry; without one (or with one that
/// does not parse, which the spec says to treat the same way) it starts a new trace.
pub fn continue_from(span: &Span, headers: &impl Extractor) {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(headers));
    // Only fails for a span the telemetry layer does not see (no subscriber, as in
    // unit tests): it then has no trace to join either.
    let _ = span.set_parent(parent);
    let context = span.context();
    let span_context = opentelemetry::trace::TraceContextExt::span(&context).span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
}

/// Puts the current span's context on `headers`, for the next process to continue.
pub fn inject(headers: &mut async_nats::HeaderMap) {
    let context = Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut Nats(headers))
    });
}

/// The current span's context as HTTP headers, for a call to another service.
pub fn http_headers() -> axum::http::HeaderMap {
    let context = Span::current().context();
    let mut headers = axum::http::HeaderMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut opentelemetry_http::HeaderInjector(&mut headers))
    });
    headers
}

/// NATS headers, read by the propagator.
pub struct NatsHeaders<'a>(pub &'a async_nats::HeaderMap);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

struct Nats<'a>(&'a mut async_nats::HeaderMap);

impl Injector for Nats<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// No headers: a new trace.
pub struct NoHeaders;

impl Extractor for NoHeaders {
    fn get(&self, _: &str) -> Option<&str> {
        None
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::prelude::*;

    use super::*;

    /// Runs `body` under a subscriber that gives spans OpenTelemetry ids, as
    /// `jetway_runtime::telemetry::init` installs in every process.
    fn traced<T>(body: impl FnOnce() -> T) -> T {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, body)
    }

    fn carried(incoming: &async_nats::HeaderMap) -> async_nats::HeaderMap {
        let span = tracing::info_span!("message", trace_id = tracing::field::Empty);
        continue_from(&span, &NatsHeaders(incoming));
        let mut outgoing = async_nats::HeaderMap::new();
        span.in_scope(|| inject(&mut outgoing));
        outgoing
    }

    #[test]
    fn a_child_keeps_the_trace_and_its_state_and_gets_a_new_span() {
        let mut incoming = async_nats::HeaderMap::new();
        incoming.insert(TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        incoming.insert("tracestate", "vendor=abc,other=1");
        let outgoing = traced(|| carried(&incoming));
        let traceparent = outgoing.get(TRACEPARENT).unwrap().as_str();
        assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{traceparent}");
        assert!(!traceparent.contains("00f067aa0ba902b7"), "{traceparent}");
        assert!(traceparent.ends_with("-01"), "{traceparent}");
        assert_eq!(outgoing.get("tracestate").unwrap().as_str(), "vendor=abc,other=1");
    }

    #[test]
    fn invalid_or_missing_headers_start_a_new_trace() {
        for header in [
            None,
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Some("garbage"),
        ] {
            let mut incoming = async_nats::HeaderMap::new();
            if let Some(header) = header {
                incoming.insert(TRACEPARENT, header);
            }
            let outgoing = traced(|| carried(&incoming));
            let traceparent = outgoing.get(TRACEPARENT).map(|value| value.as_str().to_owned()).unwrap_or_default();
            assert_eq!(traceparent.len(), 55, "{header:?} gave {traceparent:?}");
            assert!(!traceparent.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{header:?} gave {traceparent:?}");
        }
    }
}
