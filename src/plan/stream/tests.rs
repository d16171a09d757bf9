use std::time::Duration;

use async_nats::jetstream::stream::{self as js, Placement, StorageType};

use super::*;
use crate::api::stream::StreamSpec;

const OWNER: &str = "shop/orders";

fn spec(yaml: &str) -> StreamSpec {
    serde_saphyr::from_str(yaml).expect("a StreamSpec fixture")
}

fn desired(yaml: &str) -> DesiredStream {
    DesiredStream::from_spec(&spec(yaml), "orders", OWNER).expect("a valid spec")
}

/// What the server reports back for a stream created from `config`: its own
/// metadata keys added, and every default spelled out.
fn echoed(config: &Config) -> ObservedStream {
    let mut config = config.clone();
    config.metadata.insert("_nats.req.level".into(), "0".into());
    config.metadata.insert("_nats.ver".into(), "2.14.9".into());
    config.compression.get_or_insert(js::Compression::None);
    config.first_sequence = None;
    ObservedStream { config, contents: Default::default() }
}

fn changed_fields(plan: &StreamPlan) -> Vec<&'static str> {
    match plan {
        StreamPlan::Update { changes, .. } => changes.iter().map(|c| c.field).collect(),
        other => panic!("expected an update, got {other:?}"),
    }
}

#[test]
fn a_missing_stream_is_created_with_server_defaults_for_unset_fields() {
    let plan = plan_stream(&desired("subjects: [orders.>]\nmaxAge: 1h\n"), None);
    let StreamPlan::Create { config } = plan else { panic!("expected create, got {plan:?}") };
    assert_eq!(config.name, "orders");
    assert_eq!(config.subjects, ["orders.>"]);
    assert_eq!(config.max_age, Duration::from_secs(3600));
    assert_eq!((config.max_messages, config.max_bytes, config.num_replicas), (-1, -1, 1));
    assert_eq!(config.duplicate_window, Duration::from_secs(120));
    assert_eq!(config.metadata.get(OWNER_KEY).map(String::as_str), Some(OWNER));
}

#[test]
fn spec_name_overrides_the_object_name_and_unset_subjects_default_to_it() {
    let config = desired("name: ORDERS\n").config;
    assert_eq!((config.name.as_str(), config.subjects.as_slice()), ("ORDERS", &["ORDERS".to_owned()][..]));
    let mirror = desired("mirror: {name: ORIGIN}\n").config;
    assert!(mirror.subjects.is_empty(), "a mirror has no subjects of its own");
}

#[test]
fn a_short_max_age_shortens_the_default_duplicate_window_as_the_server_does() {
    assert_eq!(desired("maxAge: 30s\n").config.duplicate_window, Duration::from_secs(30));
}

#[test]
fn what_the_server_echoes_back_after_creation_is_in_sync() {
    for yaml in [
        "{}",
        "subjects: [a.>]\nstorage: memory\nretention: workqueue\nmaxMsgs: 10\n",
        "metadata: {team: shop}\ndenyDelete: true\ncompression: s2\nplacement: {tags: [fast]}\n",
        "sources: [{name: A}, {name: B, filterSubject: b.>}]\n",
    ] {
        let desired = desired(yaml);
        assert_eq!(plan_stream(&desired, Some(&echoed(&desired.config))), StreamPlan::InSync, "{yaml}");
    }
}

#[test]
fn server_side_drift_is_reverted_field_by_field() {
    let desired = desired("subjects: [a.>]\nmaxMsgs: 100\n");
    let mut observed = echoed(&desired.config);
    observed.config.max_messages = 5;
    observed.config.subjects.push("b.>".into());
    let plan = plan_stream(&desired, Some(&observed));
    assert_eq!(changed_fields(&plan), ["spec.subjects", "spec.maxMsgs"]);
    let StreamPlan::Update { changes, .. } = plan else { unreachable!() };
    assert_eq!((changes[1].from.as_str(), changes[1].to.as_str()), ("5", "100"));
}

#[test]
fn a_field_removed_from_the_spec_goes_back_to_the_server_default() {
    let before = desired("allowDirect: true\nmaxAge: 1h\ndescription: old\n");
    let after = desired("{}");
    let plan = plan_stream(&after, Some(&echoed(&before.config)));
    assert_eq!(changed_fields(&plan), ["spec.description", "spec.maxAge", "spec.allowDirect"]);
    let StreamPlan::Update { config, .. } = plan else { unreachable!() };
    assert!(!config.allow_direct && config.max_age.is_zero() && config.description.is_none());
}

