//! The cluster: membership, shard placement, leases, and the life of a shard on this node.
//!
//! - **Membership.** Each node rewrites its `NodeRecord` every third of `lease_timeout_ms`;
//!   a record whose `expires_unix_ms` passed is a dead node. Each `Node::start` is a new
//!   *instance* (a random id), so a node restarted under the same id is told apart from its
//!   earlier life.
//! - **Leases.** A shard's lease names its holder (node id and instance) and an epoch, and is
//!   held or released. It has no expiry of its own: it lapses with its holder's membership
//!   record, so one heartbeat renews all of a node's leases and renewing never touches the
//!   lease key every commit reads (a renewal would otherwise conflict with in-flight batches).
//!   Every claim and every release bumps the epoch, so one epoch is one tenure of one node, and
//!   the committer's fence (lease read inside each batch, epoch compared) is what keeps a node
//!   that lost a shard from committing for it — conflict detection, not clocks.
//! - **Placement.** Shards go to live, non-draining nodes by rendezvous hashing. Every
//!   placement round (a fifth of the lease timeout, at most 250 ms) a node drops the shards
//!   whose lease moved on, hands off the shards placed elsewhere (release, then the new node
//!   claims), and claims the shards placed on it whose lease is free: released, never written,
//!   or held by a dead node or by an earlier instance of itself.
//! - **A shard on this node** is a shard actor (timers, workflow actors) plus a doorbell
//!   watcher. Claiming rehydrates it: due and future timers, activity tasks whose claim died
//!   with the old holder, and every run with mail waiting. The doorbell (an atomic counter that
//!   mailbox writers on other nodes bump in the same transaction) tells it about new mail.
//! - **Self-fencing.** A node whose own heartbeat has not landed for a whole lease timeout
//!   drops every shard at once: others may already have claimed them.

use crate::backoff::Backoff;
use crate::dispatch::DEFERRED_PAGE_MAX;
use crate::error::ClusterError;
use crate::keys::fnv1a;
use crate::local::Local;
use crate::membership::Owned;
use crate::messages::{Delivery, ShardMsg};
use crate::ops::{CommitError, Op};
use crate::records::{
    ClusterRecord, InboxItem, Lease, NodeRecord, ReadyItem, TaskRecord, decode, encode,
};
use crate::shard::{ShardActor, ShardArgs};
use crate::shared::Shared;
use cairn_core::{Message, TimerId};
use cairn_store::{Pages, RangeRequest, Store, StoreError, TransactOptions, Transaction, transact};
use cairn_types::{RunId, Seq};
use ractor::{Actor, ActorRef};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// Longest pause between placement rounds.
pub const PLACEMENT_INTERVAL_MS_MAX: u64 = 250;
/// Rows one transaction of a shard's rehydration reads from one range (mailbox entries, start
/// marks, timers, tasks).
pub const REHYDRATE_PAGE_ROWS: usize = 1_000;

/// Shortest lease timeout a node accepts: placement and heartbeats must fit several times.
pub const LEASE_TIMEOUT_MS_MIN: u64 = 100;
/// Shards whose earliest due work (first timer, first schedule wake: one single-row read each)
/// one read-only transaction of the cluster status reads; more shards take more transactions.
pub const DUE_SHARDS_PER_TRANSACTION: u32 = 64;

const _: () = assert!(PLACEMENT_INTERVAL_MS_MAX * 4 > LEASE_TIMEOUT_MS_MIN);

/// SplitMix64's finalizer: spreads FNV's output so nearby inputs score independently.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Rendezvous (highest random weight) hashing: the node with the highest score for the shard
/// gets it, so adding or removing a node moves only the shards it wins or held.
pub fn rendezvous<'a>(nodes: impl IntoIterator<Item = &'a str>, shard: u32) -> Option<&'a str> {
    nodes
        .into_iter()
        .max_by_key(|node| (mix(fnv1a(node.as_bytes()) ^ mix(u64::from(shard))), *node))
}

fn placement_interval(lease_timeout_ms: u64) -> Duration {
    Duration::from_millis((lease_timeout_ms / 5).clamp(20, PLACEMENT_INTERVAL_MS_MAX))
}

/// Records the shard count on first use and refuses a node configured with another, and
/// refuses a store whose workflows predate the visibility indexes.
pub(crate) async fn check_cluster_record<S: Store>(shared: &Shared<S>) -> Result<(), ClusterError> {
    let key = shared.keys.cluster();
    let configured = shared.config.shard_count;
    let stored = transact(&shared.store, &shared.transact_options(), |tx, _| {
        let key = key.clone();
        Box::pin(async move {
            match tx.get(&key).await? {
                Some(bytes) => Ok(decode::<ClusterRecord>("cluster record", &bytes)?.shard_count),
                None => {
                    tx.set(
                        &key,
                        &encode(&ClusterRecord {
                            shard_count: configured,
                        }),
                    )?;
                    Ok::<_, StoreError>(configured)
                }
            }
        })
    })
    .await?;
    if stored != configured {
        return Err(ClusterError::ShardCountMismatch { stored, configured });
    }
    // Every workflow record since the indexes came is written with its type's registry entry:
    // records without any registry entry are from before, and would be invisible to lists.
    let namespace = shared.config.namespace.as_str();
    let workflows = shared.keys.workflows(namespace);
    let types = shared
        .keys
        .visibility(namespace)
        .subspace(&("types",))
        .range();
    // Read-only, but retried like any transaction: a read may be refused for a moment too.
    let (has_workflows, has_types) =
        transact(&shared.store, &shared.transact_options(), |tx, _| {
            let ranges = [workflows.clone(), types.clone()];
            Box::pin(async move {
                let mut found = [false; 2];
                for ((begin, end), found) in ranges.into_iter().zip(&mut found) {
                    *found = !tx
                        .get_range(&RangeRequest::new(begin, end).limit(1).snapshot())
                        .await?
                        .is_empty();
                }
                Ok::<_, StoreError>((found[0], found[1]))
            })
        })
        .await?;
    if has_workflows && !has_types {
        return Err(ClusterError::StoreWithoutIndexes {
            namespace: namespace.to_string(),
        });
    }
    Ok(())
}

