//! Updates of one run waiting in its actor: admitted (asked for, neither accepted nor
//! rejected yet) and accepted (in the history, handler running). Callers follow an update
//! through a `watch` channel whose value is its [`UpdateState`].
//!
//! Nothing here is stored. An admitted update lives as long as its run's actor: if the actor
//! stops first, its callers see [`UpdateState::Lost`] and ask again with the same update id
//! (acceptance is deduplicated by id in the run's snapshot, so a retry is never accepted
//! twice). An accepted update is in the history; callers that watch it after a restart get a
//! fresh channel, completed when its handler's completion is committed.

use cairn_types::{Failure, Payload, UpdateOutcome};
use std::collections::BTreeMap;
use tokio::sync::watch;

/// The error type of an update refused because the worker's workflow task did not answer it.
pub const UNPROCESSED_UPDATE: &str = "UnprocessedUpdate";
/// The error type of an accepted update whose run closed before its handler finished.
pub const ACCEPTED_UPDATE_COMPLETED_WORKFLOW: &str = "AcceptedUpdateCompletedWorkflow";

/// An update request, as a worker's workflow task carries it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UpdateRequest {
    pub update_id: String,
    pub name: String,
    pub input: Payload,
}

/// Where an update is, as its callers see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum UpdateState {
    /// The run's actor holds it; no validator has seen it yet.
    Admitted,
    /// Accepted: recorded in the history; its handler runs.
    Accepted,
    /// Finished: rejected by its validator (a failure, nothing in the history) or completed
    /// by its handler.
    Completed(UpdateOutcome),
    /// The run closed before the update was accepted: it never will be.
    Aborted,
    /// The run's actor stopped before the update was accepted (a commit failed, the shard
    /// moved): ask again with the same id.
    Lost,
}

/// The stage a caller waits for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum UpdateStage {
    Admitted,
    Accepted,
    Completed,
}

impl UpdateState {
    /// Whether a caller waiting for `stage` has its answer.
    pub fn reached(&self, stage: UpdateStage) -> bool {
        match self {
            Self::Admitted => stage == UpdateStage::Admitted,
            Self::Accepted => stage <= UpdateStage::Accepted,
            Self::Completed(_) | Self::Aborted | Self::Lost => true,
        }
    }
}

struct Admitted {
    request: UpdateRequest,
    /// The workflow task `(task, attempt)` that carries it to a worker, once handed out.
    sent_in: Option<(u32, u32)>,
    state: watch::Sender<UpdateState>,
}

/// A run's waiting updates.
#[derive(Default)]
pub struct Updates {
    admitted: Vec<Admitted>,
    accepted: BTreeMap<String, watch::Sender<UpdateState>>,
}

impl Updates {
    /// The channel of update `update_id` if it is admitted or accepted here.
    pub fn watch(&self, update_id: &str) -> Option<watch::Receiver<UpdateState>> {
        self.admitted
            .iter()
            .find(|a| a.request.update_id == update_id)
            .map(|a| a.state.subscribe())
            .or_else(|| self.accepted.get(update_id).map(watch::Sender::subscribe))
    }

    /// The channel of update `update_id`, accepted and in flight (after a restart, a fresh
    /// one).
    pub fn watch_accepted(&mut self, update_id: &str) -> watch::Receiver<UpdateState> {
        self.accepted
            .entry(update_id.to_string())
            .or_insert_with(|| watch::Sender::new(UpdateState::Accepted))
            .subscribe()
    }

    /// Admits `request` (the caller checked it is new and within the bounds).
    pub fn admit(&mut self, request: UpdateRequest) -> watch::Receiver<UpdateState> {
        let (state, receiver) = watch::channel(UpdateState::Admitted);
        self.admitted.push(Admitted {
            request,
            sent_in: None,
            state,
        });
        receiver
    }

    /// Updates admitted, not yet accepted or rejected.
    pub fn admitted(&self) -> usize {
        self.admitted.len()
    }

    /// The admitted requests, in arrival order.
    pub fn requests(&self) -> impl Iterator<Item = &UpdateRequest> {
        self.admitted.iter().map(|a| &a.request)
    }

