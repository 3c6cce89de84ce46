//! The node: starts the committer, claims shard leases, starts shard actors, recovers what the
//! store says is pending, and serves the in-process client operations.

use crate::Metrics;
use crate::clock::now_ms;
use crate::committer::{
    Check, CommitError, CommitRequest, Committer, CommitterArgs, CommitterMsg, Op, Verify,
};
use crate::keys::Keys;
use crate::records::{
    InboxItem, Lease, Outcome, RunRecord, StartRecord, TaskRecord, WorkflowRecord, decode, encode,
};
use crate::registry::Registry;
use crate::shard::{ShardActor, ShardArgs, ShardMsg, TimerEntry};
use crate::worker::Workers;
use crate::workflow::QueryError;
use cairn_core::{Message, PendingActivity, RunStatus, TimerId};
use cairn_store::{RangeRequest, Store, StoreError, TransactOptions, Transaction, transact};
use cairn_types::{HistoryEvent, Payload, PolicyError, RunId, Seq, WorkflowId, WorkflowTimeouts};
use ractor::thread_local::ThreadLocalActorSpawner;
use ractor::{Actor, ActorRef};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::oneshot;

/// A node's settings. Each field documents its default.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Identity in leases. Default: a random UUID.
    pub node_id: String,
    /// Namespace of this node's workflows. Default `"default"`.
    pub namespace: String,
    /// Fixed number of shards. Default 16. Must not change for a given store.
    pub shard_count: u32,
    /// Threads that run workflow code. Default 2.
    pub executor_threads: usize,
    /// Most active (in-memory) runs per shard before the least recently used are passivated.
    /// Default 4,096.
    pub actor_cache_max_per_shard: usize,
    /// A run idle this long is passivated. Default 30,000 ms.
    pub actor_idle_ms: u64,
    /// Most activity attempts running at once. Default 1,000.
    pub activity_concurrency_max: usize,
    /// Lease duration written on claim. Default 10,000 ms.
    pub lease_timeout_ms: u64,
    /// Test hook: asked at each crash point; answering true stops the node right there, as a
    /// crash would. Default none.
    pub crash_hook: Option<CrashHook>,
}

/// Places in the runtime where a test can make the node crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrashPoint {
    /// A transition was computed but not yet submitted for commit.
    BeforeCommit,
    /// A transition committed; its side effects (tasks, timers, waiters) not yet released.
    AfterCommitBeforeEffects,
    /// An activity attempt finished; its result not yet handed to the run.
    DuringActivity,
}

/// See [`NodeConfig::crash_hook`].
#[derive(Clone)]
pub struct CrashHook(pub Arc<dyn Fn(CrashPoint) -> bool + Send + Sync>);

impl std::fmt::Debug for CrashHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrashHook")
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: uuid::Uuid::now_v7().to_string(),
            namespace: "default".into(),
            shard_count: 16,
            executor_threads: 2,
            actor_cache_max_per_shard: 4_096,
            actor_idle_ms: 30_000,
            activity_concurrency_max: 1_000,
            lease_timeout_ms: 10_000,
            crash_hook: None,
        }
    }
}

/// What every actor of a node shares.
pub struct Shared<S: Store> {
    pub store: S,
    pub keys: Keys,
    pub config: NodeConfig,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub committer: ActorRef<CommitterMsg>,
    pub workers: Workers,
    pub runtime: tokio::runtime::Handle,
    shards: OnceLock<Vec<ActorRef<ShardMsg>>>,
    spawners: Vec<ThreadLocalActorSpawner>,
    waiters: Mutex<HashMap<RunId, Vec<oneshot::Sender<Outcome>>>>,
}

/// FNV-1a: stable across processes and versions, which shard placement must be.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl<S: Store> Shared<S> {
    /// The shard of a workflow id.
    pub fn shard_of(&self, workflow_id: &WorkflowId) -> u32 {
        (fnv1a(workflow_id.as_str().as_bytes()) % u64::from(self.config.shard_count)) as u32
    }

    pub fn shard(&self, shard: u32) -> &ActorRef<ShardMsg> {
        &self.shards.get().expect("shards started")[shard as usize]
    }

    pub(crate) fn spawner_for(&self, run_id: &RunId) -> ThreadLocalActorSpawner {
        let index = fnv1a(run_id.as_uuid().as_bytes()) as usize % self.spawners.len();
        self.spawners[index].clone()
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
        for shard in self.shards.get().into_iter().flatten() {
            shard.kill();
        }
        self.committer.kill();
        self.workers.close();
    }

    /// Submits writes (with their checks, shard fence and `MaybeCommitted` verification) to the
    /// committer and waits for the batch that carries them.
    pub(crate) async fn commit(
        &self,
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
        };
        self.committer
            .cast(CommitterMsg::Submit(request))
            .map_err(|_| CommitError::Stopped)?;
        answer.await.map_err(|_| CommitError::Stopped)?
    }

    pub(crate) fn notify_closed(&self, run_id: RunId, outcome: Outcome) {
        let waiters = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run_id);
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.send(outcome.clone());
        }
    }
}