/// Writes this node's membership record (renewing all its leases).
pub(crate) async fn heartbeat<S: Store>(shared: &Local<S>) -> Result<(), StoreError> {
    let cluster = &shared.cluster;
    let config = &shared.config;
    let key = shared.keys.node(&config.node_id);
    let started = Instant::now();
    let now = shared.now_ms();
    let record = NodeRecord {
        node_id: config.node_id.clone(),
        instance: cluster.instance.clone(),
        address: config.advertise_address.clone(),
        started_unix_ms: cluster.started_unix_ms,
        heartbeat_unix_ms: now,
        expires_unix_ms: now + config.lease_timeout_ms,
        draining: cluster.draining.load(Ordering::SeqCst),
        store_opening: shared.store.exclusive_opening(),
    };
    let value = encode(&record);
    let options = TransactOptions {
        timeout: Duration::from_millis(config.lease_timeout_ms),
        ..shared.transact_options()
    };
    let other = transact(&shared.store, &options, |tx, _| {
        let (key, value) = (key.clone(), value.clone());
        let instance = record.instance.clone();
        let opening = record.store_opening.clone();
        Box::pin(async move {
            // Snapshot read: another instance's heartbeat must not make ours conflict.
            let other = match tx.get_snapshot(&key).await? {
                Some(bytes) => {
                    let stored: NodeRecord = decode("node record", &bytes)?;
                    (stored.instance != instance && stored.is_alive(now, opening.as_deref()))
                        .then_some(stored)
                }
                None => None,
            };
            tx.set(&key, &value)?;
            Ok::<_, StoreError>(other)
        })
    })
    .await?;
    if let Some(other) = other {
        tracing::warn!(
            node_id = %config.node_id,
            other_instance = %other.instance,
            "another instance with this node id was alive moments ago (a restart of this node, or two nodes configured with one id); taking the id over"
        );
    }
    *cluster
        .last_heartbeat
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(started);
    shared
        .metrics
        .lease_renew_latency
        .observe_duration(started.elapsed());
    Ok(())
}

/// Beats every `every` until the node stops or is gone.
async fn beat_loop<S: Store>(
    weak: std::sync::Weak<Local<S>>,
    stopping: Arc<tokio::sync::Notify>,
    every: Duration,
) {
    loop {
        let notified = stopping.notified();
        tokio::pin!(notified);
        // Registered before the flag is read, so a stop in between still wakes it.
        notified.as_mut().enable();
        let stopped = weak
            .upgrade()
            .is_none_or(|shared| shared.cluster.stopped.load(Ordering::SeqCst));
        if stopped {
            return;
        }
        tokio::select! {
            biased;
            () = &mut notified => return,
            () = tokio::time::sleep(every) => {}
        }
        let Some(shared) = weak.upgrade() else {
            return;
        };
        if shared.cluster.stopped.load(Ordering::SeqCst) {
            return;
        }
        if let Err(error) = heartbeat(&shared).await {
            tracing::warn!(%error, "membership heartbeat failed");
        }
    }
}

/// Starts the heartbeat and placement loops.
pub(crate) fn spawn_loops<S: Store>(shared: &Arc<Local<S>>) {
    let lease_ms = shared.config.lease_timeout_ms;
    // The heartbeat renews every lease of the node, so it runs on a thread and runtime of its
    // own: however busy the node's async workers are (API reads, replays, blocking store
    // calls), the beat is never queued behind them. A node on one thread (the simulator's)
    // beats on its own runtime instead, so virtual time drives it too.
    // It holds the node weakly: once everything else of the node is gone (its runtime
    // dropped), the loop ends instead of keeping a dead node's leases alive.
    let beats = beat_loop(
        Arc::downgrade(shared),
        shared.cluster.stopping.clone(),
        Duration::from_millis(lease_ms / 3),
    );
    if shared.config.is_single_threaded() {
        shared.runtime.spawn(beats);
    } else {
        let spawned = std::thread::Builder::new()
            .name(format!("cairn-heartbeat-{}", shared.config.node_id))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(beats),
                    Err(error) => tracing::error!(%error, "cannot start the heartbeat runtime"),
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the heartbeat thread");
        }
    }
    let place = {
        let shared = shared.clone();
        shared.runtime.clone().spawn(async move {
            let every = placement_interval(lease_ms);
            loop {
                tokio::time::sleep(every).await;
                if let Err(error) = placement_round(&shared).await {
                    tracing::warn!(%error, "placement round failed");
                }
            }
        })
    };
    let mut loops = shared
        .cluster
        .loops
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    loops.push(place);
}

