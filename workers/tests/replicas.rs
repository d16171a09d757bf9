//! The pipeline's KV buckets on a three-server JetStream cluster: the ledger and the
//! stock take the pipeline's replicas, and the ledger still answers with a server gone.

mod support;

use std::time::Duration;

use jetway_testground::wait::until;
use jetway_testground::{NatsCluster, Tools};
use jetway_workers::topology;
use support::gateway::Gateway;
use support::{EVENTUALLY, POLL, Worker};

#[tokio::test]
async fn the_ledger_and_the_stock_take_three_replicas_and_survive_a_server_lost() {
    let mut cluster = NatsCluster::start(&Tools::locate().unwrap(), 3).await.expect("a three-server cluster");
    let urls = cluster.urls().join(",");
    let client = async_nats::connect(cluster.urls()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    // A stock bucket made before at one replica is brought to three.
    topology::stock(&jetstream, 1).await.unwrap();

    let gateway = Gateway::start(&[]).await;
    let flags = ["--create-topology", "--replicas", "3"];
    let _inventory =
        Worker::spawn("inventory", &urls, &[&flags[..], &["--seed-stock", "WIDGET=100,GADGET=100"]].concat())
            .ready()
            .await;
    let _payment =
        Worker::spawn("payment", &urls, &[&flags[..], &["--gateway-url", &gateway.url()]].concat()).ready().await;
    for bucket in ["KV_payments-ledger", "KV_inventory"] {
        let mut stream = jetstream.get_stream(bucket).await.unwrap();
        let info = stream.info().await.unwrap().clone();
        assert_eq!(info.config.num_replicas, 3, "{bucket}");
        let peers = until(&format!("{bucket}'s followers"), EVENTUALLY, POLL, || {
            let jetstream = jetstream.clone();
            async move {
                let mut stream = jetstream.get_stream(bucket).await?;
                let cluster = stream.info().await?.cluster.clone();
                Ok(cluster.filter(|c| c.replicas.len() == 2 && c.replicas.iter().all(|r| r.current)))
            }
        })
        .await
        .unwrap();
        assert!(peers.leader.is_some(), "{bucket} has a leader");
    }

    // One server gone (whichever leads the buckets or not), orders sent at once, while
    // the buckets elect new leaders: they wait for them, none is dead-lettered, all are
    // reserved and charged.
    cluster.servers[0].kill();
    let publisher = async_nats::connect(cluster.urls()[1..].to_vec()).await.unwrap();
    let publisher = async_nats::jetstream::new(publisher);
    for id in support::ids("r3", 10) {
        let order = support::order(&id);
        let subject = jetway_workers::events::Event::subject(&order);
        let stored = until("the order to be stored", EVENTUALLY, POLL, || {
            let (publisher, subject, payload) =
                (publisher.clone(), subject.clone(), serde_json::to_vec(&order).unwrap());
            async move { Ok(publisher.publish(subject, payload.into()).await?.await.ok()) }
        });
        stored.await.unwrap();
    }
    until("10 charges", EVENTUALLY, Duration::from_millis(200), || async {
        Ok((gateway.stats().await.charges == 10).then_some(()))
    })
    .await
    .unwrap();
    let orders = publisher.get_stream("ORDERS").await.unwrap().consumer_info("inventory").await.unwrap();
    assert_eq!(orders.num_redelivered, 0, "no delivery used up by the election: {orders:?}");
}
