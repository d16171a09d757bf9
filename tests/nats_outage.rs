//! A NATS outage never makes the operator give up: objects report the outage, and
//! once the server is back every stream is created and kept again (NACK #193, #202).

mod support;

use jetway::api::stream::Stream;
use jetway_testground::NatsServer;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{EVENTUALLY, Operator, POLL, TestContext, condition, wait_condition, wait_until};

#[tokio::test]
async fn streams_are_created_and_recreated_after_nats_server_comes_back() {
    let ctx = TestContext::new("nats-outage").await;
    support::install_crds(&ctx.client).await;
    let mut server = NatsServer::start(&support::tools(), "").await.expect("a private nats-server");
    let url = server.url();
    let operator = Operator::start(&ctx.namespace, |config| config.nats.servers = vec![url.clone()]).await;
    let streams = ctx.api::<Stream>();
    let apply = |name: &'static str| {
        let streams = streams.clone();
        async move {
            let object = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": name}, "spec": {"name": name.to_uppercase()}});
            streams.patch(name, &PatchParams::apply("jetway-tests"), &Patch::Apply(object)).await.expect("applying");
        }
    };
    apply("before").await;
    wait_condition(&streams, "before", "Ready", "True").await;

    server.kill();
    apply("during").await;
    let during = wait_condition(&streams, "during", "Reconciling", "True").await;
    assert_eq!(condition(&during, "Reconciling").expect("Reconciling").reason, "NatsUnavailable");
    assert!(!operator.is_finished(), "the operator keeps running");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    server.start_again().await.expect("restarting on the same port and store");
    wait_condition(&streams, "during", "Ready", "True").await;

    let client = async_nats::connect(server.url()).await.expect("connecting");
    let jetstream = async_nats::jetstream::new(client);
    jetstream.delete_stream("BEFORE").await.expect("deleted behind Jetway's back");
    wait_until("BEFORE to be recreated", EVENTUALLY, POLL, || async { Ok(jetstream.get_stream("BEFORE").await.ok()) })
        .await
        .expect("recreated after the outage");
    operator.stop().await;
}
