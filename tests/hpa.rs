//! WorkerPools beside an HPA, the way a cluster runs it: the operator serves the
//! external metrics API behind the `v1beta1.external.metrics.k8s.io` APIService, the
//! aggregation layer reaches it through a Service whose endpoint is an address inside
//! a network namespace this test makes (Endpoints refuse loopback), and
//! kube-controller-manager's HPA controller reads pending messages through it.

mod support;

use std::time::{Duration, Instant};

use jetway::api::workerpool::WorkerPool;
use jetway::controller::Autoscaler;
use jetway::extmetrics::Certificate;
use jetway_testground::netns::NetNs;
use jetway_testground::pki::{Ca, Usage};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::{EVENTUALLY, Operator, POLL, TestContext, deployment_replicas, wait_until};

const API_SERVICE: &str = "v1beta1.external.metrics.k8s.io";
const SERVICE: &str = "jetway-metrics";

/// The cluster holds one external metrics APIService; a stale one pointing nowhere
/// would trouble discovery for every other test, so it goes however this test ends.
struct RemoveApiService(std::path::PathBuf);

impl Drop for RemoveApiService {
    fn drop(&mut self) {
        let status = std::process::Command::new(support::tools().path("kubectl"))
            .arg(format!("--kubeconfig={}", self.0.display()))
            .args(["delete", "apiservice", API_SERVICE, "--ignore-not-found", "--wait=false"])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("could not delete the APIService {API_SERVICE}: {status:?}");
        }
    }
}

/// The APIService, its Service, and Endpoints at `backend`:443.
async fn register(ctx: &TestContext, backend: std::net::Ipv4Addr, ca: &Ca) -> RemoveApiService {
    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": SERVICE },
        "spec": { "ports": [{ "name": "https", "port": 443, "targetPort": 443 }] }
    }))
    .unwrap();
    ctx.api::<Service>().create(&PostParams::default(), &service).await.unwrap();
    let endpoints: Endpoints = serde_json::from_value(json!({
        "metadata": { "name": SERVICE },
        "subsets": [{ "addresses": [{ "ip": backend.to_string() }], "ports": [{ "name": "https", "port": 443 }] }]
    }))
    .unwrap();
    ctx.api::<Endpoints>().create(&PostParams::default(), &endpoints).await.unwrap();

    let guard = RemoveApiService(ctx.kubeconfig.clone());
    let api_service = json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": { "name": API_SERVICE },
        "spec": {
            "group": "external.metrics.k8s.io", "version": "v1beta1",
            "service": { "namespace": ctx.namespace, "name": SERVICE, "port": 443 },
            "caBundle": base64(ca.cert_pem().as_bytes()),
            "groupPriorityMinimum": 100, "versionPriority": 100
        }
    });
    let api_services: Api<APIService> = Api::all(ctx.client.clone());
    let params = PatchParams::apply("jetway-tests").force();
    api_services.patch(API_SERVICE, &params, &Patch::Apply(&api_service)).await.unwrap();
    wait_until("the APIService to be Available", EVENTUALLY, POLL, || async {
        let conditions = api_services.get(API_SERVICE).await?.status.and_then(|s| s.conditions).unwrap_or_default();
        Ok(conditions.iter().any(|c| c.type_ == "Available" && c.status == "True").then_some(()))
    })
    .await
    .expect("the aggregation layer reaches the operator");
    guard
}

fn base64(bytes: &[u8]) -> String {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec())).unwrap().as_str().unwrap().to_owned()
}

/// Waits until the HPA wants `want` replicas; returns why it could (its ScalingActive
/// condition: reason and message). The metric value it reports is pending divided by
/// the target's replicas at that moment, so it is not compared.
async fn hpa_desired(ctx: &TestContext, name: &str, want: i32) -> (String, String) {
    let hpas = ctx.api::<HorizontalPodAutoscaler>();
    wait_until(&format!("the HPA to want {want}"), EVENTUALLY, POLL, || async {
        let status = hpas.get(name).await?.status.unwrap_or_default();
        let active = status.conditions.unwrap_or_default().into_iter().find(|c| c.type_ == "ScalingActive");
        let why = active.map(|c| (c.reason.unwrap_or_default(), c.message.unwrap_or_default())).unwrap_or_default();
        Ok((status.desired_replicas == want).then_some(why))
    })
    .await
    .expect("the HPA's decision")
}

/// The pending messages the aggregation layer answers for the consumer, as the HPA
/// controller asks for them.
async fn aggregated_pending(ctx: &TestContext, consumer: &str) -> serde_json::Value {
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/nats_consumer_pending_messages?labelSelector=consumer%3D{consumer}",
        ctx.namespace
    );
    let text = ctx.client.request_text(http::Request::get(path).body(Vec::new()).unwrap()).await.unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["items"][0]["value"].clone()
}

