//! Remote workers' tasks across the cluster. Matching is per node — an owed workflow task or a
//! waiting activity attempt sits in the matching of the node holding its run's shard — but a
//! worker may poll any node: a poll that finds nothing at home takes, without waiting, a task
//! waiting at each other live node (through [`crate::Peers`]), a slice of
//! [`PEER_POLL_SLICE_MS`] at a time, and answers go to the node the task's token names (a
//! workflow task's completion, if its shard moved since, on to the shard's holder now).

use crate::local::Local;
use crate::matching::MatchingError;
use crate::matching::WorkflowTask;
use crate::messages::ShardMsg;
use crate::messages::WorkflowMsg;
use crate::peers::{PeerTaskAnswer, PeerTaskCall};
use crate::records::{NodeRecord, decode};
use cairn_store::{RangeRequest, Store, Transaction};
use cairn_types::{Command, Payload};
use std::time::Duration;

/// Longest a poll waits at home before asking the other nodes again.
pub const PEER_POLL_SLICE_MS: u64 = 1_000;

/// The node id a task token names (`cairn…/<node>/<incarnation>/…`).
pub(crate) fn token_node(token: &str) -> Option<&str> {
    token.split('/').nth(1).filter(|n| !n.is_empty())
}

impl<S: Store> Local<S> {
    /// A poll of the cluster, up to `wait`: `local(wait)` takes at home; with peers, what waits
    /// at home is taken first, then (without waiting) what waits at each other live node
    /// (`call`, its answer read by `pick`), then home is waited on for a slice, round again.
    pub(crate) async fn poll_cluster<T, F, Fut>(
        &self,
        wait: Duration,
        local: F,
        call: PeerTaskCall,
        pick: fn(PeerTaskAnswer) -> Option<T>,
    ) -> Result<Option<T>, MatchingError>
    where
        F: Fn(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, MatchingError>>,
    {
        let Some(peers) = self.config.peers.clone() else {
            return local(wait).await;
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(task) = local(Duration::ZERO).await? {
                return Ok(Some(task));
            }
            for address in self.peer_addresses().await {
                if let Ok(answer) = peers.0.task(&address, call.clone()).await
                    && let Some(task) = pick(answer)
                {
                    return Ok(Some(task));
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Some(task) = local(left.min(Duration::from_millis(PEER_POLL_SLICE_MS))).await? {
                return Ok(Some(task));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// This node's oldest owed workflow task of `task_queue`, waiting up to `wait`.
    pub(crate) async fn take_local_workflow_task(
        &self,
        task_queue: &str,
        wait: Duration,
    ) -> Result<Option<WorkflowTask>, MatchingError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(owed) = self.matching.poll_workflow_task(task_queue, left).await? else {
                return Ok(None);
            };
            // Offered again unless the run answered: a poll dropped while asking (its caller
            // went away) must not lose the reference.
            let mut reoffer = crate::matching::Reoffer::new(&self.matching, task_queue, owed);
            let Some(shard) = self.shard(owed.shard) else {
                // The shard moved: its new holder offers the task there.
                reoffer.disarm();
                continue;
            };
            let taken = shard
                .call(
                    |reply| ShardMsg::ToRun {
                        run_id: owed.run_id,
                        message: WorkflowMsg::TakeWorkflowTask(reply),
                    },
                    Some(crate::local::QUERY_CALL_TIMEOUT),
                )
                .await;
            if let Ok(ractor::rpc::CallResult::Success(answer)) = taken {
                // Handed out, or not owed: either way the run has what it needs.
                reoffer.disarm();
                if let Some(task) = answer {
                    return Ok(Some(task));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// A worker's completion of the workflow task `token` names, applied by the run here. A
    /// task whose shard moved since it was handed out goes to the shard's holder now (unless
    /// `forward` is off: a call another node forwarded), which adopts it if the run's history
    /// is still what the worker saw.
    pub(crate) async fn complete_local_workflow_task(
        &self,
        token: &str,
        commands: Vec<Command>,
        query_results: Vec<(u64, Result<Payload, String>)>,
        new_task: bool,
        rejections: Vec<(String, cairn_types::Failure)>,
        forward: bool,
    ) -> Result<(), MatchingError> {
        let named = self.matching.parse_workflow_token(token)?;
        let Some(shard) = self.shard(named.owed.shard) else {
            if !forward {
                return Err(MatchingError::WorkflowTaskNotFound);
            }
            let holder = self.shard_holder(named.owed.shard).await?;
            let call = PeerTaskCall::CompleteWorkflowTask {
                token: token.to_string(),
                commands,
                query_results,
                new_task,
                rejections,
            };
            return match holder.1.0.task(&holder.0, call).await {
                Ok(PeerTaskAnswer::Refused(e)) => Err(e),
                Ok(_) => Ok(()),
                Err(_) => Err(MatchingError::WorkflowTaskUnavailable),
            };
        };
        match shard
            .call(
                |reply| ShardMsg::ToRun {
                    run_id: named.owed.run_id,
                    message: WorkflowMsg::CompleteWorkflowTask {
                        task: named.task,
                        attempt: named.attempt,
                        earlier_holder: named.earlier_holder,
                        commands,
                        query_results,
                        new_task,
                        rejections,
                        reply,
                    },
                },
                Some(crate::local::QUERY_CALL_TIMEOUT),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(answer)) => answer,
            _ => Err(MatchingError::WorkflowTaskUnavailable),
        }
    }

    /// The address of the live node that holds `shard` now, if it is another and reachable
    /// (`WorkflowTaskUnavailable` while nobody holds it: the worker's retry finds the holder).
    async fn shard_holder(
        &self,
        shard: u32,
    ) -> Result<(String, crate::PeersHandle), MatchingError> {
        let unavailable = MatchingError::WorkflowTaskUnavailable;
        let peers = self
            .config
            .peers
            .clone()
            .ok_or(MatchingError::WorkflowTaskNotFound)?;
        match crate::cluster::route(self, shard).await {
            Ok(crate::cluster::Route::Node {
                node_id,
                address: Some(address),
            }) if node_id != self.config.node_id => Ok((address, peers)),
            Ok(crate::cluster::Route::Node { .. }) => Err(MatchingError::WorkflowTaskNotFound),
            Ok(crate::cluster::Route::Nobody) | Err(_) => Err(unavailable),
        }
    }

    pub(crate) fn tell_local_run(
        &self,
        token: &str,
        message: WorkflowMsg,
    ) -> Result<(), MatchingError> {
        let owed = match self.matching.parse_workflow_token(token) {
            Ok(named) => named.owed,
            Err(_) => self.matching.parse_query_token(token)?.0,
        };
        let shard = self
            .shard(owed.shard)
            .ok_or(MatchingError::WorkflowTaskNotFound)?;
        shard
            .cast(ShardMsg::ToRun {
                run_id: owed.run_id,
                message,
            })
            .map_err(|_| MatchingError::WorkflowTaskUnavailable)
    }

    pub(crate) fn fail_local_workflow_task(
        &self,
        token: &str,
        failure: Option<cairn_types::Failure>,
    ) -> Result<(), MatchingError> {
        let named = self.matching.parse_workflow_token(token)?;
        if named.earlier_holder.is_some() {
            // The task is owed here again (or out with this life's worker): a failure
            // reported for an earlier hand-out changes nothing.
            return Err(MatchingError::WorkflowTaskNotFound);
        }
        let (task, attempt) = (named.task, named.attempt);
        let why = failure.map(cairn_core::WorkflowTaskFailure::Failed);
        self.tell_local_run(token, WorkflowMsg::FailWorkflowTask { task, attempt, why })
    }

    pub(crate) fn answer_local_query_task(
        &self,
        token: &str,
        answer: Result<Payload, String>,
    ) -> Result<(), MatchingError> {
        let (_, id) = self.matching.parse_query_token(token)?;
        self.tell_local_run(
            token,
            WorkflowMsg::AnswerQuery {
                id,
                answer: Some(answer),
            },
        )
    }

    /// Serves a call another node forwarded (never forwards again, but for a workflow task's
    /// completion at the node that handed it out: on to its shard's holder now).
    pub(crate) async fn serve_task_call(&self, call: PeerTaskCall) -> PeerTaskAnswer {
        let done = |r: Result<(), MatchingError>| match r {
            Ok(()) => PeerTaskAnswer::Done,
            Err(e) => PeerTaskAnswer::Refused(e),
        };
        match call {
            PeerTaskCall::TakeWorkflowTask { task_queue } => {
                match self
                    .take_local_workflow_task(&task_queue, Duration::ZERO)
                    .await
                {
                    Ok(task) => PeerTaskAnswer::WorkflowTask(task),
                    Err(e) => PeerTaskAnswer::Refused(e),
                }
            }
            PeerTaskCall::TakeActivityTask { task_queue } => {
                match self.matching.poll(&task_queue, Duration::ZERO).await {
                    Ok(task) => PeerTaskAnswer::ActivityTask(task),
                    Err(e) => PeerTaskAnswer::Refused(e),
                }
            }
            PeerTaskCall::CompleteWorkflowTask {
                token,
                commands,
                query_results,
                new_task,
                rejections,
            } => {
                // Sent on by the node that handed the task out (the worker asked another), it
                // may go once more, to the shard's holder now; never further.
                let handed_out_here = token_node(&token) == Some(self.config.node_id.as_str());
                done(
                    self.complete_local_workflow_task(
                        &token,
                        commands,
                        query_results,
                        new_task,
                        rejections,
                        handed_out_here,
                    )
                    .await,
                )
            }
            PeerTaskCall::FailWorkflowTask { token, failure } => {
                done(self.fail_local_workflow_task(&token, failure))
            }
            PeerTaskCall::AnswerQueryTask { token, answer } => {
                done(self.answer_local_query_task(&token, answer))
            }
            PeerTaskCall::AnswerActivityTask { token, outcome } => {
                done(self.matching.answer(&token, outcome))
            }
            PeerTaskCall::HeartbeatActivityTask { token, details } => {
                match self.matching.heartbeat(&token, details) {
                    Ok(cancel_requested) => PeerTaskAnswer::Heartbeat { cancel_requested },
                    Err(e) => PeerTaskAnswer::Refused(e),
                }
            }
            PeerTaskCall::Update(call) => {
                PeerTaskAnswer::Update(match self.serve_update(call).await {
                    Ok(state) => Ok(state),
                    Err(crate::PeerError::Update(e)) => Err(e),
                    Err(_) => Err(crate::UpdateError::Unavailable),
                })
            }
            PeerTaskCall::TaskQueues => PeerTaskAnswer::TaskQueues(self.matching.task_queues()),
        }
    }

    /// The addresses of the other live nodes that advertise one.
    pub(crate) async fn peer_addresses(&self) -> Vec<String> {
        self.live_peers()
            .await
            .into_iter()
            .map(|(_, address)| address)
            .collect()
    }

    /// The other live nodes that have an address: (node id, address).
    pub(crate) async fn live_peers(&self) -> Vec<(String, String)> {
        let read = async {
            let (begin, end) = self.keys.nodes();
            let mut tx = self.store.begin()?;
            let rows = tx
                .get_range(&RangeRequest::new(begin, end).snapshot())
                .await?;
            Ok::<_, cairn_store::StoreError>(rows)
        };
        let Ok(rows) = read.await else {
            return Vec::new();
        };
        let now = self.now_ms();
        let opening = self.store.exclusive_opening();
        rows.iter()
            .filter_map(|kv| decode::<NodeRecord>("node record", &kv.value).ok())
            .filter(|n| n.node_id != self.config.node_id && n.is_alive(now, opening.as_deref()))
            .filter_map(|n| Some((n.node_id, n.address?)))
            .collect()
    }

    /// The address of live node `node_id`.
    pub(crate) async fn node_address(&self, node_id: &str) -> Option<String> {
        let mut tx = self.store.begin().ok()?;
        let bytes = tx.get_snapshot(&self.keys.node(node_id)).await.ok()??;
        let node: NodeRecord = decode("node record", &bytes).ok()?;
        let opening = self.store.exclusive_opening();
        node.is_alive(self.now_ms(), opening.as_deref())
            .then_some(node.address)
            .flatten()
    }
}
