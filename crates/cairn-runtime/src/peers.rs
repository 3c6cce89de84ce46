//! How a node reaches the live actors of another node: the seam between the runtime and a
//! transport. Starts, signals and cancellations never need it (they go through the store and
//! ring the owner's doorbell); only what needs another node's memory does — queries, and the
//! tasks of remote workers that wait in its matching (`remote_tasks`).
//!
//! The runtime knows no transport. `cairn-server` provides HTTP between nodes' own APIs;
//! [`InProcessPeers`] connects nodes that share one process (tests, the simulator).

use crate::error::QueryError;
use cairn_types::{Payload, RunId, WorkflowId};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

/// A query for a run that another node holds.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerQuery {
    pub workflow_id: WorkflowId,
    pub run_id: RunId,
    pub name: String,
    pub args: Payload,
}

/// Why a forwarded call did not produce an answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The node does not hold the run's shard (any more): ask the store again, retry.
    #[error("the node does not hold the run's shard")]
    NotOwner,
    /// The node could not be reached; retry (it may be restarting, or the shard moving).
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The query ran and failed; final.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The update was refused; final.
    #[error(transparent)]
    Update(#[from] crate::UpdateError),
}

/// The future a peer call returns.
pub type PeerFuture<T> = Pin<Box<dyn Future<Output = Result<T, PeerError>> + Send>>;

/// A transport to other nodes, addressed by the `advertise_address` in their membership
/// records.
pub trait Peers: Send + Sync + 'static {
    /// Runs `query` on the node at `address`, which must hold the run's shard.
    fn query(&self, address: &str, query: PeerQuery) -> PeerFuture<Payload>;

    /// Takes a task waiting at the node at `address`, or gives it an answer to one it handed
    /// out. Default: unreachable (a transport that carries only queries).
    fn task(&self, address: &str, call: PeerTaskCall) -> PeerFuture<PeerTaskAnswer> {
        let _ = call;
        let address = address.to_string();
        Box::pin(async move {
            Err(PeerError::Unreachable(format!(
                "this transport does not carry remote workers' tasks (to {address})"
            )))
        })
    }

    /// Called by `Node::start` with the node's own address and a handle on it; transports that
    /// deliver in-process keep it. Default: nothing.
    fn attach(&self, address: &str, node: Weak<dyn QueryTarget>) {
        let _ = (address, node);
    }
}

/// The receiving side: what a node answers for a forwarded query.
pub trait QueryTarget: Send + Sync + 'static {
    /// Answers `query` if this node holds the run's shard; [`PeerError::NotOwner`] otherwise.
    /// Never forwards again.
    fn query_held(self: Arc<Self>, query: PeerQuery) -> PeerFuture<Payload>;

    /// Serves a remote worker's task call another node forwarded. Never forwards again.
    fn task_held(self: Arc<Self>, call: PeerTaskCall) -> PeerFuture<PeerTaskAnswer> {
        let _ = call;
        Box::pin(async { Err(PeerError::NotOwner) })
    }
}

/// Nodes of one process, by address (`inproc://<name>` by convention).
///
/// # Examples
/// ```
/// use cairn_runtime::{InProcessPeers, NodeConfig};
/// use std::sync::Arc;
/// let peers = Arc::new(InProcessPeers::default());
/// let config = NodeConfig {
///     advertise_address: Some("inproc://node-a".into()),
///     peers: Some(cairn_runtime::PeersHandle(peers.clone())),
///     ..NodeConfig::default()
/// };
/// assert!(config.peers.is_some());
/// ```
#[derive(Default)]
pub struct InProcessPeers {
    nodes: Mutex<BTreeMap<String, Weak<dyn QueryTarget>>>,
}

impl std::fmt::Debug for InProcessPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let mut addresses: Vec<&String> = nodes.keys().collect();
        addresses.sort();
        f.debug_struct("InProcessPeers")
            .field("nodes", &addresses)
            .finish()
    }
}

impl InProcessPeers {
    /// The live node attached at `address`.
    fn target(&self, address: &str) -> Option<Arc<dyn QueryTarget>> {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
            .and_then(Weak::upgrade)
    }
}

/// The answer of a call to an address where no node is attached.
fn unreachable_at<T: Send + 'static>(address: &str) -> PeerFuture<T> {
    let address = address.to_string();
    Box::pin(async move { Err(PeerError::Unreachable(format!("no live node at {address}"))) })
}

impl Peers for InProcessPeers {
    fn query(&self, address: &str, query: PeerQuery) -> PeerFuture<Payload> {
        match self.target(address) {
            Some(node) => node.query_held(query),
            None => unreachable_at(address),
        }
    }

    fn task(&self, address: &str, call: PeerTaskCall) -> PeerFuture<PeerTaskAnswer> {
        match self.target(address) {
            Some(node) => node.task_held(call),
            None => unreachable_at(address),
        }
    }

    fn attach(&self, address: &str, node: Weak<dyn QueryTarget>) {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address.to_string(), node);
    }
}

/// A shared transport, as `NodeConfig::peers` holds it.
#[derive(Clone)]
pub struct PeersHandle(pub Arc<dyn Peers>);

impl std::fmt::Debug for PeersHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeersHandle")
    }
}

/// Work for remote workers that another node holds: a take of a waiting task (never waits), or
/// an answer to a task that node handed out.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum PeerTaskCall {
    TakeWorkflowTask {
        task_queue: String,
    },
    TakeActivityTask {
        task_queue: String,
    },
    CompleteWorkflowTask {
        token: String,
        commands: Vec<cairn_types::Command>,
        query_results: Vec<(u64, Result<Payload, String>)>,
        #[serde(default)]
        new_task: bool,
        /// Updates the worker rejected, by update id.
        #[serde(default)]
        rejections: Vec<(String, cairn_types::Failure)>,
    },
    FailWorkflowTask {
        token: String,
        /// What the worker reported.
        #[serde(default)]
        failure: Option<cairn_types::Failure>,
    },
    AnswerQueryTask {
        token: String,
        answer: Result<Payload, String>,
    },
    AnswerActivityTask {
        token: String,
        outcome: crate::matching::RemoteOutcome,
    },
    HeartbeatActivityTask {
        token: String,
        details: Payload,
    },
    /// An update call for a run this node holds: admit (or find) and wait.
    Update(crate::updates::PeerUpdate),
    /// This node's task queues (for a view of the whole cluster's).
    TaskQueues,
}

/// The holder's answer to a [`PeerTaskCall`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum PeerTaskAnswer {
    WorkflowTask(Option<crate::matching::WorkflowTask>),
    ActivityTask(Option<crate::matching::RemoteActivityTask>),
    Done,
    Heartbeat { cancel_requested: bool },
    Refused(crate::matching::MatchingError),
    Update(Result<crate::updates::UpdateState, crate::error::UpdateError>),
    TaskQueues(Vec<crate::matching::TaskQueueStatus>),
}
