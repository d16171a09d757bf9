//! `examples/`, applied with `kubectl apply -k` as a GitOps tool would, reaches Ready.

mod support;

use jetway::api::consumer::Consumer;
use jetway::api::stream::Stream;
use support::{Operator, TestContext, wait_all_ready};

#[tokio::test]
async fn the_examples_apply_with_kubectl_and_become_ready() {
    let ctx = TestContext::new("examples").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let output = std::process::Command::new(support::tools().path("kubectl"))
        .args(["--kubeconfig", &ctx.kubeconfig.display().to_string(), "-n", &ctx.namespace, "apply", "-k", examples])
        .output()
        .expect("running kubectl");
    assert!(output.status.success(), "kubectl apply -k: {}", String::from_utf8_lossy(&output.stderr));

    let ready = wait_all_ready(&ctx.api::<Stream>()).await;
    wait_all_ready(&ctx.api::<Consumer>()).await;
    for stream in &ready {
        let name = stream.spec.name.clone().expect("the examples name their streams");
        ctx.jetstream.get_stream(&name).await.unwrap_or_else(|e| panic!("{name} exists on the server: {e}"));
    }
    // The examples name fixed JetStream streams; leave the shared server as it was.
    for stream in ready {
        ctx.jetstream.delete_stream(stream.spec.name.expect("a name")).await.expect("cleaning up");
    }
    operator.stop().await;
}