/// What to do when a workflow id is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdReusePolicy {
    /// A new run may start once the previous one closed, however it closed. The default.
    #[default]
    AllowDuplicate,
    /// A new run may start only if the previous one failed, was canceled, terminated or timed out.
    AllowDuplicateFailedOnly,
    /// The id can never be used again.
    RejectDuplicate,
}

/// A request to start a workflow.
#[derive(Debug, Clone)]
pub struct StartWorkflow {
    pub workflow_id: WorkflowId,
    pub workflow_type: String,
    pub input: Payload,
    pub id_reuse_policy: IdReusePolicy,
    pub timeouts: WorkflowTimeouts,
}

/// Errors a client of the node can act on. Each leaves stored state untouched.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("workflow type {workflow_type:?} is not registered (registered: {registered:?})")]
    UnknownWorkflowType {
        workflow_type: String,
        registered: Vec<String>,
    },
    #[error("input does not decode as the input type of workflow {workflow_type:?}: {reason}")]
    InputDoesNotDecode {
        workflow_type: String,
        reason: String,
    },
    #[error("workflow {workflow_id} is already running as run {run_id}")]
    AlreadyRunning { workflow_id: String, run_id: RunId },
    #[error(
        "workflow id {workflow_id} was used before and its id-reuse policy ({policy:?}) forbids another run"
    )]
    DuplicateRejected {
        workflow_id: String,
        policy: IdReusePolicy,
    },
    #[error("invalid workflow id: {0}")]
    InvalidWorkflowId(#[from] cairn_types::IdError),
    #[error("no workflow with id {workflow_id}")]
    NotFound { workflow_id: String },
    #[error("workflow {workflow_id} is not running (status {status:?})")]
    NotRunning {
        workflow_id: String,
        status: Option<RunStatus>,
    },
    #[error("{what} is {len} bytes; the limit is {max} bytes")]
    PayloadTooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error(transparent)]
    InvalidTimeouts(#[from] PolicyError),
    #[error("query failed: {0}")]
    Query(#[from] QueryError),
    #[error("the node is shutting down")]
    NodeStopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl cairn_store::RetryClass for ClientError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_retryable())
    }
    fn is_maybe_committed(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_maybe_committed())
    }
}

/// Largest payload one record carries inline, leaving room for the record around it in a
/// 100,000-byte store value. Larger payloads need chunking, which is not built yet.
pub const INLINE_PAYLOAD_BYTES_MAX: usize = 90_000;

/// A summary of a workflow, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSummary {
    pub workflow_id: String,
    pub run_id: RunId,
    pub workflow_type: String,
    pub status: Option<RunStatus>,
    pub started_unix_ms: u64,
    pub closed_unix_ms: Option<u64>,
}

/// A workflow's current run in detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    pub summary: WorkflowSummary,
    pub pending_activities: Vec<(Seq, PendingActivity)>,
    pub history_length: u64,
    pub outcome: Option<Outcome>,
}

/// A running Cairn node.
pub struct Node<S: Store> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.shared.config.node_id)
            .finish_non_exhaustive()
    }
}