/// What one read of membership and leases says.
struct View {
    now: u64,
    /// This node's store opening (`Store::exclusive_opening`).
    opening: Option<String>,
    nodes: BTreeMap<String, NodeRecord>,
    leases: BTreeMap<u32, Lease>,
}

impl View {
    async fn read<S: Store>(shared: &Shared<S>) -> Result<Self, StoreError> {
        let keys = &shared.keys;
        let (nodes, leases) = transact(&shared.store, &shared.transact_options(), |tx, _| {
            let keys = keys.clone();
            Box::pin(async move {
                let (begin, end) = keys.nodes();
                let mut nodes = BTreeMap::new();
                for kv in tx
                    .get_range(&RangeRequest::new(begin, end).snapshot())
                    .await?
                {
                    let node: NodeRecord = decode("node record", &kv.value)?;
                    nodes.insert(node.node_id.clone(), node);
                }
                let (begin, end) = keys.leases();
                let mut leases = BTreeMap::new();
                for kv in tx
                    .get_range(&RangeRequest::new(begin, end).snapshot())
                    .await?
                {
                    if let Some(shard) = keys.lease_shard(&kv.key) {
                        leases.insert(shard, decode::<Lease>("lease", &kv.value)?);
                    }
                }
                Ok::<_, StoreError>((nodes, leases))
            })
        })
        .await?;
        Ok(Self {
            now: shared.now_ms(),
            opening: shared.store.exclusive_opening(),
            nodes,
            leases,
        })
    }

    fn alive(&self, node: &NodeRecord) -> bool {
        node.is_alive(self.now, self.opening.as_deref())
    }

    /// Live nodes that take shards.
    fn candidates(&self) -> impl Iterator<Item = &str> {
        self.nodes
            .values()
            .filter(|n| self.alive(n) && !n.draining)
            .map(|n| n.node_id.as_str())
    }

    /// Whether `lease` is held by a live instance.
    fn holder_alive(&self, lease: &Lease) -> bool {
        lease.held
            && self
                .nodes
                .get(&lease.node_id)
                .is_some_and(|n| self.alive(n) && n.instance == lease.instance)
    }

    /// The node placement puts `shard` on.
    fn desired(&self, shard: u32) -> Option<&str> {
        rendezvous(self.candidates(), shard)
    }
}

/// A shard this round will try to claim, with the lease it saw.
struct ClaimPlan {
    shard: u32,
    seen: Option<Lease>,
}

/// One placement round: drop lost shards, hand off misplaced ones, claim free ones placed here.
pub(crate) async fn placement_round<S: Store>(shared: &Arc<Local<S>>) -> Result<(), StoreError> {
    let cluster = &shared.cluster;
    let _round = cluster.placement.lock().await;
    if cluster.stopped.load(Ordering::SeqCst) {
        return Ok(());
    }
    let config = &shared.config;
    let me = config.node_id.as_str();
    if !cluster.heartbeat_fresh(Duration::from_millis(config.lease_timeout_ms)) {
        // Our leases may have lapsed in everyone else's eyes.
        for (shard, _) in cluster.ownership.owned() {
            lose_shard(shared, shard, "this node's heartbeat lapsed");
        }
        return Ok(());
    }
    let view = View::read(shared).await?;
    let draining = cluster.draining.load(Ordering::SeqCst);
    let mut handoffs = Vec::new();
    let mut claims = Vec::new();
    for shard in 0..config.shard_count {
        let lease = view.leases.get(&shard);
        let desired = view.desired(shard);
        match cluster.ownership.epoch_of(shard) {
            Some(epoch) => {
                let still_mine = lease.is_some_and(|l| {
                    l.held && l.node_id == me && l.instance == cluster.instance && l.epoch == epoch
                });
                if !still_mine {
                    lose_shard(shared, shard, "its lease moved to another holder");
                } else if draining || desired.is_some_and(|d| d != me) {
                    handoffs.push((shard, epoch));
                }
            }
            None => {
                if draining || desired != Some(me) {
                    continue;
                }
                let free = match lease {
                    None => true,
                    Some(l) => !view.holder_alive(l) || l.instance == cluster.instance,
                };
                if free {
                    claims.push(ClaimPlan {
                        shard,
                        seen: lease.cloned(),
                    });
                }
            }
        }
    }
    if !handoffs.is_empty() {
        release(shared, &handoffs).await?;
    }
    if !claims.is_empty() {
        claim(shared, claims).await?;
    }
    Ok(())
}

