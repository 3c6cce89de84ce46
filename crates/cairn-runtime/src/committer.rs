//! Commit batching: many actors' transitions in one store transaction.
//!
//! The committer is one actor with a closed input enum: `Submit` a request, `BatchDone` when a
//! transaction in flight finished. While the batches in flight commit (at most the store's
//! [`Store::commit_batches_in_flight`], or the node's setting), new requests queue; the next
//! batch takes everything queued (up to the limits). So batches grow with load and no request
//! waits longer than the commits ahead of it — the bound in time — and [`BATCH_REQUESTS_MAX`] /
//! [`BATCH_BYTES_MAX`] bound the size.
//!
//! Batches in flight together are separate optimistic transactions: the store orders them, and
//! one that read what another wrote conflicts and is retried, as batches of two nodes do. No
//! two of them carry consecutive transitions of one run, because a run's actor waits for its
//! transition's answer before it submits the next.
//!
//! Each request carries its shard fence (shard, epoch): the batch reads those lease keys with
//! conflict tracking and drops any request whose epoch is stale, so a node that lost a shard can
//! never commit for it. After `MaybeCommitted`, the committer reads back a version the batch
//! wrote to learn whether it landed before retrying.
//!
//! Mailbox writes ([`Op::Mail`]) say which shard must wake. The batch reads that shard's lease
//! too: if this node holds it at the epoch the transaction read, the shard actor is told
//! directly after the commit; otherwise the batch rings the shard's doorbell (an atomic add its
//! holder watches) in the same transaction. Either way no message waits unnoticed, whoever owns
//! the shard and however ownership moves, because the lease read is conflict-tracked.

use crate::keys::Keys;
use crate::membership::Ownership;
use crate::ops::{Check, CommitError, Op, Verify};
use crate::records::{Lease, ReadyItem, decode, encode};
use cairn_store::{RangeRequest, Store, StoreError, StoreResult, Transaction};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::oneshot;

/// Most requests in one batch.
pub const BATCH_REQUESTS_MAX: usize = 512;
/// Most bytes of writes in one batch (well under the store's 10 MB transaction limit).
pub const BATCH_BYTES_MAX: usize = 4_000_000;
/// Attempts of one batch on conflicts before its requests fail.
pub const BATCH_ATTEMPTS_MAX: u32 = 20;
pub use crate::config::COMMIT_REQUESTS_QUEUED_MAX;

const _: () = assert!(BATCH_BYTES_MAX < cairn_store::TRANSACTION_BYTES_MAX);

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
    /// This request's place in the queue bound ([`COMMIT_REQUESTS_QUEUED_MAX`]), given back
    /// when the request is dropped (answered, or its batch gone).
    pub _slot: tokio::sync::OwnedSemaphorePermit,
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
pub struct CommitterState<S> {
    batch: Arc<BatchContext<S>>,
    queue: Vec<CommitRequest>,
    /// Batches committing now, and the most at once.
    in_flight: usize,
    in_flight_max: usize,
}

/// What every batch needs.
struct BatchContext<S> {
    store: S,
    keys: Keys,
    metrics: Arc<crate::Metrics>,
    ownership: Arc<Ownership>,
}

/// What the committer needs to start.
pub struct CommitterArgs<S> {
    pub store: S,
    pub keys: Keys,
    pub metrics: Arc<crate::Metrics>,
    pub ownership: Arc<Ownership>,
    /// Most batches in flight at once (at least 1).
    pub batches_in_flight_max: usize,
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
            batch: Arc::new(BatchContext {
                store: args.store,
                keys: args.keys,
                metrics: args.metrics,
                ownership: args.ownership,
            }),
            queue: Vec::new(),
            in_flight: 0,
            in_flight_max: args.batches_in_flight_max.max(1),
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
            CommitterMsg::BatchDone => state.in_flight -= 1,
        }
        let metrics = &state.batch.metrics;
        while state.in_flight < state.in_flight_max && !state.queue.is_empty() {
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
            state.in_flight += 1;
            metrics
                .commit_batches_in_flight_peak
                .fetch_max(state.in_flight as u64, Ordering::Relaxed);
            let myself = myself.clone();
            let context = state.batch.clone();
            tokio::spawn(async move {
                // Reports the batch done even if committing it panics, so the committer never
                // waits forever on a batch that is gone.
                let _done = BatchDoneOnDrop(myself);
                commit_batch(&context, batch).await;
            });
        }
        metrics
            .commit_batches_in_flight
            .store(state.in_flight as u64, Ordering::Relaxed);
        Ok(())
    }
}