impl<S: Store> Node<S> {
    /// Starts a node on `store`: claims every shard (single-node mode), then recovers pending
    /// mailboxes, timers and activity tasks.
    pub async fn start(
        store: S,
        registry: Registry,
        config: NodeConfig,
    ) -> Result<Self, ClientError> {
        assert!(config.shard_count > 0, "shard_count must be positive");
        assert!(
            config.executor_threads > 0,
            "executor_threads must be positive"
        );
        let keys = Keys::default();
        let metrics = Arc::new(Metrics::default());
        let (committer, _) = Actor::spawn(
            None,
            Committer::<S>::default(),
            CommitterArgs {
                store: store.clone(),
                keys: keys.clone(),
                metrics: metrics.clone(),
            },
        )
        .await
        .map_err(|_| ClientError::NodeStopped)?;
        let spawners = (0..config.executor_threads)
            .map(|_| ThreadLocalActorSpawner::new())
            .collect();
        let shared = Arc::new(Shared {
            store,
            keys,
            workers: Workers::new(config.activity_concurrency_max),
            config,
            registry,
            metrics,
            committer,
            runtime: tokio::runtime::Handle::current(),
            shards: OnceLock::new(),
            spawners,
            waiters: Mutex::new(HashMap::new()),
        });
        let mut shards = Vec::new();
        let mut epochs = Vec::new();
        for shard in 0..shared.config.shard_count {
            let epoch = claim_lease(&shared, shard).await?;
            let (actor, _) = Actor::spawn(
                None,
                ShardActor::<S>::default(),
                ShardArgs {
                    shared: shared.clone(),
                    shard,
                    epoch,
                },
            )
            .await
            .map_err(|_| ClientError::NodeStopped)?;
            shards.push(actor);
            epochs.push(epoch);
        }
        let _ = shared.shards.set(shards);
        for (shard, epoch) in epochs.into_iter().enumerate() {
            recover_shard(&shared, shard as u32, epoch).await?;
        }
        Ok(Self { shared })
    }

    /// The node's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The registered workflow and activity types.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Starts a workflow run. Fails, writing nothing, if the type is unknown, the input is too
    /// large, the timeouts are inconsistent, or the id-reuse policy forbids a new run.
    pub async fn start_workflow(&self, request: StartWorkflow) -> Result<RunId, ClientError> {
        let shared = &self.shared;
        if shared
            .registry
            .workflow_def(&request.workflow_type)
            .is_none()
        {
            return Err(ClientError::UnknownWorkflowType {
                workflow_type: request.workflow_type,
                registered: shared.registry.workflow_names(),
            });
        }
        check_payload("workflow input", &request.input)?;
        let workflow_type = request.workflow_type.clone();
        shared
            .registry
            .check_input(&request.workflow_type, &request.input)
            .map_err(|reason| ClientError::InputDoesNotDecode {
                workflow_type: request.workflow_type.clone(),
                reason,
            })?;
        let timeouts = request.timeouts.validate()?;
        let shard = shared.shard_of(&request.workflow_id);
        let namespace = shared.config.namespace.clone();
        let run_id = RunId::from_uuid(uuid::Uuid::now_v7()).expect("now_v7 is a v7 uuid");
        let seed = u64::from_be_bytes(
            run_id.as_uuid().as_bytes()[8..]
                .try_into()
                .expect("8 bytes"),
        );
        let now = now_ms();
        let record = RunRecord {
            namespace: namespace.clone(),
            workflow_id: request.workflow_id.clone(),
            run_id,
            start: StartRecord {
                workflow_type: request.workflow_type.clone(),
                input: request.input.clone(),
                random_seed: seed,
                timeouts,
            },
            state: None,
            version: 0,
            outcome: None,
            created_unix_ms: now,
        };
        let summary = WorkflowRecord {
            run_id,
            workflow_type: request.workflow_type.clone(),
            status: None,
            started_unix_ms: now,
            closed_unix_ms: None,
        };
        let keys = shared.keys.clone();
        let wf_key = keys.workflow(&namespace, request.workflow_id.as_str());
        let policy = request.id_reuse_policy;
        let workflow_id = request.workflow_id.clone();
        // One commit request, batched with everything else; the id-reuse check runs inside the
        // batch transaction, after earlier requests of the same batch.
        let check = Check {
            key: wf_key.clone(),
            accept: Box::new(move |existing: Option<&[u8]>| {
                let Some(bytes) = existing else {
                    return Ok(());
                };
                let existing: WorkflowRecord = decode("workflow", bytes)?;
                if existing.run_id == run_id {
                    // This very start, committed by an attempt that reported MaybeCommitted.
                    return Ok(());
                }
                check_reuse(&workflow_id, &existing, policy)
            }),
        };
        let ops = vec![
            Op::Set(wf_key, encode(&summary)),
            Op::Set(keys.run(&run_id), encode(&record)),
            Op::SetVersionstamped(keys.inbox_new(shard, &run_id, 0), encode(&InboxItem::Start)),
        ];
        let verify = Some((keys.run(&run_id), Verify::RunVersionAtLeast(0)));
        self.submit(ops, vec![check], verify).await?;
        shared.metrics.record_started(&workflow_type);
        let _ = shared.shard(shard).cast(ShardMsg::Wake { run_id });
        Ok(run_id)
    }

