//! The Helm charts: `helm lint`, `helm template` with representative values (and the
//! values schema refusing bad ones), the Grafana dashboard against the metrics the
//! processes really export, the pipeline chart against `examples/`, and `helm install`
//! into the test ground's kube-apiserver with the result checked. helm is built from
//! its Go module at the version pinned in hack/tools.env.

mod support;

use std::process::Output;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use serde_json::Value;
use support::{EVENTUALLY, POLL, TestContext, wait_until};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/jetway");
const PIPELINE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/jetway-pipeline");

fn helm(args: &[&str]) -> Output {
    std::process::Command::new(support::tools().path("helm")).args(args).output().expect("running helm")
}

/// `helm template` of `chart` with `--set` values: every object rendered.
fn template(chart: &str, sets: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "jw", chart, "--namespace", "ops"];
    for set in sets {
        args.extend(["--set", set]);
    }
    let output = helm(&args);
    assert!(output.status.success(), "helm template {sets:?}: {}", String::from_utf8_lossy(&output.stderr));
    documents(&String::from_utf8(output.stdout).expect("utf-8"))
}

fn documents(text: &str) -> Vec<Value> {
    text.split("\n---")
        .map(|document| document.trim().trim_start_matches("---").trim())
        .filter(|document| document.lines().any(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty()))
        .map(|document| serde_saphyr::from_str(document).unwrap_or_else(|e| panic!("{e}: {document}")))
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn only<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

fn env<'a>(deployment: &'a Value, name: &str) -> Option<&'a Value> {
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array()?;
    env.iter().find(|e| e["name"] == name).map(|e| &e["value"])
}

#[test]
fn both_charts_pass_helm_lint_strict() {
    for chart in [CHART, PIPELINE] {
        let output = helm(&["lint", "--strict", chart]);
        assert!(output.status.success(), "{chart}: {}", String::from_utf8_lossy(&output.stdout));
    }
}

