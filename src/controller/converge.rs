//! The converge step every JetStream kind shares: observe, plan, execute, in that
//! order, under one rule for ownership, adoption, observe-only and the write gate.
//! Each kind says how to observe, plan and write its objects ([`JetStreamKind`]);
//! what happens between is written here once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::Context as JetStream;
use kube::Resource;

use super::answers::Answers;
use super::{Context, Done, ReconcileError, describe, key};
use crate::inventory::{Fingerprint, Kind};
use crate::jetstream::JetStreamError;
use crate::plan::{FieldChange, Plan};

/// One kind of JetStream object Jetway manages, as its custom resource declares it.
pub trait JetStreamKind:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Sync
{
    /// The server's configuration of one object.
    type Config: Clone + PartialEq + serde::Serialize + Send + Sync;
    /// A validated spec: the configuration it stands for and how to plan it.
    type Desired: Clone + Send + Sync;
    /// What the server reports about one object.
    type Report: Send + Sync;
    /// What users call it: "stream", "consumer".
    const NOUN: &'static str;
    /// Which of the inventory's kinds it is.
    const KIND: Kind;

    fn config(desired: &Self::Desired) -> &Self::Config;
    fn with_config(desired: &Self::Desired, config: Self::Config) -> Self::Desired;
    /// The JetStream object's identity on its server: its name, and its stream's.
    fn target(desired: &Self::Desired) -> String;
    fn answers(ctx: &Context) -> &Answers<Self::Config>;
    /// The configuration the server answered with, as the answer memory keeps it.
    fn answer(report: &Self::Report) -> Self::Config;
    fn owner(report: &Self::Report) -> Option<&str>;

