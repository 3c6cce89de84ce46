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
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Set(k, v) => k.len() + v.len(),
            Op::Clear(k) => k.len(),
        }
    }
}

/// Why a request did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("shard {shard} is no longer owned by this node at epoch {epoch}")]
    Fenced { shard: u32, epoch: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes to commit together, atomically.
#[derive(Debug)]
pub struct CommitRequest {
    pub ops: Vec<Op>,
    /// The shard lease epoch this request was computed under.
    pub fence: Option<(u32, u64)>,
    /// A run record key and the version this request writes there, read back to settle
    /// `MaybeCommitted`. Requests without one must be idempotent.
    pub verify: Option<(Vec<u8>, u64)>,
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
                commit_batch(&store, &keys, batch, &metrics).await;
                let _ = myself.cast(CommitterMsg::BatchDone);
            });
        }
        Ok(())
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
        match try_commit(store, keys, &mut live).await {
            Ok(()) => {
                for request in live {
                    let _ = request.reply.send(Ok(()));
                }
                metrics.record_commit(size, started.elapsed());
                return;
            }
            Err(StoreError::MaybeCommitted) => match landed(store, &live).await {
                Some(true) => {
                    for request in live {
                        let _ = request.reply.send(Ok(()));
                    }
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
) -> Result<(), StoreError> {
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
    for request in live.iter() {
        for op in &request.ops {
            match op {
                Op::Set(k, v) => tx.set(k, v)?,
                Op::Clear(k) => tx.clear(k)?,
            }
        }
    }
    tx.commit().await.map(|_| ())
}

/// After `MaybeCommitted`: did the batch land? Reads one request's verify key.
async fn landed<S: Store>(store: &S, live: &[CommitRequest]) -> Option<bool> {
    let (key, version) = live.iter().find_map(|r| r.verify.clone())?;
    let mut tx = store.begin().ok()?;
    let bytes = tx.get(&key).await.ok()??;
    let stored = crate::records::decode::<crate::records::RunRecord>("run", &bytes).ok()?;
    Some(stored.version >= version)
}
