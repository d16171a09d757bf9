//! An exported spec, planned against the configuration it came from, adopts it and
//! changes nothing.

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};

use super::*;
use crate::plan::consumer::{ConsumerPlan, DesiredConsumer, ObservedConsumer, plan_consumer};
use crate::plan::stream::{ADOPTED_KEY, DesiredStream, ObservedStream, StreamPlan, plan_stream};

/// A stream with every limit at the server's "unlimited".
fn unlimited(name: &str) -> stream::Config {
    stream::Config {
        name: name.into(),
        max_consumers: -1,
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: -1,
        max_message_size: -1,
        num_replicas: 1,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

fn adopts_without_changes(config: stream::Config) {
    let spec = stream_spec(&config);
    let desired = DesiredStream::from_spec(&spec, "exported", "shop/exported").expect("a valid spec");
    let plan = plan_stream(&desired, Some(&ObservedStream { config: config.clone(), contents: Default::default() }));
    assert!(
        matches!(&plan, StreamPlan::Adopt { config, differences }
            if differences.is_empty() && !config.metadata.contains_key(ADOPTED_KEY)),
        "{config:?}\n-> {spec:?}\n-> {plan:?}"
    );
}

#[test]
fn a_plain_stream_with_server_defaults_exports_to_its_name_alone() {
    let config = stream::Config { subjects: vec!["ORDERS".into()], ..unlimited("ORDERS") };
    let spec = stream_spec(&config);
    assert_eq!(spec, StreamSpec { name: Some("ORDERS".into()), ..Default::default() });
    adopts_without_changes(config);
}

#[test]
fn a_stream_with_every_kind_of_setting_round_trips() {
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("team".to_string(), "payments".to_string());
    metadata.insert("_nats.ver".to_string(), "2.14.9".to_string());
    adopts_without_changes(stream::Config {
        name: "PAYMENTS".into(),
        description: Some("payments".into()),
        subjects: vec!["payments.>".into(), "refunds.>".into()],
        retention: stream::RetentionPolicy::Interest,
        max_consumers: 10,
        max_messages: 1_000_000,
        max_bytes: 1 << 30,
        max_age: Duration::from_secs(7 * 24 * 3600),
        max_messages_per_subject: 5,
        max_message_size: 65536,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::Memory,
        num_replicas: 3,
        duplicate_window: Duration::from_secs(60),
        deny_delete: true,
        allow_direct: true,
        discard_new_per_subject: true,
        compression: Some(stream::Compression::S2),
        metadata,
        subject_transform: Some(stream::SubjectTransform { source: "in.>".into(), destination: "payments.>".into() }),
        republish: Some(stream::Republish {
            source: "payments.>".into(),
            destination: "copy.>".into(),
            headers_only: true,
        }),
        consumer_limits: Some(stream::ConsumerLimits {
            inactive_threshold: Duration::from_secs(3600),
            max_ack_pending: 1000,
        }),
        allow_message_ttl: true,
        subject_delete_marker_ttl: Some(Duration::from_secs(60)),
        allow_rollup: true,
        ..Default::default()
    });
}

#[test]
fn a_sourcing_stream_round_trips() {
    adopts_without_changes(stream::Config {
        sources: Some(vec![
            stream::Source { name: "ORDERS".into(), filter_subject: Some("orders.eu.>".into()), ..Default::default() },
            stream::Source {
                name: "REMOTE".into(),
                start_sequence: Some(42),
                external: Some(stream::External { api_prefix: "$JS.hub.API".into(), delivery_prefix: None }),
                ..Default::default()
            },
        ]),
        ..unlimited("ALL")
    });
}

#[test]
fn a_consumer_exports_every_field_the_server_reports_and_adopts_without_changes() {
    let config = consumer::Config {
        durable_name: Some("payment".into()),
        name: Some("payment".into()),
        deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: 7 },
        ack_policy: consumer::AckPolicy::Explicit,
        // As the server reports it: with a backoff, the ack wait is its first step.
        ack_wait: Duration::from_secs(1),
        max_deliver: 5,
        backoff: vec![Duration::from_secs(1), Duration::from_secs(5)],
        filter_subject: "orders.created.v1".into(),
        max_waiting: 512,
        max_ack_pending: 20_000,
        num_replicas: 0,
        ..Default::default()
    };
    let spec = consumer_spec("ORDERS", &config);
    assert_eq!(spec.stream_name, "ORDERS");
    assert_eq!(spec.opt_start_seq, Some(7));
    let desired = DesiredConsumer::from_spec(&spec, "orders-payment", "shop/orders-payment").expect("a valid spec");
    let plan = plan_consumer(&desired, Some(&ObservedConsumer { config }));
    assert!(matches!(&plan, ConsumerPlan::Adopt { differences, .. } if differences.is_empty()), "{plan:?}");
}

#[test]
fn object_names_are_kubernetes_names() {
    assert_eq!(object_name(&["ORDERS"]), "orders");
    assert_eq!(object_name(&["ORDERS", "payment_v2"]), "orders-payment-v2");
    assert_eq!(object_name(&["__"]), "unnamed");
    assert_eq!(object_name(&[&"A".repeat(100)]).len(), 63);
}