#[test]
fn changes_the_server_refuses_are_refused_naming_the_field_and_change_nothing() {
    for (before, after, field) in [
        ("storage: file", "storage: memory", "spec.storage"),
        ("retention: limits", "retention: workqueue", "spec.retention"),
        ("retention: workqueue", "{}", "spec.retention"),
        ("sealed: true", "sealed: false", "spec.sealed"),
        ("allowMsgTtl: true", "{}", "spec.allowMsgTtl"),
        ("denyDelete: true", "denyDelete: false", "spec.denyDelete"),
        ("denyPurge: true", "{}", "spec.denyPurge"),
        ("persistMode: async", "{}", "spec.persistMode"),
    ] {
        let plan = plan_stream(&desired(after), Some(&echoed(&desired(before).config)));
        let StreamPlan::Refused { violations } = plan else {
            panic!("{before} -> {after}: expected refused, got {plan:?}")
        };
        assert_eq!(violations[0].field, field);
        assert!(violations[0].message.contains("nothing was changed"), "{}", violations[0]);
    }
}

#[test]
fn limits_and_interest_retention_can_swap() {
    let plan = plan_stream(&desired("retention: interest"), Some(&echoed(&desired("retention: limits").config)));
    assert_eq!(changed_fields(&plan), ["spec.retention"]);
}

#[test]
fn an_unowned_stream_is_adopted_by_default_and_left_alone_with_adoption_never() {
    let desired_default = desired("subjects: [a]");
    let mut unowned = echoed(&desired_default.config);
    unowned.config.metadata.remove(OWNER_KEY);
    let plan = plan_stream(&desired_default, Some(&unowned));
    assert!(matches!(&plan, StreamPlan::Adopt { differences, .. } if differences.is_empty()), "{plan:?}");

    let never = desired("subjects: [a]\nadoptionPolicy: Never\n");
    assert_eq!(plan_stream(&never, Some(&unowned)), StreamPlan::AdoptionRefused);
}

#[test]
fn a_stream_owned_by_another_object_is_left_untouched() {
    let desired = desired("{}");
    let mut observed = echoed(&desired.config);
    observed.config.metadata.insert(OWNER_KEY.into(), "other/orders".into());
    observed.config.max_messages = 1;
    assert_eq!(plan_stream(&desired, Some(&observed)), StreamPlan::OwnedElsewhere { owner: "other/orders".into() });
}

#[test]
fn a_replicas_change_sends_the_placement_back_exactly_as_the_server_has_it() {
    let desired = desired("replicas: 3\nplacement: {cluster: east}\n");
    let mut observed = echoed(&desired.config);
    observed.config.num_replicas = 1;
    observed.config.placement = Some(Placement { cluster: Some("east".into()), tags: Vec::new() });
    let plan = plan_stream(&desired, Some(&observed));
    assert_eq!(changed_fields(&plan), ["spec.replicas"]);
    let StreamPlan::Update { config, .. } = plan else { unreachable!() };
    assert_eq!(config.placement, observed.config.placement);
    assert_eq!(config.storage, StorageType::File);
}

#[test]
fn invalid_specs_are_refused_before_anything_is_planned() {
    for (yaml, field) in [
        ("maxAge: 1m\nduplicateWindow: 5m\n", "spec.duplicateWindow"),
        ("metadata: {jetway.dev/owner: me}\n", "spec.metadata"),
        ("allowRollup: true\ndenyPurge: true\n", "spec.allowRollup"),
        ("mirror: {name: A, optStartTime: yesterday}\n", "spec.mirror.optStartTime"),
        ("sources: [{name: A}, {name: B, optStartTime: soon}]\n", "spec.sources[1].optStartTime"),
    ] {
        let violations = DesiredStream::from_spec(&spec(yaml), "orders", OWNER).expect_err(yaml);
        assert_eq!(violations[0].field, field, "{yaml}");
    }
}

