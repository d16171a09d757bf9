//! The runner every controller shares: the watch (objects decoded one by one), the
//! finalizer, reconcile metrics, and the report for objects that do not decode.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Context, DecodeError, Decoded, FIELD_MANAGER, FINALIZER, ReconcileError, RunnerError, key};
use crate::status::Health;

/// Reconciles of one kind at once: a burst of thousands of objects is worked through
/// at a pace the apiserver and JetStream take, in bounded memory.
const RECONCILES_IN_FLIGHT: u16 = 128;

/// The store of a controller's objects, as the runner reflects them.
pub type Store<K> = kube::runtime::reflector::Store<Decoded<K>>;
/// A controller of `K`'s objects, as the runner builds it.
pub type Controller<K> = kube::runtime::Controller<Decoded<K>>;

/// How one controller runs.
pub struct Runner<F> {
    /// The kind, as metrics and logs name it.
    pub kind: &'static str,
    /// Only this namespace's objects, or all.
    pub namespace: Option<String>,
    pub shutdown: CancellationToken,
    /// What else starts a reconcile besides a change to the object itself: owned
    /// objects, the inventory's news.
    pub configure: F,
}

impl Runner<()> {
    /// A runner whose controller is woken by the inventory's `news` about its objects
    /// too, besides changes to the objects themselves.
    pub fn woken_by<K>(
        kind: &'static str,
        namespace: Option<String>,
        shutdown: CancellationToken,
        ctx: &Arc<Context>,
        news: crate::inventory::Kind,
    ) -> Runner<impl FnOnce(Controller<K>, Store<K>) -> Controller<K> + use<K>>
    where
        K: super::references::UsesConnection
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        use futures::StreamExt;
        let woken = woken(ctx.inventory.subscribe(news));
        let changed = ctx.references.subscribe();
        let ctx = ctx.clone();
        let configure = move |controller: Controller<K>, store: Store<K>| {
            ctx.references.keep(store.clone());
            // The users of a NatsConnection whose settings changed.
            let users = changed
                .map(move |(namespace, name)| {
                    let users: Vec<_> = super::references::referring(&store, &namespace, &name)
                        .map(|object| kube::runtime::reflector::ObjectRef::from_obj(&*object))
                        .collect();
                    futures::stream::iter(users)
                })
                .flatten();
            controller.reconcile_on(woken).reconcile_on(users)
        };
        Runner { kind, namespace, shutdown, configure }
    }
}

/// The objects named by `keys` (`<namespace>/<name>`), for `reconcile_on`.
pub fn woken<K>(
    keys: impl futures::Stream<Item = String> + Send + 'static,
) -> impl futures::Stream<Item = kube::runtime::reflector::ObjectRef<Decoded<K>>> + Send + 'static
where
    K: Resource<DynamicType = ()> + 'static,
    Decoded<K>: Resource<DynamicType = ()>,
{
    use futures::StreamExt;
    keys.filter_map(|key| async move {
        let (namespace, name) = key.split_once('/')?;
        Some(kube::runtime::reflector::ObjectRef::new(name).within(namespace))
    })
}

