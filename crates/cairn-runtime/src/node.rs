//! The node: starts the committer, joins the cluster (membership, shard placement, leases —
//! see `cluster`), and serves the client operations. Any node can serve any client call:
//! starts, signals and cancellations go through the store (the shard's holder is woken), and
//! queries are forwarded to the holder.

use crate::Metrics;
use crate::cluster::{self, ClusterStatus};
use crate::committer::{Committer, CommitterArgs};
use crate::config::NodeConfig;
use crate::error::ClientError;
use crate::error::ClusterError;
use crate::keys::Keys;
use crate::local::Local;
use crate::membership::{Cluster, Ownership};
use crate::peers::{PeerError, PeerQuery, QueryTarget};
use crate::pool::Workers;
use crate::registry::Registry;
use crate::shared::Shared;
pub(crate) use crate::shared::read_history;
use cairn_store::Store;
pub use cairn_types::limits::INLINE_PAYLOAD_BYTES_MAX;
use cairn_types::{Payload, SearchAttributes, WorkflowId};
use ractor::Actor;
use ractor::thread_local::ThreadLocalActorSpawner;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A running Cairn node.
pub struct Node<S: Store> {
    pub(crate) shared: Arc<Local<S>>,
    /// Store watches result waiters may hold: `NodeConfig::result_watches_max` permits.
    pub(crate) result_watches: Arc<tokio::sync::Semaphore>,
    /// Set once this node's batch runner is started (`Node::run_batches`).
    pub(crate) batch_runner: std::sync::atomic::AtomicBool,
}

impl<S: Store> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.shared.config.node_id)
            .finish_non_exhaustive()
    }
}

