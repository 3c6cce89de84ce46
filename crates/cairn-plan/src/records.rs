//! The records Cairn stores, and their codec (MessagePack, named fields).

use cairn_core::{ChildOutcome, Message, RunState, RunStatus};
use cairn_store::StoreError;
use cairn_types::{
    ActivityOptions, Failure, Memo, Payload, RunId, SearchAttributes, Seq, WorkflowId,
    WorkflowTimeouts,
};
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
    /// The run closed and `new_run_id` carries the workflow on (`result` follows it).
    ContinuedAsNew {
        new_run_id: RunId,
    },
}

impl Outcome {
    /// What a parent's mailbox says of a child that ended this way (`None`: it continued
    /// as new, so it has not ended).
    pub fn for_parent(&self) -> Option<ChildOutcome> {
        Some(match self {
            Self::Completed(result) => ChildOutcome::Completed(result.clone()),
            Self::Failed(failure) => ChildOutcome::Failed(failure.clone()),
            Self::Canceled => ChildOutcome::Canceled,
            Self::Terminated(reason) => ChildOutcome::Terminated(reason.clone()),
            Self::TimedOut => ChildOutcome::TimedOut,
            Self::ContinuedAsNew { .. } => return None,
        })
    }
}

/// What started a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartRecord {
    pub workflow_type: String,
    pub input: Payload,
    pub random_seed: u64,
    pub timeouts: WorkflowTimeouts,
    /// When the first run of a continue-as-new chain started (`None` for a first run).
    #[serde(default)]
    pub execution_started_unix_ms: Option<u64>,
    /// The client's request id of the start (see `StartWorkflow::request_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Set when the workflow's code runs in remote workers (Temporal SDK workers polling
    /// workflow tasks), not in this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteStart>,
    /// The memo the run starts with.
    #[serde(default, skip_serializing_if = "Memo::is_empty")]
    pub memo: Memo,
    /// The search attributes the run starts with.
    #[serde(default, skip_serializing_if = "SearchAttributes::is_empty")]
    pub search_attributes: SearchAttributes,
    /// Set for a run of a workflow started with a cron schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<cairn_types::CronRun>,
}

/// Where a remote run's workflow tasks go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStart {
    pub task_queue: String,
    /// How long a worker may hold one workflow task.
    pub task_timeout_ms: u64,
}

/// Default workflow task timeout (Temporal's).
pub const WORKFLOW_TASK_TIMEOUT_DEFAULT_MS: u64 = 10_000;
/// Longest workflow task timeout (Temporal's cap).
pub const WORKFLOW_TASK_TIMEOUT_MAX_MS: u64 = 120_000;

/// The parent of a child workflow's run, where its end is reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentRef {
    pub namespace: String,
    pub workflow_id: WorkflowId,
    pub run_id: RunId,
    pub shard: u32,
    /// The child's sequence number in the parent.
    pub seq: Seq,
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
    /// Set for a child workflow (kept across its continue-as-new chain).
    #[serde(default)]
    pub parent: Option<ParentRef>,
    /// The schedule that started this run, if any (told when the run closes).
    #[serde(default)]
    pub scheduled_by: Option<String>,
    /// The run this one continues, if it was started by continue-as-new or by its cron
    /// schedule.
    #[serde(default)]
    pub previous_run: Option<RunId>,
    /// The run that continues this one by its cron schedule (a run continued as new names
    /// its successor in its outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<RunId>,
}

impl RunRecord {
    /// The record after a transition that left the run in `state` (the old snapshot is not
    /// copied on the way).
    pub fn next_version(&self, state: RunState) -> Self {
        Self {
            namespace: self.namespace.clone(),
            workflow_id: self.workflow_id.clone(),
            run_id: self.run_id,
            start: self.start.clone(),
            state: Some(state),
            version: self.version + 1,
            outcome: self.outcome.clone(),
            created_unix_ms: self.created_unix_ms,
            parent: self.parent.clone(),
            scheduled_by: self.scheduled_by.clone(),
            previous_run: self.previous_run,
            next_run: self.next_run,
        }
    }
}

