//! Streams on a three-server JetStream cluster: status shows the leader and replicas,
//! and a replicas change with the placement left as it was succeeds (NACK #273).

mod support;

use std::time::Duration;

use jetway::api::stream::Stream;
use jetway_testground::NatsCluster;
use jetway_testground::nats::CLUSTER_NAME;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{EVENTUALLY, Operator, POLL, TestContext, wait_condition, wait_until};

#[tokio::test]
async fn a_replicas_change_with_the_placement_unchanged_succeeds_and_status_shows_the_replicas() {
    let ctx = TestContext::new("cluster-replicas").await;
    support::install_crds(&ctx.client).await;
    let cluster = NatsCluster::start(&support::tools(), 3).await.expect("a three-server cluster");
    let urls = cluster.urls();
    let operator = Operator::start(&ctx.namespace, |config| config.nats.servers = urls.clone()).await;
    let streams = ctx.api::<Stream>();
    let apply = |replicas: u8| {
        let object = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": "orders"},
            "spec": {"name": "ORDERS", "replicas": replicas, "placement": {"cluster": CLUSTER_NAME}}});
        let streams = streams.clone();
        async move {
            streams.patch("orders", &PatchParams::apply("jetway-tests"), &Patch::Apply(object)).await.expect("applying")
        }
    };
    apply(1).await;
    let one = wait_condition(&streams, "orders", "Ready", "True").await;
    let cluster_state = one.status.and_then(|s| s.cluster).expect("cluster state in status");
    assert!(cluster_state.leader.is_some(), "the leader is shown");

    apply(3).await;
    wait_condition(&streams, "orders", "Ready", "True").await;
    let client = async_nats::connect(urls[0].as_str()).await.expect("connecting");
    let mut stream = async_nats::jetstream::new(client).get_stream("ORDERS").await.expect("the stream");
    assert_eq!(stream.info().await.expect("info").config.num_replicas, 3);
    let replicas = wait_until("status to show two followers", EVENTUALLY, POLL, || async {
        let cluster = streams.get("orders").await?.status.and_then(|s| s.cluster);
        Ok(cluster.filter(|c| c.replicas.len() == 2))
    })
    .await
    .expect("followers in status");
    assert!(replicas.replicas.iter().all(|r| !r.name.is_empty()));
    operator.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
}