    /// A client request's writes, unfenced, through the committer.
    async fn submit(
        &self,
        ops: Vec<Op>,
        checks: Vec<Check>,
        verify: Option<(Vec<u8>, Verify)>,
    ) -> Result<(), ClientError> {
        match self.shared.commit(ops, checks, None, verify).await {
            Ok(()) => Ok(()),
            Err(CommitError::Rejected(error)) => Err(*error),
            Err(CommitError::Store(error)) => Err(ClientError::Store(error)),
            Err(CommitError::Fenced { .. } | CommitError::Stopped) => Err(ClientError::NodeStopped),
        }
    }

    async fn current(&self, workflow_id: &WorkflowId) -> Result<WorkflowRecord, ClientError> {
        let key = self
            .shared
            .keys
            .workflow(&self.shared.config.namespace, workflow_id.as_str());
        let mut tx = self.shared.store.begin()?;
        let bytes = tx.get(&key).await?.ok_or_else(|| ClientError::NotFound {
            workflow_id: workflow_id.to_string(),
        })?;
        Ok(decode("workflow", &bytes)?)
    }

    async fn run_record(&self, run_id: &RunId) -> Result<RunRecord, ClientError> {
        let mut tx = self.shared.store.begin()?;
        let bytes = tx
            .get(&self.shared.keys.run(run_id))
            .await?
            .ok_or_else(|| {
                ClientError::Store(StoreError::Backend {
                    message: format!("run {run_id} is listed but has no record"),
                })
            })?;
        Ok(decode("run", &bytes)?)
    }

    /// Puts a message in the mailbox of the workflow's current run, exactly once even when the
    /// store reports `MaybeCommitted` (a request id guards the write).
    async fn send_message(
        &self,
        workflow_id: &WorkflowId,
        message: Message,
    ) -> Result<RunId, ClientError> {
        let shared = &self.shared;
        let current = self.current(workflow_id).await?;
        if current.status.is_some_and(RunStatus::is_closed) {
            return Err(ClientError::NotRunning {
                workflow_id: workflow_id.to_string(),
                status: current.status,
            });
        }
        let run_id = current.run_id;
        let shard = shared.shard_of(workflow_id);
        let keys = shared.keys.clone();
        let request_id = uuid::Uuid::now_v7();
        let guard = keys.request_guard(&run_id, &request_id);
        let item = encode(&InboxItem::Message(message));
        // Batched like everything else. The guard key, written only by this request, tells a
        // retry after `MaybeCommitted` whether the message is already in the mailbox.
        let ops = vec![
            Op::Set(guard.clone(), Vec::new()),
            Op::SetVersionstamped(keys.inbox_new(shard, &run_id, 0), item),
        ];
        self.submit(ops, Vec::new(), Some((guard, Verify::Exists)))
            .await?;
        let _ = shared.shard(shard).cast(ShardMsg::Wake { run_id });
        Ok(run_id)
    }

    /// Sends signal `name` to the workflow's current run.
    pub async fn signal(
        &self,
        workflow_id: &WorkflowId,
        name: &str,
        input: Payload,
    ) -> Result<(), ClientError> {
        check_payload("signal input", &input)?;
        let message = Message::Signal {
            name: name.to_string(),
            input,
        };
        self.send_message(workflow_id, message).await.map(|_| ())
    }

    /// Requests cancellation; the workflow code decides how to wind down.
    pub async fn cancel(&self, workflow_id: &WorkflowId, reason: &str) -> Result<(), ClientError> {
        let message = Message::CancelRequested {
            reason: reason.to_string(),
        };
        self.send_message(workflow_id, message).await.map(|_| ())
    }

    /// Ends the run at once, without running its code.
    pub async fn terminate(
        &self,
        workflow_id: &WorkflowId,
        reason: &str,
    ) -> Result<(), ClientError> {
        let message = Message::Terminate {
            reason: reason.to_string(),
        };
        self.send_message(workflow_id, message).await.map(|_| ())
    }