/// A workflow id's current run: what id-reuse decisions and visibility queries read. It is
/// written in the same transaction as the run's start, first transition, search-attribute
/// upserts and close, so a list is never stale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    pub run_id: RunId,
    pub workflow_type: String,
    /// `None` until the first transition, then the run's status.
    pub status: Option<RunStatus>,
    pub started_unix_ms: u64,
    pub closed_unix_ms: Option<u64>,
    #[serde(default)]
    pub parent_workflow_id: Option<WorkflowId>,
    #[serde(default)]
    pub parent_run_id: Option<RunId>,
    #[serde(default)]
    pub search_attributes: SearchAttributes,
    /// History events as of the last write of this record.
    #[serde(default)]
    pub history_length: u64,
    /// When the first run of the chain started (equals `started_unix_ms` but after a
    /// continue-as-new).
    #[serde(default)]
    pub execution_started_unix_ms: u64,
    /// The run's memo (shown, never indexed).
    #[serde(default, skip_serializing_if = "Memo::is_empty")]
    pub memo: Memo,
}

impl WorkflowRecord {
    /// Whether the current run has closed (a run not yet started is open).
    pub fn is_closed(&self) -> bool {
        self.status.is_some_and(RunStatus::is_closed)
    }
}

/// What a shard's ready queue (and a local wake) names: something of the shard that needs
/// looking at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReadyItem {
    /// A run with new mail.
    Run(RunId),
    /// A schedule to look at from `at_unix_ms` (its wake-up index entry).
    Schedule {
        schedule_id: String,
        at_unix_ms: u64,
    },
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
    /// The shard tenure (lease epoch) that wrote the task. A new holder's rehydration defers
    /// only tasks of earlier tenures: its own are handed over or deferred by the transitions
    /// that wrote them (0: written before this field).
    #[serde(default)]
    pub epoch: u64,
}

/// The start mark of an activity attempt that starts by a claim (one with a heartbeat or
/// schedule-to-start timeout): written (with the attempt's start-to-close and heartbeat timers)
/// by that claim, before the activity runs, and cleared with the attempt's task when the
/// attempt ends. A handed-over attempt has none: its start-to-close timer marks it. A task whose attempt has a mark is never run again:
/// whoever holds the shard next lets the attempt time out and retries it as the next attempt,
/// counted against the retry policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub started_unix_ms: u64,
    pub node_id: String,
    /// Unique per claim, so a claim retried after `MaybeCommitted` recognises its own mark.
    pub claim: uuid::Uuid,
}

/// An activity's last heartbeat, at `("hb", run_id, seq)`: its details and when the
/// activity sent it (read by the next attempt, and shown by describe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub details: Payload,
    pub at_unix_ms: u64,
}

impl Heartbeat {
    /// A stored heartbeat; one stored before heartbeats carried their time (bare details)
    /// reads with time 0.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        decode::<Self>("heartbeat", bytes).or_else(|e| {
            decode::<Payload>("heartbeat", bytes)
                .map(|details| Self {
                    details,
                    at_unix_ms: 0,
                })
                .map_err(|_| e)
        })
    }
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
    /// The store opening the node wrote under, for stores one process opens at a time
    /// (`Store::exclusive_opening`): a record of another opening is a dead process's.
    #[serde(default)]
    pub store_opening: Option<String>,
}

impl NodeRecord {
    /// Whether the node counts as alive at `now`, as seen by a node of store opening
    /// `opening`.
    pub fn is_alive(&self, now: u64, opening: Option<&str>) -> bool {
        self.expires_unix_ms > now
            && opening.is_none_or(|opening| self.store_opening.as_deref() == Some(opening))
    }
}

/// Settings fixed for the life of a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub shard_count: u32,
}

/// A new run's records — its run record, and the workflow record that makes it the workflow
/// id's current run — for every way a run starts: a client, a parent, continue-as-new, a
/// schedule.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub run_id: RunId,
    pub record: RunRecord,
    pub summary: WorkflowRecord,
}