    /// Whether an admitted update has not been handed to a worker.
    pub fn unsent(&self) -> bool {
        self.admitted.iter().any(|a| a.sent_in.is_none())
    }

    /// Hands every admitted update not yet handed out to workflow task `(task, attempt)`.
    pub fn attach(&mut self, task: u32, attempt: u32) -> Vec<UpdateRequest> {
        self.admitted
            .iter_mut()
            .filter(|a| a.sent_in.is_none())
            .map(|a| {
                a.sent_in = Some((task, attempt));
                a.request.clone()
            })
            .collect()
    }

    /// The task `(task, attempt)` failed or was not applied: its updates go with the next.
    pub fn detach(&mut self, task: u32, attempt: u32) {
        for admitted in &mut self.admitted {
            if admitted.sent_in == Some((task, attempt)) {
                admitted.sent_in = None;
            }
        }
    }

    /// Update `update_id` was rejected: nothing of it is in the history.
    pub fn reject(&mut self, update_id: &str, failure: Failure) {
        if let Some(at) = self
            .admitted
            .iter()
            .position(|a| a.request.update_id == update_id)
        {
            let admitted = self.admitted.remove(at);
            admitted
                .state
                .send_replace(UpdateState::Completed(UpdateOutcome::Failure(failure)));
        }
    }

    /// The task `(task, attempt)` was applied, and its worker neither accepted nor rejected
    /// these updates it carried: they are rejected (Temporal's rule; the worker does not
    /// know them).
    pub fn unprocessed(&mut self, task: u32, attempt: u32) {
        let ids: Vec<String> = self
            .admitted
            .iter()
            .filter(|a| a.sent_in == Some((task, attempt)))
            .map(|a| a.request.update_id.clone())
            .collect();
        for id in ids {
            let failure = Failure::new(
                UNPROCESSED_UPDATE,
                "the update was rejected because the workflow's worker did not process it; it may not support updates",
            )
            .non_retryable();
            self.reject(&id, failure);
        }
    }

    /// Update `update_id`'s acceptance committed.
    pub fn accepted(&mut self, update_id: &str) {
        let state = match self
            .admitted
            .iter()
            .position(|a| a.request.update_id == update_id)
        {
            Some(at) => self.admitted.remove(at).state,
            None => watch::Sender::new(UpdateState::Accepted),
        };
        state.send_replace(UpdateState::Accepted);
        self.accepted.insert(update_id.to_string(), state);
    }

    /// Update `update_id`'s completion committed.
    pub fn completed(&mut self, update_id: &str, outcome: UpdateOutcome) {
        if let Some(state) = self.accepted.remove(update_id) {
            state.send_replace(UpdateState::Completed(outcome));
        }
    }

    /// The run closed: admitted updates never will be accepted here (after a continue-as-new
    /// their callers ask the next run: `Lost`); accepted ones never complete.
    pub fn closed(&mut self, continued_as_new: bool) {
        let abort = if continued_as_new {
            UpdateState::Lost
        } else {
            UpdateState::Aborted
        };
        for admitted in self.admitted.drain(..) {
            admitted.state.send_replace(abort.clone());
        }
        for (_, state) in std::mem::take(&mut self.accepted) {
            state.send_replace(UpdateState::Completed(UpdateOutcome::Failure(
                closed_before_completion(),
            )));
        }
    }

    /// Whether nothing waits here.
    pub fn is_empty(&self) -> bool {
        self.admitted.is_empty() && self.accepted.values().all(|s| s.receiver_count() == 0)
    }
}

/// The outcome of an accepted update whose run closed before its handler finished.
pub fn closed_before_completion() -> Failure {
    Failure::new(
        ACCEPTED_UPDATE_COMPLETED_WORKFLOW,
        "the update failed because the workflow closed before the update's handler finished",
    )
    .non_retryable()
}