/// Claims shards in one transaction: each lease must still be what the round saw, and a
/// holder taken over must still be dead (its membership record is read with conflict
/// tracking, so a heartbeat racing the claim makes the claim conflict instead). Retried on
/// conflicts; after `MaybeCommitted` a lease that already names this instance at the next
/// epoch counts as claimed.
async fn claim<S: Store>(shared: &Arc<Local<S>>, plans: Vec<ClaimPlan>) -> Result<(), StoreError> {
    let keys = shared.keys.clone();
    let me = shared.config.node_id.clone();
    let instance = shared.cluster.instance.clone();
    let plans = Arc::new(plans);
    let clock = shared.config.clock.clone();
    let claimed = transact(&shared.store, &shared.transact_options(), |tx, _| {
        let (keys, me, instance, plans) =
            (keys.clone(), me.clone(), instance.clone(), plans.clone());
        let now = clock.now_ms();
        Box::pin(async move {
            let mut claimed = Vec::new();
            let mut holder_keys = BTreeSet::new();
            for plan in plans.iter() {
                let current = match tx.get(&keys.lease(plan.shard)).await? {
                    Some(bytes) => Some(decode::<Lease>("lease", &bytes)?),
                    None => None,
                };
                let next_epoch = plan.seen.as_ref().map_or(0, |l| l.epoch) + 1;
                let takeover = plan.seen.as_ref().is_some_and(|l| l.held);
                if let Some(current) = &current
                    && current.held
                    && current.node_id == me
                    && current.instance == instance
                    && current.epoch == next_epoch
                {
                    // An earlier attempt of this claim landed (MaybeCommitted).
                    claimed.push((plan.shard, next_epoch, takeover));
                    continue;
                }
                if current != plan.seen {
                    continue;
                }
                if let Some(previous) = current.as_ref().filter(|l| l.held)
                    && holder_keys.insert(previous.node_id.clone())
                {
                    tx.get(&keys.node(&previous.node_id)).await?;
                }
                assert!(
                    current.as_ref().is_none_or(|l| next_epoch > l.epoch),
                    "shard {}: a claim would move its epoch back",
                    plan.shard
                );
                let lease = Lease {
                    node_id: me.clone(),
                    instance: instance.clone(),
                    epoch: next_epoch,
                    held: true,
                    changed_unix_ms: now,
                };
                tx.set(&keys.lease(plan.shard), &encode(&lease))?;
                claimed.push((plan.shard, next_epoch, takeover));
            }
            if !claimed.is_empty() {
                // Our own record too: claiming while our membership lapsed would hand out
                // leases that are dead on arrival.
                tx.get(&keys.node(&me)).await?;
            }
            Ok::<_, StoreError>(claimed)
        })
    })
    .await?;
    if !claimed.is_empty() {
        let shards: Vec<(u32, u64)> = claimed.iter().map(|(s, e, _)| (*s, *e)).collect();
        let takeovers = claimed.iter().filter(|(_, _, t)| *t).count();
        tracing::info!(?shards, takeovers, "claimed shards (shard, epoch)");
    }
    for (shard, epoch, takeover) in claimed {
        shared.metrics.shard_claims.fetch_add(1, Ordering::Relaxed);
        if takeover {
            shared
                .metrics
                .shard_takeovers
                .fetch_add(1, Ordering::Relaxed);
        }
        start_shard(shared, shard, epoch).await;
    }
    Ok(())
}

