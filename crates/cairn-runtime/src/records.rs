//! The records Cairn stores, and their codec (MessagePack, named fields).

use cairn_core::{Message, RunState, RunStatus};
use cairn_store::StoreError;
use cairn_types::{ActivityOptions, Failure, Payload, RunId, Seq, WorkflowId, WorkflowTimeouts};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Encodes a record. Records are built by Cairn itself, so failure is a bug.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("records encode")
}

/// Decodes a stored record; a record that does not decode is corruption, reported as such.
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Backend {
        message: format!("stored {what} does not decode: {e}"),
    })
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Completed(Payload),
    Failed(Failure),
    Canceled,
    Terminated(String),
    TimedOut,
}

/// What started a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartRecord {
    pub workflow_type: String,
    pub input: Payload,
    pub random_seed: u64,
    pub timeouts: WorkflowTimeouts,
}

/// One run: its start, snapshot (absent until the first transition commits) and outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub namespace: String,
    pub workflow_id: WorkflowId,
    pub run_id: RunId,
    pub start: StartRecord,
    pub state: Option<RunState>,
    /// Bumped by every committed transition; a retry after `MaybeCommitted` compares it.
    pub version: u64,
    pub outcome: Option<Outcome>,
    pub created_unix_ms: u64,
}

/// A workflow id's current run, for id-reuse decisions and listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    pub run_id: RunId,
    pub workflow_type: String,
    /// `None` until the first transition, then the run's status.
    pub status: Option<RunStatus>,
    pub started_unix_ms: u64,
    pub closed_unix_ms: Option<u64>,
}

/// A mailbox entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InboxItem {
    /// Run the first transition (the start itself is in the run record).
    Start,
    Message(Message),
}

/// An activity attempt to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub namespace: String,
    pub workflow_id: WorkflowId,
    pub run_id: RunId,
    pub shard: u32,
    pub seq: Seq,
    pub attempt: u32,
    pub activity_type: String,
    pub input: Payload,
    pub options: ActivityOptions,
    pub scheduled_unix_ms: u64,
}

/// A node's claim on a shard. It has no expiry of its own: a held lease lapses with its
/// holder's membership record (`NodeRecord`), so one heartbeat renews every lease of a node and
/// renewing never writes the lease key that every commit reads for fencing.
///
/// Every change of holder bumps `epoch`, and so does a release: each epoch is one tenure of one
/// node, which is what fencing compares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub node_id: String,
    /// The holder's process instance (a random id per `Node::start`): a restarted node with
    /// the same id is a different instance and must claim its old shards anew.
    #[serde(default)]
    pub instance: String,
    pub epoch: u64,
    /// False once released (handed off or drained); a released lease is free to claim.
    #[serde(default)]
    pub held: bool,
    /// When the lease last changed hands, Unix ms.
    #[serde(default)]
    pub changed_unix_ms: u64,
}

impl Lease {
    /// The epoch, if the lease is held (a released lease fences everyone).
    pub fn held_epoch(&self) -> Option<u64> {
        self.held.then_some(self.epoch)
    }
}

/// A node's membership record, rewritten by its heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    pub instance: String,
    /// Where other nodes reach this one (its HTTP API), if it serves one.
    pub address: Option<String>,
    pub started_unix_ms: u64,
    pub heartbeat_unix_ms: u64,
    /// After this the node counts as dead, and so do its leases.
    pub expires_unix_ms: u64,
    /// A draining node takes no shards and hands its own off.
    pub draining: bool,
}

/// Settings fixed for the life of a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub shard_count: u32,
}
