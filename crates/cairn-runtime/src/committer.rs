//! Commit batching: many actors' transitions in one store transaction.
//!
//! The committer is one actor with a closed input enum: `Submit` a request, `BatchDone` when the
//! transaction in flight finished. While a batch commits, new requests queue; the next batch
//! takes everything queued (up to the limits). So batches grow with load and no request waits
//! longer than one commit — the bound in time — and `batch_requests_max` /
//! `batch_bytes_max` bound the size.
//!
//! Each request carries its shard fence (shard, epoch): the batch reads those lease keys with
//! conflict tracking and drops any request whose epoch is stale, so a node that lost a shard can
//! never commit for it. After `MaybeCommitted`, the committer reads back a version the batch
//! wrote to learn whether it landed before retrying.

use crate::keys::Keys;
use crate::records::{Lease, decode};
use cairn_store::{Store, StoreError, Transaction};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashMap;
use tokio::sync::oneshot;

/// Most requests in one batch.
pub const BATCH_REQUESTS_MAX: usize = 512;
/// Most bytes of writes in one batch (well under the store's 10 MB transaction limit).
pub const BATCH_BYTES_MAX: usize = 4_000_000;
/// Attempts of one batch on conflicts before its requests fail.
pub const BATCH_ATTEMPTS_MAX: u32 = 20;

const _: () = assert!(BATCH_BYTES_MAX < cairn_store::TRANSACTION_BYTES_MAX);

/// One write of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Set(Vec<u8>, Vec<u8>),
    Clear(Vec<u8>),
    /// The key ends in a 4-byte versionstamp offset (see `Keys::inbox_new`).
    SetVersionstamped(Vec<u8>, Vec<u8>),
}

/// Decides whether a request may proceed, given the current value of its checked key.
pub type CheckFn = Box<dyn Fn(Option<&[u8]>) -> Result<(), crate::ClientError> + Send + Sync>;

/// A condition a request needs inside the batch transaction: the value of `key` (as of the
/// batch, including earlier requests of the same batch) must satisfy the function, or the
/// request is rejected with its error and writes nothing. The read is conflict-tracked.
pub struct Check {
    pub key: Vec<u8>,
    pub accept: CheckFn,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Set(k, v) | Op::SetVersionstamped(k, v) => k.len() + v.len(),
            Op::Clear(k) => k.len(),
        }
    }
}

/// How to tell, after `MaybeCommitted`, whether a request's batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// The key holds a run record whose version is at least this.
    RunVersionAtLeast(u64),
    /// The key exists (a guard key only this request writes).
    Exists,
}

/// Why a request did not commit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommitError {
    #[error("shard {shard} is no longer owned by this node at epoch {epoch}")]
    Fenced { shard: u32, epoch: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A check of the request failed; nothing of it was written.
    #[error(transparent)]
    Rejected(Box<crate::ClientError>),
    /// The committer is gone (the node is stopping); the request's outcome is unknown.
    #[error("the committer stopped before answering")]
    Stopped,
}

/// Writes to commit together, atomically.
#[derive(Debug)]
pub struct CommitRequest {
    pub ops: Vec<Op>,
    /// Evaluated in order, inside the batch, before this request's writes.
    pub checks: Vec<Check>,
    /// The shard lease epoch this request was computed under.
    pub fence: Option<(u32, u64)>,
    /// A run record key and the version this request writes there, read back to settle
    /// `MaybeCommitted`. Requests without one must be idempotent.
    pub verify: Option<(Vec<u8>, Verify)>,
    pub reply: oneshot::Sender<Result<(), CommitError>>,
}

impl CommitRequest {
    fn bytes(&self) -> usize {
        self.ops.iter().map(Op::bytes).sum()
    }
}

/// The committer's inputs.
#[derive(Debug)]
pub enum CommitterMsg {
    Submit(CommitRequest),
    BatchDone,
}

/// The committer actor.
#[derive(Debug)]
pub struct Committer<S> {
    _store: std::marker::PhantomData<S>,
}

impl<S> Default for Committer<S> {
    fn default() -> Self {
        Self {
            _store: std::marker::PhantomData,
        }
    }
}

/// The committer's state.
#[derive(Debug)]
pub struct CommitterState<S> {
    store: S,
    keys: Keys,
    queue: Vec<CommitRequest>,
    in_flight: bool,
    metrics: std::sync::Arc<crate::Metrics>,
}

/// What the committer needs to start.
#[derive(Debug)]
pub struct CommitterArgs<S> {
    pub store: S,
    pub keys: Keys,
    pub metrics: std::sync::Arc<crate::Metrics>,
}

impl<S: Store> Actor for Committer<S> {
    type Msg = CommitterMsg;
    type State = CommitterState<S>;
    type Arguments = CommitterArgs<S>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(CommitterState {
            store: args.store,
            keys: args.keys,
            queue: Vec::new(),
            in_flight: false,
            metrics: args.metrics,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CommitterMsg::Submit(request) => state.queue.push(request),
            CommitterMsg::BatchDone => state.in_flight = false,
        }
        if !state.in_flight && !state.queue.is_empty() {
            let mut bytes = 0;
            let mut take = 0;
            for request in &state.queue {
                if take == BATCH_REQUESTS_MAX
                    || (take > 0 && bytes + request.bytes() > BATCH_BYTES_MAX)
                {
                    break;
                }
                bytes += request.bytes();
                take += 1;
            }
            let batch: Vec<CommitRequest> = state.queue.drain(..take).collect();
            state.in_flight = true;
            let store = state.store.clone();
            let keys = state.keys.clone();
            let metrics = state.metrics.clone();
            tokio::spawn(async move {
                // Reports the batch done even if committing it panics, so the committer never
                // waits forever on a batch that is gone.
                let _done = BatchDoneOnDrop(myself);
                commit_batch(&store, &keys, batch, &metrics).await;
            });
        }
        Ok(())
    }
}

