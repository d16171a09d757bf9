//! The dead-letter contract: what a dead letter carries, written once for the two that
//! move messages to a dead-letter subject, a worker on its last delivery and the
//! operator's forwarder for a Consumer's `spec.deadLetter`, so a dead letter reads the
//! same whoever moved it and one message is dead-lettered once.

use async_nats::HeaderMap;

pub const ORIGIN_STREAM: &str = "Jetway-Origin-Stream";
pub const ORIGIN_SEQUENCE: &str = "Jetway-Origin-Sequence";
pub const ORIGIN_SUBJECT: &str = "Jetway-Origin-Subject";
/// Set by the operator's forwarder, which knows the consumer; a worker may read several.
pub const ORIGIN_CONSUMER: &str = "Jetway-Origin-Consumer";
pub const DELIVERIES: &str = "Jetway-Deliveries";
pub const REASON: &str = "Jetway-Dead-Letter-Reason";

/// The reason a worker gives the server when it terminates a message it dead-lettered
/// itself (`+TERM <reason>`); the server repeats it in its MSG_TERMINATED advisory, and
/// the operator's forwarder leaves such a message alone.
pub const MOVED_BY_WORKER: &str = "jetway-dead-lettered";

/// Where a dead letter came from and why it is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin<'a> {
    pub stream: &'a str,
    pub sequence: u64,
    pub subject: &'a str,
    pub consumer: Option<&'a str>,
    pub deliveries: u64,
    pub reason: &'a str,
}

impl Origin<'_> {
    /// The dead letter's `Nats-Msg-Id`: one per origin message, whoever publishes it.
    pub fn message_id(&self) -> String {
        format!("{}:{}:dead-letter", self.stream, self.sequence)
    }

    /// The dead letter's headers: the original's (`original`), but for those that steer
    /// how the server stores a publish (`Nats-*`: expectations, message id, rollup,
    /// TTL), which would make the copy's publish fail or be dropped; then the origin.
    pub fn headers(&self, original: Option<&HeaderMap>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, values) in original.into_iter().flat_map(HeaderMap::iter) {
            let name_text: &str = name.as_ref();
            if name_text.get(..5).is_some_and(|prefix| prefix.eq_ignore_ascii_case("nats-")) {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        self.stamp(&mut headers);
        headers
    }

    /// Adds the origin headers and the message id to `headers`.
    fn stamp(&self, headers: &mut HeaderMap) {
        headers.insert(ORIGIN_STREAM, self.stream);
        headers.insert(ORIGIN_SEQUENCE, self.sequence.to_string().as_str());
        headers.insert(ORIGIN_SUBJECT, self.subject);
        if let Some(consumer) = self.consumer {
            headers.insert(ORIGIN_CONSUMER, consumer);
        }
        headers.insert(DELIVERIES, self.deliveries.to_string().as_str());
        headers.insert(REASON, one_line(self.reason).as_str());
        headers.insert(async_nats::header::NATS_MESSAGE_ID, self.message_id().as_str());
    }
}

/// Header values are one line.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_names_its_origin_in_headers_and_is_identified_by_it() {
        let origin = Origin {
            stream: "ORDERS",
            sequence: 42,
            subject: "orders.created.v1.c-1.o-1",
            consumer: Some("payment"),
            deliveries: 5,
            reason: "gave up:\nline two",
        };
        let mut original = HeaderMap::new();
        original.insert("Traceparent", "00-abc-def-01");
        original.insert("Nats-Expected-Last-Subject-Sequence", "0");
        original.insert("Nats-Msg-Id", "the-original");
        let headers = origin.headers(Some(&original));
        let header = |name: &str| headers.get(name).map(|value| value.as_str().to_owned());
        assert_eq!(header(ORIGIN_STREAM).as_deref(), Some("ORDERS"));
        assert_eq!(header(ORIGIN_SEQUENCE).as_deref(), Some("42"));
        assert_eq!(header(ORIGIN_SUBJECT).as_deref(), Some("orders.created.v1.c-1.o-1"));
        assert_eq!(header(ORIGIN_CONSUMER).as_deref(), Some("payment"));
        assert_eq!(header(DELIVERIES).as_deref(), Some("5"));
        assert_eq!(header(REASON).as_deref(), Some("gave up: line two"), "one line");
        assert_eq!(header("Nats-Msg-Id").as_deref(), Some("ORDERS:42:dead-letter"));
        assert_eq!(header("Traceparent").as_deref(), Some("00-abc-def-01"), "the original's headers stay");
        assert_eq!(header("Nats-Expected-Last-Subject-Sequence"), None, "but not what steered its publish");
        let worker = Origin { consumer: None, deliveries: 1, reason: "other", ..origin.clone() };
        assert_eq!(worker.message_id(), origin.message_id(), "one id per origin message, whoever moves it");
    }
}
