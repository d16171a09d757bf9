//! What a pool owns: its Deployment and, beside an HPA, its HPA. Built from the spec,
//! applied with server-side apply only when they would change or were edited by hand,
//! and watched (label-selected, without managed fields), so that an edit brings the
//! pool back to them and a pool at rest writes nothing.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, ExternalMetricSource, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use super::POOL_LABEL;
use super::memory::{Applied, Owned};
use crate::api::workerpool::{Autoscaling, WorkerPool};
use crate::controller::{Context, FIELD_MANAGER, ReconcileError};
use crate::extmetrics::PENDING;

/// The live Deployments and HPAs pools own, as their watches reflect them.
#[derive(Default)]
pub struct OwnedStores {
    pub(super) deployments: OnceLock<Store<Deployment>>,
    pub(super) hpas: OnceLock<Store<HorizontalPodAutoscaler>>,
}

/// Watches the objects of kind `K` that carry the pool label (in `namespace`, or all)
/// into a store kept in `slot`; the stream is the controller's `owns` trigger.
pub(super) fn watch_owned<K>(
    ctx: &Context,
    namespace: Option<&str>,
    slot: fn(&OwnedStores) -> &OnceLock<Store<K>>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = match namespace {
        Some(namespace) => Api::namespaced(ctx.client.clone(), namespace),
        None => Api::all(ctx.client.clone()),
    };
    let (store, writer) = kube::runtime::reflector::store();
    let _ = slot(&ctx.owned).set(store);
    watcher(api, watcher::Config::default().labels(POOL_LABEL))
        .default_backoff()
        .modify(|object| object.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .boxed()
}

/// The pool's Deployment, applied with server-side apply and owned by the pool, when
/// it would change; the live one otherwise.
pub(super) async fn apply_deployment(
    pool: &WorkerPool,
    ctx: &Context,
    key: &str,
    replicas: i32,
) -> Result<Deployment, ReconcileError> {
    let name = pool.name_any();
    let namespace = pool.namespace().unwrap_or_default();
    let selector = BTreeMap::from([(POOL_LABEL.to_owned(), name.clone())]);
    let worker = &pool.spec.worker;
    let mut pod_labels = worker.pod_labels.clone().unwrap_or_default();
    pod_labels.extend(selector.clone());
    let deployment = Deployment {
        metadata: owned_meta(pool),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(selector), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: worker.pod_annotations.clone(),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "worker".into(),
                        image: Some(worker.image.clone()),
                        image_pull_policy: worker.image_pull_policy.clone(),
                        command: worker.command.clone(),
                        args: worker.args.clone(),
                        env: worker.env.clone(),
                        env_from: worker.env_from.clone(),
                        resources: worker.resources.clone(),
                        ..Default::default()
                    }],
                    service_account_name: worker.service_account_name.clone(),
                    termination_grace_period_seconds: worker.termination_grace_period_seconds,
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    let object = owned_object(&deployment)?;
    let live = ctx.owned.deployments.get().and_then(|store| store.get(&ObjectRef::new(&name).within(&namespace)));
    let last = ctx.scale_memory.applied(key, Owned::Deployment);
    if let Some(live) = live.filter(|live| unchanged(last.as_ref(), &object, live.metadata.generation)) {
        return Ok((*live).clone());
    }
    let applied: Deployment = apply_object(ctx, &namespace, &name, object.clone()).await?;
    ctx.scale_memory.set_applied(key, Owned::Deployment, Applied { object, generation: applied.metadata.generation });
    Ok(applied)
}

/// Whether `object` is what was applied last, and the live object is still as that
/// apply left it (an edit by hand moves its generation).
fn unchanged(last: Option<&Applied>, object: &serde_json::Value, generation: Option<i64>) -> bool {
    last.is_some_and(|last| &last.object == object && last.generation == generation)
}