#[tokio::test]
async fn an_hpa_scales_a_pool_on_pending_messages_through_the_aggregated_api_and_jetway_takes_it_to_zero() {
    let ctx = TestContext::new("hpa").await;
    support::install_crds(&ctx.client).await;
    let netns = NetNs::create().expect("a network namespace (root and iproute2 are needed)");

    let ca = Ca::new("jetway-metrics-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = format!("{SERVICE}.{}.svc", ctx.namespace);
    ca.issue(SERVICE, None, &[&host], Usage::Server).unwrap().write(dir.path(), "serving").unwrap();
    let certificate = Certificate::Files { cert: dir.path().join("serving.crt"), key: dir.path().join("serving.key") };
    let port = jetway_testground::wait::free_port().unwrap();
    let served = std::net::SocketAddr::from((netns.host, port));
    let operator = Operator::start(&ctx.namespace, |config| {
        config.external_metrics = Some((served, certificate));
        config.controllers.autoscaler = Autoscaler::Hpa;
    })
    .await;
    // The backend the Endpoints name: port 443 inside the namespace, passed through
    // to the operator's listener.
    let forward = netns.forward(443, served).unwrap();
    let _api_service = register(&ctx, netns.inside, &ca).await;

    let name = ctx.unique("HPA");
    support::stream_with_consumer(&ctx, "orders", &name, "payment").await;
    let pool: WorkerPool = serde_json::from_value(json!({
        "apiVersion": "jetway.dev/v1alpha1", "kind": "WorkerPool", "metadata": { "name": "payment" },
        "spec": {
            "consumerRef": { "name": "payment" },
            "worker": { "image": "jetway/payment:test" },
            "autoscaling": {
                "minReplicas": 0, "maxReplicas": 6, "targetPendingPerReplica": 10, "cooldown": "3s",
                "behavior": { "scaleDown": { "stabilizationWindowSeconds": 0 } }
            }
        }
    }))
    .unwrap();
    let pools = ctx.api::<WorkerPool>();
    pools.create(&PostParams::default(), &pool).await.unwrap();

    // The pool's HPA: owned by it, scaling its /scale on the consumer's pending messages.
    let hpa = wait_until("the pool's HPA", EVENTUALLY, POLL, || async {
        Ok(ctx.api::<HorizontalPodAutoscaler>().get_opt("payment").await?)
    })
    .await
    .unwrap();
    let spec = hpa.spec.as_ref().unwrap();
    assert_eq!((spec.scale_target_ref.kind.as_str(), spec.scale_target_ref.name.as_str()), ("WorkerPool", "payment"));
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 6), "the HPA's range starts at 1; 0 is Jetway's");
    let external = spec.metrics.as_ref().unwrap()[0].external.as_ref().unwrap();
    assert_eq!(external.metric.name, "nats_consumer_pending_messages");
    let labels = external.metric.selector.as_ref().unwrap().match_labels.clone().unwrap();
    assert_eq!((labels["consumer"].as_str(), labels["stream"].as_str()), ("payment", name.as_str()));
    let behavior = spec.behavior.as_ref().and_then(|b| b.scale_down.as_ref()).unwrap();
    assert_eq!(behavior.stabilization_window_seconds, Some(0), "behavior passes through");
    assert_eq!(hpa.metadata.owner_references.unwrap()[0].kind, "WorkerPool");
    deployment_replicas(&ctx, "payment", 0).await;
    // kube-controller-manager learns new kinds when it refreshes discovery (every 30 s),
    // so an HPA on a kind installed a moment ago waits that long once; after it, the
    // HPA sees the pool at 0 and leaves it there.
    wait_until("the HPA controller to see the pool idle", Duration::from_secs(90), POLL, || async {
        let hpa = ctx.api::<HorizontalPodAutoscaler>().get("payment").await?;
        let conditions = hpa.status.and_then(|s| s.conditions).unwrap_or_default();
        Ok(conditions.iter().any(|c| c.reason.as_deref() == Some("ScalingDisabled")).then_some(()))
    })
    .await
    .unwrap();

    // Lag appears: Jetway wakes the pool (0 -> 1), then the HPA reads 45 pending
    // through the aggregated API and wants ceil(45 / 10) = 5.
    let appeared = Instant::now();
    for _ in 0..45 {
        ctx.jetstream.publish(format!("{name}.order"), "o".into()).await.unwrap().await.unwrap();
    }
    deployment_replicas(&ctx, "payment", 1).await;
    let woke_after = appeared.elapsed();
    let (reason, message) = hpa_desired(&ctx, "payment", 5).await;
    deployment_replicas(&ctx, "payment", 5).await;
    eprintln!("0 -> 1 after {woke_after:?}, the HPA reached 5 after {:?}", appeared.elapsed());
    assert_eq!(reason, "ValidMetricFound", "{message}");
    assert!(message.contains("external metric nats_consumer_pending_messages"), "{message}");
    assert_eq!(aggregated_pending(&ctx, "payment").await, "45", "what the HPA reads through the aggregation layer");
    assert!(woke_after < Duration::from_secs(3), "woke after {woke_after:?}");
    let status = pools.get("payment").await.unwrap().status.unwrap_or_default();
    assert_eq!(status.last_scale_reason.as_deref(), Some("Activated"));

    // The consumer drains: the HPA comes down to 1, and after the cooldown Jetway
    // takes the pool to 0.
    support::drain(&ctx, &name, "payment", 45).await;
    hpa_desired(&ctx, "payment", 1).await;
    deployment_replicas(&ctx, "payment", 0).await;
    let status = support::last_scale(&ctx, "payment", "IdleAfterCooldown").await;
    assert_eq!(status.desired_replicas, Some(0));
    operator.stop().await;
    forward.abort();
}
