//! An upgrade from chart 0.1.0 (the CRDs the first round shipped, kept in
//! tests/fixtures) to today's: the CRDs are applied the way charts/README.md says
//! (Helm never upgrades what is under crds/), the objects written under the old
//! schema are kept as they were, and today's operator reconciles them to Ready.

mod support;

use jetway::api::consumer::Consumer;
use jetway::api::stream::Stream;
use jetway::api::workerpool::WorkerPool;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use support::{Operator, TestContext};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/jetway");
const PREVIOUS_CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/crds-0.1.0.yaml");

/// Puts the CRDs of `yaml` in place as they are (a replace, not a merge with what is there).
async fn replace_crds(client: &kube::Client, yaml: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for document in yaml.split("\n---").filter(|d| d.contains("kind: CustomResourceDefinition")) {
        let mut crd: CustomResourceDefinition = serde_saphyr::from_str(document).expect("a CRD");
        let name = crd.metadata.name.clone().expect("a name");
        match crds.get_opt(&name).await.unwrap() {
            Some(existing) => {
                crd.metadata.resource_version = existing.metadata.resource_version;
                crds.replace(&name, &PostParams::default(), &crd).await.expect("replacing the CRD");
            }
            None => drop(crds.create(&PostParams::default(), &crd).await.expect("creating the CRD")),
        }
        support::wait_established(&crds, &name).await;
    }
}

/// Writes `object` as it is, whatever today's Rust types make of it.
async fn create_raw(ctx: &TestContext, object: serde_json::Value) -> DynamicObject {
    let kind = object["kind"].as_str().unwrap();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("jetway.dev", "v1alpha1", kind));
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &resource);
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.expect("creating under the old schema")
}

#[tokio::test]
async fn objects_written_under_the_previous_crds_are_kept_and_reconciled_after_the_upgrade() {
    let ctx = TestContext::new("upgrade").await;
    replace_crds(&ctx.client, &std::fs::read_to_string(PREVIOUS_CRDS).unwrap()).await;
    let name = ctx.unique("UPGRADE");
    let before = [
        create_raw(&ctx, json!({ "apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": { "name": "orders" },
            "spec": { "name": name, "subjects": [format!("{name}.>")], "maxAge": "24h", "storage": "file", "deletionPolicy": "Delete" } }))
        .await,
        create_raw(&ctx, json!({ "apiVersion": "jetway.dev/v1alpha1", "kind": "Consumer", "metadata": { "name": "payment" },
            "spec": { "streamName": name, "durableName": "payment", "ackPolicy": "explicit", "maxDeliver": 5, "ackWait": "30s" } }))
        .await,
        create_raw(&ctx, json!({ "apiVersion": "jetway.dev/v1alpha1", "kind": "WorkerPool", "metadata": { "name": "payment" },
            "spec": { "consumerRef": { "name": "payment" }, "worker": { "image": "jetway/payment:0.1.0" },
                "autoscaling": { "minReplicas": 0, "maxReplicas": 3, "targetPendingPerReplica": 10 } } }))
        .await,
    ];

    // The upgrade's first step, as charts/README.md gives it.
    let tools = support::tools();
    let crds = std::process::Command::new(tools.path("helm")).args(["show", "crds", CHART]).output().unwrap();
    assert!(crds.status.success(), "{}", String::from_utf8_lossy(&crds.stderr));
    let mut apply = std::process::Command::new(tools.path("kubectl"))
        .args(["apply", "--server-side", "--force-conflicts", "--field-manager", "jetway-upgrade", "-f", "-"])
        .env("KUBECONFIG", &ctx.kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut apply.stdin.take().unwrap(), &crds.stdout).unwrap();
    let applied = apply.wait_with_output().unwrap();
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let served: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    for crd in jetway::crds::all() {
        let name = crd.metadata.name.clone().unwrap();
        support::wait_established(&served, &name).await;
        let schema = |crd: &CustomResourceDefinition| serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        assert_eq!(schema(&served.get(&name).await.unwrap()), schema(&crd), "{name} is today's");
    }

    // Kept as they were written, and reconciled by today's operator.
    for old in &before {
        let kind = old.types.as_ref().unwrap().kind.clone();
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("jetway.dev", "v1alpha1", &kind));
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &resource);
        let now = api.get(&old.metadata.name.clone().unwrap()).await.unwrap();
        assert_eq!(now.metadata.uid, old.metadata.uid, "{kind} kept");
        assert_eq!(now.data["spec"], old.data["spec"], "{kind}'s spec unchanged");
    }
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    support::wait_all_ready(&ctx.api::<Stream>()).await;
    support::wait_all_ready(&ctx.api::<Consumer>()).await;
    support::wait_condition(&ctx.api::<WorkerPool>(), "payment", "Ready", "True").await;
    let stream = ctx.jetstream.get_stream(&name).await.unwrap().cached_info().clone();
    assert_eq!(stream.config.max_age, std::time::Duration::from_secs(24 * 3600));
    operator.stop().await;
}
