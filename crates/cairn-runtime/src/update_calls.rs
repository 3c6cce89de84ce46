//! The caller's side of updates: find the node holding the run, admit the update in the
//! run's actor there (or find the one with its id), and wait for the stage asked for.
//!
//! The wait happens where the run is (the update's channel lives in its actor); a node that
//! does not hold the shard forwards the whole call ([`crate::PeerTaskCall::Update`]). An
//! update whose actor stopped before accepting it ([`UpdateState::Lost`]) is asked for again
//! with the same id until the caller's wait is over: acceptance is deduplicated by id, so
//! asking again never runs an update twice.

use crate::error::ClientError;
use crate::error::UpdateError;
use crate::local::Local;
use crate::messages::ShardMsg;
use crate::messages::WorkflowMsg;
use crate::node::Node;
use crate::peers::PeerError;
use crate::updates::{PeerUpdate, UpdateCall, UpdateRequest, UpdateStage, UpdateState, wait_for};
use cairn_store::Store;
use cairn_types::limits::{INLINE_PAYLOAD_BYTES_MAX, UPDATE_ID_BYTES_MAX, UPDATE_NAME_BYTES_MAX};
use cairn_types::{Payload, RunId, WorkflowId};
use std::time::Duration;

/// Longest one update call waits for its stage (a forwarded call must answer within the
/// peers' call timeout). A caller that wants longer asks again, by update id.
pub const UPDATE_WAIT_MS_MAX: u64 = 30_000;

/// Pause before an update whose run's actor stopped is asked for again.
const LOST_UPDATE_RETRY: Duration = Duration::from_millis(20);

/// An update of a workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateWorkflow {
    pub workflow_id: WorkflowId,
    /// The run to update; `None`: the workflow's current run (the update follows a
    /// continue-as-new that closes the run before accepting it).
    pub run_id: Option<RunId>,
    /// Names the update for deduplication: a request with an id the run knows joins that
    /// update instead of starting another.
    pub update_id: String,
    /// The handler's name.
    pub name: String,
    pub input: Payload,
    /// Answer once the update reached this stage (or finished).
    pub wait_for: UpdateStage,
    /// Longest wait for it, in milliseconds (at most [`UPDATE_WAIT_MS_MAX`]); the answer
    /// then says how far the update got.
    pub wait_ms: u64,
}

/// Where an update got.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateAnswer {
    pub update_id: String,
    /// The run the update was admitted to.
    pub run_id: RunId,
    /// [`UpdateState::Admitted`] or [`UpdateState::Accepted`] when the wait ended first;
    /// never `Lost` or `Aborted` (those are errors).
    pub state: UpdateState,
}

impl UpdateWorkflow {
    fn check(&self) -> Result<(), ClientError> {
        let invalid = |reason: String| Err(ClientError::InvalidUpdate { reason });
        if self.update_id.is_empty() || self.update_id.len() > UPDATE_ID_BYTES_MAX {
            return invalid(format!(
                "the update id is {} bytes; it must be 1 to {UPDATE_ID_BYTES_MAX}",
                self.update_id.len()
            ));
        }
        if self.name.is_empty() || self.name.len() > UPDATE_NAME_BYTES_MAX {
            return invalid(format!(
                "the update name is {} bytes; it must be 1 to {UPDATE_NAME_BYTES_MAX}",
                self.name.len()
            ));
        }
        if self.input.len() > INLINE_PAYLOAD_BYTES_MAX {
            return Err(ClientError::PayloadTooLarge {
                what: "update input",
                len: self.input.len(),
                max: INLINE_PAYLOAD_BYTES_MAX,
            });
        }
        Ok(())
    }
}

impl<S: Store> Node<S> {
    /// Sends update `name` to the workflow and waits (up to `wait_ms`) until it reached
    /// `wait_for`: admitted, accepted (its validator passed and the acceptance is in the
    /// history), or completed (its handler's result or failure; a rejection is a completion
    /// with the validator's failure, and writes nothing to the history). Runs on whichever
    /// node holds the run's shard.
    pub async fn update(&self, update: UpdateWorkflow) -> Result<UpdateAnswer, ClientError> {
        update.check()?;
        let deadline = deadline_after(update.wait_ms);
        let request = UpdateRequest {
            update_id: update.update_id.clone(),
            name: update.name.clone(),
            input: update.input.clone(),
        };
        loop {
            let run_id = match update.run_id {
                Some(run_id) => run_id,
                None => self.current_run_id(&update.workflow_id).await?,
            };
            let call = PeerUpdate {
                workflow_id: update.workflow_id.clone(),
                run_id,
                call: UpdateCall::Admit(request.clone()),
                wait_for: update.wait_for,
                wait_ms: left_ms(deadline),
            };
            let state = match self.update_at_owner(call).await {
                // The run closed before admitting it: a continue-as-new's successor takes it.
                Err(ClientError::Update(UpdateError::Closed))
                    if update.run_id.is_none()
                        && self.current_run_id(&update.workflow_id).await? != run_id =>
                {
                    UpdateState::Lost
                }
                other => other?,
            };
            match state {
                UpdateState::Lost if tokio::time::Instant::now() + LOST_UPDATE_RETRY < deadline => {
                    tokio::time::sleep(LOST_UPDATE_RETRY).await;
                }
                UpdateState::Lost => return Err(ClientError::Update(UpdateError::Unavailable)),
                UpdateState::Aborted => return Err(ClientError::Update(UpdateError::Closed)),
                state => {
                    return Ok(UpdateAnswer {
                        update_id: update.update_id,
                        run_id,
                        state,
                    });
                }
            }
        }
    }