struct BatchDoneOnDrop(ActorRef<CommitterMsg>);

impl Drop for BatchDoneOnDrop {
    fn drop(&mut self) {
        let _ = self.0.cast(CommitterMsg::BatchDone);
    }
}

async fn commit_batch<S: Store>(context: &BatchContext<S>, batch: Vec<CommitRequest>) {
    let started = tokio::time::Instant::now();
    let size = batch.len();
    let mut live: Vec<CommitRequest> = batch;
    let mut last_error = StoreError::Conflict;
    // Wake-ups of attempts that may have committed: their mail may be in the store although
    // a retry, deciding anew from what it reads (a derived write), writes none. Waking a run
    // or schedule with nothing new is harmless; missing one leaves its mail unread.
    let mut maybe_wakes: LocalWakes = Vec::new();
    for _ in 0..BATCH_ATTEMPTS_MAX {
        let (outcome, rejected, mut wakes) = try_commit(context, &mut live).await;
        match outcome {
            Ok(()) => {
                wakes.append(&mut maybe_wakes);
                // Wake before answering: a client that acts on the answer (a query right after
                // a start) then reaches the run after its wake-up.
                context.ownership.wake_local(wakes);
                answer(live, rejected);
                context.metrics.record_commit(size, started.elapsed());
                return;
            }
            Err(StoreError::MaybeCommitted) => match landed(context, &live, &rejected).await {
                Landed::Yes => {
                    context.ownership.wake_local(wakes);
                    answer(live, rejected);
                    context.metrics.record_commit(size, started.elapsed());
                    return;
                }
                // Not landed, or nothing to check (every request idempotent): retry.
                Landed::No | Landed::NothingToCheck => {
                    maybe_wakes.append(&mut wakes);
                    last_error = StoreError::MaybeCommitted;
                }
                // The batch may have landed and cannot be told apart: writing it again could
                // duplicate its versionstamped mail or a child start, so its requests are
                // answered with the unknown outcome and their callers rebuild from the store.
                Landed::Unknown => {
                    maybe_wakes.append(&mut wakes);
                    last_error = StoreError::MaybeCommitted;
                    break;
                }
            },
            Err(e) if e.is_retryable() => last_error = e,
            Err(e) => {
                last_error = e;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    context.ownership.wake_local(maybe_wakes);
    // A write past a store limit is one request's fault: the others commit on their own, and
    // only the faulty one is answered with the error.
    if live.len() > 1
        && matches!(
            last_error,
            StoreError::KeyTooLarge { .. }
                | StoreError::ValueTooLarge { .. }
                | StoreError::TransactionTooLarge { .. }
        )
    {
        tracing::warn!(error = %last_error, requests = live.len(), "commit batch refused by a store limit; committing its requests one by one");
        for request in live {
            Box::pin(commit_batch(context, vec![request])).await;
        }
        return;
    }
    tracing::warn!(error = %last_error, requests = live.len(), "commit batch failed");
    for request in live {
        let _ = request
            .reply
            .send(Err(CommitError::Store(last_error.clone())));
    }
}

/// What to wake on this node after the batch commits, by shard.
pub(crate) use crate::membership::LocalWakes;

/// One attempt: fence, write, commit. Fenced requests are answered and removed from `live`.
async fn try_commit<S: Store>(
    context: &BatchContext<S>,
    live: &mut Vec<CommitRequest>,
) -> (Result<(), StoreError>, Rejections, LocalWakes) {
    match try_commit_inner(context, live).await {
        Ok(outcome) => outcome,
        Err(e) => (Err(e), Vec::new(), Vec::new()),
    }
}

type Rejections = Vec<(usize, crate::ClientError)>;

/// The lease epochs one batch attempt has read (conflict-tracked), by shard.
struct LeaseReads(BTreeMap<u32, Option<u64>>);

impl LeaseReads {
    /// Reads the leases of `shards` not read yet, all at once.
    async fn read_all<T: Transaction>(
        &mut self,
        tx: &mut T,
        keys: &Keys,
        shards: impl IntoIterator<Item = u32>,
    ) -> StoreResult<()> {
        let missing: Vec<u32> = shards
            .into_iter()
            .filter(|shard| !self.0.contains_key(shard))
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let lease_keys: Vec<Vec<u8>> = missing.iter().map(|s| keys.lease(*s)).collect();
        let values = tx.get_many(&lease_keys).await?;
        for (shard, value) in missing.into_iter().zip(values) {
            let epoch = match value {
                Some(bytes) => decode::<Lease>("lease", &bytes)?.held_epoch(),
                None => None,
            };
            self.0.insert(shard, epoch);
        }
        Ok(())
    }

    /// The epoch read for `shard` (by [`Self::read_all`]); `None` if unheld or not read.
    fn epoch(&self, shard: u32) -> Option<u64> {
        self.0.get(&shard).copied().flatten()
    }
}

/// Mailbox writes of one batch attempt: each gets its own user version, so two entries for one
/// run in one batch get distinct keys.
struct Mailings {
    next_user_version: u32,
    shards: BTreeSet<u32>,
    notices: Vec<(u32, ReadyItem)>,
    /// Counter additions of the batch, summed per key and written once at its end: a batch
    /// of 500 closes moves a visibility counter with one atomic add, not 500.
    adds: BTreeMap<Vec<u8>, i64>,
    /// Workflow types of the runs this attempt starts (`Op::Started`), counted once it lands.
    started: Vec<String>,
    /// Keys this attempt has set or cleared so far, and ranges it cleared: a check value read
    /// ahead of the batch's writes is stale for these, and is read again.
    written: BTreeSet<Vec<u8>>,
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Most versionstamped keys (mailbox and ready-queue entries) one batch can write: the
/// versionstamp's 16-bit user version tells them apart.
pub const BATCH_MAILS_MAX: u32 = 1 << 16;

impl Mailings {
    /// Whether this attempt wrote `key` (set, cleared, or in a cleared range) so far.
    fn wrote(&self, key: &[u8]) -> bool {
        self.written.contains(key)
            || self
                .cleared
                .iter()
                .any(|(begin, end)| begin.as_slice() <= key && key < end.as_slice())
    }

    fn next_user_version(&mut self) -> StoreResult<u16> {
        let user_version =
            u16::try_from(self.next_user_version).map_err(|_| StoreError::Backend {
                message: format!(
                    "one commit batch writes more than {BATCH_MAILS_MAX} mailbox entries"
                ),
            })?;
        self.next_user_version += 1;
        Ok(user_version)
    }
}

fn apply_ops<'a, T: Transaction>(
    tx: &'a mut T,
    keys: &'a Keys,
    ops: &'a [Op],
    mailings: &'a mut Mailings,
) -> Pin<Box<dyn Future<Output = StoreResult<()>> + Send + 'a>> {
    Box::pin(async move {
        for op in ops {
            match op {
                Op::Set(k, v) => {
                    tx.set(k, v)?;
                    mailings.written.insert(k.clone());
                }
                Op::Clear(k) => {
                    tx.clear(k)?;
                    mailings.written.insert(k.clone());
                }
                Op::Add(k, delta) => {
                    let sum = mailings.adds.entry(k.clone()).or_insert(0);
                    *sum = sum.wrapping_add(*delta);
                }
                Op::ClearRange(b, e) => {
                    tx.clear_range(b, e)?;
                    mailings.cleared.push((b.clone(), e.clone()));
                }
                Op::Mail {
                    shard,
                    run_id,
                    item,
                } => {
                    let user_version = mailings.next_user_version()?;
                    tx.set_versionstamped_key(&keys.inbox_new(*shard, run_id, user_version), item)?;
                    mailings.shards.insert(*shard);
                    mailings.notices.push((*shard, ReadyItem::Run(*run_id)));
                }
                Op::WakeSchedule {
                    shard,
                    schedule_id,
                    at_unix_ms,
                } => {
                    let wake = keys.schedule_wake(*shard, *at_unix_ms, schedule_id);
                    tx.set(&wake, &[])?;
                    mailings.written.insert(wake);
                    mailings.shards.insert(*shard);
                    mailings.notices.push((
                        *shard,
                        ReadyItem::Schedule {
                            schedule_id: schedule_id.clone(),
                            at_unix_ms: *at_unix_ms,
                        },
                    ));
                }
                Op::Started { workflow_type } => mailings.started.push(workflow_type.clone()),
                Op::Derived(derive) => {
                    let derived = derive.derive(tx).await?;
                    apply_ops(tx, keys, &derived, mailings).await?;
                }
            }
        }
        Ok(())
    })
}

async fn try_commit_inner<S: Store>(
    context: &BatchContext<S>,
    live: &mut Vec<CommitRequest>,
) -> Result<(Result<(), StoreError>, Rejections, LocalWakes), StoreError> {
    let keys = &context.keys;
    let mut tx = context.store.begin()?;
    // Every read the batch can make before its writes goes out at once (one round trip on
    // FoundationDB, not one per key): the fences' leases, then the single-key checks.
    let mut leases = LeaseReads(BTreeMap::new());
    leases
        .read_all(
            &mut tx,
            keys,
            live.iter().filter_map(|r| r.fence.map(|(s, _)| s)),
        )
        .await?;
    let (keep, fenced): (Vec<_>, Vec<_>) = std::mem::take(live).into_iter().partition(|r| match r
        .fence
    {
        Some((shard, epoch)) => leases.epoch(shard) == Some(epoch),
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
    let mut mailings = Mailings {
        next_user_version: 0,
        shards: BTreeSet::new(),
        notices: Vec::new(),
        adds: BTreeMap::new(),
        started: Vec::new(),
        written: BTreeSet::new(),
        cleared: Vec::new(),
    };
    let mut ahead: BTreeSet<Vec<u8>> = live
        .iter()
        .flat_map(|r| r.checks.iter())
        .filter(|c| c.range_end.is_none())
        .map(|c| c.key.clone())
        .collect();
    // And, where it pays, the keys the derived writes will read: their reads are then
    // answered from the transaction's cache (a write of the batch in between still wins).
    if context.store.reads_ahead_pay() {
        for request in live.iter() {
            for op in &request.ops {
                if let Op::Derived(derive) = op {
                    ahead.extend(derive.reads());
                }
            }
        }
    }
    let ahead: Vec<Vec<u8>> = ahead.into_iter().collect();
    let read_ahead: BTreeMap<Vec<u8>, Option<Vec<u8>>> = ahead
        .iter()
        .cloned()
        .zip(tx.get_many(&ahead).await?)
        .collect();
    for (index, request) in live.iter().enumerate() {
        let mut verdict = Ok(());
        for check in &request.checks {
            // Mail this batch wrote is not readable in it (its versionstamped key is made at
            // commit): a range check over a mailbox counts it from the batch's own record.
            let mailed_here = |end: &Vec<u8>| {
                mailings.notices.iter().any(|(shard, item)| {
                    matches!(item, ReadyItem::Run(run) if keys.inbox_of_run(*shard, run).1 == *end)
                })
            };
            let value = match &check.range_end {
                // Read ahead, unless an earlier request of the batch wrote it since.
                None if !mailings.wrote(&check.key) => read_ahead
                    .get(&check.key)
                    .cloned()
                    .expect("every single-key check was read ahead"),
                None => tx.get(&check.key).await?,
                Some(end) if mailed_here(end) => Some(Vec::new()),
                Some(end) => tx
                    .get_range(&RangeRequest::new(check.key.clone(), end.clone()).limit(1))
                    .await?
                    .into_iter()
                    .next()
                    .map(|row| row.value),
            };
            verdict = (check.accept)(value.as_deref());
            if verdict.is_err() {
                break;
            }
        }
        if let Err(error) = verdict {
            rejected.push((index, error));
            continue;
        }
        apply_ops(&mut tx, keys, &request.ops, &mut mailings).await?;
    }
    for (key, delta) in std::mem::take(&mut mailings.adds) {
        if delta != 0 {
            tx.atomic_add(&key, delta)?;
        }
    }
    // Wake each shard that got mail: directly if this node holds it at the epoch read here;
    // otherwise through its ready queue (which runs) and its doorbell (look now).
    leases
        .read_all(&mut tx, keys, mailings.shards.iter().copied())
        .await?;
    let mut local_shards = BTreeSet::new();
    for shard in &mailings.shards {
        let held = leases.epoch(*shard);
        if held.is_some() && held == context.ownership.epoch_of(*shard) {
            local_shards.insert(*shard);
        } else {
            tx.atomic_add(&keys.bell(*shard), 1)?;
        }
    }
    let (wakes, remote): (Vec<_>, Vec<_>) = std::mem::take(&mut mailings.notices)
        .into_iter()
        .partition(|(shard, _)| local_shards.contains(shard));
    let remote: BTreeSet<(u32, ReadyItem)> = remote.into_iter().collect();
    for (shard, item) in remote {
        let user_version = mailings.next_user_version()?;
        tx.set_versionstamped_key(&keys.ready_new(shard, user_version), &encode(&item))?;
    }
    // Rejections are answered only once the batch is settled; a retry re-evaluates them.
    let committed = tx.commit().await.map(|_| ());
    if committed.is_ok() {
        for workflow_type in &mailings.started {
            context.metrics.record_started(workflow_type);
        }
    }
    Ok((committed, rejected, wakes))
}

/// Replies to a committed batch: rejected requests get their error, the rest success.
fn answer(live: Vec<CommitRequest>, rejected: Rejections) {
    let mut errors: BTreeMap<usize, crate::ClientError> = rejected.into_iter().collect();
    for (index, request) in live.into_iter().enumerate() {
        let reply = match errors.remove(&index) {
            Some(error) => Err(CommitError::Rejected(Box::new(error))),
            None => Ok(()),
        };
        let _ = request.reply.send(reply);
    }
}

/// Whether a batch answered `MaybeCommitted` landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landed {
    Yes,
    No,
    /// No request has a verify key: every one is idempotent, so a retry is safe.
    NothingToCheck,
    /// The verify key could not be read (after `VERIFY_READ_ATTEMPTS_MAX` tries).
    Unknown,
}

/// Reads of a verify key before a `MaybeCommitted` batch is given up as unknown.
pub const VERIFY_READ_ATTEMPTS_MAX: u32 = 5;

/// After `MaybeCommitted`: did the batch land? Reads one request's verify key (the batch is
/// one transaction, so one request tells for all).
async fn landed<S: Store>(
    context: &BatchContext<S>,
    live: &[CommitRequest],
    rejected: &Rejections,
) -> Landed {
    let Some((key, verify)) = live
        .iter()
        .enumerate()
        .filter(|(index, _)| !rejected.iter().any(|(r, _)| r == index))
        .find_map(|(_, r)| r.verify.clone())
    else {
        return Landed::NothingToCheck;
    };
    for attempt in 0..VERIFY_READ_ATTEMPTS_MAX {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5 << attempt)).await;
        }
        match verify_once(context, &key, &verify).await {
            Ok(landed) => return if landed { Landed::Yes } else { Landed::No },
            Err(error) => {
                tracing::debug!(%error, attempt, "reading a MaybeCommitted batch's verify key failed");
            }
        }
    }
    Landed::Unknown
}

async fn verify_once<S: Store>(
    context: &BatchContext<S>,
    key: &[u8],
    verify: &Verify,
) -> StoreResult<bool> {
    let mut tx = context.store.begin()?;
    let stored = crate::records::read_record(&mut tx, &context.keys, key).await?;
    Ok(match (verify, stored) {
        (Verify::Absent, stored) => stored.is_none(),
        (_, None) => false,
        (Verify::Exists, Some(_)) => true,
        (Verify::Holds(value), Some((bytes, _))) => &bytes == value,
        (Verify::RunVersionAtLeast(version), Some((bytes, _))) => {
            let stored = crate::records::decode::<crate::records::RunRecord>("run", &bytes)?;
            stored.version >= *version
        }
    })
}
