//! A partitioned leader stops writing: replica A reaches the apiserver through a
//! proxy the test owns; once A leads, the proxy cuts it off. A must stop every
//! write within its renew deadline (shorter than the lease), B takes over, and a
//! change made through the apiserver meanwhile (maxMsgs raised, then messages past
//! the old limit) keeps every message: A, which cannot see the change, never puts
//! the old limit back. A's writes are looked for on the wire, in A's own NATS proxy.

mod support;

use std::time::{Duration, Instant};

use jetway::api::stream::Stream;
use jetway_testground::proxy::Proxy;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::replica::Replica;
use support::{EVENTUALLY, POLL, TestContext, wait_condition, wait_until};

/// The lease duration `jetway run` uses by default, and the renew deadline within it.
const LEASE: Duration = Duration::from_secs(10);
const RENEW_DEADLINE: Duration = Duration::from_secs(7);

/// A copy of the test's kubeconfig that reaches the apiserver at `server`.
fn kubeconfig_through(ctx: &TestContext, server: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&ctx.kubeconfig).unwrap()).unwrap();
    for cluster in config["clusters"].as_array_mut().expect("clusters") {
        cluster["cluster"]["server"] = json!(server);
    }
    let path = dir.join("through-proxy.kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn address(url: &str) -> std::net::SocketAddr {
    let host = url.split("://").nth(1).unwrap_or(url).trim_end_matches('/');
    host.parse().expect("host:port")
}

#[tokio::test]
async fn a_leader_cut_off_from_the_apiserver_stops_writing_before_another_takes_over() {
    let ctx = TestContext::new("partition").await;
    support::install_crds(&ctx.client).await;
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&ctx.kubeconfig).unwrap()).unwrap();
    let apiserver = config["clusters"][0]["cluster"]["server"].as_str().expect("a server").to_owned();
    let kube_proxy = Proxy::start(address(&apiserver)).await.unwrap();
    let nats_proxy = Proxy::start(address(&ctx.nats_url)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_through(&ctx, &format!("https://{}", kube_proxy.addr()), dir.path());

    let a = Replica::start_through(&ctx, &kubeconfig, &format!("nats://{}", nats_proxy.addr()));
    wait_until("A to lead", EVENTUALLY, POLL, || async { Ok((a.leads().await && a.ready().await).then_some(())) })
        .await
        .unwrap();
    let b = Replica::start(&ctx);
    wait_until("B to be a ready standby", EVENTUALLY, POLL, || async { Ok(b.ready().await.then_some(())) })
        .await
        .unwrap();

    let streams = ctx.api::<Stream>();
    let name = ctx.unique("PARTED");
    let subject = format!("{}.parted", ctx.namespace);
    let apply = |max: i64| {
        let object = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": "parted"},
                            "spec": {"name": name, "subjects": [subject], "maxMsgs": max, "deletionPolicy": "Delete"}});
        let streams = streams.clone();
        async move { streams.patch("parted", &PatchParams::apply("jetway-tests"), &Patch::Apply(object)).await.unwrap() }
    };
    apply(10).await;
    wait_condition(&streams, "parted", "Ready", "True").await;

    // Refused rather than black-holed: A's Kubernetes calls fail at once, so its
    // reconciles go on from what it last saw, the sharper case.
    kube_proxy.refuse();
    let cut = Instant::now();
    wait_until("B to lead", Duration::from_secs(60), POLL, || async { Ok(b.leads().await.then_some(())) })
        .await
        .unwrap();
    let took = cut.elapsed();
    eprintln!("B led {took:?} after A was cut off");
    assert!(took >= RENEW_DEADLINE, "B led before A's renew deadline passed: {took:?}");

    apply(100).await;
    wait_until("B to raise maxMsgs", EVENTUALLY, POLL, || async {
        let mut stream = ctx.jetstream.get_stream(&name).await?;
        Ok((stream.info().await?.config.max_messages == 100).then_some(()))
    })
    .await
    .unwrap();
    for i in 0..50 {
        ctx.jetstream.publish(subject.clone(), format!("{i}").into()).await.unwrap().await.unwrap();
    }
    // Several of A's resyncs (2 s) later, nothing was put back.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut stream = ctx.jetstream.get_stream(&name).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!((info.config.max_messages, info.state.messages), (100, 50), "every message kept");

    let wire = String::from_utf8_lossy(&nats_proxy.sent_since(cut + RENEW_DEADLINE)).into_owned();
    let writes: Vec<&str> = wire
        .lines()
        .filter(|line| line.starts_with("PUB $JS.API.") || line.starts_with("HPUB $JS.API."))
        .filter(|line| {
            ["STREAM.CREATE", "STREAM.UPDATE", "STREAM.DELETE", "CONSUMER.CREATE", "CONSUMER.DELETE"]
                .iter()
                .any(|w| line.contains(w))
        })
        .collect();
    assert!(writes.is_empty(), "A wrote after its renew deadline:\n{}", writes.join("\n"));
    assert!(LEASE > RENEW_DEADLINE);
    drop(a);
}
