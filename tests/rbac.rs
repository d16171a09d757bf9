//! The operator needs only what the chart grants: run under the chart's
//! ServiceAccount, bound to its namespace-scoped Roles (read-only Secrets), it takes
//! the leader Lease and reconciles a NatsConnection with credentials from a Secret, a
//! Stream, a Consumer and a WorkerPool (its Deployment) through it.

mod support;

use jetway::api::connection::NatsConnection;
use jetway::api::consumer::Consumer;
use jetway::api::stream::Stream;
use jetway::api::workerpool::WorkerPool;
use jetway::leader::LeaderElection;
use jetway_testground::NatsServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use support::{Operator, TestContext, wait_condition};

/// The chart's ServiceAccount and RBAC from `helm template`, for a release named after
/// the test's namespace.
fn chart(ctx: &TestContext, scope: &str) -> String {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/jetway");
    let output = std::process::Command::new(support::tools().path("helm"))
        .args(["template", &ctx.namespace, chart, "--namespace", &ctx.namespace, "--set", &format!("scope={scope}")])
        .args(["--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"])
        .output()
        .expect("running helm");
    assert!(output.status.success(), "helm template: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8")
}

fn kubectl_apply(ctx: &TestContext, manifests: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(support::tools().path("kubectl"))
        .args(["--kubeconfig", &ctx.kubeconfig.display().to_string(), "apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("running kubectl");
    child.stdin.take().expect("stdin").write_all(manifests.as_bytes()).expect("writing");
    assert!(child.wait().expect("kubectl").success(), "kubectl apply of the chart's RBAC");
}

/// A client configuration that authenticates as the ServiceAccount `name`.
async fn as_service_account(ctx: &TestContext, name: &str) -> kube::Config {
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() },
        ..Default::default()
    };
    let token = ctx
        .api::<ServiceAccount>()
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("a token for the chart's ServiceAccount")
        .status
        .expect("a status")
        .token;
    let kubeconfig = Kubeconfig::read_from(&ctx.kubeconfig).expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    config.auth_info = kube::config::AuthInfo { token: Some(token.into()), ..Default::default() };
    config
}

#[tokio::test]
async fn the_operator_works_with_only_the_charts_namespaced_role() {
    let ctx = TestContext::new("rbac").await;
    support::install_crds(&ctx.client).await;
    kubectl_apply(&ctx, &chart(&ctx, "namespace"));
    let identity = as_service_account(&ctx, &format!("{}-jetway", ctx.namespace)).await;
    // The identity really is restricted: it may read Secrets, not write them.
    let restricted = kube::Client::try_from(identity.clone()).expect("a client");
    let secrets: kube::Api<Secret> = kube::Api::namespaced(restricted, &ctx.namespace);
    let attempt = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nope"}, "stringData": {"a": "b"}});
    match secrets.patch("nope", &PatchParams::apply("t"), &Patch::Apply(attempt)).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("writing a Secret must be forbidden, got {other:?}"),
    }

    let server = NatsServer::start(&support::tools(), "authorization { users: [ {user: app, password: rbac-pw} ] }")
        .await
        .expect("a server");
    let apply = |kind: &str, name: &str, spec: serde_json::Value| json!({"apiVersion": "jetway.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec});
    let params = PatchParams::apply("jetway-tests");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app"}, "stringData": {"user": "app", "password": "rbac-pw"}});
    ctx.api::<Secret>().patch("app", &params, &Patch::Apply(secret)).await.expect("secret");
    let connection = apply(
        "NatsConnection",
        "nats",
        json!({"servers": [server.url()], "auth": {"userPassword": {"secretName": "app"}}}),
    );
    ctx.api::<NatsConnection>().patch("nats", &params, &Patch::Apply(connection)).await.expect("connection");
    let stream_name = ctx.unique("RBAC");
    let stream = apply("Stream", "orders", json!({"name": stream_name, "connectionRef": {"name": "nats"}}));
    ctx.api::<Stream>().patch("orders", &params, &Patch::Apply(stream)).await.expect("stream");
    let consumer = apply("Consumer", "worker", json!({"streamName": stream_name, "connectionRef": {"name": "nats"}}));
    ctx.api::<Consumer>().patch("worker", &params, &Patch::Apply(consumer)).await.expect("consumer");

    let pool = apply(
        "WorkerPool",
        "workers",
        json!({"consumerRef": {"name": "worker"}, "worker": {"image": "jetway/payment:test"}, "replicas": 1}),
    );
    ctx.api::<WorkerPool>().patch("workers", &params, &Patch::Apply(pool)).await.expect("pool");

    let election = LeaderElection {
        lease: "jetway".into(),
        namespace: ctx.namespace.clone(),
        identity: "rbac-test".into(),
        duration: std::time::Duration::from_secs(10),
        renew_before: std::time::Duration::from_secs(4),
        pod: None,
    };
    let forbidden_before = support::apiserver_answers(&ctx.client, 403).await;
    let operator = Operator::start(&ctx.namespace, |config| {
        config.kube = identity;
        config.leader_election = Some(election);
    })
    .await;
    wait_condition(&ctx.api::<NatsConnection>(), "nats", "Ready", "True").await;
    wait_condition(&ctx.api::<Stream>(), "orders", "Ready", "True").await;
    wait_condition(&ctx.api::<Consumer>(), "worker", "Ready", "True").await;
    wait_condition(&ctx.api::<WorkerPool>(), "workers", "Ready", "True").await;
    ctx.api::<Deployment>().get("workers").await.expect("the pool's Deployment");
    support::wait_event(&ctx.client, &ctx.namespace, "worker", "Created").await;
    let lease = ctx.api::<Lease>().get("jetway").await.expect("the leader Lease");
    assert_eq!(lease.spec.and_then(|s| s.holder_identity).as_deref(), Some("rbac-test"));
    // Every watch and read the operator makes is granted: the apiserver refused nothing.
    let forbidden = support::apiserver_answers(&ctx.client, 403).await - forbidden_before;
    assert_eq!(forbidden, 0.0, "requests the apiserver answered 403 while the operator ran");
    operator.stop().await;
}
