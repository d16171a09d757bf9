//! Leader election with two real `jetway run` processes on one Lease: only the leader
//! writes, the standby is ready, and when the leader is SIGKILLed (no chance to let go
//! of the Lease) the standby takes over within 15 s; a clean stop lets go at once.

mod support;

use std::time::{Duration, Instant};

use jetway::api::stream::Stream;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use support::replica::Replica;
use support::{EVENTUALLY, POLL, TestContext, metric, wait_until};

async fn ready_stream(ctx: &TestContext, object: &str) {
    let name = ctx.unique(object);
    let stream: Stream = serde_json::from_value(serde_json::json!({
        "apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": { "name": object },
        "spec": { "name": name, "subjects": [format!("{name}.>")], "deletionPolicy": "Delete" }
    }))
    .unwrap();
    let streams = ctx.api::<Stream>();
    streams.create(&PostParams::default(), &stream).await.unwrap();
    support::wait_condition(&streams, object, "Ready", "True").await;
}

#[tokio::test]
async fn a_standby_takes_over_within_fifteen_seconds_of_the_leader_being_killed() {
    let ctx = TestContext::new("leader").await;
    support::install_crds(&ctx.client).await;
    let mut first = Replica::start(&ctx);
    wait_until("the first replica to lead and be ready", EVENTUALLY, POLL, || async {
        Ok((first.leads().await && first.ready().await).then_some(()))
    })
    .await
    .unwrap();
    let second = Replica::start(&ctx);
    wait_until("the second replica to be a ready standby", EVENTUALLY, POLL, || async {
        Ok((second.ready().await && metric(second.addr, "jetway_leader").await == Some(0.0)).then_some(()))
    })
    .await
    .unwrap();

    // Only the leader writes.
    ready_stream(&ctx, "before").await;
    assert!(first.reconciles().await > 0.0);
    assert_eq!(second.reconciles().await, 0.0, "the standby reconciled");
    let leases = ctx.api::<Lease>();
    let holder = |lease: Lease| lease.spec.and_then(|s| s.holder_identity);
    let first_identity = holder(leases.get("jetway").await.unwrap()).expect("a holder");

    // The leader dies without letting go; the standby waits out the lease and leads.
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    let killed = Instant::now();
    ready_stream(&ctx, "after").await;
    let failover = killed.elapsed();
    assert!(second.leads().await);
    let second_identity = holder(leases.get("jetway").await.unwrap()).expect("a holder");
    assert_ne!(first_identity, second_identity);
    eprintln!("a Stream made after the leader was killed was Ready {failover:?} later");
    assert!(failover <= Duration::from_secs(15), "failover took {failover:?}");

    // A clean stop lets go of the Lease at once.
    let mut second = second;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(second.child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), second.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    let lease = wait_until("the Lease let go", Duration::from_secs(5), POLL, || async {
        let lease = leases.get("jetway").await?;
        Ok(lease.spec.as_ref().is_none_or(|s| s.holder_identity.is_none()).then_some(lease))
    })
    .await;
    assert!(lease.is_ok(), "a clean stop releases the lease");
}
