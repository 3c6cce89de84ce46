//! This node's place in the cluster, as state: its process instance, the shards it holds now
//! with their epochs and actors ([`Ownership`]), its heartbeat and its lifecycle flags
//! ([`Cluster`]). The loops that change it (heartbeat, placement, claims, hand-offs) live in
//! `cluster`, above the node's shared state; this sits below it, so the committer, the workers
//! and queries can read who holds what without depending on those loops.

use crate::config::NodeConfig;
use crate::messages::ShardMsg;
use crate::records::ReadyItem;
use ractor::ActorRef;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// Wakes for shards this node holds, sent to their actors after a commit.
pub(crate) type LocalWakes = Vec<(u32, ReadyItem)>;

/// The shards this node holds right now, with their epochs and actors. Read by the committer
/// (local wake or doorbell), workers (deliver a result only to the epoch that dispatched it)
/// and queries (answer locally or forward).
#[derive(Default)]
pub struct Ownership {
    shards: RwLock<BTreeMap<u32, Owned>>,
    /// The latest epoch this process held each shard at: a later tenure's is always higher.
    tenures: Mutex<BTreeMap<u32, u64>>,
}

pub(crate) struct Owned {
    pub(crate) epoch: u64,
    pub(crate) actor: ActorRef<ShardMsg>,
    pub(crate) watcher: tokio::task::AbortHandle,
    pub(crate) since_unix_ms: u64,
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("shards", &self.owned())
            .finish()
    }
}

impl Ownership {
    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, Owned>> {
        self.shards.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u32, Owned>> {
        self.shards.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The epoch at which this node holds `shard`, if it does.
    pub fn epoch_of(&self, shard: u32) -> Option<u64> {
        self.read().get(&shard).map(|o| o.epoch)
    }

    /// The shard actor, if this node holds `shard`.
    pub fn actor(&self, shard: u32) -> Option<ActorRef<ShardMsg>> {
        self.read().get(&shard).map(|o| o.actor.clone())
    }

    /// The shard actor, if this node still holds `shard` at `epoch`.
    pub fn actor_at(&self, shard: u32, epoch: u64) -> Option<ActorRef<ShardMsg>> {
        self.read()
            .get(&shard)
            .filter(|o| o.epoch == epoch)
            .map(|o| o.actor.clone())
    }

    /// Held shards and their epochs, ascending.
    pub fn owned(&self) -> Vec<(u32, u64)> {
        let mut out: Vec<(u32, u64)> = self.read().iter().map(|(s, o)| (*s, o.epoch)).collect();
        out.sort_unstable();
        out
    }

    /// Tells local shard actors about new mail and schedule wake-ups (after the commit that
    /// wrote them).
    pub(crate) fn wake_local(&self, wakes: LocalWakes) {
        if wakes.is_empty() {
            return;
        }
        let shards = self.read();
        for (shard, item) in wakes {
            if let Some(owned) = shards.get(&shard) {
                let _ = owned.actor.cast(ShardMsg::from(item));
            }
        }
    }

    pub(crate) fn insert(&self, shard: u32, owned: Owned) {
        // An epoch never goes back: each tenure of a shard is a claim that bumped its lease.
        let mut tenures = self.tenures.lock().unwrap_or_else(|p| p.into_inner());
        let last = tenures.insert(shard, owned.epoch);
        assert!(
            last.is_none_or(|last| owned.epoch > last),
            "shard {shard} held again at epoch {} after epoch {last:?}",
            owned.epoch
        );
        let previous = self.write().insert(shard, owned);
        // A shard, and so each of its runs, has one holder in this process.
        assert!(previous.is_none(), "shard {shard} started twice");
    }

    /// Forgets `shard` and stops its actor (and so its workflow actors) and watcher.
    pub(crate) fn remove(&self, shard: u32) -> Option<u64> {
        let owned = self.write().remove(&shard)?;
        owned.watcher.abort();
        owned.actor.kill();
        Some(owned.epoch)
    }
}

/// This node's part in the cluster.
pub struct Cluster {
    /// This process's instance id (fresh on every start).
    pub instance: String,
    pub ownership: Arc<Ownership>,
    pub(crate) started_unix_ms: u64,
    pub(crate) last_heartbeat: Mutex<Option<Instant>>,
    pub(crate) draining: AtomicBool,
    /// Set once a drain has handed the shards off and left the cluster (a second drain, as
    /// `Node::shutdown` after `Node::drain`, then does nothing).
    pub(crate) drained: AtomicBool,
    pub(crate) stopped: AtomicBool,
    /// Wakes the heartbeat thread when the loops stop.
    pub(crate) stopping: Arc<tokio::sync::Notify>,
    pub(crate) loops: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// One placement round (or drain) at a time.
    pub(crate) placement: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("instance", &self.instance)
            .field("ownership", &self.ownership)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub(crate) fn new(ownership: Arc<Ownership>, config: &NodeConfig) -> Self {
        let started_unix_ms = config.clock.now_ms();
        Self {
            instance: config.entropy.uuid_v7(started_unix_ms).to_string(),
            ownership,
            started_unix_ms,
            last_heartbeat: Mutex::new(None),
            draining: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            stopping: Arc::new(tokio::sync::Notify::new()),
            loops: Mutex::new(Vec::new()),
            placement: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn heartbeat_fresh(&self, lease_timeout: Duration) -> bool {
        self.last_heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < lease_timeout)
    }

    /// Whether the loops were stopped (crash or shutdown).
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// A crash: loops and shards stop where they are; nothing more is written.
    pub(crate) fn halt(&self) {
        self.stop_loops();
        for (shard, _) in self.ownership.owned() {
            self.ownership.remove(shard);
        }
    }

    /// Stops the heartbeat and placement loops (crash or shutdown).
    pub(crate) fn stop_loops(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.stopping.notify_waiters();
        for task in self
            .loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}