impl<S: Store> Node<S> {
    /// Starts a node on `store`: checks the store's shard count, publishes its membership,
    /// takes the shards placement gives it (rehydrating them in the background), then keeps
    /// heartbeating and placing until shut down. A node alone in the cluster takes every shard
    /// at once, unless a node with another id held them moments ago: those shards wait until
    /// that node's leases lapse (`lease_timeout_ms`).
    pub async fn start(
        store: S,
        registry: Registry,
        config: NodeConfig,
    ) -> Result<Self, ClientError> {
        assert!(config.shard_count > 0, "shard_count must be positive");
        if config.node_id.is_empty()
            || config.node_id.contains('/')
            || config.node_id.chars().any(char::is_control)
        {
            // Task tokens and membership keys carry the id between '/'s.
            return Err(ClusterError::BadNodeId {
                node_id: config.node_id.clone(),
            }
            .into());
        }
        if config.lease_timeout_ms < cluster::LEASE_TIMEOUT_MS_MIN {
            return Err(ClusterError::LeaseTimeoutTooShort {
                value: config.lease_timeout_ms,
                min: cluster::LEASE_TIMEOUT_MS_MIN,
            }
            .into());
        }
        if config.is_single_threaded()
            && tokio::runtime::Handle::current().runtime_flavor()
                != tokio::runtime::RuntimeFlavor::CurrentThread
        {
            return Err(ClusterError::SingleThreadedOnManyThreads.into());
        }
        if config.retention_ms < crate::retention::RETENTION_MS_MIN {
            return Err(ClusterError::RetentionTooShort {
                value: config.retention_ms,
                min: crate::retention::RETENTION_MS_MIN,
            }
            .into());
        }
        let keys = Keys::default();
        let metrics = Arc::new(Metrics::default());
        let ownership = Arc::new(Ownership::default());
        let (committer, _) = Actor::spawn(
            None,
            Committer::<S>::default(),
            CommitterArgs {
                store: store.clone(),
                keys: keys.clone(),
                metrics: metrics.clone(),
                ownership: ownership.clone(),
                batches_in_flight_max: match config.commit_batches_in_flight_max {
                    0 => store.commit_batches_in_flight(),
                    n => n,
                },
            },
        )
        .await
        .map_err(|_| ClientError::NodeStopped)?;
        let spawners = (0..config.executor_threads)
            .map(|_| ThreadLocalActorSpawner::new())
            .collect();
        let commit_slots = config.commit_requests_queued_max.max(1);
        let cluster = Cluster::new(ownership, &config);
        let shared = Arc::new(Local {
            workers: Workers::new(
                config.activity_concurrency_max,
                config.activity_attempts_dispatched_max.max(1),
                metrics.clone(),
            ),
            matching: crate::matching::Matching::new(
                &config.node_id,
                config.clock.clone(),
                &config.entropy,
            ),
            runtime: tokio::runtime::Handle::current(),
            cluster,
            spawners,
            waiters: Mutex::new(BTreeMap::new()),
            shared: Arc::new(Shared {
                store,
                keys,
                config,
                registry,
                metrics,
                committer,
                client_commits: std::sync::atomic::AtomicUsize::new(0),
                commit_slots: Arc::new(tokio::sync::Semaphore::new(commit_slots)),
            }),
        });
        let joined = async {
            cluster::check_cluster_record(&shared).await?;
            cluster::heartbeat(&shared).await?;
            cluster::placement_round(&shared).await?;
            Ok::<_, ClusterError>(())
        }
        .await;
        if let Err(error) = joined {
            shared.halt();
            return Err(error.into());
        }
        if let (Some(peers), Some(address)) =
            (&shared.config.peers, &shared.config.advertise_address)
        {
            let target: Arc<dyn QueryTarget> = shared.clone();
            peers.0.attach(address, Arc::downgrade(&target));
        }
        cluster::spawn_loops(&shared);
        crate::retention::spawn(&shared);
        crate::dispatch::spawn_refill(&shared);
        let result_watches = Arc::new(tokio::sync::Semaphore::new(
            shared.config.result_watches_max,
        ));
        Ok(Self {
            shared,
            result_watches,
            batch_runner: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Answers a query another node forwarded here: [`PeerError::NotOwner`] unless this node
    /// holds the run's shard (it never forwards again).
    pub async fn answer_forwarded_query(&self, query: PeerQuery) -> Result<Payload, PeerError> {
        self.shared.answer_query(query).await
    }

    /// Serves a remote worker's task call that another node forwarded (a take of a task
    /// waiting here, or an answer to one this node handed out); never forwards again.
    pub async fn serve_forwarded_task(&self, call: crate::PeerTaskCall) -> crate::PeerTaskAnswer {
        self.shared.serve_task_call(call).await
    }

    /// The settings this node was started with.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.config.node_id
    }

    /// Membership and leases of the whole cluster, from the store, and what this node holds.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        Ok(cluster::status(&self.shared).await?)
    }

    /// Shards this node holds now, with their epochs.
    pub fn held_shards(&self) -> Vec<(u32, u64)> {
        self.shared.cluster.ownership.owned()
    }

    /// The shard of `workflow_id`.
    pub fn shard_of(&self, workflow_id: &WorkflowId) -> u32 {
        self.shared.shard_of(workflow_id)
    }

    /// The node's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Most rows one diagnosis read ([`Self::deferred_backlog`], [`Self::attempt_in_store`])
    /// takes from one range, in one transaction.
    pub const DIAGNOSIS_ROWS_MAX: usize = 10_000;

    /// What the puller of deferred activity tasks knows, and how many deferred markers each
    /// shard has in the store: a diagnosis for a run that stops making progress.
    pub async fn deferred_backlog(&self) -> String {
        use cairn_store::Transaction;
        let capacity = &self.shared.workers.capacity;
        let mut out = format!(
            "free units {}, backlogged {}; pending (shard, epoch, cursor set, generation, ready): {:?}\n",
            capacity.free(),
            capacity
                .inner
                .backlogged
                .load(std::sync::atomic::Ordering::Acquire),
            capacity
                .pending()
                .iter()
                .map(|(s, p, ready)| (*s, p.epoch, p.cursor.is_some(), p.generation, *ready))
                .collect::<Vec<_>>()
        );
        for shard in 0..self.shared.config.shard_count {
            let (begin, end) = self.shared.keys.deferred_of_shard(shard);
            let Ok(mut tx) = self.shared.store.begin() else {
                continue;
            };
            let markers = tx
                .get_range(
                    &cairn_store::RangeRequest::new(begin, end)
                        .limit(Self::DIAGNOSIS_ROWS_MAX)
                        .snapshot(),
                )
                .await
                .map(|m| m.len());
            match markers {
                Ok(0) => {}
                Ok(n) if n == Self::DIAGNOSIS_ROWS_MAX => {
                    out.push_str(&format!("shard {shard}: deferred markers: {n} or more\n"));
                }
                other => out.push_str(&format!("shard {shard}: deferred markers {other:?}\n")),
            }
        }
        out
    }

    /// What the store holds for attempt `attempt` of activity `seq` of run `run_id` of
    /// workflow `workflow_id`: its task, start mark, deferred marker, and the run's timers in
    /// the shard. A diagnosis for an attempt that never ends.
    pub async fn attempt_in_store(
        &self,
        workflow_id: &WorkflowId,
        run_id: &cairn_types::RunId,
        seq: u32,
        attempt: u32,
    ) -> String {
        use cairn_store::Transaction;
        let keys = &self.shared.keys;
        let shard = self.shared.shard_of(workflow_id);
        let Ok(mut tx) = self.shared.store.begin() else {
            return "no transaction".into();
        };
        let mut out = String::new();
        for (what, key) in [
            ("task", keys.task(shard, run_id, seq, attempt)),
            ("start mark", keys.attempt(shard, run_id, seq, attempt)),
            (
                "deferred marker",
                keys.deferred(shard, run_id, seq, attempt),
            ),
        ] {
            let found = tx.get(&key).await.map(|v| v.is_some());
            out.push_str(&format!("{what}: {found:?}; "));
        }
        let (begin, end) = keys.timers_of_shard(shard);
        let run_bytes = run_id.as_uuid().as_bytes().to_vec();
        let timers = tx
            .get_range(
                &cairn_store::RangeRequest::new(begin, end)
                    .limit(Self::DIAGNOSIS_ROWS_MAX)
                    .snapshot(),
            )
            .await
            .map(|rows| {
                let scanned = rows.len();
                let run_timers: Vec<String> = rows
                    .into_iter()
                    .filter(|r| r.key.windows(16).any(|w| w == run_bytes.as_slice()))
                    .map(|r| r.key.escape_ascii().to_string())
                    .collect();
                (run_timers, scanned)
            });
        match timers {
            Ok((run_timers, scanned)) => out.push_str(&format!(
                "run's timers in shard {shard}: {run_timers:?} (among the shard's first {scanned} timers{})",
                if scanned == Self::DIAGNOSIS_ROWS_MAX { ", of more" } else { "" }
            )),
            Err(e) => out.push_str(&format!("run's timers in shard {shard}: {e}")),
        }
        out
    }

    /// The registered workflow and activity types.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Stops the node's actors without any further writes — what a crash leaves behind, minus
    /// the process exit. Work in flight may or may not have committed; this node's shards pass
    /// to other nodes once its leases lapse.
    pub fn crash(&self) {
        self.shared.halt();
    }

    /// Stops the node gracefully: it drains (hands every shard off and leaves the membership,
    /// so other nodes take over at once rather than after the lease timeout), then stops the
    /// committer and the workers. Attempts still running are abandoned; their tasks are
    /// dispatched again by the shards' new holders.
    /// Local result waiters (callers of `result` for runs this node holds) waiting now.
    pub fn result_waiters(&self) -> usize {
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Leaves the cluster at once: no more claims, every shard handed off (the other nodes
    /// take them at their next placement round, not after the lease timeout), the membership
    /// record removed. Client calls keep working through the store (a run's shard is now held
    /// elsewhere) until [`Node::shutdown`], which drains first if this has not. A server calls
    /// this as soon as it is asked to stop, before it waits for requests in progress.
    pub async fn drain(&self) {
        cluster::drain(&self.shared).await;
    }

    /// Stops the node: drains it (if [`Node::drain`] has not), then stops its committer and
    /// its workers; client calls fail from then on.
    pub async fn shutdown(&self) {
        self.drain().await;
        self.shared.notify_stopping();
        self.shared.committer.stop(None);
        self.shared.workers.close();
    }
}

/// A start's input, memo and search attributes must fit one started event together.
pub(crate) fn check_start_bytes(
    input: &Payload,
    memo: &cairn_types::Memo,
    search_attributes: &SearchAttributes,
) -> Result<(), ClientError> {
    let len = cairn_types::start_bytes(input, memo, search_attributes);
    if len > INLINE_PAYLOAD_BYTES_MAX {
        return Err(ClientError::PayloadTooLarge {
            what: "the workflow input, memo and search attributes together",
            len,
            max: INLINE_PAYLOAD_BYTES_MAX,
        });
    }
    Ok(())
}

pub(crate) fn check_payload(what: &'static str, payload: &Payload) -> Result<(), ClientError> {
    if payload.len() > INLINE_PAYLOAD_BYTES_MAX {
        return Err(ClientError::PayloadTooLarge {
            what,
            len: payload.len(),
            max: INLINE_PAYLOAD_BYTES_MAX,
        });
    }
    Ok(())
}
