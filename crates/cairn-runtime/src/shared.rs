//! What every actor of a node shares (`Shared`): the store, the keys, the configuration, the
//! registry, the committer, the workers, the cluster's ownership table and the local result
//! waiters, with the few operations all of them use (commit through the committer, find a
//! shard's actor at an epoch, crash points, result notification). It sits below the node and
//! the actors: they all depend on it, it depends on none of them but the messages it sends.

use crate::Metrics;
use crate::committer::{CommitRequest, CommitterMsg};
use crate::config::{CrashPoint, NodeConfig};
use crate::error::QueryError;
use crate::keys::Keys;
use crate::keys::fnv1a;
pub use crate::keys::shard_of;
use crate::membership::Cluster;
use crate::messages::ShardMsg;
use crate::ops::{Check, CommitError, Op, Verify};
use crate::peers::{PeerError, PeerFuture, PeerQuery, QueryTarget};
use crate::pool::Workers;
use crate::records::Outcome;
use crate::registry::Registry;
use cairn_store::Store;
use cairn_types::{Payload, RunId, WorkflowId};
use ractor::ActorRef;
use ractor::thread_local::ThreadLocalActorSpawner;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

/// What every actor of a node shares.
pub struct Shared<S: Store> {
    pub store: S,
    pub keys: Keys,
    pub config: NodeConfig,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub committer: ActorRef<CommitterMsg>,
    pub workers: Workers,
    /// Attempts of activity types not registered here, for remote workers to poll.
    pub matching: crate::matching::Matching,
    pub runtime: tokio::runtime::Handle,
    pub cluster: Cluster,
    pub(crate) spawners: Vec<ThreadLocalActorSpawner>,
    /// Local result waiters by run, with the run's shard. A waiter gets `None` when the shard
    /// leaves this node: the run goes on elsewhere, and the waiter watches the store instead.
    pub(crate) waiters: Mutex<BTreeMap<RunId, Vec<ResultWaiter>>>,
    /// Client writes (starts, signals, cancels…) submitted and not yet answered; bounded by
    /// [`CLIENT_COMMITS_IN_FLIGHT_MAX`].
    pub(crate) client_commits: std::sync::atomic::AtomicUsize,
    /// Places in the committer's queue: `NodeConfig::commit_requests_queued_max` permits.
    pub(crate) commit_slots: Arc<tokio::sync::Semaphore>,
}

pub use crate::config::CLIENT_COMMITS_IN_FLIGHT_MAX;

/// Most history events one transaction reads. A history of any length is read a page per
/// transaction: events are written once and never change, so pages read at successive
/// versions still form a prefix of the history as committed.
pub const HISTORY_PAGE_EVENTS: usize = 256;

/// Run `run_id`'s history as committed, a page of [`HISTORY_PAGE_EVENTS`] per transaction;
/// with `before`, only the events whose ids are below it.
pub(crate) async fn read_history<S: Store>(
    store: &S,
    keys: &Keys,
    run_id: &RunId,
    before: Option<cairn_types::EventId>,
) -> Result<Vec<cairn_types::HistoryEvent>, cairn_store::StoreError> {
    let (begin, mut end) = keys.history(run_id);
    if let Some(before) = before {
        end = keys.history_event(run_id, before);
    }
    let mut pages = cairn_store::Pages::new(begin, end, HISTORY_PAGE_EVENTS);
    let mut events = Vec::new();
    while let Some(page) = pages.next(store).await? {
        for kv in page {
            events.push(crate::records::decode("history event", &kv.value)?);
        }
    }
    Ok(events)
}

/// Runs `pass` every `every` while this node holds shard 0: a background job with one runner
/// per cluster (retention, batch operations). The loop holds the node weakly and ends when the
/// node is dropped or stops.
pub(crate) fn spawn_on_shard_zero<S, F, Fut>(shared: &Arc<Shared<S>>, every: Duration, mut pass: F)
where
    S: Store,
    F: FnMut(Arc<Shared<S>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(shared);
    shared.runtime.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            if shared.cluster.is_stopped() {
                return;
            }
            if shared.cluster.ownership.epoch_of(0).is_none() {
                continue;
            }
            pass(shared).await;
        }
    });
}