/// Releases `shards` (held at the given epochs): their actors stop first, then one transaction
/// marks each lease released under a new epoch, so anything still queued for them is fenced.
/// A lease found already taken by another node counts as lost, not handed off.
async fn release<S: Store>(
    shared: &Arc<Local<S>>,
    shards: &[(u32, u64)],
) -> Result<(), StoreError> {
    for (shard, _) in shards {
        if shared.cluster.ownership.remove(*shard).is_some() {
            shared.notify_shard_lost(*shard);
        }
    }
    let keys = shared.keys.clone();
    let me = shared.config.node_id.clone();
    let instance = shared.cluster.instance.clone();
    let wanted = shards.to_vec();
    let clock = shared.config.clock.clone();
    let released = transact(&shared.store, &shared.transact_options(), |tx, _| {
        let (keys, me, instance, wanted) =
            (keys.clone(), me.clone(), instance.clone(), wanted.clone());
        let now = clock.now_ms();
        Box::pin(async move {
            let mut released = Vec::new();
            for (shard, epoch) in wanted {
                let key = keys.lease(shard);
                let Some(bytes) = tx.get(&key).await? else {
                    continue;
                };
                let mut lease: Lease = decode("lease", &bytes)?;
                let ours = lease.node_id == me && lease.instance == instance;
                if ours && !lease.held && lease.epoch == epoch + 1 {
                    // An earlier attempt of this release landed (MaybeCommitted).
                    released.push((shard, epoch));
                } else if ours && lease.held && lease.epoch == epoch {
                    lease.held = false;
                    lease.epoch += 1;
                    lease.changed_unix_ms = now;
                    tx.set(&key, &encode(&lease))?;
                    released.push((shard, epoch));
                }
            }
            Ok::<_, StoreError>(released)
        })
    })
    .await?;
    if !released.is_empty() {
        tracing::info!(shards = ?released, "released shards (shard, epoch)");
    }
    let metrics = &shared.metrics;
    metrics
        .shard_handoffs
        .fetch_add(released.len() as u64, Ordering::Relaxed);
    let lost = shards.len() - released.len();
    if lost > 0 {
        tracing::warn!(
            lost,
            "shards to hand off were already taken by another node"
        );
        metrics
            .shard_losses
            .fetch_add(lost as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Drops a shard this node no longer holds: its actors stop, in-memory state goes.
fn lose_shard<S: Store>(shared: &Local<S>, shard: u32, why: &str) {
    if let Some(epoch) = shared.cluster.ownership.remove(shard) {
        tracing::warn!(
            shard,
            epoch,
            why,
            "lost shard; dropping its runs from memory"
        );
        shared.metrics.shard_losses.fetch_add(1, Ordering::Relaxed);
        shared.notify_shard_lost(shard);
    }
}

/// Starts a freshly claimed shard: its actor, then its doorbell watcher (which rehydrates).
async fn start_shard<S: Store>(shared: &Arc<Local<S>>, shard: u32, epoch: u64) {
    let actor = match Actor::spawn(
        None,
        ShardActor::<S>::default(),
        ShardArgs {
            shared: shared.clone(),
            shard,
            epoch,
        },
    )
    .await
    {
        Ok((actor, _)) => actor,
        Err(error) => {
            // The lease stays ours with no actor behind it; the next round sees the lease is
            // ours but not in the table and claims it again.
            tracing::error!(shard, %error, "could not start the shard actor");
            return;
        }
    };
    // The watcher gets the actor itself: it may run before the table below has the shard.
    let watcher = {
        let shared = shared.clone();
        let actor = actor.clone();
        shared
            .runtime
            .clone()
            .spawn(async move { watch_doorbell(shared, shard, epoch, actor).await })
            .abort_handle()
    };
    shared.cluster.ownership.insert(
        shard,
        Owned {
            epoch,
            actor,
            watcher,
            since_unix_ms: shared.now_ms(),
        },
    );
}

/// The shard's doorbell watcher: rehydrates the shard once, then on every ring reads the
/// shard's ready queue from where it last stopped and wakes the runs named there. The watch is
/// armed before each read, so a ring during the read is not missed.
async fn watch_doorbell<S: Store>(
    shared: Arc<Local<S>>,
    shard: u32,
    epoch: u64,
    actor: ActorRef<ShardMsg>,
) {
    let bell = shared.keys.bell(shard);
    let mut cursor: Option<Vec<u8>> = None;
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        let round = async {
            let mut tx = shared.store.begin()?;
            let watch = tx.watch(&bell)?;
            tx.commit().await?;
            let next = match &cursor {
                None => rehydrate(&shared, shard, epoch, &actor).await?,
                Some(cursor) => read_ready(&shared, shard, epoch, &actor, cursor).await?,
            };
            Ok::<_, StoreError>((watch, next))
        }
        .await;
        match round {
            Ok((watch, next)) => {
                cursor = Some(next);
                backoff.reset();
                if watch.await.is_err() {
                    backoff.wait().await;
                    backoff.reset();
                }
            }
            Err(error) => {
                tracing::warn!(shard, %error, "doorbell watch or mailbox scan failed; retrying");
                backoff.wait().await;
            }
        }
    }
}

/// Reads the shard's ready queue from `cursor` (snapshot reads, a page of
/// [`REHYDRATE_PAGE_ROWS`] per transaction: entries committed later sort after everything
/// read), wakes the runs named there, has the read entries cleared, and returns where to read
/// next time.
async fn read_ready<S: Store>(
    shared: &Local<S>,
    shard: u32,
    epoch: u64,
    actor: &ActorRef<ShardMsg>,
    cursor: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let (_, end) = shared.keys.ready_of_shard(shard);
    let mut pages = Pages::new(cursor.to_vec(), end, REHYDRATE_PAGE_ROWS);
    while let Some(rows) = pages.next(&shared.store).await? {
        let items: BTreeSet<ReadyItem> = rows
            .iter()
            .filter_map(|kv| decode::<ReadyItem>("ready entry", &kv.value).ok())
            .collect();
        for item in items {
            let _ = actor.cast(ShardMsg::from(item));
        }
    }
    let next = pages.position().to_vec();
    if next.as_slice() != cursor {
        shared.submit_detached(
            vec![Op::ClearRange(cursor.to_vec(), next.clone())],
            (shard, epoch),
        );
    }
    Ok(next)
}

/// After a claim: wakes runs with mail and remote runs with a workflow task owed, loads
/// timers, re-dispatches activity tasks (their old claims died with the previous holder), and
/// returns where the ready queue is to be read from next (everything before it is covered by
/// this scan). Every range is read a page of [`REHYDRATE_PAGE_ROWS`] per transaction.
async fn rehydrate<S: Store>(
    shared: &Arc<Local<S>>,
    shard: u32,
    epoch: u64,
    shard_ref: &ActorRef<ShardMsg>,
) -> Result<Vec<u8>, StoreError> {
    let keys = &shared.keys;
    let pages = |(begin, end): (Vec<u8>, Vec<u8>)| Pages::new(begin, end, REHYDRATE_PAGE_ROWS);
    // The ready queue's end first: its entries name mail committed before this read, which
    // the mailbox scan after it sees; later entries sort after the cursor.
    let (ready_begin, ready_end) = keys.ready_of_shard(shard);
    let mut tx = shared.store.begin()?;
    let last_ready = tx
        .get_range(
            &RangeRequest::new(ready_begin.clone(), ready_end)
                .reverse()
                .limit(1)
                .snapshot(),
        )
        .await?;
    drop(tx);
    let cursor = match last_ready.last() {
        Some(last) => {
            let next = cairn_store::keyspace::key_after(&last.key);
            shared.submit_detached(
                vec![Op::ClearRange(ready_begin, next.clone())],
                (shard, epoch),
            );
            next
        }
        None => ready_begin,
    };
    // Runs with mail: the mailbox is keyed by run, so one wake per run (a run whose mail
    // spans two pages is woken twice, which is harmless).
    let mut inbox = pages(keys.inbox_of_shard(shard));
    let mut woken = 0u64;
    let mut last_run = None;
    while let Some(page) = inbox.next(&shared.store).await? {
        for run_id in page.iter().filter_map(|kv| keys.inbox_run(&kv.key)) {
            if last_run != Some(run_id) {
                last_run = Some(run_id);
                woken += 1;
                let _ = shard_ref.cast(ShardMsg::Wake { run_id });
            }
        }
    }
    shared
        .metrics
        .runs_rehydrated
        .fetch_add(woken, Ordering::Relaxed);
    let mut wakes = pages(keys.schedule_wakes_of_shard(shard));
    while let Some(page) = wakes.next(&shared.store).await? {
        for kv in page {
            if let Some((at_unix_ms, schedule_id)) = keys.parse_schedule_wake(&kv.key) {
                let _ = shard_ref.cast(ShardMsg::ScheduleWake {
                    schedule_id,
                    at_unix_ms,
                });
            }
        }
    }
    // Attempts that started, with the keys that say so: their start mark, and (a handed-over
    // attempt has no mark) their start-to-close and heartbeat timers. Earlier tenures, fenced
    // out now, add no marks or timers meanwhile.
    let mut started: BTreeMap<(RunId, Seq, u32), Vec<Vec<u8>>> = BTreeMap::new();
    let mut marks = pages(keys.attempts_of_shard(shard));
    while let Some(page) = marks.next(&shared.store).await? {
        for kv in page {
            if let Some(attempt) = keys.parse_attempt(&kv.key) {
                started.entry(attempt).or_default().push(kv.key);
            }
        }
    }
    let mut timers = pages(keys.timers_of_shard(shard));
    while let Some(page) = timers.next(&shared.store).await? {
        for kv in &page {
            let Some((_, run_id, timer)) = keys.parse_timer(&kv.key) else {
                continue;
            };
            match timer {
                TimerId::ActivityStartToClose { seq, attempt }
                | TimerId::ActivityHeartbeat { seq, attempt } => {
                    started
                        .entry((run_id, seq, attempt))
                        .or_default()
                        .push(kv.key.clone());
                }
                // A remote run with a workflow task owed or out: the previous holder's
                // matching, and any worker's hold on the task, died with its tenure. Loaded
                // now, the run offers the task to the workers at once rather than when the
                // check timer fires (a task timeout or more later).
                TimerId::WorkflowTask { .. } => {
                    let _ = shard_ref.cast(ShardMsg::Wake { run_id });
                }
                _ => {}
            }
        }
    }
    // A started attempt of an earlier tenure is lost: its result goes only to the tenure that
    // dispatched it (or, for a remote worker's, to the matching of the node that handed it
    // out), so it can never land. It fails now, as lost — counted against its retry policy,
    // as the timeout it would otherwise wait out — rather than after its start-to-close or
    // heartbeat timeout. (One still running on a node that lost the shard without dying may
    // overlap its retry, as after a timeout.) Every other task is marked deferred, for the
    // pull dispatcher to hand out within the dispatch bound.
    let (begin, end) = keys.tasks_of_shard(shard);
    let mut tasks = Pages::new(begin, end, DEFERRED_PAGE_MAX);
    let mut deferred_any = false;
    while let Some(page) = tasks.next(&shared.store).await? {
        let mut ops = Vec::new();
        for kv in &page {
            let task: TaskRecord = decode("task", &kv.value)?;
            // This tenure's own tasks were handed over or deferred by their transitions (one
            // may be running now, its timer written after the scan above).
            if task.epoch == epoch {
                continue;
            }
            if let Some(marks) = started.remove(&(task.run_id, task.seq, task.attempt)) {
                lose_attempt(shared, shard_ref, &task, kv.key.clone(), marks);
                continue;
            }
            ops.push(Op::Set(
                keys.deferred(shard, &task.run_id, task.seq, task.attempt),
                Vec::new(),
            ));
        }
        if !ops.is_empty() {
            deferred_any = true;
            shared
                .metrics
                .activity_tasks_deferred
                .fetch_add(ops.len() as u64, Ordering::Relaxed);
            shared
                .commit(ops, Vec::new(), Some((shard, epoch)), None)
                .await
                .map_err(|e| match e {
                    CommitError::Store(e) => e,
                    other => StoreError::Backend {
                        message: format!("deferring the shard's tasks: {other}"),
                    },
                })?;
        }
    }
    // Transitions of this tenure may have deferred tasks meanwhile: they said so themselves.
    shared
        .workers
        .capacity
        .rehydrated(shard, epoch, deferred_any);
    Ok(cursor)
}

/// Fails attempt `task` (started by an earlier tenure of its shard) as lost: its run records
/// the failure and retries per its policy, consuming the task and the keys that marked it
/// started (`marks`: start mark, timers) in that transition.
fn lose_attempt<S: Store>(
    shared: &Local<S>,
    shard_ref: &ActorRef<ShardMsg>,
    task: &TaskRecord,
    task_key: Vec<u8>,
    marks: Vec<Vec<u8>>,
) {
    shared
        .metrics
        .activity_attempts_lost
        .fetch_add(1, Ordering::Relaxed);
    let failure = cairn_types::Failure::new(
        ACTIVITY_ATTEMPT_LOST,
        "the attempt was running under an earlier holder of its shard, which died or lost \
         the shard; its result could no longer be recorded",
    );
    let mut consume = vec![task_key];
    consume.extend(marks);
    let delivery = Delivery {
        item: InboxItem::Message(Message::ActivityFailed {
            seq: task.seq,
            attempt: task.attempt,
            failure,
        }),
        consume,
    };
    let _ = shard_ref.cast(ShardMsg::Deliver {
        run_id: task.run_id,
        deliveries: vec![delivery],
    });
}

/// The failure type of an attempt lost with an earlier holder of its shard (retryable).
pub const ACTIVITY_ATTEMPT_LOST: &str = "ActivityAttemptLost";

/// Graceful leave: no more claims, every shard handed off, membership record removed — so the
/// other nodes take over at their next placement round instead of after the lease timeout.
/// A second drain waits for the first and then does nothing.
pub(crate) async fn drain<S: Store>(shared: &Arc<Local<S>>) {
    let cluster = &shared.cluster;
    cluster.draining.store(true, Ordering::SeqCst);
    let _round = cluster.placement.lock().await;
    if cluster.drained.swap(true, Ordering::SeqCst) {
        return;
    }
    cluster.stop_loops();
    if let Err(error) = heartbeat(shared).await {
        tracing::warn!(%error, "could not mark this node draining");
    }
    let owned = cluster.ownership.owned();
    if let Err(error) = release(shared, &owned).await {
        tracing::warn!(%error, "could not release shards; they pass on when the lease lapses");
    }
    let key = shared.keys.node(&shared.config.node_id);
    let instance = cluster.instance.clone();
    let removed = transact(&shared.store, &shared.transact_options(), |tx, _| {
        let (key, instance) = (key.clone(), instance.clone());
        Box::pin(async move {
            // Only our own instance's record: a successor may already have taken the id over.
            if let Some(bytes) = tx.get(&key).await?
                && decode::<NodeRecord>("node record", &bytes)?.instance == instance
            {
                tx.clear(&key)?;
            }
            Ok::<_, StoreError>(())
        })
    })
    .await;
    if let Err(error) = removed {
        tracing::warn!(%error, "could not remove the membership record; it lapses by itself");
    }
}

/// One node as the cluster sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    pub node_id: String,
    pub instance: String,
    pub address: Option<String>,
    pub alive: bool,
    pub draining: bool,
    pub started_unix_ms: u64,
    pub heartbeat_unix_ms: u64,
    pub expires_unix_ms: u64,
}

/// One shard's lease as the cluster sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardStatus {
    pub shard: u32,
    pub holder: Option<String>,
    pub epoch: u64,
    pub held: bool,
    /// The holder's membership expiry: when the lease lapses unless renewed.
    pub expires_unix_ms: Option<u64>,
    /// Where placement puts it now.
    pub placed_on: Option<String>,
    pub changed_unix_ms: u64,
    /// When the shard's earliest pending timer or schedule wake was (or is) due. A holder
    /// keeping up consumes each within moments of its time, so one well in the past is how far
    /// the shard lags: unheld, or its holder behind.
    pub earliest_due_unix_ms: Option<u64>,
}

