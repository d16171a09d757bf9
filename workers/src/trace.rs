//! W3C trace context (`traceparent`) carried in NATS headers, so one order's trace
//! runs from the HTTP request at intake through every worker. Only the header format
//! is implemented here; exporting spans is left to whatever collector a user runs,
//! and the trace id is put on every log line so logs of one order can be joined.

use std::fmt;

use rand::Rng;

/// The header name, the same in HTTP and in NATS.
pub const TRACEPARENT: &str = "traceparent";

/// One span's place in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
}

impl TraceContext {
    /// The start of a new trace.
    pub fn root() -> Self {
        let mut rng = rand::rng();
        Self { trace_id: rng.random_range(1..=u128::MAX), span_id: rng.random_range(1..=u64::MAX), sampled: true }
    }

    /// A span in the same trace whose parent is this one.
    pub fn child(&self) -> Self {
        Self { span_id: rand::rng().random_range(1..=u64::MAX), ..*self }
    }

    /// The child of the incoming context, or a new trace when there is none (or it
    /// does not parse, which the spec says to treat the same way).
    pub fn continue_from(header: Option<&str>) -> Self {
        header.and_then(Self::parse).map_or_else(Self::root, |parent| parent.child())
    }

    /// Parses version 00 of `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        fn hex(s: &str, len: usize) -> Option<&str> {
            (s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(s)
        }
        // Future versions may append fields; version ff is invalid.
        if hex(version, 2)? == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let trace_id = u128::from_str_radix(hex(trace, 32)?, 16).ok().filter(|id| *id != 0)?;
        let span_id = u64::from_str_radix(hex(span, 16)?, 16).ok().filter(|id| *id != 0)?;
        let flags = u8::from_str_radix(hex(flags, 2)?, 16).ok()?;
        Some(Self { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// The trace id as 32 hex digits, as log lines carry it.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_keeps_the_trace_and_gets_a_new_span() {
        let parent = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let child = TraceContext::continue_from(Some(&parent.to_string()));
        assert_eq!(child.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(child.span_id, parent.span_id);
        assert!(child.sampled);
    }

    #[test]
    fn it_round_trips_through_its_header() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(TraceContext::parse(header).unwrap().to_string(), header);
    }

    #[test]
    fn invalid_headers_start_a_new_trace() {
        for header in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(header), None, "{header:?}");
        }
        assert_ne!(TraceContext::continue_from(Some("garbage")).trace_id(), "0".repeat(32));
    }

    #[test]
    fn later_versions_are_read_by_their_version_00_fields() {
        let context = TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").unwrap();
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