/// How long an overloaded node asks clients to wait before retrying.
pub const OVERLOADED_RETRY_AFTER_MS: u64 = 1_000;

/// A local `result` call: the run's shard, and where to send the outcome (`None`: the shard
/// left this node).
pub(crate) type ResultWaiter = (u32, oneshot::Sender<Option<Outcome>>);

impl<S: Store> Shared<S> {
    /// The node's time (Unix milliseconds), from `NodeConfig::clock`.
    pub fn now_ms(&self) -> u64 {
        self.config.clock.now_ms()
    }

    /// Store retry options with the jitter drawn from the node's entropy.
    pub fn transact_options(&self) -> cairn_store::TransactOptions {
        cairn_store::TransactOptions {
            jitter_seed: self.config.entropy.jitter_seed(),
            ..cairn_store::TransactOptions::default()
        }
    }

    /// The shard of a workflow id.
    pub fn shard_of(&self, workflow_id: &WorkflowId) -> u32 {
        shard_of(workflow_id.as_str(), self.config.shard_count)
    }

    /// The shard of any id placed like workflow ids (schedule ids).
    pub fn shard_of_id(&self, id: &str) -> u32 {
        shard_of(id, self.config.shard_count)
    }

    /// The shard actor, if this node holds `shard`.
    pub fn shard(&self, shard: u32) -> Option<ActorRef<ShardMsg>> {
        self.cluster.ownership.actor(shard)
    }

    /// The shard actor, if this node still holds `shard` at `epoch`.
    pub fn shard_at(&self, shard: u32, epoch: u64) -> Option<ActorRef<ShardMsg>> {
        self.cluster.ownership.actor_at(shard, epoch)
    }

    pub(crate) fn spawner_for(&self, run_id: &RunId) -> Option<ThreadLocalActorSpawner> {
        if self.spawners.is_empty() {
            return None;
        }
        let index = fnv1a(run_id.as_uuid().as_bytes()) as usize % self.spawners.len();
        Some(self.spawners[index].clone())
    }

    /// Whether the node must crash at `point` (test hook); if so, it has already stopped.
    pub(crate) fn crash_at(&self, point: CrashPoint) -> bool {
        let crash = self
            .config
            .crash_hook
            .as_ref()
            .is_some_and(|hook| (hook.0)(point));
        if crash {
            tracing::warn!(?point, "crash hook: stopping the node");
            self.halt();
        }
        crash
    }

    /// Kills every actor and abandons running attempts: no further writes.
    pub(crate) fn halt(&self) {
        self.cluster.halt();
        self.committer.kill();
        self.workers.close();
    }

