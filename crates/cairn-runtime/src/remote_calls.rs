//! Calls of remote workers (Temporal SDK workers through `cairn-temporal`, or any poller):
//! taking activity and workflow tasks wherever they wait in the cluster, and answering them at
//! the node that handed them out.

use crate::error::ClientError;
use crate::node::Node;
use cairn_store::Store;
use cairn_types::{HistoryEvent, Payload, RunId, Seq, WorkflowId};
use std::time::Duration;

impl<S: Store> Node<S> {
    /// The oldest activity attempt waiting for a remote worker in `task_queue`, waiting up to
    /// `wait` (at most [`crate::ACTIVITY_POLL_WAIT_MAX_MS`]) for one; `None` if none came.
    /// Attempts wait here only with `NodeConfig::remote_activities`. With peers configured,
    /// attempts waiting at the other nodes are taken too (see [`crate::PEER_POLL_SLICE_MS`]).
    pub async fn poll_activity_task(
        &self,
        task_queue: &str,
        wait: Duration,
    ) -> Result<Option<crate::RemoteActivityTask>, crate::MatchingError> {
        let call = crate::PeerTaskCall::TakeActivityTask {
            task_queue: task_queue.to_string(),
        };
        let pick = |answer| match answer {
            crate::PeerTaskAnswer::ActivityTask(task) => task,
            _ => None,
        };
        self.shared
            .poll_cluster(
                wait,
                |w| self.shared.matching.poll(task_queue, w),
                call,
                pick,
            )
            .await
    }

    /// The oldest owed workflow task of a remote run in `task_queue`, waiting up to `wait` (at
    /// most [`crate::ACTIVITY_POLL_WAIT_MAX_MS`]) for one; `None` if none came. The task is
    /// then held by the caller until it completes or fails it, or its timeout passes. With
    /// peers configured, tasks owed at the other nodes are taken too.
    pub async fn poll_workflow_task(
        &self,
        task_queue: &str,
        wait: Duration,
    ) -> Result<Option<crate::WorkflowTask>, crate::MatchingError> {
        let call = crate::PeerTaskCall::TakeWorkflowTask {
            task_queue: task_queue.to_string(),
        };
        let pick = |answer| match answer {
            crate::PeerTaskAnswer::WorkflowTask(task) => task,
            _ => None,
        };
        self.shared
            .poll_cluster(
                wait,
                |w| self.shared.take_local_workflow_task(task_queue, w),
                call,
                pick,
            )
            .await
    }

    /// Notes that worker `identity` polls `task_queue` for `kind` tasks (shown by
    /// [`Self::task_queues`]).
    pub fn note_poller(&self, task_queue: &str, kind: crate::PollKind, identity: &str) {
        self.shared.matching.note_poller(task_queue, kind, identity);
    }

    /// This node's task queues: the workers that polled them lately (through this node) and
    /// the tasks waiting in them here. Each node matches the tasks of the shards it holds, so
    /// a cluster's queues are the union of its nodes'.
    pub fn task_queues(&self) -> Vec<crate::TaskQueueStatus> {
        self.shared.matching.task_queues()
    }

    /// Every live node's task queues: this node's, then each other's that answers (asked at
    /// once, each call bounded by the peer transport's timeout). Each node matches the tasks
    /// of the shards it holds and notes the workers that poll through it, so the cluster's
    /// queues are the union of these.
    pub async fn cluster_task_queues(&self) -> Vec<crate::NodeTaskQueues> {
        let mut nodes = vec![crate::NodeTaskQueues {
            node_id: self.shared.config.node_id.clone(),
            task_queues: Some(self.shared.matching.task_queues()),
        }];
        let Some(peers) = self.shared.config.peers.clone() else {
            return nodes;
        };
        let asked = self
            .shared
            .live_peers()
            .await
            .into_iter()
            .map(|(node_id, address)| {
                let peers = peers.clone();
                async move {
                    let task_queues = match peers
                        .0
                        .task(&address, crate::PeerTaskCall::TaskQueues)
                        .await
                    {
                        Ok(crate::PeerTaskAnswer::TaskQueues(queues)) => Some(queues),
                        _ => None,
                    };
                    crate::NodeTaskQueues {
                        node_id,
                        task_queues,
                    }
                }
            });
        nodes.extend(futures::future::join_all(asked).await);
        nodes
    }

    /// Where an answer to the task `token` names goes: `None` here, or the address of the
    /// live node that handed it out.
    pub(crate) async fn task_holder(
        &self,
        token: &str,
    ) -> Result<Option<(String, crate::PeersHandle)>, crate::MatchingError> {
        // This node's own tokens are recognised whole (a node id may contain '/').
        let own = token.split_once('/').is_some_and(|(_, rest)| {
            rest.strip_prefix(self.shared.config.node_id.as_str())
                .is_some_and(|r| r.starts_with('/'))
        });
        if own {
            return Ok(None);
        }
        let node = crate::remote_tasks::token_node(token).ok_or(crate::MatchingError::NotFound)?;
        let peers = self
            .shared
            .config
            .peers
            .clone()
            .ok_or(crate::MatchingError::NotFound)?;
        let address = self
            .shared
            .node_address(node)
            .await
            .ok_or(crate::MatchingError::NotFound)?;
        Ok(Some((address, peers)))
    }