    /// Waits (up to `wait_ms`) until update `update_id` of the workflow (its run `run_id`,
    /// or the current run) reached `wait_for`; [`UpdateError::NotFound`] if the run does not
    /// know it.
    pub async fn poll_update(
        &self,
        workflow_id: &WorkflowId,
        run_id: Option<RunId>,
        update_id: &str,
        wait_for: UpdateStage,
        wait_ms: u64,
    ) -> Result<UpdateAnswer, ClientError> {
        let deadline = deadline_after(wait_ms);
        loop {
            let run = match run_id {
                Some(run_id) => run_id,
                None => self.current_run_id(workflow_id).await?,
            };
            let call = PeerUpdate {
                workflow_id: workflow_id.clone(),
                run_id: run,
                call: UpdateCall::Poll(update_id.to_string()),
                wait_for,
                wait_ms: left_ms(deadline),
            };
            match self.update_at_owner(call).await? {
                UpdateState::Lost if tokio::time::Instant::now() + LOST_UPDATE_RETRY < deadline => {
                    tokio::time::sleep(LOST_UPDATE_RETRY).await;
                }
                UpdateState::Lost | UpdateState::Aborted => {
                    return Err(ClientError::Update(UpdateError::NotFound {
                        update_id: update_id.to_string(),
                    }));
                }
                state => {
                    return Ok(UpdateAnswer {
                        update_id: update_id.to_string(),
                        run_id: run,
                        state,
                    });
                }
            }
        }
    }

    /// Runs `call` where the run's shard is held: here, or forwarded (as a task call).
    async fn update_at_owner(&self, call: PeerUpdate) -> Result<UpdateState, ClientError> {
        let shard = self.shared.shard_of(&call.workflow_id);
        self.at_shard_holder(
            shard,
            || self.shared.serve_update(call.clone()),
            |peers, address| {
                let forwarded = crate::PeerTaskCall::Update(call.clone());
                async move {
                    match peers.0.task(&address, forwarded).await? {
                        crate::PeerTaskAnswer::Update(Ok(state)) => Ok(state),
                        // It does not hold the run (any more): ask where it is again.
                        crate::PeerTaskAnswer::Update(Err(UpdateError::Unavailable)) => {
                            Err(PeerError::NotOwner)
                        }
                        crate::PeerTaskAnswer::Update(Err(e)) => Err(PeerError::Update(e)),
                        other => Err(PeerError::Unreachable(format!("it answered {other:?}"))),
                    }
                }
            },
        )
        .await
    }
}

impl<S: Store> Local<S> {
    /// Admits or finds the update `call` names in its run's actor here, and waits for its
    /// stage. [`PeerError::NotOwner`] unless this node holds the run's shard.
    pub(crate) async fn serve_update(&self, call: PeerUpdate) -> Result<UpdateState, PeerError> {
        let deadline = deadline_after(call.wait_ms);
        let shard = self.shard_of(&call.workflow_id);
        let Some(shard_ref) = self.shard(shard) else {
            return Err(PeerError::NotOwner);
        };
        let run_id = call.run_id;
        let found = shard_ref
            .call(
                |reply| ShardMsg::ToRun {
                    run_id,
                    message: match call.call {
                        UpdateCall::Admit(request) => WorkflowMsg::Update { request, reply },
                        UpdateCall::Poll(update_id) => WorkflowMsg::PollUpdate { update_id, reply },
                    },
                },
                Some(crate::local::QUERY_CALL_TIMEOUT),
            )
            .await;
        match found {
            Ok(ractor::rpc::CallResult::Success(Ok(state))) => {
                Ok(wait_for(state, call.wait_for, deadline).await)
            }
            Ok(ractor::rpc::CallResult::Success(Err(UpdateError::Unavailable))) => {
                Err(PeerError::NotOwner)
            }
            Ok(ractor::rpc::CallResult::Success(Err(e))) => Err(PeerError::Update(e)),
            // The shard actor stopped while answering: the shard moved (or is moving).
            Ok(_) | Err(_) => Err(PeerError::NotOwner),
        }
    }
}

fn deadline_after(wait_ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(wait_ms.min(UPDATE_WAIT_MS_MAX))
}

fn left_ms(deadline: tokio::time::Instant) -> u64 {
    deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .as_millis() as u64
}