    /// Submits writes (with their checks, shard fence and `MaybeCommitted` verification) to the
    /// committer and waits for the batch that carries them; waits first for a place in the
    /// committer's queue when it is full.
    pub(crate) async fn commit(
        &self,
        ops: Vec<Op>,
        checks: Vec<Check>,
        fence: Option<(u32, u64)>,
        verify: Option<(Vec<u8>, Verify)>,
    ) -> Result<(), CommitError> {
        let slot = match self.commit_slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                self.metrics
                    .commit_slot_waits
                    .fetch_add(1, Ordering::Relaxed);
                self.commit_slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| CommitError::Stopped)?
            }
        };
        self.commit_in(slot, ops, checks, fence, verify).await
    }

    /// A place in the committer's queue if one is free now (see [`Self::commit_in`]).
    pub(crate) fn try_commit_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.commit_slots.clone().try_acquire_owned().ok()
    }

    /// [`Self::commit`] in a place already taken.
    pub(crate) async fn commit_in(
        &self,
        slot: OwnedSemaphorePermit,
        ops: Vec<Op>,
        checks: Vec<Check>,
        fence: Option<(u32, u64)>,
        verify: Option<(Vec<u8>, Verify)>,
    ) -> Result<(), CommitError> {
        let (reply, answer) = oneshot::channel();
        let request = CommitRequest {
            ops,
            checks,
            fence,
            verify,
            reply,
            _slot: slot,
        };
        self.committer
            .cast(CommitterMsg::Submit(request))
            .map_err(|_| CommitError::Stopped)?;
        answer.await.map_err(|_| CommitError::Stopped)?
    }

    /// Hands writes to the committer without waiting for the outcome: housekeeping (clearing
    /// a consumed queue) whose loss only costs a repeat. Skipped when the committer's queue is
    /// full.
    pub(crate) fn submit_detached(&self, ops: Vec<Op>, fence: (u32, u64)) {
        self.submit_detached_checked(ops, Vec::new(), fence);
    }

    /// [`Self::submit_detached`], with `checks` the commit must pass (else nothing is written).
    pub(crate) fn submit_detached_checked(
        &self,
        ops: Vec<Op>,
        checks: Vec<Check>,
        fence: (u32, u64),
    ) {
        let Some(slot) = self.try_commit_slot() else {
            self.metrics.commits_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (reply, _) = oneshot::channel();
        let request = CommitRequest {
            ops,
            checks,
            fence: Some(fence),
            verify: None,
            reply,
            _slot: slot,
        };
        let _ = self.committer.cast(CommitterMsg::Submit(request));
    }

    pub(crate) fn notify_closed(&self, run_id: RunId, outcome: Outcome) {
        let waiters = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run_id);
        for (_, waiter) in waiters.into_iter().flatten() {
            let _ = waiter.send(Some(outcome.clone()));
        }
    }

    /// Tells the local result waiters of `shard` that their runs now live elsewhere.
    pub(crate) fn notify_shard_lost(&self, shard: u32) {
        // Attempts of the shard stop here: their results could not land, and the new holder
        // times them out and retries them as their next attempt.
        self.workers.abandon_shard(shard);
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for list in waiters.values_mut() {
            for (_, waiter) in list.extract_if(.., |(s, _)| *s == shard) {
                let _ = waiter.send(None);
            }
        }
        waiters.retain(|_, list| !list.is_empty());
    }

    /// Answers a query for a run of a shard this node holds.
    pub(crate) async fn answer_query(&self, query: PeerQuery) -> Result<Payload, PeerError> {
        let shard = self.shard_of(&query.workflow_id);
        let Some(shard_ref) = self.shard(shard) else {
            return Err(PeerError::NotOwner);
        };
        let answer = shard_ref
            .call(
                |reply| ShardMsg::Query {
                    run_id: query.run_id,
                    name: query.name,
                    args: query.args,
                    reply,
                },
                Some(QUERY_CALL_TIMEOUT),
            )
            .await;
        match answer {
            Ok(ractor::rpc::CallResult::Success(Ok(payload))) => Ok(payload),
            Ok(ractor::rpc::CallResult::Success(Err(QueryError::Unavailable))) => {
                Err(PeerError::NotOwner)
            }
            Ok(ractor::rpc::CallResult::Success(Err(e))) => Err(PeerError::Query(e)),
            // The shard actor stopped while answering: the shard moved (or is moving).
            Ok(_) | Err(_) => Err(PeerError::NotOwner),
        }
    }
}

/// Longest a query may run on the node holding the run.
pub const QUERY_CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl<S: Store> QueryTarget for Shared<S> {
    fn query_held(self: Arc<Self>, query: PeerQuery) -> PeerFuture<Payload> {
        Box::pin(async move { self.answer_query(query).await })
    }

    fn task_held(
        self: Arc<Self>,
        call: crate::peers::PeerTaskCall,
    ) -> PeerFuture<crate::peers::PeerTaskAnswer> {
        Box::pin(async move { Ok(self.serve_task_call(call).await) })
    }
}

impl<S: Store> Shared<S> {
    /// Drops every local result waiter: the node is going away, so their calls end with
    /// `NodeStopped`.
    pub(crate) fn notify_stopping(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.clear();
    }
}