impl NewRun {
    /// A first run (no parent, no schedule, no predecessor) starting now, as `run_id` (a
    /// fresh UUIDv7 from the node's entropy). The run's random seed comes from its random
    /// bits.
    pub fn new(
        namespace: &str,
        workflow_id: WorkflowId,
        workflow_type: &str,
        input: Payload,
        timeouts: WorkflowTimeouts,
        now: u64,
        run_id: RunId,
    ) -> Self {
        let seed = u64::from_be_bytes(
            run_id.as_uuid().as_bytes()[8..]
                .try_into()
                .expect("8 bytes"),
        );
        Self {
            run_id,
            record: RunRecord {
                namespace: namespace.to_string(),
                workflow_id,
                run_id,
                start: StartRecord {
                    workflow_type: workflow_type.to_string(),
                    input,
                    random_seed: seed,
                    timeouts,
                    execution_started_unix_ms: None,
                    request_id: None,
                    remote: None,
                    memo: Memo::new(),
                    search_attributes: SearchAttributes::new(),
                    cron: None,
                },
                state: None,
                version: 0,
                outcome: None,
                created_unix_ms: now,
                parent: None,
                scheduled_by: None,
                previous_run: None,
                next_run: None,
            },
            summary: WorkflowRecord {
                run_id,
                workflow_type: workflow_type.to_string(),
                status: None,
                started_unix_ms: now,
                closed_unix_ms: None,
                parent_workflow_id: None,
                parent_run_id: None,
                search_attributes: SearchAttributes::new(),
                history_length: 0,
                execution_started_unix_ms: now,
                memo: Memo::new(),
            },
        }
    }

    /// Starts with `memo` and `search_attributes` (validated by the caller): in the run's
    /// start, and in its visibility record from the start on.
    pub fn with(mut self, memo: Memo, search_attributes: SearchAttributes) -> Self {
        self.summary.memo.clone_from(&memo);
        self.summary
            .search_attributes
            .clone_from(&search_attributes);
        self.record.start.memo = memo;
        self.record.start.search_attributes = search_attributes;
        self
    }

    /// A child of `parent`.
    pub fn parent(mut self, parent: ParentRef) -> Self {
        self.summary.parent_workflow_id = Some(parent.workflow_id.clone());
        self.summary.parent_run_id = Some(parent.run_id);
        self.record.parent = Some(parent);
        self
    }

    /// Started by schedule `schedule_id`.
    pub fn scheduled_by(mut self, schedule_id: &str) -> Self {
        self.record.scheduled_by = Some(schedule_id.to_string());
        self
    }

    /// The continuation of `previous`: the same parent and schedule, the chain's start time.
    pub fn continuing(mut self, previous: &RunRecord) -> Self {
        let execution_started = previous
            .start
            .execution_started_unix_ms
            .unwrap_or(previous.created_unix_ms);
        self.record.start.execution_started_unix_ms = Some(execution_started);
        self.summary.execution_started_unix_ms = execution_started;
        self.record.previous_run = Some(previous.run_id);
        self.record.scheduled_by = previous.scheduled_by.clone();
        self.record.start.remote = previous.start.remote.clone();
        if let Some(parent) = previous.parent.clone() {
            self = self.parent(parent);
        }
        self
    }
}

/// Largest piece of a record stored in one value, leaving room under the store's
/// 100,000-byte value limit.
pub const CHUNK_BYTES_MAX: usize = 90_000;

const _: () = assert!(CHUNK_BYTES_MAX < cairn_store::VALUE_BYTES_MAX);

/// The first byte of a chunked record's header. A record stored whole is MessagePack with
/// named fields, which starts with a map marker (0x80–0x8f, 0xde, 0xdf), never with this.
const CHUNKED: u8 = 0x01;

/// How a record is stored: whole, or as a header pointing at chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Whole,
    Chunks { count: u32, len: u32 },
}

impl Stored {
    /// What the value at a record's key says.
    pub fn of(value: &[u8]) -> Result<Self, StoreError> {
        if value.first() != Some(&CHUNKED) {
            return Ok(Self::Whole);
        }
        let header: [u8; 9] = value.try_into().map_err(|_| StoreError::Backend {
            message: "chunked record header is not 9 bytes".into(),
        })?;
        Ok(Self::Chunks {
            count: u32::from_be_bytes(header[1..5].try_into().expect("4 bytes")),
            len: u32::from_be_bytes(header[5..9].try_into().expect("4 bytes")),
        })
    }

    /// Chunks the record occupies (0 when whole).
    pub fn chunk_count(self) -> u32 {
        match self {
            Self::Whole => 0,
            Self::Chunks { count, .. } => count,
        }
    }
}

/// How many chunks a record of `len` encoded bytes is stored in (0: whole).
pub fn chunks_for(len: usize) -> u32 {
    if len <= CHUNK_BYTES_MAX {
        0
    } else {
        u32::try_from(len.div_ceil(CHUNK_BYTES_MAX))
            .expect("records are far below 4 billion chunks")
    }
}

