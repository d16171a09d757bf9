use super::*;

const OWNER: &str = "shop/billing";

fn desired(yaml: &str) -> DesiredConsumer {
    let spec: ConsumerSpec = serde_saphyr::from_str(yaml).expect("a ConsumerSpec fixture");
    DesiredConsumer::from_spec(&spec, "billing", OWNER).expect("a valid spec")
}

/// What the server reports for a consumer created from `config`: its defaults filled in.
fn echoed(config: &Config) -> ObservedConsumer {
    let mut config = config.clone();
    if config.ack_wait.is_zero() {
        config.ack_wait = std::time::Duration::from_secs(30);
    }
    if config.max_ack_pending == 0 {
        config.max_ack_pending = 1000;
    }
    if config.max_deliver == 0 {
        config.max_deliver = -1;
    }
    config.metadata.insert("_nats.level".into(), "1".into());
    ObservedConsumer { config }
}

fn fields(plan: &ConsumerPlan) -> Vec<&'static str> {
    match plan {
        ConsumerPlan::Update { changes, .. } => changes.iter().map(|c| c.field).collect(),
        other => panic!("expected an update, got {other:?}"),
    }
}

#[test]
fn only_fields_the_spec_sets_are_managed() {
    let d = desired("streamName: ORDERS\nackWait: 1m\nmaxDeliver: 5\n");
    assert_eq!(d.managed.iter().copied().collect::<Vec<_>>(), ["ack_wait", "max_deliver"]);
    assert_eq!(d.config.metadata[MANAGED_KEY], "ack_wait,max_deliver");
    assert_eq!((d.stream.as_str(), d.name()), ("ORDERS", "billing"));
}

#[test]
fn what_the_server_echoes_after_creation_is_in_sync() {
    for yaml in [
        "streamName: S\n",
        "streamName: S\nackWait: 1m\nmaxDeliver: 5\nfilterSubject: a.b\nbackoff: [1s, 5s]\n",
        "streamName: S\ndeliverSubject: push.here\nflowControl: true\nheartbeatInterval: 1s\nackPolicy: none\n",
    ] {
        let d = desired(yaml);
        assert_eq!(plan_consumer(&d, Some(&echoed(&d.config))), ConsumerPlan::InSync, "{yaml}");
    }
}

#[test]
fn server_defaults_of_unmanaged_fields_are_left_alone_and_managed_drift_is_reverted() {
    let d = desired("streamName: S\nmaxDeliver: 5\n");
    let mut observed = echoed(&d.config);
    observed.config.max_ack_pending = 7;
    assert_eq!(plan_consumer(&d, Some(&observed)), ConsumerPlan::InSync, "maxAckPending is not the spec's");
    observed.config.max_deliver = 9;
    let plan = plan_consumer(&d, Some(&observed));
    assert_eq!(fields(&plan), ["spec.maxDeliver"]);
    let ConsumerPlan::Update { config, .. } = plan else { unreachable!() };
    assert_eq!((config.max_deliver, config.max_ack_pending), (5, 7), "the update keeps unmanaged values");
}

#[test]
fn a_field_removed_from_the_spec_is_left_to_the_server_default() {
    let before = desired("streamName: S\nmaxAckPending: 10\nheadersOnly: true\n");
    let after = desired("streamName: S\n");
    let plan = plan_consumer(&after, Some(&echoed(&before.config)));
    assert_eq!(fields(&plan), ["spec.maxAckPending", "spec.headersOnly"]);
    let ConsumerPlan::Update { config, .. } = plan else { unreachable!() };
    assert_eq!((config.max_ack_pending, config.headers_only), (0, false), "sent as unset");
    assert_eq!(config.metadata[MANAGED_KEY], "");
}

#[test]
fn changes_the_server_refuses_are_refused_naming_the_field() {
    for (before, after, field) in [
        ("ackPolicy: explicit", "ackPolicy: none", "spec.ackPolicy"),
        ("deliverPolicy: all", "deliverPolicy: new", "spec.deliverPolicy"),
        ("maxWaiting: 10", "maxWaiting: 20", "spec.maxWaiting"),
        ("deliverSubject: a.b", "ackWait: 1m", "spec.deliverSubject"),
    ] {
        let before = desired(&format!("streamName: S\n{before}\n"));
        let mut after = desired(&format!("streamName: S\n{after}\n"));
        // A push consumer's subject cannot go, even though the spec stopped setting it.
        after.managed.insert("deliver_subject");
        let plan = plan_consumer(&after, Some(&echoed(&before.config)));
        let ConsumerPlan::Refused { violations } = plan else { panic!("{field}: expected refused, got {plan:?}") };
        assert_eq!(violations[0].field, field);
    }
}

