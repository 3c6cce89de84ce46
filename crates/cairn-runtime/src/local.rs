//! `Local`: what this node's actors hold beyond the [`Shared`] core — the activity worker
//! pool, the matching of remote workers' tasks, the node's membership (shards held, their
//! actors), the local result waiters and the actor spawners — with the operations that need
//! them (find a shard's actor at an epoch, crash points, result notification, answering
//! queries held here, the singleton background loop). It sits below the actors and the node;
//! it dereferences to its `Shared`.

use crate::config::CrashPoint;
use crate::error::QueryError;
use crate::keys::fnv1a;
use crate::membership::Cluster;
use crate::messages::ShardMsg;
use crate::peers::{PeerError, PeerFuture, PeerQuery, QueryTarget};
use crate::pool::Workers;
use crate::records::Outcome;
use crate::shared::Shared;
use cairn_store::Store;
use cairn_types::{Payload, RunId};
use ractor::ActorRef;
use ractor::thread_local::ThreadLocalActorSpawner;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// What this node's actors hold.
pub struct Local<S: Store> {
    pub shared: Arc<Shared<S>>,
    pub workers: Workers,
    /// Attempts of activity types not registered here, for remote workers to poll.
    pub matching: crate::matching::Matching,
    pub runtime: tokio::runtime::Handle,
    pub cluster: Cluster,
    pub(crate) spawners: Vec<ThreadLocalActorSpawner>,
    /// Local result waiters by run, with the run's shard. A waiter gets `None` when the shard
    /// leaves this node: the run goes on elsewhere, and the waiter watches the store instead.
    pub(crate) waiters: Mutex<BTreeMap<RunId, Vec<ResultWaiter>>>,
}

impl<S: Store> std::ops::Deref for Local<S> {
    type Target = Shared<S>;

    fn deref(&self) -> &Shared<S> {
        &self.shared
    }
}

/// A local `result` call: the run's shard, and where to send the outcome (`None`: the shard
/// left this node).
pub(crate) type ResultWaiter = (u32, oneshot::Sender<Option<Outcome>>);

/// Runs `pass` every `every` while this node holds shard 0: a background job with one runner
/// per cluster (retention, batch operations). The loop holds the node weakly and ends when the
/// node is dropped or stops.
pub(crate) fn spawn_on_shard_zero<S, F, Fut>(shared: &Arc<Local<S>>, every: Duration, mut pass: F)
where
    S: Store,
    F: FnMut(Arc<Local<S>>) -> Fut + Send + 'static,
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

impl<S: Store> Local<S> {
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

impl<S: Store> QueryTarget for Local<S> {
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

impl<S: Store> Local<S> {
    /// Drops every local result waiter: the node is going away, so their calls end with
    /// `NodeStopped`.
    pub(crate) fn notify_stopping(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.clear();
    }
}
