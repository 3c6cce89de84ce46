//! What a node can run: workflow and activity definitions by type name.

use cairn_core::{WorkflowContext, WorkflowFuture};
use cairn_types::SearchType;
use cairn_types::{Failure, Payload, RunId, Seq, WorkflowId};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;

impl cairn_plan::Registered for Registry {
    fn has_workflow(&self, name: &str) -> bool {
        self.workflow_def(name).is_some()
    }

    fn has_activity(&self, name: &str) -> bool {
        Registry::has_activity(self, name)
    }

    fn search_attribute_type(&self, name: &str) -> Option<SearchType> {
        Registry::search_attribute_type(self, name)
    }
}

/// A workflow definition: builds the (single-threaded) workflow future of a run. The definition
/// itself is shared across threads; the future it makes stays on its run's thread.
pub type WorkflowDef = Arc<dyn Fn(WorkflowContext, Payload) -> WorkflowFuture + Send + Sync>;

/// The future an activity returns.
pub type ActivityFuture = Pin<Box<dyn Future<Output = Result<Payload, Failure>> + Send>>;

/// An activity definition.
pub type ActivityDef = Arc<dyn Fn(ActivityContext, Payload) -> ActivityFuture + Send + Sync>;

/// Checks that a payload decodes as a workflow's input type.
pub type InputCheck = Arc<dyn Fn(&Payload) -> Result<(), String> + Send + Sync>;

/// Workflow and activity definitions, by type name.
#[derive(Clone, Default)]
pub struct Registry {
    workflows: BTreeMap<String, WorkflowDef>,
    input_checks: BTreeMap<String, InputCheck>,
    activities: BTreeMap<String, ActivityDef>,
    search_attributes: BTreeMap<String, SearchType>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut w: Vec<_> = self.workflows.keys().collect();
        let mut a: Vec<_> = self.activities.keys().collect();
        w.sort();
        a.sort();
        f.debug_struct("Registry")
            .field("workflows", &w)
            .field("activities", &a)
            .finish()
    }
}

impl Registry {
    /// Registers (or replaces) a workflow type.
    pub fn workflow(&mut self, name: &str, def: WorkflowDef) -> &mut Self {
        self.workflows.insert(name.to_string(), def);
        self
    }

    /// Registers (or replaces) an activity type.
    pub fn activity(&mut self, name: &str, def: ActivityDef) -> &mut Self {
        self.activities.insert(name.to_string(), def);
        self
    }

    /// Registers how to check that an input decodes for workflow type `name`; starts with an
    /// input that does not are refused before anything is written.
    pub fn workflow_input_check(&mut self, name: &str, check: InputCheck) -> &mut Self {
        self.input_checks.insert(name.to_string(), check);
        self
    }

    pub fn check_input(&self, name: &str, input: &Payload) -> Result<(), String> {
        match self.input_checks.get(name) {
            Some(check) => check(input),
            None => Ok(()),
        }
    }

    pub fn has_activity(&self, name: &str) -> bool {
        self.activities.contains_key(name)
    }

    pub fn workflow_def(&self, name: &str) -> Option<&WorkflowDef> {
        self.workflows.get(name)
    }

    pub fn activity_def(&self, name: &str) -> Option<&ActivityDef> {
        self.activities.get(name)
    }

    /// Registers custom search attribute `name` of type `ty`, which visibility queries can
    /// then name. Registering one name with two types panics: a name has one type for good.
    pub fn search_attribute(&mut self, name: &str, ty: SearchType) -> &mut Self {
        if let Some(previous) = self.search_attributes.insert(name.to_string(), ty) {
            assert_eq!(
                previous, ty,
                "search attribute {name:?} registered as {previous:?} and as {ty:?}"
            );
        }
        self
    }

    /// The type of registered custom search attribute `name`.
    pub fn search_attribute_type(&self, name: &str) -> Option<SearchType> {
        self.search_attributes.get(name).copied()
    }

    /// Every registered custom search attribute.
    pub fn search_attributes(&self) -> &BTreeMap<String, SearchType> {
        &self.search_attributes
    }

    pub fn workflow_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.workflows.keys().cloned().collect();
        names.sort();
        names
    }
}

/// What an activity knows about the attempt it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityInfo {
    pub workflow_id: WorkflowId,
    pub run_id: RunId,
    /// Unique within the run (the activity's sequence number).
    pub activity_id: String,
    pub activity_type: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `workflow_id/activity_id`: the same across retries of this activity, so a service
    /// called by it can deduplicate.
    pub idempotency_key: String,
    pub task_queue: String,
}

/// Sink for heartbeats of one attempt.
pub(crate) type HeartbeatSink = Arc<dyn Fn(Payload) + Send + Sync>;

/// The activity's handle on its attempt: info, heartbeats, cancellation.
#[derive(Clone)]
pub struct ActivityContext {
    info: ActivityInfo,
    last_heartbeat: Option<Payload>,
    heartbeat: HeartbeatSink,
    cancelled: watch::Receiver<bool>,
}

impl std::fmt::Debug for ActivityContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityContext")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ActivityContext {
    pub(crate) fn new(
        info: ActivityInfo,
        last_heartbeat: Option<Payload>,
        heartbeat: HeartbeatSink,
        cancelled: watch::Receiver<bool>,
    ) -> Self {
        Self {
            info,
            last_heartbeat,
            heartbeat,
            cancelled,
        }
    }

    pub fn info(&self) -> &ActivityInfo {
        &self.info
    }

    /// Records progress: resets the heartbeat timeout and stores `details`, which the next
    /// attempt sees in [`Self::heartbeat_details`] if this one fails.
    pub fn heartbeat(&self, details: Payload) {
        (self.heartbeat)(details);
    }

    /// Details of the last heartbeat of an earlier attempt of this activity.
    pub fn heartbeat_details(&self) -> Option<&Payload> {
        self.last_heartbeat.as_ref()
    }

    /// Whether the workflow asked for this activity to stop.
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    /// Resolves when the workflow asks for this activity to stop.
    pub async fn cancelled(&self) {
        let mut rx = self.cancelled.clone();
        if rx.wait_for(|c| *c).await.is_err() {
            // The attempt's flag is gone (the attempt ended): no cancellation will come.
            std::future::pending::<()>().await;
        }
    }
}

/// Key of a running attempt, for cancellation.
pub(crate) type AttemptKey = (RunId, Seq);