#[test]
fn fields_other_fields_imply_are_planned_as_the_server_stores_them() {
    let sealed = desired("sealed: true\nmaxAge: 1h\nallowRollup: true\n").config;
    assert_eq!((sealed.max_age, sealed.discard), (Duration::ZERO, js::DiscardPolicy::New));
    assert!(
        sealed.deny_delete && sealed.deny_purge && !sealed.allow_rollup,
        "sealing ends deletes, purges and roll-ups"
    );
    let markers = desired("subjectDeleteMarkerTtl: 1m\n").config;
    assert!(markers.allow_message_ttl && markers.allow_rollup && !markers.deny_purge);
    let schedules = desired("allowMsgSchedules: true\n").config;
    assert!(schedules.allow_rollup && !schedules.deny_purge);
    let zeros = desired("maxMsgs: 0\nmaxBytes: 0\nmaxConsumers: 0\nmaxMsgSize: 0\nmaxMsgsPerSubject: 0\n").config;
    assert_eq!([zeros.max_messages, zeros.max_bytes, zeros.max_messages_per_subject], [-1, -1, -1]);
    assert_eq!((zeros.max_consumers, zeros.max_message_size), (-1, -1));
    assert_eq!(desired("duplicateWindow: \"0\"\n").config.duplicate_window, Duration::from_secs(120));
}

#[test]
fn asking_for_the_opposite_of_what_the_server_forces_is_refused_naming_the_field() {
    for (yaml, field) in [
        ("subjectDeleteMarkerTtl: 1m\nallowMsgTtl: false\n", "spec.allowMsgTtl"),
        ("subjectDeleteMarkerTtl: 1m\nallowRollup: false\n", "spec.allowRollup"),
        ("allowMsgSchedules: true\ndenyPurge: true\n", "spec.denyPurge"),
    ] {
        let violations = DesiredStream::from_spec(&spec(yaml), "orders", OWNER).expect_err(yaml);
        assert!(violations.iter().any(|v| v.field == field), "{yaml}: {violations:?}");
    }
}

#[test]
fn a_sealed_stream_is_created_open_to_be_sealed_right_after() {
    let StreamPlan::Create { config } = plan_stream(&desired("sealed: true\n"), None) else { panic!("create") };
    assert!(!config.sealed, "the server refuses to create a sealed stream");
}

#[test]
fn a_mirror_takes_direct_gets_from_its_origin_unless_the_spec_says() {
    let desired = desired("mirror: {name: ORIGIN}\n");
    let mut observed = echoed(&desired.config);
    observed.config.mirror_direct = true;
    assert_eq!(plan_stream(&desired, Some(&observed)), StreamPlan::InSync);
    observed.config.max_messages = 5;
    let StreamPlan::Update { config, .. } = plan_stream(&desired, Some(&observed)) else { panic!("update") };
    assert!(config.mirror_direct, "sent back as the server has it");
}

#[test]
fn a_mirror_can_be_removed_but_not_added_or_changed_and_the_first_sequence_never_changes() {
    let mirror = desired("mirror: {name: ORIGIN}\n");
    let promoted = desired("{}");
    assert!(matches!(plan_stream(&promoted, Some(&echoed(&mirror.config))), StreamPlan::Update { .. }));
    let other = desired("mirror: {name: OTHER}\n");
    let refused = |plan| matches!(plan, StreamPlan::Refused { violations } if violations[0].field == "spec.mirror");
    assert!(refused(plan_stream(&other, Some(&echoed(&mirror.config)))));
    assert!(refused(plan_stream(&mirror, Some(&echoed(&promoted.config)))));
    let first = desired("firstSequence: 10\n");
    let mut observed = echoed(&first.config);
    observed.config.first_sequence = Some(10);
    assert_eq!(plan_stream(&first, Some(&observed)), StreamPlan::InSync);
    let moved = desired("firstSequence: 20\n");
    let plan = plan_stream(&moved, Some(&observed));
    assert!(
        matches!(&plan, StreamPlan::Refused { violations } if violations[0].field == "spec.firstSequence"),
        "{plan:?}"
    );
}

#[test]
fn what_the_server_rewrote_is_named_field_by_field() {
    let desired = desired("mirror: {name: ORIGIN}\nmirrorDirect: true\n");
    let mut stored = desired.config.clone();
    stored.mirror_direct = false;
    let changes = rewritten(&desired.config, &stored);
    assert_eq!(changes.iter().map(|c| c.field).collect::<Vec<_>>(), ["spec.mirrorDirect"]);
    assert!(rewritten(&desired.config, &desired.config).is_empty());
}