    /// The server stream the object is, or lives on.
    fn stream(desired: &Self::Desired) -> &str;
    /// The object as the inventory's last batched read saw it, when that read is
    /// recent and no write came after it.
    fn recall(desired: &Self::Desired, connection: &str, ctx: &Context) -> Option<Self::Report>;
    /// Whether the inventory's last list, recent, showed the object absent: it may be
    /// created without asking first. Kinds whose create would change an existing
    /// object never say so.
    fn unlisted(_desired: &Self::Desired, _connection: &str, _ctx: &Context) -> bool {
        false
    }
    /// What the object's status shows of `report`.
    fn fingerprint(report: &Self::Report) -> Fingerprint;
    /// The object as the server has it; `None` when it does not exist.
    fn observe(
        &self,
        desired: &Self::Desired,
        js: &JetStream,
    ) -> impl Future<Output = Result<Option<Self::Report>, ReconcileError>> + Send;
    /// The plan against `report`, read without Jetway's marks when `released`.
    fn plan(desired: &Self::Desired, report: Option<&Self::Report>, released: bool) -> Plan<Self::Config>;
    fn create(
        js: &JetStream,
        desired: &Self::Desired,
        config: Self::Config,
    ) -> impl Future<Output = Result<Self::Report, JetStreamError>> + Send;
    fn update(
        js: &JetStream,
        desired: &Self::Desired,
        config: Self::Config,
    ) -> impl Future<Output = Result<Self::Report, JetStreamError>> + Send;
    /// The fields the server stored otherwise than `sent` asked.
    fn rewritten(desired: &Self::Desired, sent: &Self::Config, stored: &Self::Config) -> Vec<FieldChange>;
    /// The command by which the user consents to the message loss this object's spec
    /// would cause; kinds whose changes remove no messages never plan such a loss.
    fn loss_consent(&self) -> String {
        String::new()
    }
    /// Runs after each successful write.
    fn written(&self, _desired: &Self::Desired, _js: &JetStream, _ctx: &Context) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Observe, plan and execute; the report is the server's latest word on the object.
/// Planned against the server's own form of this spec when it answered it before.
/// A resync asks the server nothing when the inventory's last read finds the object
/// in sync; any other plan is made again against a fresh read. One JetStream object
/// is converged by one reconcile at a time, so that of two objects declaring it,
/// exactly one creates or adopts it.
pub async fn converge<K: JetStreamKind>(
    object: &K,
    desired: &K::Desired,
    connection: &str,
    js: &JetStream,
    ctx: &Context,
) -> (Option<K::Report>, Result<Done, ReconcileError>) {
    let _turn = ctx.claims.take(format!("{connection}\u{0}{}\u{0}{}", K::NOUN, K::target(desired))).await;
    let unlisted = K::unlisted(desired, connection, ctx);
    let outcome = converge_turn(object, desired, connection, js, ctx, unlisted).await;
    match &outcome.1 {
        // Made meanwhile by someone else, with another configuration: plan against it.
        Err(ReconcileError::ServerRefused(JetStreamError::Refused { code, .. }, _))
            if unlisted && *code == async_nats::jetstream::ErrorCode::STREAM_NAME_EXIST.0 =>
        {
            converge_turn(object, desired, connection, js, ctx, false).await
        }
        _ => outcome,
    }
}

/// [`JetStreamKind::plan`] in a span of its own, which says what was planned.
fn planned<K: JetStreamKind>(desired: &K::Desired, report: Option<&K::Report>, released: bool) -> Plan<K::Config> {
    let span = tracing::info_span!("plan", of = K::NOUN, plan = tracing::field::Empty);
    let plan = span.in_scope(|| K::plan(desired, report, released));
    span.record("plan", plan.name());
    plan
}

/// [`converge`] within the object's turn; `unlisted`: take the inventory's word that
/// the object does not exist.
async fn converge_turn<K: JetStreamKind>(
    object: &K,
    desired: &K::Desired,
    connection: &str,
    js: &JetStream,
    ctx: &Context,
    unlisted: bool,
) -> (Option<K::Report>, Result<Done, ReconcileError>) {
    let key = key(object);
    let asked = K::config(desired);
    let desired = &match K::answers(ctx).stored_form(&key, asked) {
        Some(config) => K::with_config(desired, config),
        None => desired.clone(),
    };
    if let Some(report) = K::recall(desired, connection, ctx)
        && matches!(planned::<K>(desired, Some(&report), false), Plan::InSync)
    {
        ctx.inventory.reported(K::KIND, &key, Some(K::fingerprint(&report)));
        return (Some(report), Ok(Done::InSync));
    }
    let report = match unlisted {
        true => None,
        false => match object.observe(desired, js).await {
            Ok(report) => report,
            Err(err) => return (None, Err(err)),
        },
    };
    ctx.inventory.reported(K::KIND, &key, report.as_ref().map(K::fingerprint));
    let mut plan = planned::<K>(desired, report.as_ref(), false);
    if let (Plan::OwnedElsewhere { owner }, Some(_)) = (&plan, &report)
        && !ctx.owner_exists::<K>(owner).await
    {
        // A mark left by an object since deleted binds nothing.
        plan = planned::<K>(desired, report.as_ref(), true);
    }
    if ctx.settings.observe_only {
        let pending = match &plan {
            Plan::Create { .. } => Some(format!("observe-only: would create the {}", K::NOUN)),
            Plan::Update { changes, .. } => Some(describe("observe-only: would update", changes)),
            Plan::Adopt { differences, .. } => Some(describe("observe-only: would adopt", differences)),
            _ => None,
        };
        if let Some(pending) = pending {
            return (report, Ok(Done::Pending(pending)));
        }
    }
    if matches!(plan, Plan::Create { .. } | Plan::Update { .. } | Plan::Adopt { .. })
        && let Err(err) = ctx.may_write()
    {
        return (report, Err(err));
    }
    let (sent, result) = match plan {
        Plan::InSync => return (report, Ok(Done::InSync)),
        Plan::Create { config } => (asked.clone(), K::create(js, desired, config).await.map(|r| (r, Done::Created))),
        Plan::Update { config, changes } => {
            (config.clone(), K::update(js, desired, config).await.map(|r| (r, Done::Updated(changes))))
        }
        Plan::Adopt { config, differences } => {
            ctx.inventory.touch(connection, K::stream(desired));
            let (report, outcome) = adopt(object, desired, js, config, differences).await;
            ctx.inventory.reported(K::KIND, &key, report.as_ref().map(K::fingerprint));
            return (report, outcome);
        }
        Plan::Refused { violations } => return (report, Err(ReconcileError::ChangeRefused(violations))),
        Plan::WouldLoseMessages { violations } => {
            return (report, Err(ReconcileError::WouldLoseMessages(violations, object.loss_consent())));
        }
        Plan::OwnedElsewhere { owner } => return (report, Err(ReconcileError::OwnedElsewhere(K::NOUN, owner))),
        Plan::AdoptionRefused => return (report, Err(ReconcileError::AdoptionRefused(K::NOUN))),
    };
    ctx.inventory.touch(connection, K::stream(desired));
    match result {
        Ok((written, done)) => {
            ctx.inventory.reported(K::KIND, &key, Some(K::fingerprint(&written)));
            object.written(desired, js, ctx).await;
            let answer = K::answer(&written);
            let rewritten = K::rewritten(desired, &sent, &answer);
            if !rewritten.is_empty() {
                let note = describe(&format!("the server stored the {} in its own form", K::NOUN), &rewritten);
                ctx.event(object, false, "ServerRewrote", note);
            }
            K::answers(ctx).remember(&key, asked, &answer);
            (Some(written), Ok(done))
        }
        Err(err) => (report, Err(err.into())),
    }
}

/// Writes only the ownership marks, then reads the object again: it is this object's
/// only if the mark read back is its own (a writer elsewhere may have marked it too).
async fn adopt<K: JetStreamKind>(
    object: &K,
    desired: &K::Desired,
    js: &JetStream,
    config: K::Config,
    differences: Vec<FieldChange>,
) -> (Option<K::Report>, Result<Done, ReconcileError>) {
    if let Err(err) = K::update(js, desired, config).await {
        return (None, Err(err.into()));
    }
    let report = match object.observe(desired, js).await {
        Ok(report) => report,
        Err(err) => return (None, Err(err)),
    };
    let key = key(object);
    match report.as_ref().map(K::owner) {
        Some(Some(owner)) if owner == key => (report, Ok(Done::Adopted(differences))),
        Some(Some(owner)) => {
            let owner = owner.to_owned();
            (report, Err(ReconcileError::OwnedElsewhere(K::NOUN, owner)))
        }
        // Deleted or released meanwhile: the next look plans it afresh.
        _ => (report, Err(ReconcileError::Conflict(format!("the {} changed while it was adopted", K::NOUN)))),
    }
}

/// Turns to converge one JetStream object: a reconcile holds its object's turn from
/// observing to writing.
#[derive(Default)]
pub struct Claims(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Claims {
    /// Waits for, and holds until dropped, the turn of the JetStream object `target`.
    pub async fn take(&self, target: String) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut claims = self.0.lock().expect("claims lock");
            // Turns nobody holds or waits for are dropped, so the map stays as
            // large as the reconciles running.
            claims.retain(|_, lock| Arc::strong_count(lock) > 1);
            claims.entry(target).or_default().clone()
        };
        lock.lock_owned().await
    }
}