#[test]
fn the_default_install_is_two_hardened_replicas_with_the_external_metrics_api() {
    let objects = template(CHART, &[]);
    let deployment = only(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(
        container["resources"]["requests"]["memory"].is_string()
            && container["resources"]["limits"]["memory"].is_string()
    );
    assert_eq!(env(deployment, "JETWAY_LEADER_ELECT"), Some(&Value::from("true")));
    assert!(env(deployment, "JETWAY_NAMESPACE").is_none(), "cluster scope watches every namespace");
    assert!(env(deployment, "POD_NAME").is_some());

    // The external metrics API: served by the leader, behind the APIService, with a
    // certificate the APIService trusts.
    let api_service = only(&objects, "APIService");
    assert_eq!(api_service["metadata"]["name"], "v1beta1.external.metrics.k8s.io");
    let secret = only(&objects, "Secret");
    assert_eq!(api_service["spec"]["caBundle"], secret["data"]["ca.crt"]);
    let services = of_kind(&objects, "Service");
    let backend = services.iter().find(|s| s["metadata"]["name"] == api_service["spec"]["service"]["name"]).unwrap();
    assert_eq!(backend["spec"]["selector"]["jetway.dev/leader"], "true");
    assert_eq!(only(&objects, "PodDisruptionBudget")["spec"]["minAvailable"], 1);
    assert_eq!(only(&objects, "ClusterRole")["kind"], "ClusterRole");
    let rules = only(&objects, "ClusterRole")["rules"].as_array().unwrap().clone();
    let grants = |group: &str, resource: &str| {
        rules
            .iter()
            .any(|r| r["apiGroups"][0] == group && r["resources"].as_array().unwrap().iter().any(|x| x == resource))
    };
    assert!(grants("autoscaling", "horizontalpodautoscalers") && grants("apps", "deployments"));
    assert!(!grants("", "pods"), "pods are patched only in the release's namespace, by the leader Role");
}

#[test]
fn representative_values_render_what_they_ask_for() {
    // Single-namespace mode: Roles only, and the operator told to watch one namespace.
    let objects = template(CHART, &["scope=namespace", "externalMetrics.enabled=false"]);
    assert!(of_kind(&objects, "ClusterRole").is_empty() && of_kind(&objects, "ClusterRoleBinding").is_empty());
    assert_eq!(env(only(&objects, "Deployment"), "JETWAY_NAMESPACE"), Some(&Value::from("ops")));
    // KEDA or prometheus-adapter owns the APIService: none of it here.
    assert!(of_kind(&objects, "APIService").is_empty() && of_kind(&objects, "Secret").is_empty());
    assert!(env(only(&objects, "Deployment"), "JETWAY_EXTERNAL_METRICS_ADDR").is_none());

    let objects = template(CHART, &["externalMetrics.certificate=cert-manager"]);
    let api_service = only(&objects, "APIService");
    assert_eq!(
        api_service["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str().unwrap().split('/').next(),
        Some("ops")
    );
    assert!(api_service["spec"].get("caBundle").is_none());
    assert_eq!(only(&objects, "Certificate")["spec"]["issuerRef"]["kind"], "Issuer");
    assert_eq!(only(&objects, "Issuer")["spec"]["selfSigned"], serde_json::json!({}));

    let objects = template(CHART, &["serviceMonitor.enabled=true", "grafanaDashboard.enabled=true", "replicaCount=1"]);
    assert_eq!(only(&objects, "ServiceMonitor")["spec"]["endpoints"][0]["port"], "http-metrics");
    let dashboard = only(&objects, "ConfigMap");
    let json: Value = serde_json::from_str(dashboard["data"]["jetway.json"].as_str().unwrap()).unwrap();
    assert_eq!(json["uid"], "jetway-overview");
    assert!(of_kind(&objects, "PodDisruptionBudget").is_empty(), "no PDB can hold a single replica");

    let objects = template(CHART, &["nats.credsSecret=nats-creds", "nats.tlsSecret=nats-tls"]);
    let deployment = only(&objects, "Deployment");
    assert_eq!(env(deployment, "JETWAY_NATS_CREDS"), Some(&Value::from("/etc/jetway/nats-creds/creds")));
    assert_eq!(env(deployment, "JETWAY_NATS_TLS_CA"), Some(&Value::from("/etc/jetway/nats-tls/ca.crt")));

    // Spans exported where tracing.otlpEndpoint says, and only then.
    assert!(env(only(&template(CHART, &[]), "Deployment"), "OTEL_EXPORTER_OTLP_ENDPOINT").is_none());
    let objects =
        template(CHART, &["tracing.otlpEndpoint=http://collector.observability:4318", "tracing.sampleRatio=0.1"]);
    let deployment = only(&objects, "Deployment");
    assert_eq!(
        env(deployment, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some(&Value::from("http://collector.observability:4318"))
    );
    assert_eq!(env(deployment, "OTEL_TRACES_SAMPLER_ARG"), Some(&Value::from("0.1")));

    // CRDs only: nothing but what crds/ holds (helm template leaves crds/ out).
    assert!(template(CHART, &["crdsOnly=true"]).is_empty());
    let output = helm(&["show", "crds", CHART]);
    assert_eq!(documents(&String::from_utf8(output.stdout).unwrap()).len(), jetway::crds::all().len());
}

#[test]
fn the_values_schema_refuses_bad_values_naming_them() {
    let cases = [
        ("scope=galaxy", "/scope"),
        ("replicaCount=0", "/replicaCount"),
        ("nats.url=localhost:4222", "/nats/url"),
        ("lagInterval=soon", "/lagInterval"),
        ("externalMetrics.certificate=vault", "/externalMetrics/certificate"),
        ("replicaCont=2", "replicaCont"),
        ("tracing.otlpEndpoint=collector:4318", "/tracing/otlpEndpoint"),
        ("tracing.sampleRatio=2", "/tracing/sampleRatio"),
    ];
    for (set, named) in cases {
        let output = helm(&["template", "jw", CHART, "--set", set]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{set} was accepted");
        assert!(stderr.contains(named), "{set}: {stderr}");
    }
    // Two replicas without leader election would both write.
    let output = helm(&["template", "jw", CHART, "--set", "leaderElection.enabled=false"]);
    assert!(!output.status.success() && String::from_utf8_lossy(&output.stderr).contains("leaderElection.enabled"));
    let single = template(CHART, &["leaderElection.enabled=false", "replicaCount=1"]);
    let backend = of_kind(&single, "Service").into_iter().find(|s| s["spec"]["ports"][0]["port"] == 443).unwrap();
    assert!(backend["spec"]["selector"].get("jetway.dev/leader").is_none(), "a single replica is not labelled");
}

/// The dashboard's operator panels against a scrape of a running operator that has
/// something to show on each: a consumer with a message pending, a pool scaled from
/// zero, a consumer waiting for its stream. (The workers' panels are checked against the workers'
/// scrapes in workers/tests/pipeline.rs.)
#[tokio::test]
async fn the_dashboard_queries_what_a_running_operator_exports() {
    use jetway::api::workerpool::WorkerPool;
    use kube::api::PostParams;
    let ctx = TestContext::new("dashboard").await;
    support::install_crds(&ctx.client).await;
    let operator = support::Operator::start(&ctx.namespace, |_| {}).await;
    let name = ctx.unique("DASH");
    support::stream_with_consumer(&ctx, "orders", &name, "work").await;
    let pool: WorkerPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "jetway.dev/v1alpha1", "kind": "WorkerPool", "metadata": { "name": "work" },
        "spec": { "consumerRef": { "name": "work" }, "worker": { "image": "jetway/payment:test" },
            "autoscaling": { "minReplicas": 0, "maxReplicas": 2, "targetPendingPerReplica": 10, "cooldown": "2s" } }
    }))
    .unwrap();
    ctx.api::<WorkerPool>().create(&PostParams::default(), &pool).await.unwrap();
    support::deployment_replicas(&ctx, "work", 0).await;
    ctx.jetstream.publish(format!("{name}.order"), "o".into()).await.unwrap().await.unwrap();
    support::deployment_replicas(&ctx, "work", 1).await;
    // A consumer whose stream does not exist: a reconcile error, by reason, until it does.
    let waiting: jetway::api::consumer::Consumer = serde_json::from_value(serde_json::json!({
        "apiVersion": "jetway.dev/v1alpha1", "kind": "Consumer", "metadata": { "name": "waiting" },
        "spec": { "streamName": ctx.unique("DASHMISSING"), "durableName": "waiting" }
    }))
    .unwrap();
    ctx.api::<jetway::api::consumer::Consumer>().create(&PostParams::default(), &waiting).await.unwrap();

    let dashboard = std::path::Path::new(CHART).join("dashboards/jetway.json");
    let checked = wait_until("every operator panel to have its series", EVENTUALLY, POLL, || async {
        let (_, text) = support::http_get(operator.http_addr, "/metrics").await?;
        let scrape = jetway_testground::dashboard::Scrape::parse(&text);
        let checked = jetway_testground::dashboard::check(&dashboard, &scrape, |m| !m.starts_with("jetway_worker_"));
        Ok(Some(checked.map_err(anyhow::Error::msg)?))
    })
    .await
    .unwrap();
    assert!(checked >= 9, "{checked}");
    operator.stop().await;
}

#[test]
fn the_pipeline_chart_declares_the_examples_streams_and_consumers() {
    let rendered = template(PIPELINE, &[]);
    let examples = ["streams.yaml", "consumers.yaml"]
        .iter()
        .flat_map(|file| {
            documents(&std::fs::read_to_string(format!("{}/examples/base/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap())
        })
        .collect::<Vec<_>>();
    for example in &examples {
        let name = &example["metadata"]["name"];
        let ours = rendered
            .iter()
            .find(|o| o["kind"] == example["kind"] && o["metadata"]["name"] == *name)
            .unwrap_or_else(|| panic!("{name} is not in the chart"));
        let mut spec = ours["spec"].clone();
        spec.as_object_mut().unwrap().remove("replicas");
        assert_eq!(spec, example["spec"], "{name}");
    }
    let pools = of_kind(&rendered, "WorkerPool");
    let consumers: Vec<_> = pools.iter().map(|p| p["spec"]["consumerRef"]["name"].as_str().unwrap()).collect();
    assert_eq!(consumers, ["payment", "inventory", "audit-orders"]);
    let services: Vec<_> = of_kind(&rendered, "Service").iter().map(|s| s["metadata"]["name"].clone()).collect();
    assert_eq!(services, ["gateway", "intake"], "intake, and the payment gateway simulator");
    let payment_env = &pools[0]["spec"]["worker"]["env"];
    let gateway_url = payment_env.as_array().unwrap().iter().find(|e| e["name"] == "JETWAY_GATEWAY_URL").unwrap();
    assert!(gateway_url["value"].as_str().unwrap().starts_with("http://gateway."), "{gateway_url}");
    // A real provider instead: its URL, its key from a Secret, and no simulator.
    let real = template(
        PIPELINE,
        &["gateway.url=https://api.psp.example", "gateway.apiKeySecret.name=psp", "gateway.simulator.enabled=false"],
    );
    assert_eq!(of_kind(&real, "Service").len(), 1, "no simulator");
    let env = &of_kind(&real, "WorkerPool")[0]["spec"]["worker"]["env"];
    let env = env.as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "JETWAY_GATEWAY_URL" && e["value"] == "https://api.psp.example"));
    let key = env.iter().find(|e| e["name"] == "JETWAY_GATEWAY_API_KEY").expect("the API key");
    assert_eq!(key["valueFrom"]["secretKeyRef"]["name"], "psp");

    // Intake and every pool export spans to the same receiver.
    let traced = template(PIPELINE, &["tracing.otlpEndpoint=http://jaeger.observability:4318"]);
    let intake = of_kind(&traced, "Deployment").into_iter().find(|d| d["metadata"]["name"] == "intake").unwrap();
    let workers = of_kind(&traced, "WorkerPool").into_iter().map(|pool| &pool["spec"]["worker"]["env"]);
    for env in workers.chain([&intake["spec"]["template"]["spec"]["containers"][0]["env"]]) {
        let endpoint = env.as_array().unwrap().iter().find(|e| e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT");
        assert_eq!(endpoint.map(|e| &e["value"]), Some(&Value::from("http://jaeger.observability:4318")), "{env}");
    }
}

#[tokio::test]
async fn helm_install_into_the_test_ground_sets_up_crds_rbac_and_the_operator() {
    let ctx = TestContext::new("helm").await;
    let kubeconfig = ctx.kubeconfig.display().to_string();
    let release = ctx.namespace.clone();
    // The APIService is cluster-wide and this install runs no pods to serve it, so the
    // KEDA-style install: everything else as in production.
    let output = helm(&[
        "install",
        &release,
        CHART,
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        &ctx.namespace,
        "--set",
        "externalMetrics.enabled=false",
        "--set",
        "serviceMonitor.enabled=false",
    ]);
    assert!(output.status.success(), "helm install: {}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("Jetway's own scaler"), "NOTES.txt is shown");

    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    for crd in jetway::crds::all() {
        let name = crd.metadata.name.unwrap();
        wait_until(&format!("{name} Established"), EVENTUALLY, POLL, || async {
            let conditions = crds.get(&name).await?.status.and_then(|s| s.conditions).unwrap_or_default();
            Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(()))
        })
        .await
        .unwrap();
    }
    let fullname = format!("{release}-jetway");
    ctx.api::<ServiceAccount>().get(&fullname).await.expect("the ServiceAccount");
    let role = Api::<ClusterRole>::all(ctx.client.clone()).get(&fullname).await.expect("the ClusterRole");
    assert!(
        role.rules.unwrap().iter().any(|r| r.resources.as_ref().is_some_and(|r| r.contains(&"workerpools".into())))
    );
    let binding = Api::<ClusterRoleBinding>::all(ctx.client.clone()).get(&fullname).await.expect("the binding");
    assert_eq!(binding.subjects.unwrap()[0].name, fullname);
    ctx.api::<Role>().get(&format!("{fullname}-leader")).await.expect("the leader Role");
    ctx.api::<RoleBinding>().get(&format!("{fullname}-leader")).await.expect("the leader RoleBinding");
    let deployment = ctx.api::<Deployment>().get(&fullname).await.expect("the Deployment");
    assert_eq!(deployment.spec.unwrap().replicas, Some(2));

    let output = helm(&["uninstall", &release, "--kubeconfig", &kubeconfig, "--namespace", &ctx.namespace]);
    assert!(output.status.success(), "helm uninstall: {}", String::from_utf8_lossy(&output.stderr));
    let crds_left = crds.get_opt("streams.jetway.dev").await.unwrap();
    assert!(crds_left.is_some(), "helm never deletes CRDs from crds/, so custom resources survive an uninstall");
}