/// Runs the controller of kind `K` until the runner's `shutdown` is cancelled: each
/// reconcile goes through [`with_finalizer`] to `apply` or `cleanup`, and a failure
/// backs off per object.
pub async fn run<K, F, A, AF, C, CF>(ctx: Arc<Context>, runner: Runner<F>, apply: A, cleanup: C)
where
    F: FnOnce(Controller<K>, Store<K>) -> Controller<K>,
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    A: FnOnce(Arc<K>, Arc<Context>) -> AF + Copy + Send + Sync + 'static,
    AF: std::future::Future<Output = Result<Action, ReconcileError>> + Send + 'static,
    C: FnOnce(Arc<K>, Arc<Context>) -> CF + Copy + Send + Sync + 'static,
    CF: std::future::Future<Output = Result<Action, ReconcileError>> + Send + 'static,
{
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    use kube::runtime::{Predicate, predicates};
    let Runner { kind, namespace, shutdown, configure } = runner;
    let api: kube::Api<Decoded<K>> = match &namespace {
        Some(ns) => kube::Api::namespaced(ctx.client.clone(), ns),
        None => kube::Api::all(ctx.client.clone()),
    };
    // Only changes a controller reads start a reconcile: the spec (generation, which
    // deletion also bumps), annotations (pause, consent) and labels. The operator's own
    // status writes and its finalizer (added in the reconcile that applies the spec)
    // start none; a finalizer removed by hand is put back at the next resync.
    let (store, writer) = kube::runtime::reflector::store();
    let changes = kube::runtime::watcher(api, kube::runtime::watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::annotations).combine(predicates::labels),
            Default::default(),
        );
    let controller = configure(kube::runtime::Controller::for_stream(changes, store.clone()), store.clone());
    let (synced, readiness) = (ctx.clone(), store.clone());
    tokio::spawn(async move {
        // The store's readiness wakes one waiter only, and the controller's own runner
        // waits on it too; so ask again every so often instead of waiting once.
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            match tokio::time::timeout(Duration::from_millis(10), store.wait_until_ready()).await {
                Ok(Ok(())) => return synced.synced.mark(kind),
                Ok(Err(_dropped)) => return,
                Err(_not_yet) => {}
            }
        }
    });
    // kube's runner waits for the store before it runs anything, and a graceful
    // shutdown does not end that wait: stopped before its first list completed (a pod
    // stopped while starting), a controller would sit out the whole grace period. With
    // nothing reconciled yet, there is nothing to wait for.
    let unready_stop = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            if matches!(futures::FutureExt::now_or_never(readiness.wait_until_ready()), Some(Ok(()))) {
                std::future::pending::<()>().await;
            }
        }
    };
    let running = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(RECONCILES_IN_FLIGHT))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(
            move |object: Arc<Decoded<K>>, ctx| {
                // kube's own "reconciling object" span covers the call, not the
                // future: this one, a trace's root, is the parent of everything the
                // reconcile does.
                let span = tracing::info_span!(parent: None, "reconcile", kind, object = %key(&*object));
                async move {
                    match &object.object {
                        Ok(typed) => with_finalizer(Arc::new(typed.clone()), &ctx, kind, apply, cleanup).await,
                        Err(error) => report_undecodable(&object, error, &ctx, kind).await.map_err(|e| {
                            RunnerError(kube::runtime::finalizer::Error::ApplyFailed(ReconcileError::Kube(e)))
                        }),
                    }
                }
                .instrument(span)
            },
            |object: Arc<Decoded<K>>, error: &RunnerError, ctx: Arc<Context>| {
                tracing::warn!(object = %key(&*object), kind = K::kind(&()).as_ref(), error = %error, "will retry");
                ctx.backoff(&key(&*object))
            },
            ctx,
        )
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "reconcile failed");
            }
        });
    tokio::select! {
        () = running => {}
        () = unready_stop => tracing::debug!(kind, "stopped before its objects were listed"),
    }
}

/// An object the types cannot read: a Warning event and `Ready=False` naming the
/// field, and nothing else is done, not even for a deletion (the deletion policy needs
/// the spec): the object waits, saying so, until it is fixed.
async fn report_undecodable<K>(
    object: &Decoded<K>,
    error: &DecodeError,
    ctx: &Context,
    kind: &'static str,
) -> Result<Action, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    tracing::warn!(object = %key(object), kind, %error, "cannot read the object");
    let health = Health::Stalled {
        reason: "InvalidSpec",
        message: format!("the object cannot be read, and nothing was done: {error}"),
    };
    let generation = object.metadata.generation;
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let conditions = crate::status::conditions(&object.conditions, &health, generation, &now);
    ctx.metrics.reconciled(kind, 0.0, Some(health.reason()));
    if conditions != object.conditions {
        ctx.event(object, true, health.reason(), health.message().to_owned());
        let resource = kube::api::ApiResource::erase::<K>(&());
        let namespace = object.namespace().unwrap_or_default();
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()), "kind": K::kind(&()),
            "status": {"observedGeneration": generation, "conditions": conditions},
        });
        let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
        match api.patch_status(&object.name_any(), &params, &kube::api::Patch::Apply(patch)).await {
            // A value today's schema refuses by a CEL rule fails every write to the
            // object, its status included; the event above says why.
            Err(kube::Error::Api(status)) if status.code == 422 => {
                tracing::debug!(object = %key(object), message = %status.message, "the status cannot be written");
            }
            result => drop(result?),
        }
    }
    Ok(Action::await_change())
}

