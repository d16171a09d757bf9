//! What the server does with a stream spec before storing it, so that the planner
//! compares with that: the fields other fields imply, limits as it writes them, and
//! the subjects it accepts.

use std::time::Duration;

use async_nats::jetstream::stream::{self as js, Config};

use crate::api::stream::StreamSpec;
use crate::plan::{Violation, check_subject};

/// Every subject a spec names is one the server accepts, checked before it is asked.
pub(super) fn check_subjects(spec: &StreamSpec, violations: &mut Vec<Violation>) {
    for (i, subject) in spec.subjects.iter().flatten().enumerate() {
        check_subject(subject, true, &format!("spec.subjects[{i}]"), violations);
    }
    if let Some(t) = &spec.subject_transform {
        check_subject(&t.source, true, "spec.subjectTransform.source", violations);
    }
    if let Some(r) = &spec.republish {
        check_subject(&r.source, true, "spec.republish.source", violations);
        check_subject(&r.destination, true, "spec.republish.destination", violations);
    }
    let origins = spec.mirror.iter().map(|m| ("spec.mirror".to_owned(), m));
    let sources = spec.sources.iter().flatten().enumerate().map(|(i, s)| (format!("spec.sources[{i}]"), s));
    for (at, origin) in origins.chain(sources) {
        if let Some(filter) = &origin.filter_subject {
            check_subject(filter, true, &format!("{at}.filterSubject"), violations);
        }
        for (j, t) in origin.subject_transforms.iter().flatten().enumerate() {
            check_subject(&t.source, true, &format!("{at}.subjectTransforms[{j}].source"), violations);
        }
    }
}

/// A limit as the server keeps it: unset, 0 and below -1 all mean unlimited (-1).
pub(super) fn limit(value: Option<i64>) -> i64 {
    value.filter(|v| *v > 0).unwrap_or(-1)
}

/// The server's own rules for fields that other fields imply, applied so that the
/// plan compares with what the server will store. A spec that asks for the opposite
/// of what the server forces is refused naming the field, since the server would
/// never keep it.
pub(super) fn as_the_server_stores(config: &mut Config, spec: &StreamSpec, violations: &mut Vec<Violation>) {
    let mut force = |on: &mut bool, to: bool, asked: Option<bool>, field: &str, why: &str| {
        if asked == Some(!to) {
            violations.push(Violation::new(field, why.to_owned()));
        }
        *on = to;
    };
    if spec.subject_delete_marker_ttl.is_some() {
        let why = "subject delete markers need per-message TTLs allowed";
        force(&mut config.allow_message_ttl, true, spec.allow_msg_ttl, "spec.allowMsgTtl", why);
    }
    if spec.subject_delete_marker_ttl.is_some() || spec.allow_msg_schedules == Some(true) {
        let why = "subject delete markers and message schedules need roll-ups allowed";
        force(&mut config.allow_rollup, true, spec.allow_rollup, "spec.allowRollup", why);
        let why = "subject delete markers and message schedules need purges allowed";
        force(&mut config.deny_purge, false, spec.deny_purge, "spec.denyPurge", why);
    }
    if spec.sealed == Some(true) {
        // Sealing ends every way of changing the stream's contents.
        config.max_age = Duration::ZERO;
        config.discard = js::DiscardPolicy::New;
        config.deny_delete = true;
        config.deny_purge = true;
        config.allow_rollup = false;
    }
}