    /// Runs query `name` against the current run's state (replaying it if it is passivated or
    /// closed).
    pub async fn query(
        &self,
        workflow_id: &WorkflowId,
        name: &str,
        args: Payload,
    ) -> Result<Payload, ClientError> {
        let current = self.current(workflow_id).await?;
        let shard = self.shared.shard_of(workflow_id);
        let shard_ref = self.shared.shard(shard).clone();
        let name = name.to_string();
        let answer = shard_ref
            .call(
                |reply| ShardMsg::Query {
                    run_id: current.run_id,
                    name,
                    args,
                    reply,
                },
                Some(std::time::Duration::from_secs(30)),
            )
            .await
            .map_err(|_| ClientError::NodeStopped)?;
        match answer {
            ractor::rpc::CallResult::Success(result) => Ok(result?),
            _ => Err(ClientError::Query(QueryError::Unavailable)),
        }
    }

    /// Waits for the current run of `workflow_id` to close and returns how it ended.
    pub async fn result(&self, workflow_id: &WorkflowId) -> Result<Outcome, ClientError> {
        let current = self.current(workflow_id).await?;
        let (tx, rx) = oneshot::channel();
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(current.run_id)
            .or_default()
            .push(tx);
        // Registered first, checked second: a close between the two is not missed.
        let record = self.run_record(&current.run_id).await?;
        if let Some(outcome) = record.outcome {
            return Ok(outcome);
        }
        rx.await.map_err(|_| ClientError::NodeStopped)
    }

    /// The current run's summary, pending activities and history length.
    pub async fn describe(&self, workflow_id: &WorkflowId) -> Result<Description, ClientError> {
        let current = self.current(workflow_id).await?;
        let record = self.run_record(&current.run_id).await?;
        let state = record.state.as_ref();
        Ok(Description {
            summary: WorkflowSummary {
                workflow_id: workflow_id.to_string(),
                run_id: current.run_id,
                workflow_type: current.workflow_type,
                status: current.status,
                started_unix_ms: current.started_unix_ms,
                closed_unix_ms: current.closed_unix_ms,
            },
            pending_activities: state
                .map(|s| s.activities.iter().map(|(k, v)| (*k, v.clone())).collect())
                .unwrap_or_default(),
            history_length: state.map_or(0, |s| s.next_event_id - 1),
            outcome: record.outcome,
        })
    }

    /// The current run's history.
    pub async fn history(
        &self,
        workflow_id: &WorkflowId,
    ) -> Result<Vec<HistoryEvent>, ClientError> {
        let current = self.current(workflow_id).await?;
        let (begin, end) = self.shared.keys.history(&current.run_id);
        let mut tx = self.shared.store.begin()?;
        let rows = tx
            .get_range(&RangeRequest::new(begin, end).snapshot())
            .await?;
        Ok(rows
            .iter()
            .map(|kv| decode("history event", &kv.value))
            .collect::<Result<_, _>>()?)
    }

    /// Workflows of this namespace, optionally of one type and/or status.
    pub async fn list(
        &self,
        workflow_type: Option<&str>,
        status: Option<RunStatus>,
    ) -> Result<Vec<WorkflowSummary>, ClientError> {
        let (begin, end) = self.shared.keys.workflows(&self.shared.config.namespace);
        let mut tx = self.shared.store.begin()?;
        let rows = tx
            .get_range(&RangeRequest::new(begin, end).snapshot())
            .await?;
        let mut out = Vec::new();
        for row in rows {
            let record: WorkflowRecord = decode("workflow", &row.value)?;
            let workflow_id = self
                .shared
                .keys
                .workflow_id_of(&row.key)
                .unwrap_or_default();
            if workflow_type.is_some_and(|t| t != record.workflow_type) {
                continue;
            }
            if status.is_some_and(|s| record.status != Some(s)) {
                continue;
            }
            out.push(WorkflowSummary {
                workflow_id,
                run_id: record.run_id,
                workflow_type: record.workflow_type,
                status: record.status,
                started_unix_ms: record.started_unix_ms,
                closed_unix_ms: record.closed_unix_ms,
            });
        }
        Ok(out)
    }

    /// Stops the node's actors without any further writes — what a crash leaves behind, minus
    /// the process exit. Work in flight may or may not have committed.
    pub fn crash(&self) {
        self.shared.halt();
    }