/// Runs `apply` or, for an object being deleted, `cleanup` behind the finalizer, and
/// counts the reconcile in the metrics.
pub async fn with_finalizer<K, A, AF, C, CF>(
    object: Arc<K>,
    ctx: &Arc<Context>,
    kind: &'static str,
    apply: A,
    cleanup: C,
) -> Result<Action, RunnerError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    A: FnOnce(Arc<K>, Arc<Context>) -> AF,
    AF: std::future::Future<Output = Result<Action, ReconcileError>>,
    C: FnOnce(Arc<K>, Arc<Context>) -> CF,
    CF: std::future::Future<Output = Result<Action, ReconcileError>>,
{
    use kube::runtime::finalizer::{Error, Event, finalizer};
    let started = std::time::Instant::now();
    let api: kube::Api<K> = kube::Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
    let object = match add_finalizer(&api, object).await {
        Ok(object) => object,
        Err(error) => {
            ctx.metrics.reconciled(kind, started.elapsed().as_secs_f64(), Some("FinalizerFailed"));
            return Err(RunnerError(Error::AddFinalizer(error)));
        }
    };
    let result = finalizer(&api, FINALIZER, object, |event| async {
        match event {
            Event::Apply(object) => apply(object, ctx.clone()).await,
            Event::Cleanup(object) => cleanup(object, ctx.clone()).await,
        }
    })
    .await;
    let reason = match &result {
        Ok(_) => None,
        Err(Error::ApplyFailed(e) | Error::CleanupFailed(e)) => Some(e.reason()),
        Err(_) => Some("FinalizerFailed"),
    };
    ctx.metrics.reconciled(kind, started.elapsed().as_secs_f64(), reason);
    result.map_err(RunnerError)
}

/// The object with the finalizer in place: added here, in the same reconcile that
/// then applies the spec, rather than in one of its own that the finalizer's change
/// would start the next. The patch holds the resourceVersion read, so a concurrent
/// change to the finalizers fails it instead of being overwritten. The store can lag
/// behind the operator's own writes (a reconcile woken before the watch delivered the
/// finalizer the last one added): on a conflict the object is read afresh, once.
async fn add_finalizer<K>(api: &kube::Api<K>, object: Arc<K>) -> Result<Arc<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let needs =
        |object: &K| object.meta().deletion_timestamp.is_none() && !object.finalizers().iter().any(|f| f == FINALIZER);
    let patch = |object: &K| {
        let mut finalizers = object.finalizers().to_vec();
        finalizers.push(FINALIZER.to_owned());
        let patch = serde_json::json!({
            "metadata": {"finalizers": finalizers, "resourceVersion": object.meta().resource_version},
        });
        kube::api::Patch::Merge(patch)
    };
    if !needs(&object) {
        return Ok(object);
    }
    let name = object.name_any();
    match api.patch(&name, &Default::default(), &patch(&object)).await {
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let fresh = api.get(&name).await?;
            if !needs(&fresh) {
                return Ok(Arc::new(fresh));
            }
            Ok(Arc::new(api.patch(&name, &Default::default(), &patch(&fresh)).await?))
        }
        patched => Ok(Arc::new(patched?)),
    }
}