/// Waits on `state` until it reaches `stage` or `deadline` passes; returns the state then
/// (a channel whose actor stopped before a final state reads [`UpdateState::Lost`]).
pub async fn wait_for(
    mut state: watch::Receiver<UpdateState>,
    stage: UpdateStage,
    deadline: tokio::time::Instant,
) -> UpdateState {
    loop {
        let now = state.borrow_and_update().clone();
        if now.reached(stage) {
            return now;
        }
        match tokio::time::timeout_at(deadline, state.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                // The sender is gone: its last value stands if final, else the update is lost.
                let last = state.borrow().clone();
                return match last {
                    UpdateState::Completed(_) | UpdateState::Aborted => last,
                    _ => UpdateState::Lost,
                };
            }
            Err(_) => return now,
        }
    }
}

/// What a forwarded update call does at the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum UpdateCall {
    /// Admit the update, or find the one with its id.
    Admit(UpdateRequest),
    /// Only find update `update_id`.
    Poll(String),
}

/// An update call for the node holding the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeerUpdate {
    pub workflow_id: cairn_types::WorkflowId,
    pub run_id: cairn_types::RunId,
    pub call: UpdateCall,
    pub wait_for: UpdateStage,
    pub wait_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str) -> UpdateRequest {
        UpdateRequest {
            update_id: id.into(),
            name: "set".into(),
            input: Payload::encode(&1u32).unwrap(),
        }
    }

    #[tokio::test]
    async fn an_update_goes_admitted_accepted_completed() {
        let mut updates = Updates::default();
        let watcher = updates.admit(request("a"));
        assert_eq!(updates.attach(1, 1).len(), 1);
        assert!(updates.attach(1, 1).is_empty(), "handed out once");
        updates.accepted("a");
        let later = far();
        assert_eq!(
            wait_for(watcher.clone(), UpdateStage::Accepted, later).await,
            UpdateState::Accepted
        );
        let result = Payload::encode(&"done").unwrap();
        updates.completed("a", UpdateOutcome::Success(result.clone()));
        assert_eq!(
            wait_for(watcher, UpdateStage::Completed, later).await,
            UpdateState::Completed(UpdateOutcome::Success(result))
        );
        assert!(updates.is_empty());
    }

    #[tokio::test]
    async fn a_task_that_ignored_its_updates_rejects_them_and_a_failed_one_resends_them() {
        let mut updates = Updates::default();
        let a = updates.admit(request("a"));
        let _b = updates.admit(request("b"));
        updates.attach(1, 1);
        updates.detach(1, 1);
        assert!(updates.unsent());
        assert_eq!(updates.attach(2, 1).len(), 2);
        updates.accepted("b");
        updates.unprocessed(2, 1);
        let state = wait_for(a, UpdateStage::Completed, far()).await;
        assert!(
            matches!(&state, UpdateState::Completed(UpdateOutcome::Failure(f)) if f.error_type == UNPROCESSED_UPDATE),
            "{state:?}"
        );
        assert_eq!(updates.admitted(), 0);
    }

    #[tokio::test]
    async fn a_closed_run_aborts_admitted_and_fails_accepted_updates_and_a_dropped_actor_loses_them()
     {
        let mut updates = Updates::default();
        let admitted = updates.admit(request("a"));
        let accepted = updates.watch_accepted("b");
        updates.closed(false);
        let far = far();
        assert_eq!(
            wait_for(admitted, UpdateStage::Completed, far).await,
            UpdateState::Aborted
        );
        assert!(matches!(
            wait_for(accepted, UpdateStage::Completed, far).await,
            UpdateState::Completed(UpdateOutcome::Failure(f)) if f.error_type == ACCEPTED_UPDATE_COMPLETED_WORKFLOW
        ));
        let mut dropped = Updates::default();
        let lost = dropped.admit(request("c"));
        drop(dropped);
        assert_eq!(
            wait_for(lost, UpdateStage::Accepted, far).await,
            UpdateState::Lost
        );
    }

    #[tokio::test]
    async fn a_wait_that_times_out_says_how_far_the_update_got() {
        let mut updates = Updates::default();
        let watcher = updates.admit(request("a"));
        let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
        assert_eq!(
            wait_for(watcher, UpdateStage::Completed, soon).await,
            UpdateState::Admitted
        );
    }

    /// A deadline no test reaches.
    fn far() -> tokio::time::Instant {
        tokio::time::Instant::now() + std::time::Duration::from_secs(60)
    }
}
