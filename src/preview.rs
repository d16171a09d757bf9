//! `jetway plan`: what `jetway run` would do to the live JetStream for a set of
//! manifests, without any Kubernetes cluster.
//!
//! Read the manifests (I/O) → resolve each spec (pure, `Desired*::from_spec`) →
//! observe the server (I/O) → plan (pure, the reconciler's own planners) → report.
//! A refused plan is reported with the reason the reconciler would give.

use std::fmt::Write as _;
use std::path::Path;

use async_nats::jetstream::Context;
use serde::Serialize;

use crate::api::consumer::Consumer;
use crate::api::stream::Stream;
use crate::jetstream::{self, ConsumerLookup};
use crate::manifest::{self, Manifest};
use crate::plan::consumer::{DesiredConsumer, plan_consumer};
use crate::plan::stream::{DesiredStream, plan_stream};
use crate::plan::{FieldChange, Plan, Violation};

/// What `run` would do to one object's JetStream counterpart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    InSync,
    Create,
    Update,
    /// Take over an existing stream or consumer; `changes` lists what that changes.
    Adopt,
    /// Create the consumer once its stream exists.
    CreateAfterStream,
    Refused,
}

#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub field: String,
    pub from: String,
    pub to: String,
}

impl From<&FieldChange> for Change {
    fn from(change: &FieldChange) -> Self {
        Self { field: change.field.into(), from: change.from.clone(), to: change.to.clone() }
    }
}

/// One object's plan.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectPlan {
    pub kind: &'static str,
    /// `<namespace>/<name>` of the object.
    pub object: String,
    /// The stream, or `<stream>/<durable>` of the consumer.
    pub target: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// Why a plan is refused, each naming the field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl ObjectPlan {
    /// Whether `run` would change the server's configuration (adopting an identical
    /// stream or consumer only marks it as Jetway's).
    pub fn changes_something(&self) -> bool {
        match self.action {
            Action::InSync => false,
            Action::Adopt => !self.changes.is_empty(),
            _ => true,
        }
    }
}

/// The plan for every object, and how it ends.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub objects: Vec<ObjectPlan>,
}

impl Report {
    pub fn changes_pending(&self) -> bool {
        self.objects.iter().any(ObjectPlan::changes_something)
    }

    pub fn refused(&self) -> bool {
        self.objects.iter().any(|o| o.action == Action::Refused)
    }

    /// 1 when something would be refused, 2 when changes are pending, 0 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.refused() {
            1
        } else if self.changes_pending() {
            2
        } else {
            0
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for object in &self.objects {
            let action = match object.action {
                Action::InSync => "in sync",
                Action::Create => "create",
                Action::Update => "update",
                Action::Adopt if object.changes.is_empty() => "adopt, no changes",
                Action::Adopt => "adopt and update",
                Action::CreateAfterStream => "create once its stream exists",
                Action::Refused => "refused",
            };
            let _ = writeln!(out, "{} {} ({}): {action}", object.kind, object.object, object.target);
            for change in &object.changes {
                let _ = writeln!(out, "    {}: {} -> {}", change.field, change.from, change.to);
            }
            for reason in &object.reasons {
                let _ = writeln!(out, "    {reason}");
            }
        }
        let pending = self.objects.iter().filter(|o| o.changes_something()).count();
        let _ = writeln!(out, "{} objects, {pending} with changes", self.objects.len());
        out
    }
}

/// What the reconciler's plan for a `noun` ("stream", "consumer") would do, in `plan`.
fn record<C>(plan: &mut ObjectPlan, outcome: Plan<C>, noun: &str) {
    match outcome {
        Plan::InSync => plan.action = Action::InSync,
        Plan::Create { .. } => plan.action = Action::Create,
        Plan::Update { changes, .. } => {
            plan.action = Action::Update;
            plan.changes = changes.iter().map(Change::from).collect();
        }
        Plan::Adopt { differences, .. } => {
            plan.action = Action::Adopt;
            plan.changes = differences.iter().map(Change::from).collect();
        }
        Plan::Refused { violations } | Plan::WouldLoseMessages { violations } => plan.reasons = reasons(&violations),
        Plan::OwnedElsewhere { owner } => plan.reasons = vec![format!("the {noun} is managed by {owner}")],
        Plan::AdoptionRefused => {
            plan.reasons = vec![format!("spec.adoptionPolicy: the {noun} exists and adoptionPolicy is Never")]
        }
    }
}