    /// Stops the node: shard actors (and their runs) first, then the committer.
    pub async fn shutdown(&self) {
        for shard in self.shared.shards.get().into_iter().flatten() {
            shard.stop(None);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        self.shared.committer.stop(None);
        self.shared.workers_stop();
    }
}

impl<S: Store> Shared<S> {
    fn workers_stop(&self) {
        self.workers.close();
    }
}

fn check_payload(what: &'static str, payload: &Payload) -> Result<(), ClientError> {
    if payload.len() > INLINE_PAYLOAD_BYTES_MAX {
        return Err(ClientError::PayloadTooLarge {
            what,
            len: payload.len(),
            max: INLINE_PAYLOAD_BYTES_MAX,
        });
    }
    Ok(())
}

fn check_reuse(
    workflow_id: &WorkflowId,
    existing: &WorkflowRecord,
    policy: IdReusePolicy,
) -> Result<(), ClientError> {
    let status = match existing.status {
        None | Some(RunStatus::Running) => {
            return Err(ClientError::AlreadyRunning {
                workflow_id: workflow_id.to_string(),
                run_id: existing.run_id,
            });
        }
        Some(status) => status,
    };
    let allowed = match policy {
        IdReusePolicy::AllowDuplicate => true,
        IdReusePolicy::AllowDuplicateFailedOnly => status != RunStatus::Completed,
        IdReusePolicy::RejectDuplicate => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ClientError::DuplicateRejected {
            workflow_id: workflow_id.to_string(),
            policy,
        })
    }
}

/// Claims `shard` for this node by bumping its lease epoch. Single-node mode: any previous
/// holder is taken over (the cluster issue adds waiting for expiry and handoff).
async fn claim_lease<S: Store>(shared: &Shared<S>, shard: u32) -> Result<u64, ClientError> {
    let key = shared.keys.lease(shard);
    let node_id = shared.config.node_id.clone();
    let lease_ms = shared.config.lease_timeout_ms;
    let epoch = transact(&shared.store, &TransactOptions::default(), |tx, _| {
        let (key, node_id) = (key.clone(), node_id.clone());
        Box::pin(async move {
            let previous = match tx.get(&key).await? {
                Some(bytes) => decode::<Lease>("lease", &bytes)?.epoch,
                None => 0,
            };
            let lease = Lease {
                node_id,
                epoch: previous + 1,
                expires_unix_ms: now_ms() + lease_ms,
            };
            tx.set(&key, &encode(&lease))?;
            Ok::<_, StoreError>(lease.epoch)
        })
    })
    .await?;
    Ok(epoch)
}

/// After a (re)start: wakes runs with mailbox entries, loads timers, re-dispatches tasks.
async fn recover_shard<S: Store>(
    shared: &Arc<Shared<S>>,
    shard: u32,
    epoch: u64,
) -> Result<(), ClientError> {
    let keys = &shared.keys;
    let shard_ref = shared.shard(shard).clone();
    let mut tx = shared.store.begin()?;
    let (begin, end) = keys.inbox_of_shard(shard);
    let inbox = tx
        .get_range(&RangeRequest::new(begin, end).snapshot())
        .await?;
    let runs: BTreeSet<RunId> = inbox
        .iter()
        .filter_map(|kv| keys.inbox_run(&kv.key))
        .collect();
    let (begin, end) = keys.timers_of_shard(shard);
    let timers = tx
        .get_range(&RangeRequest::new(begin, end).snapshot())
        .await?;
    let (begin, end) = keys.tasks_of_shard(shard);
    let tasks = tx
        .get_range(&RangeRequest::new(begin, end).snapshot())
        .await?;
    drop(tx);
    for run_id in runs {
        let _ = shard_ref.cast(ShardMsg::Wake { run_id });
    }
    let entries: Vec<TimerEntry> = timers
        .iter()
        .filter_map(|kv| {
            let (fire_at, run_id, timer) = keys.parse_timer(&kv.key)?;
            Some(TimerEntry {
                fire_at_unix_ms: fire_at,
                run_id,
                timer,
                key: kv.key.clone(),
            })
        })
        .collect();
    // Attempt timers armed by the previous owner's claims, by (run, activity, attempt).
    let mut claims: HashMap<(RunId, Seq, u32), Vec<Vec<u8>>> = HashMap::new();
    for entry in &entries {
        if let TimerId::ActivityStartToClose { seq, attempt }
        | TimerId::ActivityHeartbeat { seq, attempt } = entry.timer
        {
            claims
                .entry((entry.run_id, seq, attempt))
                .or_default()
                .push(entry.key.clone());
        }
    }
    if !entries.is_empty() {
        let _ = shard_ref.cast(ShardMsg::AddTimers(entries));
    }
    for kv in tasks {
        let task: TaskRecord = decode("task", &kv.value)?;
        let stale = claims
            .remove(&(task.run_id, task.seq, task.attempt))
            .unwrap_or_default();
        shared
            .workers
            .dispatch_recovered(shared.clone(), epoch, task, stale);
    }
    Ok(())
}