impl ShardStatus {
    /// How long the shard's earliest due work has waited past its time, at `now_unix_ms`.
    pub fn lag_ms(&self, now_unix_ms: u64) -> u64 {
        self.earliest_due_unix_ms
            .map_or(0, |due| now_unix_ms.saturating_sub(due))
    }
}

/// The whole cluster, read from the store, plus what this node holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    pub this_node: String,
    pub now_unix_ms: u64,
    pub shard_count: u32,
    pub lease_timeout_ms: u64,
    pub nodes: Vec<NodeStatus>,
    pub shards: Vec<ShardStatus>,
    /// Shards this node holds, with epochs and since when.
    pub held_here: Vec<(u32, u64, u64)>,
}

pub(crate) async fn status<S: Store>(shared: &Local<S>) -> Result<ClusterStatus, StoreError> {
    let view = View::read(shared).await?;
    let due = earliest_due(shared).await?;
    let nodes = view
        .nodes
        .values()
        .map(|n| NodeStatus {
            node_id: n.node_id.clone(),
            instance: n.instance.clone(),
            address: n.address.clone(),
            alive: view.alive(n),
            draining: n.draining,
            started_unix_ms: n.started_unix_ms,
            heartbeat_unix_ms: n.heartbeat_unix_ms,
            expires_unix_ms: n.expires_unix_ms,
        })
        .collect();
    let shards = (0..shared.config.shard_count)
        .map(|shard| {
            let lease = view.leases.get(&shard);
            ShardStatus {
                shard,
                holder: lease.filter(|l| l.held).map(|l| l.node_id.clone()),
                epoch: lease.map_or(0, |l| l.epoch),
                held: lease.is_some_and(|l| view.holder_alive(l)),
                expires_unix_ms: lease
                    .filter(|l| l.held)
                    .and_then(|l| view.nodes.get(&l.node_id))
                    .map(|n| n.expires_unix_ms),
                placed_on: view.desired(shard).map(str::to_string),
                changed_unix_ms: lease.map_or(0, |l| l.changed_unix_ms),
                earliest_due_unix_ms: due.get(shard as usize).copied().flatten(),
            }
        })
        .collect();
    let held_here = {
        let owned = shared.cluster.ownership.read();
        let mut out: Vec<(u32, u64, u64)> = owned
            .iter()
            .map(|(s, o)| (*s, o.epoch, o.since_unix_ms))
            .collect();
        out.sort_unstable();
        out
    };
    Ok(ClusterStatus {
        this_node: shared.config.node_id.clone(),
        now_unix_ms: view.now,
        shard_count: shared.config.shard_count,
        lease_timeout_ms: shared.config.lease_timeout_ms,
        nodes,
        shards,
        held_here,
    })
}