/// The pool's HPA: on the consumer's pending messages, through the external metrics
/// API, scaling the pool itself (its `/scale`), between 1 and `maxReplicas`. Applied
/// when it would change, or was edited by hand.
pub(super) async fn apply_hpa(
    pool: &WorkerPool,
    ctx: &Context,
    key: &str,
    policy: &Autoscaling,
    stream: &str,
    consumer: &str,
) -> Result<(), ReconcileError> {
    let name = pool.name_any();
    let namespace = pool.namespace().unwrap_or_default();
    let selector =
        BTreeMap::from([("consumer".to_owned(), consumer.to_owned()), ("stream".to_owned(), stream.to_owned())]);
    let hpa = HorizontalPodAutoscaler {
        metadata: owned_meta(pool),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(WorkerPool::api_version(&()).into_owned()),
                kind: WorkerPool::kind(&()).into_owned(),
                name: name.clone(),
            },
            min_replicas: Some(policy.min_replicas.max(1)),
            max_replicas: policy.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "External".into(),
                external: Some(ExternalMetricSource {
                    metric: MetricIdentifier {
                        name: PENDING.into(),
                        selector: Some(LabelSelector { match_labels: Some(selector), ..Default::default() }),
                    },
                    target: MetricTarget {
                        type_: "AverageValue".into(),
                        average_value: Some(Quantity(policy.target_pending_per_replica.to_string())),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            behavior: policy.behavior.clone(),
        }),
        status: None,
    };
    let object = owned_object(&hpa)?;
    let live = ctx.owned.hpas.get().and_then(|store| store.get(&ObjectRef::new(&name).within(&namespace)));
    let last = ctx.scale_memory.applied(key, Owned::Hpa);
    if live.is_some_and(|live| unchanged(last.as_ref(), &object, live.metadata.generation)) {
        return Ok(());
    }
    let applied: HorizontalPodAutoscaler = apply_object(ctx, &namespace, &name, object.clone()).await?;
    ctx.scale_memory.set_applied(key, Owned::Hpa, Applied { object, generation: applied.metadata.generation });
    Ok(())
}

/// Deletes the pool's HPA, once per pool and process, where it should have none. One
/// the watch has not seen is not asked for: if it exists after all, its arrival in the
/// watch wakes the pool again.
pub(super) async fn remove_hpa(pool: &WorkerPool, ctx: &Context, key: &str) -> Result<(), ReconcileError> {
    if ctx.scale_memory.hpa_absent(key) {
        return Ok(());
    }
    let (name, namespace) = (pool.name_any(), pool.namespace().unwrap_or_default());
    let watched = ctx.owned.hpas.get().map(|store| store.get(&ObjectRef::new(&name).within(&namespace)).is_some());
    if watched == Some(false) {
        return Ok(());
    }
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    match api.delete(&pool.name_any(), &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => return Err(ReconcileError::Kube(err)),
    }
    ctx.scale_memory.hpa_removed(key);
    Ok(())
}

/// Name, namespace, the pool label and the pool as controlling owner.
pub(super) fn owned_meta(pool: &WorkerPool) -> ObjectMeta {
    ObjectMeta {
        name: Some(pool.name_any()),
        namespace: pool.namespace(),
        labels: Some(BTreeMap::from([(POOL_LABEL.to_owned(), pool.name_any())])),
        owner_references: pool.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..Default::default()
    }
}

/// `object` as a server-side apply body: its fields, apiVersion and kind.
fn owned_object<K>(object: &K) -> Result<serde_json::Value, ReconcileError>
where
    K: Resource<DynamicType = ()> + serde::Serialize,
{
    let mut value = serde_json::to_value(object).map_err(|e| ReconcileError::Kube(kube::Error::SerdeError(e)))?;
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    Ok(value)
}

/// Server-side applies `object` as Jetway, taking over fields others set.
async fn apply_object<K>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    object: serde_json::Value,
) -> Result<K, ReconcileError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object))
        .await
        .map_err(ReconcileError::Kube)
}
