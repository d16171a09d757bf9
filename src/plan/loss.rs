//! Pure: which updates would remove messages a stream holds now. Lower limits are
//! enforced at once by the server (the oldest messages go), and a stream switched
//! to interest retention drops what no consumer is interested in. Such an update
//! waits for the user's consent, given per generation of the spec.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, RetentionPolicy};

use super::Violation;

/// What a stream holds, as far as the planner needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Contents {
    pub messages: u64,
    pub bytes: u64,
    /// The age of the oldest message, when there is one.
    pub oldest: Option<Duration>,
    /// Messages per subject, read only when a lower per-subject limit asks for it.
    pub per_subject: Option<Vec<u64>>,
}

/// A limit, with -1 (or any value below 1) for none.
fn limit(value: i64) -> Option<u64> {
    u64::try_from(value).ok().filter(|v| *v > 0)
}

/// Whether `desired` lowers the per-subject limit below what a subject may hold, so
/// that the per-subject counts must be read to know what it would remove.
pub fn needs_subject_counts(desired: &Config, observed: &Config, contents: &Contents) -> bool {
    let (to, from) = (limit(desired.max_messages_per_subject), limit(observed.max_messages_per_subject));
    matches!((to, from), (Some(to), from) if from.is_none_or(|from| to < from) && contents.messages > to)
}

/// The messages `desired` would remove from a stream configured as `observed` that
/// holds `contents`, one violation per field.
pub fn messages_lost(desired: &Config, observed: &Config, contents: &Contents) -> Vec<Violation> {
    let mut lost = Vec::new();
    let lowered = |to: i64, from: i64| limit(to).filter(|to| limit(from).is_none_or(|from| *to < from));
    if let Some(to) = lowered(desired.max_messages, observed.max_messages).filter(|to| contents.messages > *to) {
        let count = contents.messages - to;
        let held = contents.messages;
        lost.push(Violation::new(
            "spec.maxMsgs",
            format!("{to} would remove the {count} oldest of the {held} messages the stream holds"),
        ));
    }
    if let Some(to) = lowered(desired.max_bytes, observed.max_bytes).filter(|to| contents.bytes > *to) {
        let (count, held) = (contents.bytes - to, contents.bytes);
        lost.push(Violation::new(
            "spec.maxBytes",
            format!("{to} would remove at least {count} of the {held} bytes the stream holds"),
        ));
    }
    let age_lowered = !desired.max_age.is_zero() && (observed.max_age.is_zero() || desired.max_age < observed.max_age);
    if let Some(oldest) = contents.oldest.filter(|oldest| age_lowered && *oldest > desired.max_age) {
        let (to, oldest) = (crate::api::GoDuration(desired.max_age), crate::api::GoDuration(truncated(oldest)));
        lost.push(Violation::new(
            "spec.maxAge",
            format!("{to} would remove every message older than {to}; the oldest is {oldest} old"),
        ));
    }
    if let (Some(to), Some(counts)) =
        (lowered(desired.max_messages_per_subject, observed.max_messages_per_subject), &contents.per_subject)
    {
        let count: u64 = counts.iter().map(|n| n.saturating_sub(to)).sum();
        if count > 0 {
            let held = contents.messages;
            let why = format!("{to} would remove {count} of the {held} messages, from subjects holding more than {to}");
            lost.push(Violation::new("spec.maxMsgsPerSubject", why));
        }
    }
    let to_interest = desired.retention == RetentionPolicy::Interest && observed.retention == RetentionPolicy::Limits;
    if to_interest && contents.messages > 0 {
        let held = contents.messages;
        lost.push(Violation::new("spec.retention", format!("interest would remove those of the {held} messages the stream holds that no consumer is interested in (all of them without consumers)")));
    }
    lost
}

/// Whole seconds: an age is shown, not computed with.
fn truncated(age: Duration) -> Duration {
    Duration::from_secs(age.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        let spec: crate::api::stream::StreamSpec = serde_saphyr::from_str(yaml).expect("a spec");
        crate::plan::stream::DesiredStream::from_spec(&spec, "s", "ns/s").expect("valid").config
    }

    fn holding(messages: u64, bytes: u64) -> Contents {
        Contents { messages, bytes, oldest: Some(Duration::from_secs(3 * 3600)), per_subject: None }
    }

    fn fields(lost: &[Violation]) -> Vec<&str> {
        lost.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn lower_limits_than_what_is_stored_lose_messages_and_say_how_many() {
        let (from, to) = (config("{}"), config("maxMsgs: 1\nmaxBytes: 100\nmaxAge: 1h\nretention: interest\n"));
        let lost = messages_lost(&to, &from, &holding(1000, 5000));
        assert_eq!(fields(&lost), ["spec.maxMsgs", "spec.maxBytes", "spec.maxAge", "spec.retention"]);
        assert!(lost[0].message.contains("the 999 oldest of the 1000"), "{}", lost[0].message);
        assert!(lost[2].message.contains("the oldest is 3h old"), "{}", lost[2].message);
    }

    #[test]
    fn limits_above_what_is_stored_or_raised_limits_lose_nothing() {
        let (from, to) = (config("maxMsgs: 10\n"), config("maxMsgs: 2000\nmaxBytes: 1000000\nmaxAge: 24h\n"));
        assert!(messages_lost(&to, &from, &holding(1000, 5000)).is_empty());
        assert!(messages_lost(&from, &to, &Contents::default()).is_empty(), "an empty stream loses nothing");
    }

    #[test]
    fn a_lower_per_subject_limit_counts_what_each_subject_holds_beyond_it() {
        let (from, to) = (config("{}"), config("maxMsgsPerSubject: 5\n"));
        let mut contents = holding(30, 300);
        assert!(needs_subject_counts(&to, &from, &contents));
        contents.per_subject = Some(vec![20, 5, 3, 2]);
        let lost = messages_lost(&to, &from, &contents);
        assert_eq!(fields(&lost), ["spec.maxMsgsPerSubject"]);
        assert!(lost[0].message.contains("remove 15 of the 30"), "{}", lost[0].message);
        contents.per_subject = Some(vec![5, 5]);
        assert!(messages_lost(&to, &from, &contents).is_empty());
        assert!(!needs_subject_counts(&to, &from, &holding(4, 40)), "fewer messages than the limit");
    }
}