#[test]
fn malformed_subjects_are_refused_naming_the_field_before_the_server_is_asked() {
    for (yaml, field) in [
        ("subjects: [ok.>, shop..x]\n", "spec.subjects[1]"),
        ("subjects: [shop.>.x]\n", "spec.subjects[0]"),
        ("republish: {source: a.>, destination: \"b c\"}\n", "spec.republish.destination"),
        ("sources: [{name: A}, {name: B, filterSubject: \"x..y\"}]\n", "spec.sources[1].filterSubject"),
    ] {
        let violations = DesiredStream::from_spec(&spec(yaml), "orders", OWNER).expect_err(yaml);
        assert_eq!(violations[0].field, field, "{yaml}");
    }
}

/// A stream someone else made: subjects, limits, replicas and a description the
/// spec below does not name.
fn foreign() -> ObservedStream {
    let mut observed =
        echoed(&desired("subjects: [shop.orders.>]\nmaxMsgs: 1000\nreplicas: 3\ndescription: theirs\n").config);
    observed.config.metadata.remove(OWNER_KEY);
    observed.contents.messages = 1000;
    observed
}

/// The stream after `plan` was applied, as the server reports it.
fn applied(plan: &StreamPlan) -> ObservedStream {
    let (StreamPlan::Adopt { config, .. } | StreamPlan::Update { config, .. }) = plan else {
        panic!("expected a write, got {plan:?}")
    };
    ObservedStream { contents: foreign().contents, ..echoed(config) }
}

#[test]
fn adopting_writes_only_the_marks_and_reports_what_the_spec_would_change() {
    let observed = foreign();
    let plan = plan_stream(&desired("maxMsgs: 1\nmaxAge: 1h\n"), Some(&observed));
    let StreamPlan::Adopt { config, differences } = &plan else { panic!("expected adoption, got {plan:?}") };
    assert_eq!(released(&ObservedStream { config: config.clone(), contents: Default::default() }), released(&observed));
    assert_eq!(owner_of(config), Some(OWNER));
    let fields: Vec<_> = differences.iter().map(|d| d.field).collect();
    assert_eq!(fields, ["spec.maxMsgs", "spec.maxAge"], "unset fields keep their values and differ in nothing");
    // Once it is Jetway's, the named fields are planned, and lowering maxMsgs below
    // what the stream holds waits for consent.
    let after = plan_stream(&desired("maxMsgs: 1\nmaxAge: 1h\n"), Some(&applied(&plan)));
    assert!(matches!(&after, StreamPlan::WouldLoseMessages { violations } if violations[0].field == "spec.maxMsgs"));
}

#[test]
fn fields_the_spec_leaves_unset_keep_their_adopted_values_until_it_names_them() {
    let adopted = applied(&plan_stream(&desired("{}"), Some(&foreign())));
    assert_eq!(
        adopted.config.metadata.get(ADOPTED_KEY).map(String::as_str),
        Some("description,subjects,max_msgs,num_replicas")
    );
    assert_eq!(plan_stream(&desired("{}"), Some(&adopted)), StreamPlan::InSync, "no reset to the defaults");

    // Naming a field makes it the spec's: it is set, and leaves the adopted list.
    let named = plan_stream(&desired("maxMsgs: 2000\n"), Some(&adopted));
    assert_eq!(changed_fields(&named), ["spec.maxMsgs"]);
    let named = applied(&named);
    assert_eq!(named.config.metadata.get(ADOPTED_KEY).map(String::as_str), Some("description,subjects,num_replicas"));
    assert_eq!((named.config.subjects.as_slice(), named.config.num_replicas), (&["shop.orders.>".to_owned()][..], 3));

    // Unset again, it means the server's default, as for any stream.
    let unset = plan_stream(&desired("{}"), Some(&named));
    assert_eq!(changed_fields(&unset), ["spec.maxMsgs"]);
    let StreamPlan::Update { config, .. } = unset else { unreachable!() };
    assert_eq!(config.max_messages, -1);
}

#[test]
fn naming_a_field_with_the_value_it_has_still_takes_it_off_the_adopted_list() {
    let adopted = applied(&plan_stream(&desired("{}"), Some(&foreign())));
    let plan = plan_stream(&desired("replicas: 3\n"), Some(&adopted));
    let StreamPlan::Update { config, changes } = plan else {
        panic!("expected the mark to be rewritten, got {plan:?}")
    };
    assert!(changes.is_empty());
    assert_eq!(config.metadata.get(ADOPTED_KEY).map(String::as_str), Some("description,subjects,max_msgs"));
}