/// The writes that store `value` at `key`: whole if it fits one value, else a header and
/// chunks. `previous_chunks` is how many chunks the record had before, so leftovers of a
/// larger earlier version are cleared.
pub fn record_ops(
    keys: &crate::keys::Keys,
    key: &[u8],
    value: Vec<u8>,
    previous_chunks: u32,
) -> Vec<crate::ops::Op> {
    use crate::ops::Op;
    let mut ops = Vec::new();
    let count = chunks_for(value.len());
    if count == 0 {
        ops.push(Op::Set(key.to_vec(), value));
    } else {
        let pieces = value.chunks(CHUNK_BYTES_MAX);
        let mut header = vec![CHUNKED];
        header.extend_from_slice(&count.to_be_bytes());
        header.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_be_bytes());
        for (index, piece) in (0..count).zip(pieces) {
            ops.push(Op::Set(keys.chunk(key, index), piece.to_vec()));
        }
        ops.push(Op::Set(key.to_vec(), header));
    }
    for index in count..previous_chunks {
        ops.push(Op::Clear(keys.chunk(key, index)));
    }
    ops
}

/// The record at `key` as stored bytes (reassembled from chunks if need be) and how it was
/// stored. Reads through any [`crate::ops::TxRead`] (the value with conflict tracking,
/// chunks by range).
pub async fn read_record(
    tx: &mut dyn crate::ops::TxRead,
    keys: &crate::keys::Keys,
    key: &[u8],
) -> Result<Option<(Vec<u8>, Stored)>, StoreError> {
    let Some(value) = tx.read(key).await? else {
        return Ok(None);
    };
    let stored = Stored::of(&value)?;
    match stored {
        Stored::Whole => Ok(Some((value, stored))),
        Stored::Chunks { count, len } => {
            let (begin, end) = keys.chunks(key);
            let rows = tx
                .read_range(&cairn_store::RangeRequest::new(begin, end))
                .await?;
            if rows.len() != count as usize {
                return Err(StoreError::Backend {
                    message: format!(
                        "record is stored in {count} chunks but {} were found",
                        rows.len()
                    ),
                });
            }
            let mut bytes = Vec::with_capacity(len as usize);
            for row in rows {
                bytes.extend_from_slice(&row.value);
            }
            if bytes.len() != len as usize {
                return Err(StoreError::Backend {
                    message: format!(
                        "chunked record is {} bytes but its header says {len}",
                        bytes.len()
                    ),
                });
            }
            Ok(Some((bytes, stored)))
        }
    }
}

/// Decodes a record found by a range read over record keys: `row` holds it whole, or holds
/// the header of a chunked one, whose chunks are then read in `tx`.
pub async fn decode_row<T: DeserializeOwned>(
    tx: &mut dyn crate::ops::TxRead,
    keys: &crate::keys::Keys,
    row: &cairn_store::KeyValue,
    what: &str,
) -> Result<T, StoreError> {
    match Stored::of(&row.value)? {
        Stored::Whole => decode(what, &row.value),
        Stored::Chunks { .. } => load_record(tx, keys, &row.key, what)
            .await?
            .map(|(record, _)| record)
            .ok_or_else(|| StoreError::Backend {
                message: format!("{what} record vanished inside one snapshot"),
            }),
    }
}

/// The writes that remove the record at `key`, and its chunks if it has any.
pub fn clear_record_ops(keys: &crate::keys::Keys, key: &[u8]) -> Vec<crate::ops::Op> {
    use crate::ops::Op;
    let (chunks_begin, chunks_end) = keys.chunks(key);
    vec![
        Op::Clear(key.to_vec()),
        Op::ClearRange(chunks_begin, chunks_end),
    ]
}

/// Decodes the record at `key` (see [`read_record`]), with how it was stored.
pub async fn load_record<T: DeserializeOwned>(
    tx: &mut dyn crate::ops::TxRead,
    keys: &crate::keys::Keys,
    key: &[u8],
    what: &str,
) -> Result<Option<(T, Stored)>, StoreError> {
    match read_record(tx, keys, key).await? {
        Some((bytes, stored)) => Ok(Some((decode(what, &bytes)?, stored))),
        None => Ok(None),
    }
}