#[test]
fn an_unowned_consumer_is_adopted_and_one_owned_elsewhere_is_left_alone() {
    let d = desired("streamName: S\n");
    let mut observed = echoed(&d.config);
    observed.config.metadata.clear();
    let plan = plan_consumer(&d, Some(&observed));
    let ConsumerPlan::Adopt { config, differences } = &plan else { panic!("expected adoption, got {plan:?}") };
    assert!(differences.is_empty());
    assert_eq!(config.metadata.get(OWNER_KEY), d.config.metadata.get(OWNER_KEY));
    observed.config.metadata.insert(OWNER_KEY.into(), "other/x".into());
    assert_eq!(plan_consumer(&d, Some(&observed)), ConsumerPlan::OwnedElsewhere { owner: "other/x".into() });
}

#[test]
fn malformed_times_and_frequencies_are_refused_before_planning() {
    for (yaml, field) in [
        ("deliverPolicy: byStartTime\noptStartTime: yesterday\n", "spec.optStartTime"),
        ("pauseUntil: later\n", "spec.pauseUntil"),
        ("sampleFreq: 150%\n", "spec.sampleFreq"),
        ("metadata: {jetway.dev/x: y}\n", "spec.metadata"),
    ] {
        let spec: ConsumerSpec = serde_saphyr::from_str(&format!("streamName: S\n{yaml}")).expect("spec");
        let violations = DesiredConsumer::from_spec(&spec, "c", OWNER).expect_err(yaml);
        assert_eq!(violations[0].field, field);
    }
}

#[test]
fn with_a_backoff_the_ack_wait_is_its_first_step_as_the_server_keeps_it() {
    let d = desired("streamName: S\nackWait: 30s\nbackoff: [1s, 5s]\nmaxDeliver: 5\n");
    assert_eq!(d.config.ack_wait, std::time::Duration::from_secs(1));
    assert_eq!(plan_consumer(&d, Some(&echoed(&d.config))), ConsumerPlan::InSync);
}

#[test]
fn zero_asks_for_the_server_default_and_is_not_managed() {
    let d = desired(
        "streamName: S\nackWait: \"0\"\nmaxAckPending: 0\nmaxWaiting: 0\ninactiveThreshold: \"0\"\npinnedTtl: \"0\"\nmaxDeliver: 0\n",
    );
    assert_eq!(d.managed.iter().copied().collect::<Vec<_>>(), ["max_deliver"]);
    assert_eq!(d.config.max_deliver, -1, "0 is unlimited, which the server writes -1");
    let mut observed = echoed(&d.config);
    observed.config.max_waiting = 512;
    assert_eq!(plan_consumer(&d, Some(&observed)), ConsumerPlan::InSync);
}

#[test]
fn times_are_one_instant_whatever_offset_they_were_written_with() {
    let d = desired("streamName: S\npauseUntil: \"2030-01-01T01:00:00+01:00\"\n");
    let utc = time::macros::datetime!(2030-01-01 00:00 UTC);
    assert_eq!(d.config.pause_until, Some(utc));
    let mut observed = echoed(&d.config);
    observed.config.pause_until = Some(utc.to_offset(time::macros::offset!(-5)));
    assert_eq!(plan_consumer(&d, Some(&observed)), ConsumerPlan::InSync);
}

#[test]
fn heartbeats_and_memory_storage_cannot_change() {
    for (field, before, after) in [
        ("spec.heartbeatInterval", "heartbeatInterval: 5s\n", "heartbeatInterval: 10s\n"),
        ("spec.memStorage", "memStorage: false\n", "memStorage: true\n"),
    ] {
        let (before, after) =
            (desired(&format!("streamName: S\n{before}")), desired(&format!("streamName: S\n{after}")));
        let plan = plan_consumer(&after, Some(&echoed(&before.config)));
        assert!(matches!(&plan, ConsumerPlan::Refused { violations } if violations[0].field == field), "{plan:?}");
    }
}

#[test]
fn malformed_subjects_and_stream_names_are_refused_naming_the_field() {
    for (yaml, field) in [
        ("streamName: S\nfilterSubject: \"a..b\"\n", "spec.filterSubject"),
        ("streamName: S\nfilterSubjects: [a, \"b.>.c\"]\n", "spec.filterSubjects[1]"),
        ("streamName: S\ndeliverSubject: push.*\n", "spec.deliverSubject"),
        ("streamName: a.b\n", "spec.streamName"),
    ] {
        let spec: ConsumerSpec = serde_saphyr::from_str(yaml).expect("spec");
        let violations = DesiredConsumer::from_spec(&spec, "c", OWNER).expect_err(yaml);
        assert_eq!(violations[0].field, field, "{yaml}");
    }
}