fn reasons(violations: &[Violation]) -> Vec<String> {
    violations.iter().map(ToString::to_string).collect()
}

/// Plans every Stream and Consumer under `path` against `js`; objects without a
/// namespace are placed in `namespace`.
pub async fn plan_path(js: &Context, path: &Path, namespace: &str) -> anyhow::Result<Report> {
    let manifests = manifest::read(path)?;
    // Streams the manifests create count as existing for their consumers.
    let mut creating = Vec::new();
    let mut objects = Vec::new();
    for manifest in &manifests {
        if let Manifest::Stream(stream) = manifest {
            let plan = plan_one_stream(js, stream, namespace).await?;
            if plan.action == Action::Create {
                creating.push(plan.target.clone());
            }
            objects.push(plan);
        }
    }
    for manifest in &manifests {
        if let Manifest::Consumer(consumer) = manifest {
            objects.push(plan_one_consumer(js, consumer, namespace, &creating).await?);
        }
    }
    Ok(Report { objects })
}

async fn plan_one_stream(js: &Context, stream: &Stream, namespace: &str) -> anyhow::Result<ObjectPlan> {
    let object = manifest::owner(stream, namespace);
    let name = stream.metadata.name.as_deref().unwrap_or_default();
    let mut plan = ObjectPlan {
        kind: "Stream",
        target: stream.spec.name.clone().unwrap_or_else(|| name.to_owned()),
        object: object.clone(),
        action: Action::Refused,
        changes: Vec::new(),
        reasons: Vec::new(),
    };
    let desired = match DesiredStream::from_spec(&stream.spec, name, &object) {
        Ok(desired) => desired,
        Err(violations) => {
            plan.reasons = reasons(&violations);
            return Ok(plan);
        }
    };
    let observed = jetstream::observe_stream(js, desired.name()).await?.map(|report| report.observed);
    record(&mut plan, plan_stream(&desired, observed.as_ref()), "stream");
    Ok(plan)
}

async fn plan_one_consumer(
    js: &Context,
    consumer: &Consumer,
    namespace: &str,
    streams_created: &[String],
) -> anyhow::Result<ObjectPlan> {
    let object = manifest::owner(consumer, namespace);
    let name = consumer.metadata.name.as_deref().unwrap_or_default();
    let stream = &consumer.spec.stream_name;
    let durable = consumer.spec.durable_name.clone().unwrap_or_else(|| name.to_owned());
    let mut plan = ObjectPlan {
        kind: "Consumer",
        target: format!("{stream}/{durable}"),
        object: object.clone(),
        action: Action::Refused,
        changes: Vec::new(),
        reasons: Vec::new(),
    };
    let desired = match DesiredConsumer::from_spec(&consumer.spec, name, &object) {
        Ok(desired) => desired,
        Err(violations) => {
            plan.reasons = reasons(&violations);
            return Ok(plan);
        }
    };
    let observed = match jetstream::observe_consumer(js, stream, desired.name()).await? {
        ConsumerLookup::Found(report) => Some(report.observed),
        ConsumerLookup::Missing => None,
        ConsumerLookup::NoStream if streams_created.contains(stream) => {
            plan.action = Action::Create;
            return Ok(plan);
        }
        ConsumerLookup::NoStream => {
            plan.action = Action::CreateAfterStream;
            return Ok(plan);
        }
    };
    record(&mut plan, plan_consumer(&desired, observed.as_ref()), "consumer");
    Ok(plan)
}