/// Whether a new run of `workflow_id` may start where `existing` is the current run, under
/// `policy`.
pub fn check_reuse(
    workflow_id: &WorkflowId,
    existing: &WorkflowRecord,
    policy: crate::error::IdReusePolicy,
) -> Result<(), crate::error::ClientError> {
    let status = match existing.status {
        None | Some(cairn_core::RunStatus::Running) => {
            return Err(crate::error::ClientError::AlreadyRunning {
                workflow_id: workflow_id.to_string(),
                run_id: existing.run_id,
            });
        }
        Some(status) => status,
    };
    let allowed = match policy {
        crate::error::IdReusePolicy::AllowDuplicate => true,
        crate::error::IdReusePolicy::AllowDuplicateFailedOnly => {
            status != cairn_core::RunStatus::Completed
        }
        crate::error::IdReusePolicy::RejectDuplicate => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(crate::error::ClientError::DuplicateRejected {
            workflow_id: workflow_id.to_string(),
            policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keys;
    use crate::ops::Op;
    use cairn_store::{MemStore, RangeRequest, Store, Transaction};

    async fn apply(store: &MemStore, ops: Vec<Op>) {
        let mut tx = store.begin().unwrap();
        for op in ops {
            match op {
                Op::Set(key, value) => tx.set(&key, &value).unwrap(),
                Op::Clear(key) => tx.clear(&key).unwrap(),
                other => panic!("a record write is only sets and clears, not {other:?}"),
            }
        }
        tx.commit().await.unwrap();
    }

    async fn read(store: &MemStore, keys: &Keys, key: &[u8]) -> Option<(Vec<u8>, Stored)> {
        let mut tx = store.begin().unwrap();
        read_record(&mut tx, keys, key).await.unwrap()
    }

    async fn chunk_rows(store: &MemStore, keys: &Keys, key: &[u8]) -> usize {
        let (begin, end) = keys.chunks(key);
        let mut tx = store.begin().unwrap();
        tx.get_range(&RangeRequest::new(begin, end))
            .await
            .unwrap()
            .len()
    }

    /// Proves a record larger than one value is stored as a header and chunks, read back
    /// byte for byte, and that rewriting it smaller clears the chunks it no longer needs.
    #[test]
    fn records_round_trip_through_chunks_and_shrink_cleanly() {
        futures::executor::block_on(async {
            let store = MemStore::new();
            let keys = Keys::new(b"t");
            let key = keys.run(&RunId::from_parts(1, [7; 10]));
            let large: Vec<u8> = (0..250_000u32).map(|i| (i % 251) as u8).collect();
            assert_eq!(chunks_for(large.len()), 3);
            apply(&store, record_ops(&keys, &key, large.clone(), 0)).await;
            assert_eq!(
                read(&store, &keys, &key).await,
                Some((
                    large.clone(),
                    Stored::Chunks {
                        count: 3,
                        len: 250_000
                    }
                ))
            );
            assert_eq!(chunk_rows(&store, &keys, &key).await, 3);

            let middle = vec![7u8; CHUNK_BYTES_MAX + 1];
            apply(&store, record_ops(&keys, &key, middle.clone(), 3)).await;
            let (bytes, stored) = read(&store, &keys, &key).await.unwrap();
            assert_eq!((bytes, stored.chunk_count()), (middle, 2));
            assert_eq!(chunk_rows(&store, &keys, &key).await, 2);

            let small = encode(&"a record that fits one value");
            apply(&store, record_ops(&keys, &key, small.clone(), 2)).await;
            assert_eq!(
                read(&store, &keys, &key).await,
                Some((small, Stored::Whole))
            );
            assert_eq!(chunk_rows(&store, &keys, &key).await, 0);
        });
    }

    /// Proves a chunked record with a chunk missing reads as an error, never as a shorter
    /// record.
    #[test]
    fn a_missing_chunk_is_reported() {
        futures::executor::block_on(async {
            let store = MemStore::new();
            let keys = Keys::new(b"t");
            let key = keys.run(&RunId::from_parts(1, [7; 10]));
            apply(&store, record_ops(&keys, &key, vec![1; 200_000], 0)).await;
            apply(&store, vec![Op::Clear(keys.chunk(&key, 1))]).await;
            let mut tx = store.begin().unwrap();
            let error = read_record(&mut tx, &keys, &key).await.unwrap_err();
            assert!(error.to_string().contains("3 chunks but 2"), "{error}");
        });
    }
}
