//! Consumer lag: read in batches through the JetStream API, exported on /metrics,
//! and a missing consumer reported as missing, never as 0.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use jetway::api::consumer::Consumer;
use jetway::inventory::{Intervals, Inventory, Observation, Watched};
use jetway::metrics::Metrics;
use jetway_testground::{NatsCluster, NatsServer};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{EVENTUALLY, Operator, POLL, TestContext, wait_until};

const INTERVALS: Intervals =
    Intervals { lag: Duration::from_secs(1), metrics: Duration::from_secs(15), drift: Duration::from_secs(30) };

#[tokio::test]
async fn six_hundred_consumers_are_read_in_one_stream_list_and_three_consumer_list_pages() {
    let nats = NatsServer::start(&support::tools(), "").await.expect("a nats-server");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js
        .create_stream(stream::Config { name: "WIDE".into(), subjects: vec!["wide.>".into()], ..Default::default() })
        .await
        .unwrap();
    for n in 0..600 {
        let config = consumer::pull::Config { durable_name: Some(format!("c{n}")), ..Default::default() };
        stream.create_consumer(config).await.unwrap();
    }
    for _ in 0..25 {
        js.publish("wide.x", "m".into()).await.unwrap().await.unwrap();
    }
    let metrics = Arc::new(Metrics::new());
    let poller = Inventory::new(metrics.clone(), INTERVALS);
    let watch = |n: usize| Watched {
        namespace: "shop".into(),
        connection: String::new(),
        jetstream: js.clone(),
        system: None,
        stream: "WIDE".into(),
        consumer: format!("c{n}"),
    };
    for n in 0..600 {
        poller.watch(&format!("shop/c{n}"), watch(n));
    }
    poller.watch("shop/gone", Watched { consumer: "gone".into(), ..watch(0) });

    let before = support::jetstream_requests(&nats).await;
    poller.poll().await;
    let requests = support::jetstream_requests(&nats).await - before;
    assert_eq!(requests, 4, "one stream list page and three consumer list pages of 256 for 600 consumers");

    for n in [0, 299, 599] {
        assert!(
            matches!(poller.observation(&format!("shop/c{n}")), Some(Observation::Found { lag, .. }) if lag.pending == 25)
        );
    }
    assert!(matches!(poller.observation("shop/gone"), Some(Observation::Missing { .. })));
    let text = metrics.encode();
    assert!(text.contains(r#"jetway_consumer_pending_messages{namespace="shop",stream="WIDE",consumer="c599"} 25"#));
    assert!(text.contains(r#"jetway_stream_messages{namespace="shop",stream="WIDE"} 25"#));
    assert!(!text.contains(r#"consumer="gone""#), "a missing consumer has no series, not 0");
}

#[tokio::test]
async fn an_idle_round_is_one_stream_list_and_moves_are_read_at_once_then_at_their_interval() {
    let nats = NatsServer::start(&support::tools(), "").await.expect("a nats-server");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let intervals = Intervals { lag: Duration::from_millis(200), ..INTERVALS };
    let poller = Inventory::new(Arc::new(Metrics::new()), intervals);
    for s in 0..20 {
        let name = format!("S{s}");
        let config = stream::Config { name: name.clone(), subjects: vec![format!("s{s}.>")], ..Default::default() };
        let stream = js.create_stream(config).await.unwrap();
        stream
            .create_consumer(consumer::pull::Config { durable_name: Some("c".into()), ..Default::default() })
            .await
            .unwrap();
        let watched = Watched {
            namespace: "shop".into(),
            connection: String::new(),
            jetstream: js.clone(),
            system: None,
            stream: name,
            consumer: "c".into(),
        };
        poller.watch(&format!("shop/s{s}"), watched);
    }
    poller.demand("shop/s3");
    let selected = poller.demand_in("shop", |w| w.stream == "S7");
    assert!(selected.is_empty(), "not read yet: nothing to report");

    let rounds = |expected: u64, why: &'static str| {
        let (nats, poller) = (&nats, &poller);
        async move {
            tokio::time::sleep(intervals.lag).await;
            let before = support::jetstream_requests(nats).await;
            poller.poll().await;
            assert_eq!(support::jetstream_requests(nats).await - before, expected, "{why}");
        }
    };
    rounds(21, "the first round reads the stream list and every consumer list").await;
    assert!(matches!(poller.observation("shop/s4"), Some(Observation::Found { lag, .. }) if lag.pending == 0));
    rounds(1, "nothing moved: the stream list alone confirms every figure").await;
    for subject in ["s3.order", "s4.order"] {
        js.publish(subject, "o".into()).await.unwrap().await.unwrap();
    }
    rounds(3, "the first move after a rest is read at once").await;
    assert!(matches!(poller.observation("shop/s3"), Some(Observation::Found { lag, .. }) if lag.pending == 1));
    assert!(matches!(poller.observation("shop/s4"), Some(Observation::Found { lag, .. }) if lag.pending == 1));

    js.publish("s4.order", "o".into()).await.unwrap().await.unwrap();
    rounds(2, "S3 drives scaling and has messages pending: read each round; S4 moves on, read at the metrics interval")
        .await;
    assert!(
        matches!(poller.observation("shop/s4"), Some(Observation::Found { lag, .. }) if lag.pending == 1),
        "S4's last figures stand until its next read"
    );

    poller.forget("shop/s3");
    rounds(1, "a forgotten consumer is demanded no more").await;
    js.delete_stream("S5").await.unwrap();
    rounds(1, "a stream left out of one list is not gone yet: pages shift").await;
    assert!(matches!(poller.observation("shop/s5"), Some(Observation::Found { .. })));
    rounds(1, "a stream gone from the list needs no consumer list").await;
    assert!(matches!(poller.observation("shop/s5"), Some(Observation::Missing { .. })));
}

#[tokio::test]
async fn the_operator_exports_the_lag_of_the_consumers_it_manages() {
    let ctx = TestContext::new("lag").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let name = ctx.unique("LAG");
    support::stream_with_consumer(&ctx, "lag", &name, "work").await;
    let consumers = ctx.api::<Consumer>();
    for _ in 0..40 {
        ctx.jetstream.publish(format!("{name}.order"), "o".into()).await.unwrap().await.unwrap();
    }

    let series =
        format!(r#"jetway_consumer_pending_messages{{namespace="{}",stream="{name}",consumer="work"}}"#, ctx.namespace);
    wait_until("pending 40 on /metrics", EVENTUALLY, POLL, || async {
        Ok((support::metric(operator.http_addr, &series).await == Some(40.0)).then_some(()))
    })
    .await
    .unwrap();

    // Paused, then deleted on the server behind Jetway's back: the series goes, it does not drop to 0.
    let paused = Patch::Merge(json!({ "metadata": { "annotations": { "jetway.dev/paused": "true" } } }));
    consumers.patch("work", &PatchParams::default(), &paused).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctx.jetstream.get_stream(&name).await.unwrap().delete_consumer("work").await.unwrap();
    wait_until("the series to go", EVENTUALLY, POLL, || async {
        let (_, text) = support::http_get(operator.http_addr, "/metrics").await?;
        Ok((!text.contains(&series)).then_some(()))
    })
    .await
    .unwrap();
    operator.stop().await;
}

/// Two accounts: the application's (anonymous clients land in it) and the system's.
const ACCOUNTS: &str = "accounts {
  SYS: { users: [ {user: sys, password: sys-pw} ] }
  APP: { jetstream: enabled, users: [ {user: app, password: app-pw} ] }
}
system_account: SYS
no_auth_user: app
";

#[tokio::test]
async fn with_the_system_account_a_round_asks_the_jetstream_api_nothing_and_takes_figures_from_the_leaders() {
    let cluster = NatsCluster::start_with(&support::tools(), 3, ACCOUNTS).await.expect("a three-server cluster");
    let urls: Vec<async_nats::ServerAddr> = cluster.urls().iter().map(|url| url.parse().unwrap()).collect();
    let app = async_nats::connect(urls.clone()).await.unwrap();
    let js = async_nats::jetstream::new(app.clone());
    for s in 0..4 {
        let name = format!("HELD_{s}");
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![format!("held.{s}")],
            num_replicas: 3,
            ..Default::default()
        };
        let stream = js.create_stream(config).await.unwrap();
        let durable = consumer::pull::Config { durable_name: Some("c".into()), num_replicas: 3, ..Default::default() };
        stream.create_consumer(durable).await.unwrap();
        for _ in 0..s {
            js.publish(format!("held.{s}"), "m".into()).await.unwrap().await.unwrap();
        }
    }
    let system =
        async_nats::ConnectOptions::with_user_and_password("sys".into(), "sys-pw".into()).connect(urls).await.unwrap();
    let access = Arc::new(jetway::jsz::SystemAccess::new(system, app));
    let inventory = Inventory::new(Arc::new(Metrics::new()), INTERVALS);
    for s in 0..4 {
        let watched = Watched {
            namespace: "shop".into(),
            connection: String::new(),
            jetstream: js.clone(),
            system: Some(access.clone()),
            stream: format!("HELD_{s}"),
            consumer: "c".into(),
        };
        inventory.watch(&format!("shop/c{s}"), watched);
        inventory.demand(&format!("shop/c{s}"));
    }
    let requests = || async {
        let mut total = 0;
        for server in &cluster.servers {
            total += support::jetstream_requests(server).await;
        }
        total
    };
    // Replicated figures settle on the followers a moment after the publishes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = requests().await;
    for _ in 0..3 {
        inventory.poll().await;
    }
    assert_eq!(requests().await - before, 0, "JetStream API requests over three rounds, counted by the servers");
    for s in 0..4u64 {
        match inventory.observation(&format!("shop/c{s}")) {
            Some(Observation::Found { lag, .. }) => {
                assert_eq!(lag.pending, s, "HELD_{s}'s consumer, as its leader has it")
            }
            other => panic!("HELD_{s}'s consumer: {other:?}"),
        }
    }
    // A stream deleted behind the inventory's back is missing once two answers leave it out.
    js.delete_stream("HELD_3").await.unwrap();
    inventory.poll().await;
    inventory.poll().await;
    assert!(matches!(inventory.observation("shop/c3"), Some(Observation::Missing { .. })));
}