/// Each shard's earliest pending timer or schedule wake time, by shard: two single-row reads
/// per shard, [`DUE_SHARDS_PER_TRANSACTION`] shards per read-only transaction.
async fn earliest_due<S: Store>(shared: &Shared<S>) -> Result<Vec<Option<u64>>, StoreError> {
    let shard_count = shared.config.shard_count;
    let mut due = Vec::with_capacity(shard_count as usize);
    let mut first = 0;
    while first < shard_count {
        let last = first
            .saturating_add(DUE_SHARDS_PER_TRANSACTION)
            .min(shard_count);
        let keys = &shared.keys;
        let chunk = transact(&shared.store, &shared.transact_options(), |tx, _| {
            let keys = keys.clone();
            Box::pin(async move {
                let mut chunk = Vec::new();
                for shard in first..last {
                    let (begin, end) = keys.timers_of_shard(shard);
                    let timer = tx
                        .get_range(&RangeRequest::new(begin, end).limit(1).snapshot())
                        .await?
                        .first()
                        .and_then(|kv| keys.parse_timer(&kv.key))
                        .map(|(at, _, _)| at);
                    let (begin, end) = keys.schedule_wakes_of_shard(shard);
                    let wake = tx
                        .get_range(&RangeRequest::new(begin, end).limit(1).snapshot())
                        .await?
                        .first()
                        .and_then(|kv| keys.parse_schedule_wake(&kv.key))
                        .map(|(at, _)| at);
                    chunk.push(timer.into_iter().chain(wake).min());
                }
                Ok::<_, StoreError>(chunk)
            })
        })
        .await?;
        due.extend(chunk);
        first = last;
    }
    Ok(due)
}