struct BatchDoneOnDrop(ActorRef<CommitterMsg>);

impl Drop for BatchDoneOnDrop {
    fn drop(&mut self) {
        let _ = self.0.cast(CommitterMsg::BatchDone);
    }
}

async fn commit_batch<S: Store>(
    store: &S,
    keys: &Keys,
    batch: Vec<CommitRequest>,
    metrics: &crate::Metrics,
) {
    let started = std::time::Instant::now();
    let size = batch.len();
    let mut live: Vec<CommitRequest> = batch;
    let mut last_error = StoreError::Conflict;
    for _ in 0..BATCH_ATTEMPTS_MAX {
        let (outcome, rejected) = try_commit(store, keys, &mut live).await;
        match outcome {
            Ok(()) => {
                answer(live, rejected);
                metrics.record_commit(size, started.elapsed());
                return;
            }
            Err(StoreError::MaybeCommitted) => match landed(store, &live, &rejected).await {
                Some(true) => {
                    answer(live, rejected);
                    metrics.record_commit(size, started.elapsed());
                    return;
                }
                // Not landed, or nothing to check (every request idempotent): retry.
                Some(false) | None => last_error = StoreError::MaybeCommitted,
            },
            Err(e) if e.is_retryable() => last_error = e,
            Err(e) => {
                last_error = e;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    tracing::warn!(error = %last_error, requests = live.len(), "commit batch failed");
    for request in live {
        let _ = request
            .reply
            .send(Err(CommitError::Store(last_error.clone())));
    }
}

/// One attempt: fence, write, commit. Fenced requests are answered and removed from `live`.
async fn try_commit<S: Store>(
    store: &S,
    keys: &Keys,
    live: &mut Vec<CommitRequest>,
) -> (Result<(), StoreError>, Rejections) {
    match try_commit_inner(store, keys, live).await {
        Ok(outcome) => outcome,
        Err(e) => (Err(e), Vec::new()),
    }
}

type Rejections = Vec<(usize, crate::ClientError)>;

async fn try_commit_inner<S: Store>(
    store: &S,
    keys: &Keys,
    live: &mut Vec<CommitRequest>,
) -> Result<(Result<(), StoreError>, Rejections), StoreError> {
    let mut tx = store.begin()?;
    let mut epochs: HashMap<u32, Option<u64>> = HashMap::new();
    for request in live.iter() {
        if let Some((shard, _)) = request.fence
            && !epochs.contains_key(&shard)
        {
            let lease = tx.get(&keys.lease(shard)).await?;
            let epoch = lease
                .map(|bytes| decode::<Lease>("lease", &bytes).map(|l| l.epoch))
                .transpose()?;
            epochs.insert(shard, epoch);
        }
    }
    let (keep, fenced): (Vec<_>, Vec<_>) = std::mem::take(live).into_iter().partition(|r| match r
        .fence
    {
        Some((shard, epoch)) => epochs.get(&shard).copied().flatten() == Some(epoch),
        None => true,
    });
    for request in fenced {
        let (shard, epoch) = request.fence.expect("fenced requests have a fence");
        let _ = request
            .reply
            .send(Err(CommitError::Fenced { shard, epoch }));
    }
    *live = keep;
    let mut rejected = Vec::new();
    for (index, request) in live.iter().enumerate() {
        let mut verdict = Ok(());
        for check in &request.checks {
            let value = tx.get(&check.key).await?;
            verdict = (check.accept)(value.as_deref());
            if verdict.is_err() {
                break;
            }
        }
        if let Err(error) = verdict {
            rejected.push((index, error));
            continue;
        }
        for op in &request.ops {
            match op {
                Op::Set(k, v) => tx.set(k, v)?,
                Op::Clear(k) => tx.clear(k)?,
                Op::SetVersionstamped(k, v) => tx.set_versionstamped_key(k, v)?,
            }
        }
    }
    // Rejections are answered only once the batch is settled; a retry re-evaluates them.
    Ok((tx.commit().await.map(|_| ()), rejected))
}

/// Replies to a committed batch: rejected requests get their error, the rest success.
fn answer(live: Vec<CommitRequest>, rejected: Rejections) {
    let mut errors: HashMap<usize, crate::ClientError> = rejected.into_iter().collect();
    for (index, request) in live.into_iter().enumerate() {
        let reply = match errors.remove(&index) {
            Some(error) => Err(CommitError::Rejected(Box::new(error))),
            None => Ok(()),
        };
        let _ = request.reply.send(reply);
    }
}

/// After `MaybeCommitted`: did the batch land? Reads one request's verify key.
async fn landed<S: Store>(
    store: &S,
    live: &[CommitRequest],
    rejected: &Rejections,
) -> Option<bool> {
    let (key, verify) = live
        .iter()
        .enumerate()
        .filter(|(index, _)| !rejected.iter().any(|(r, _)| r == index))
        .find_map(|(_, r)| r.verify.clone())?;
    let mut tx = store.begin().ok()?;
    let Some(bytes) = tx.get(&key).await.ok()? else {
        return Some(false);
    };
    match verify {
        Verify::Exists => Some(true),
        Verify::RunVersionAtLeast(version) => {
            let stored = crate::records::decode::<crate::records::RunRecord>("run", &bytes).ok()?;
            Some(stored.version >= version)
        }
    }
}
