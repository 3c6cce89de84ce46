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

/// A node's claim on a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub node_id: String,
    pub epoch: u64,
    pub expires_unix_ms: u64,
}