/// Where a query for `shard` should go, from the store's view.
pub(crate) enum Route {
    /// A live node holds it, reachable at this address (if it advertised one).
    Node {
        node_id: String,
        address: Option<String>,
    },
    /// Nobody live holds it right now (moving, or every candidate is down).
    Nobody,
}

pub(crate) async fn route<S: Store>(shared: &Shared<S>, shard: u32) -> Result<Route, StoreError> {
    let keys = &shared.keys;
    let mut tx = shared.store.begin()?;
    let Some(bytes) = tx.get_snapshot(&keys.lease(shard)).await? else {
        return Ok(Route::Nobody);
    };
    let lease: Lease = decode("lease", &bytes)?;
    if !lease.held {
        return Ok(Route::Nobody);
    }
    let Some(bytes) = tx.get_snapshot(&keys.node(&lease.node_id)).await? else {
        return Ok(Route::Nobody);
    };
    let node: NodeRecord = decode("node record", &bytes)?;
    let opening = shared.store.exclusive_opening();
    if node.instance != lease.instance || !node.is_alive(shared.now_ms(), opening.as_deref()) {
        return Ok(Route::Nobody);
    }
    Ok(Route::Node {
        node_id: node.node_id,
        address: node.address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves rendezvous placement is stable, spreads shards, and moves only what it must
    /// when a node joins.
    #[test]
    fn rendezvous_moves_only_the_joiners_share() {
        let two = ["node-a", "node-b"];
        let three = ["node-a", "node-b", "node-c"];
        let mut moved = 0;
        let mut per_node: BTreeMap<&str, u32> = BTreeMap::new();
        for shard in 0..256 {
            let before = rendezvous(two, shard).unwrap();
            let after = rendezvous(three, shard).unwrap();
            assert_eq!(rendezvous(two, shard), Some(before), "deterministic");
            if before != after {
                assert_eq!(after, "node-c", "a shard moved between old nodes");
                moved += 1;
            }
            *per_node.entry(after).or_default() += 1;
        }
        assert!(
            (50..120).contains(&moved),
            "{moved} of 256 moved to the joiner"
        );
        for (node, count) in per_node {
            assert!((50..120).contains(&count), "{node} got {count} of 256");
        }
        assert_eq!(rendezvous(std::iter::empty(), 3), None);
    }
}