    /// Forwards `call` to the node at `address`.
    pub(crate) async fn forward_task(
        &self,
        (address, peers): (String, crate::PeersHandle),
        call: crate::PeerTaskCall,
    ) -> Result<crate::PeerTaskAnswer, crate::MatchingError> {
        match peers.0.task(&address, call).await {
            Ok(crate::PeerTaskAnswer::Refused(e)) => Err(e),
            Ok(answer) => Ok(answer),
            Err(_) => Err(crate::MatchingError::WorkflowTaskUnavailable),
        }
    }

    /// A worker's completion of the workflow task `token` names, with its commands (their
    /// sequence numbers as the worker's SDK assigned them); answers once it committed. With
    /// `new_task`, the next task is owed at once.
    pub async fn complete_workflow_task(
        &self,
        token: &str,
        commands: Vec<cairn_types::Command>,
        query_results: Vec<(u64, Result<Payload, String>)>,
        new_task: bool,
        rejections: Vec<(String, cairn_types::Failure)>,
    ) -> Result<(), crate::MatchingError> {
        match self.task_holder(token).await? {
            None => {
                self.shared
                    .complete_local_workflow_task(
                        token,
                        commands,
                        query_results,
                        new_task,
                        rejections,
                        true,
                    )
                    .await
            }
            Some(holder) => {
                let call = crate::PeerTaskCall::CompleteWorkflowTask {
                    token: token.to_string(),
                    commands,
                    query_results,
                    new_task,
                    rejections,
                };
                self.forward_task(holder, call).await.map(|_| ())
            }
        }
    }

    /// The committed history of the run whose workflow task `token` names (what a completion's
    /// commands refer to by event).
    pub async fn workflow_task_history(
        &self,
        token: &str,
    ) -> Result<(RunId, Vec<HistoryEvent>), crate::MatchingError> {
        let run_id = crate::matching::token_run(token)?;
        let history =
            crate::node::read_history(&self.shared.store, &self.shared.keys, &run_id, None)
                .await
                .map_err(|_| crate::MatchingError::WorkflowTaskUnavailable)?;
        Ok((run_id, history))
    }

    /// A worker's answer to the query task `token` names (`Err`: the query failed, with why).
    pub async fn answer_query_task(
        &self,
        token: &str,
        answer: Result<Payload, String>,
    ) -> Result<(), crate::MatchingError> {
        match self.task_holder(token).await? {
            None => self.shared.answer_local_query_task(token, answer),
            Some(holder) => {
                let call = crate::PeerTaskCall::AnswerQueryTask {
                    token: token.to_string(),
                    answer,
                };
                self.forward_task(holder, call).await.map(|_| ())
            }
        }
    }

    /// A worker failed the workflow task `token` names (with `failure`, recorded in the
    /// history for the task's first attempt): it is handed out again.
    pub async fn fail_workflow_task(
        &self,
        token: &str,
        failure: Option<cairn_types::Failure>,
    ) -> Result<(), crate::MatchingError> {
        match self.task_holder(token).await? {
            None => self.shared.fail_local_workflow_task(token, failure),
            Some(holder) => {
                let call = crate::PeerTaskCall::FailWorkflowTask {
                    token: token.to_string(),
                    failure,
                };
                self.forward_task(holder, call).await.map(|_| ())
            }
        }
    }

    /// Remote runs queued for a workflow task on this node.
    pub fn workflow_tasks_queued(&self) -> usize {
        self.shared.matching.workflow_tasks_queued()
    }

    /// Activity attempts waiting for a remote worker or held by one.
    pub fn remote_activity_tasks(&self) -> usize {
        self.shared.matching.tasks()
    }

    /// A remote worker's answer to the attempt it polled (`token`).
    pub async fn answer_activity_task(
        &self,
        token: &str,
        outcome: crate::RemoteOutcome,
    ) -> Result<(), crate::MatchingError> {
        match self.task_holder(token).await? {
            None => self.shared.matching.answer(token, outcome),
            Some(holder) => {
                let call = crate::PeerTaskCall::AnswerActivityTask {
                    token: token.to_string(),
                    outcome,
                };
                self.forward_task(holder, call).await.map(|_| ())
            }
        }
    }

    /// A remote worker's heartbeat; answers whether the workflow asked the activity to stop.
    pub async fn heartbeat_activity_task(
        &self,
        token: &str,
        details: Payload,
    ) -> Result<bool, crate::MatchingError> {
        match self.task_holder(token).await? {
            None => self.shared.matching.heartbeat(token, details),
            Some(holder) => {
                let call = crate::PeerTaskCall::HeartbeatActivityTask {
                    token: token.to_string(),
                    details,
                };
                match self.forward_task(holder, call).await? {
                    crate::PeerTaskAnswer::Heartbeat { cancel_requested } => Ok(cancel_requested),
                    _ => Err(crate::MatchingError::NotFound),
                }
            }
        }
    }

    /// The token of the attempt of activity `seq` of the workflow's current run (or `run_id`)
    /// that a remote worker holds, for answers by id.
    pub async fn activity_task_token(
        &self,
        workflow_id: &WorkflowId,
        run_id: Option<RunId>,
        seq: Seq,
    ) -> Result<String, ClientError> {
        let run_id = match run_id {
            Some(run_id) => run_id,
            None => self.current(workflow_id).await?.run_id,
        };
        self.shared
            .matching
            .token_of(&run_id, seq)
            .map_err(|_| ClientError::NotFound {
                workflow_id: format!("{workflow_id} (activity {seq} held by a remote worker)"),
            })
    }
}
