//! The node: starts the committer, joins the cluster (membership, shard placement, leases —
//! see `cluster`), and serves the client operations. Any node can serve any client call:
//! starts, signals and cancellations go through the store (the shard's holder is woken), and
//! queries are forwarded to the holder.

use crate::Metrics;
use crate::cluster::{self, ClusterStatus, Route};
use crate::committer::{Committer, CommitterArgs};
use crate::config::NodeConfig;
use crate::error::ClusterError;
use crate::error::{ClientError, IdReusePolicy};
use crate::keys::Keys;
use crate::membership::{Cluster, Ownership};
use crate::ops::{Check, CommitError, Op, Verify};
use crate::peers::{PeerError, PeerQuery, QueryTarget};
use crate::pool::Workers;
use crate::records::{
    InboxItem, NewRun, Outcome, RunRecord, Stored, WorkflowRecord, clear_record_ops, decode,
    decode_row, encode, load_record,
};
use crate::registry::Registry;
use crate::schedules::{self, CreateSchedule, ScheduleDescription, ScheduleRecord, must_exist};
use crate::shared::Shared;
use crate::visibility::{
    LIST_PAGE_SIZE_DEFAULT, LIST_PAGE_SIZE_MAX, Visibility, WorkflowPage, WorkflowSummary,
    decode_page_token, status_name,
};
use cairn_core::schedule::OverlapPolicy;
use cairn_core::visibility::{CompareOp, Condition, Filter};
use cairn_core::{Message, PendingActivity, PendingChild, RunStatus};
use cairn_store::{RangeRequest, Store, StoreError, Transaction};
use cairn_types::{
    HistoryEvent, Payload, RunId, SearchAttributes, SearchValue, Seq, WorkflowId, WorkflowTimeouts,
};
use ractor::Actor;
use ractor::thread_local::ThreadLocalActorSpawner;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Times a message to a workflow is sent on to the id's next run when the run it was
/// addressed to closed (or continued as new) before the message committed.
pub const MESSAGE_RETARGETS_MAX: u32 = 3;

/// A request to start a workflow.
#[derive(Debug, Clone)]
pub struct StartWorkflow {
    pub workflow_id: WorkflowId,
    pub workflow_type: String,
    pub input: Payload,
    pub id_reuse_policy: IdReusePolicy,
    pub timeouts: WorkflowTimeouts,
    /// The client's id for this request: a start repeated with the same id (a retry after a
    /// lost answer) answers the run the first one started instead of `AlreadyRunning`.
    pub request_id: Option<String>,
    /// Run the workflow's code in remote workers polling this task queue (Temporal SDK
    /// workers through the gRPC frontend) instead of this node's registered code.
    pub remote: Option<crate::RemoteStart>,
    /// The run's memo: notes shown by describe and list, never queried.
    pub memo: cairn_types::Memo,
    /// The run's search attributes from its start (indexed and listable at once). An
    /// attribute declared on this node must have its declared type.
    pub search_attributes: SearchAttributes,
    /// Temporal's `cron_schedule`: each run waits for the expression's next time, and a
    /// run that completes, fails or times out starts the next
    /// (`cairn_core::schedule::CronSchedule` says what it accepts).
    pub cron_schedule: Option<String>,
}

/// Most bytes of a start's `request_id`.
pub const REQUEST_ID_BYTES_MAX: usize = 256;

pub use cairn_types::limits::INLINE_PAYLOAD_BYTES_MAX;

/// A workflow's current run in detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    pub summary: WorkflowSummary,
    pub pending_activities: Vec<(Seq, PendingActivity)>,
    /// Child workflows started and not yet heard the end of.
    pub pending_children: Vec<(Seq, PendingChild)>,
    pub history_length: u64,
    pub outcome: Option<Outcome>,
    /// The parent, for a child workflow.
    pub parent: Option<(WorkflowId, RunId)>,
    /// The run this one continues (continue-as-new).
    pub previous_run: Option<RunId>,
    pub search_attributes: SearchAttributes,
    /// Where the run's workflow tasks go, if its code runs in remote workers.
    pub remote: Option<crate::RemoteStart>,
}

/// One run's history as [`Node::run_history`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunHistory {
    pub run_id: RunId,
    pub events: Vec<HistoryEvent>,
    /// How the run ended, once it has.
    pub outcome: Option<Outcome>,
    pub started_unix_ms: u64,
    /// Where the run's workflow tasks go, if its code runs in remote workers.
    pub remote: Option<crate::RemoteStart>,
    /// The run this one continues (continue-as-new or a cron schedule), if any.
    pub previous_run: Option<RunId>,
    /// The run its cron schedule started after this one, if any.
    pub next_run: Option<RunId>,
    /// The parent, for a child workflow's run.
    pub parent: Option<(WorkflowId, RunId)>,
}

/// A running Cairn node.
pub struct Node<S: Store> {
    pub(crate) shared: Arc<Shared<S>>,
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
            },
        )
        .await
        .map_err(|_| ClientError::NodeStopped)?;
        let spawners = (0..config.executor_threads)
            .map(|_| ThreadLocalActorSpawner::new())
            .collect();
        let commit_slots = config.commit_requests_queued_max.max(1);
        let cluster = Cluster::new(ownership, &config);
        let shared = Arc::new(Shared {
            store,
            keys,
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
            config,
            registry,
            metrics,
            committer,
            runtime: tokio::runtime::Handle::current(),
            cluster,
            spawners,
            waiters: Mutex::new(BTreeMap::new()),
            client_commits: std::sync::atomic::AtomicUsize::new(0),
            commit_slots: Arc::new(tokio::sync::Semaphore::new(commit_slots)),
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
        Ok(Self { shared })
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

    /// The oldest activity attempt waiting for a remote worker in `task_queue`, waiting up to
    /// `wait` (at most [`crate::ACTIVITY_POLL_WAIT_MAX_MS`]) for one; `None` if none came.
    /// Attempts wait here only with `NodeConfig::remote_activities`. With peers configured,
    /// attempts waiting at the other nodes are taken too (see [`crate::PEER_POLL_SLICE_MS`]).
    pub async fn poll_activity_task(
        &self,
        task_queue: &str,
        wait: Duration,
    ) -> Result<Option<crate::RemoteActivityTask>, crate::MatchingError> {
        let call = crate::PeerTaskCall::TakeActivityTask {
            task_queue: task_queue.to_string(),
        };
        let pick = |answer| match answer {
            crate::PeerTaskAnswer::ActivityTask(task) => task,
            _ => None,
        };
        self.shared
            .poll_cluster(
                wait,
                |w| self.shared.matching.poll(task_queue, w),
                call,
                pick,
            )
            .await
    }

    /// The oldest owed workflow task of a remote run in `task_queue`, waiting up to `wait` (at
    /// most [`crate::ACTIVITY_POLL_WAIT_MAX_MS`]) for one; `None` if none came. The task is
    /// then held by the caller until it completes or fails it, or its timeout passes. With
    /// peers configured, tasks owed at the other nodes are taken too.
    pub async fn poll_workflow_task(
        &self,
        task_queue: &str,
        wait: Duration,
    ) -> Result<Option<crate::WorkflowTask>, crate::MatchingError> {
        let call = crate::PeerTaskCall::TakeWorkflowTask {
            task_queue: task_queue.to_string(),
        };
        let pick = |answer| match answer {
            crate::PeerTaskAnswer::WorkflowTask(task) => task,
            _ => None,
        };
        self.shared
            .poll_cluster(
                wait,
                |w| self.shared.take_local_workflow_task(task_queue, w),
                call,
                pick,
            )
            .await
    }

    /// Where an answer to the task `token` names goes: `None` here, or the address of the
    /// live node that handed it out.
    async fn task_holder(
        &self,
        token: &str,
    ) -> Result<Option<(String, crate::PeersHandle)>, crate::MatchingError> {
        // This node's own tokens are recognised whole (a node id may contain '/').
        let own = token.split_once('/').is_some_and(|(_, rest)| {
            rest.strip_prefix(self.shared.config.node_id.as_str())
                .is_some_and(|r| r.starts_with('/'))
        });
        if own {
            return Ok(None);
        }
        let node = crate::remote_tasks::token_node(token).ok_or(crate::MatchingError::NotFound)?;
        let peers = self
            .shared
            .config
            .peers
            .clone()
            .ok_or(crate::MatchingError::NotFound)?;
        let address = self
            .shared
            .node_address(node)
            .await
            .ok_or(crate::MatchingError::NotFound)?;
        Ok(Some((address, peers)))
    }

    /// Forwards `call` to the node at `address`.
    async fn forward_task(
        &self,
        (address, peers): (String, crate::PeersHandle),
        call: crate::PeerTaskCall,
    ) -> Result<crate::PeerTaskAnswer, crate::MatchingError> {
        match peers.0.task(&address, call).await {
            Ok(crate::PeerTaskAnswer::Refused(e)) => Err(e),
            Ok(answer) => Ok(answer),
            Err(_) => Err(crate::MatchingError::WorkflowTaskUnavailable),
        }
    }

    /// A worker's completion of the workflow task `token` names, with its commands (their
    /// sequence numbers as the worker's SDK assigned them); answers once it committed. With
    /// `new_task`, the next task is owed at once.
    pub async fn complete_workflow_task(
        &self,
        token: &str,
        commands: Vec<cairn_types::Command>,
        query_results: Vec<(u64, Result<Payload, String>)>,
        new_task: bool,
        rejections: Vec<(String, cairn_types::Failure)>,
    ) -> Result<(), crate::MatchingError> {
        match self.task_holder(token).await? {
            None => {
                self.shared
                    .complete_local_workflow_task(
                        token,
                        commands,
                        query_results,
                        new_task,
                        rejections,
                    )
                    .await
            }
            Some(holder) => {
                let call = crate::PeerTaskCall::CompleteWorkflowTask {
                    token: token.to_string(),
                    commands,
                    query_results,
                    new_task,
                    rejections,
                };
                self.forward_task(holder, call).await.map(|_| ())
            }
        }
    }

    /// The committed history of the run whose workflow task `token` names (what a completion's
    /// commands refer to by event).
    pub async fn workflow_task_history(
        &self,
        token: &str,
    ) -> Result<(RunId, Vec<HistoryEvent>), crate::MatchingError> {
        let run_id = crate::matching::token_run(token)?;
        let (begin, end) = self.shared.keys.history(&run_id);
        let read = async {
            let mut tx = self.shared.store.begin()?;
            let rows = tx
                .get_range(&RangeRequest::new(begin, end).snapshot())
                .await?;
            rows.iter()
                .map(|kv| decode::<HistoryEvent>("history event", &kv.value))
                .collect::<Result<Vec<_>, StoreError>>()
        };
        let history = read
            .await
            .map_err(|_| crate::MatchingError::WorkflowTaskUnavailable)?;
        Ok((run_id, history))
    }

    /// A worker's answer to the query task `token` names (`Err`: the query failed, with why).
    pub async fn answer_query_task(
        &self,
        token: &str,
        answer: Result<Payload, String>,
    ) -> Result<(), crate::MatchingError> {
        match self.task_holder(token).await? {
            None => self.shared.answer_local_query_task(token, answer),
            Some(holder) => {
                let call = crate::PeerTaskCall::AnswerQueryTask {
                    token: token.to_string(),
                    answer,
                };
                self.forward_task(holder, call).await.map(|_| ())
            }
        }
    }

    /// A worker failed the workflow task `token` names (with `failure`, recorded in the
    /// history for the task's first attempt): it is handed out again.
    pub async fn fail_workflow_task(
        &self,
        token: &str,
        failure: Option<cairn_types::Failure>,
    ) -> Result<(), crate::MatchingError> {
        match self.task_holder(token).await? {
            None => self.shared.fail_local_workflow_task(token, failure),
            Some(holder) => {
                let call = crate::PeerTaskCall::FailWorkflowTask {
                    token: token.to_string(),
                    failure,
                };
                self.forward_task(holder, call).await.map(|_| ())
            }
        }
    }

    /// Remote runs queued for a workflow task on this node.
    pub fn workflow_tasks_queued(&self) -> usize {
        self.shared.matching.workflow_tasks_queued()
    }

    /// Activity attempts waiting for a remote worker or held by one.
    pub fn remote_activity_tasks(&self) -> usize {
        self.shared.matching.tasks()
    }

    /// A remote worker's answer to the attempt it polled (`token`).
    pub async fn answer_activity_task(
        &self,
        token: &str,
        outcome: crate::RemoteOutcome,
    ) -> Result<(), crate::MatchingError> {
        match self.task_holder(token).await? {
            None => self.shared.matching.answer(token, outcome),
            Some(holder) => {
                let call = crate::PeerTaskCall::AnswerActivityTask {
                    token: token.to_string(),
                    outcome,
                };
                self.forward_task(holder, call).await.map(|_| ())
            }
        }
    }

    /// A remote worker's heartbeat; answers whether the workflow asked the activity to stop.
    pub async fn heartbeat_activity_task(
        &self,
        token: &str,
        details: Payload,
    ) -> Result<bool, crate::MatchingError> {
        match self.task_holder(token).await? {
            None => self.shared.matching.heartbeat(token, details),
            Some(holder) => {
                let call = crate::PeerTaskCall::HeartbeatActivityTask {
                    token: token.to_string(),
                    details,
                };
                match self.forward_task(holder, call).await? {
                    crate::PeerTaskAnswer::Heartbeat { cancel_requested } => Ok(cancel_requested),
                    _ => Err(crate::MatchingError::NotFound),
                }
            }
        }
    }

    /// The token of the attempt of activity `seq` of the workflow's current run (or `run_id`)
    /// that a remote worker holds, for answers by id.
    pub async fn activity_task_token(
        &self,
        workflow_id: &WorkflowId,
        run_id: Option<RunId>,
        seq: Seq,
    ) -> Result<String, ClientError> {
        let run_id = match run_id {
            Some(run_id) => run_id,
            None => self.current(workflow_id).await?.run_id,
        };
        self.shared
            .matching
            .token_of(&run_id, seq)
            .map_err(|_| ClientError::NotFound {
                workflow_id: format!("{workflow_id} (activity {seq} held by a remote worker)"),
            })
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

    /// The registered workflow and activity types.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Starts a workflow run. Fails, writing nothing, if the type is unknown, the input is too
    /// large, the timeouts are inconsistent, or the id-reuse policy forbids a new run.
    pub async fn start_workflow(&self, request: StartWorkflow) -> Result<RunId, ClientError> {
        let shared = &self.shared;
        if request.remote.is_none() {
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
            shared
                .registry
                .check_input(&request.workflow_type, &request.input)
                .map_err(|reason| ClientError::InputDoesNotDecode {
                    workflow_type: request.workflow_type.clone(),
                    reason,
                })?;
        }
        check_payload("workflow input", &request.input)?;
        cairn_types::memo::validate_memo(&request.memo)?;
        self.check_search_attributes(&request.search_attributes)?;
        check_start_bytes(&request.input, &request.memo, &request.search_attributes)?;
        let workflow_type = request.workflow_type.clone();
        let timeouts = request.timeouts.validate()?;
        if let Some(id) = &request.request_id
            && id.len() > REQUEST_ID_BYTES_MAX
        {
            return Err(ClientError::PayloadTooLarge {
                what: "request_id",
                len: id.len(),
                max: REQUEST_ID_BYTES_MAX,
            });
        }
        let shard = shared.shard_of(&request.workflow_id);
        let namespace = shared.config.namespace.clone();
        let now = self.shared.now_ms();
        let run = NewRun::new(
            &namespace,
            request.workflow_id.clone(),
            &request.workflow_type,
            request.input.clone(),
            timeouts,
            now,
            shared.config.entropy.run_id(now),
        );
        let mut run = run.with(request.memo.clone(), request.search_attributes.clone());
        run.record.start.cron = match &request.cron_schedule {
            Some(expression) => {
                let schedule =
                    cairn_core::schedule::CronSchedule::parse(expression).map_err(|e| {
                        ClientError::InvalidCronSchedule {
                            reason: e.to_string(),
                        }
                    })?;
                let first_task_backoff_ms = schedule.backoff_ms(now, now).ok_or_else(|| {
                    ClientError::InvalidCronSchedule {
                        reason: format!("{expression:?} has no time after now"),
                    }
                })?;
                Some(cairn_types::CronRun {
                    schedule: expression.clone(),
                    first_task_backoff_ms,
                    last_completion_result: None,
                    continued_failure: None,
                })
            }
            None => None,
        };
        run.record.start.request_id = request.request_id.clone();
        run.record.start.remote = request.remote.clone();
        let run_id = run.run_id;
        let keys = shared.keys.clone();
        let wf_key = keys.workflow(&namespace, request.workflow_id.as_str());
        let policy = request.id_reuse_policy;
        let workflow_id = request.workflow_id.clone();
        // One commit request, batched with everything else; the id-reuse check runs inside the
        // batch transaction, after earlier requests of the same batch.
        let check = Check::key(wf_key.clone(), move |existing: Option<&[u8]>| {
            let Some(bytes) = existing else {
                return Ok(());
            };
            let existing: WorkflowRecord = decode("workflow", bytes)?;
            if existing.run_id == run_id {
                // This very start, committed by an attempt that reported MaybeCommitted.
                return Ok(());
            }
            crate::records::check_reuse(&workflow_id, &existing, policy)
        });
        // Most starts are of new ids; a reused id is re-planned inside the commit.
        let ops = run.writes(&keys, shard, crate::visibility::Replacing::Nothing);
        let verify = Some((keys.run(&run_id), Verify::RunVersionAtLeast(0)));
        match self.submit(ops, vec![check], verify).await {
            Ok(()) => {}
            Err(ClientError::AlreadyRunning {
                run_id: running, ..
            }) if request.request_id.is_some()
                && self.start_request_id(&running).await.ok().flatten() == request.request_id =>
            {
                // The same request again: its run, not a conflict.
                return Ok(running);
            }
            Err(e) => return Err(e),
        }
        shared.metrics.record_started(&workflow_type);
        Ok(run_id)
    }

    /// Checks search attributes a client gives: bounds, and the declared type of each
    /// attribute this node declares.
    pub fn check_search_attributes(
        &self,
        attributes: &SearchAttributes,
    ) -> Result<(), ClientError> {
        let bad = |reason: String| ClientError::InvalidSearchAttributes { reason };
        cairn_types::search::validate_search_attributes(attributes)
            .map_err(|e| bad(e.to_string()))?;
        for (name, value) in attributes {
            if let Some(declared) = self.shared.registry.search_attribute_type(name)
                && declared != value.search_type()
            {
                return Err(bad(format!(
                    "{name:?} is declared {} on this node, not {}",
                    declared.name(),
                    value.search_type().name()
                )));
            }
        }
        Ok(())
    }

    /// The request id a run was started with.
    async fn start_request_id(&self, run_id: &RunId) -> Result<Option<String>, ClientError> {
        let mut tx = self.shared.store.begin()?;
        Ok(self.run_in(&mut tx, run_id).await?.start.request_id)
    }

    /// A client request's writes, unfenced, through the committer.
    async fn submit(
        &self,
        ops: Vec<Op>,
        checks: Vec<Check>,
        verify: Option<(Vec<u8>, Verify)>,
    ) -> Result<(), ClientError> {
        use std::sync::atomic::Ordering;
        /// Gives the slot back however the request ends (answered, or its caller gone).
        struct Slot<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Slot<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let in_flight = self.shared.client_commits.fetch_add(1, Ordering::Relaxed);
        let _slot = Slot(&self.shared.client_commits);
        // Refused at either bound: this node's client writes, or its committer's queue.
        let slot = if in_flight < crate::shared::CLIENT_COMMITS_IN_FLIGHT_MAX {
            self.shared.try_commit_slot()
        } else {
            None
        };
        let Some(slot) = slot else {
            return Err(ClientError::Overloaded {
                in_flight,
                retry_after_ms: crate::shared::OVERLOADED_RETRY_AFTER_MS,
            });
        };
        match self.shared.commit_in(slot, ops, checks, None, verify).await {
            Ok(()) => Ok(()),
            Err(CommitError::Rejected(error)) => Err(*error),
            Err(CommitError::Store(error)) => Err(ClientError::Store(error)),
            Err(CommitError::Fenced { .. } | CommitError::Stopped) => Err(ClientError::NodeStopped),
        }
    }

    async fn current(&self, workflow_id: &WorkflowId) -> Result<WorkflowRecord, ClientError> {
        let mut tx = self.shared.store.begin()?;
        self.current_in(&mut tx, workflow_id).await
    }

    /// The workflow id's current run, read in `tx`.
    async fn current_in(
        &self,
        tx: &mut S::Tx,
        workflow_id: &WorkflowId,
    ) -> Result<WorkflowRecord, ClientError> {
        let key = self
            .shared
            .keys
            .workflow(&self.shared.config.namespace, workflow_id.as_str());
        let bytes = tx
            .get_snapshot(&key)
            .await?
            .ok_or_else(|| ClientError::NotFound {
                workflow_id: workflow_id.to_string(),
            })?;
        Ok(decode("workflow", &bytes)?)
    }

    /// A run's record, read in `tx`.
    async fn run_in(&self, tx: &mut S::Tx, run_id: &RunId) -> Result<RunRecord, ClientError> {
        let key = self.shared.keys.run(run_id);
        match load_record(tx, &self.shared.keys, &key, "run").await? {
            Some((record, _)) => Ok(record),
            None => Err(missing_run(run_id)),
        }
    }

    async fn run_record(&self, run_id: &RunId) -> Result<RunRecord, ClientError> {
        let mut tx = self.shared.store.begin()?;
        self.run_in(&mut tx, run_id).await
    }

    /// Puts a message in the mailbox of the workflow's current run, exactly once even when the
    /// store reports `MaybeCommitted` (a request id guards the write).
    async fn send_message(
        &self,
        workflow_id: &WorkflowId,
        message: Message,
    ) -> Result<RunId, ClientError> {
        let shared = &self.shared;
        let shard = shared.shard_of(workflow_id);
        let keys = shared.keys.clone();
        let wf_key = keys.workflow(&shared.config.namespace, workflow_id.as_str());
        let item = encode(&InboxItem::Message(message));
        let mut tries = 0;
        loop {
            tries += 1;
            let current = self.current(workflow_id).await?;
            if current.is_closed() {
                return Err(ClientError::NotRunning {
                    workflow_id: workflow_id.to_string(),
                    status: current.status,
                });
            }
            let run_id = current.run_id;
            let request_id = self.shared.config.entropy.uuid_v7(self.shared.now_ms());
            let guard = keys.request_guard(&run_id, &request_id);
            // Batched like everything else. The guard key, written only by this request, tells
            // a retry after `MaybeCommitted` whether the message is already in the mailbox.
            let ops = vec![
                Op::Set(guard.clone(), Vec::new()),
                Op::Mail {
                    shard,
                    run_id,
                    item: item.clone(),
                },
            ];
            // The run must still be open inside the commit: mail acknowledged to a run that
            // closed first would never reach its history. A close committed after this read
            // conflicts with it (and the run's closing commit checks its mailbox in turn).
            let id = workflow_id.to_string();
            let open = Check::key(wf_key.clone(), move |bytes: Option<&[u8]>| {
                let record: Option<WorkflowRecord> =
                    bytes.map(|b| decode("workflow", b)).transpose()?;
                match record {
                    Some(r) if r.run_id == run_id && !r.is_closed() => Ok(()),
                    other => Err(ClientError::NotRunning {
                        workflow_id: id.clone(),
                        status: other.and_then(|r| r.status),
                    }),
                }
            });
            match self
                .submit(ops, vec![open], Some((guard, Verify::Exists)))
                .await
            {
                // The run closed, or continued as new, after it was read: the id's new
                // current run (if open) takes the message.
                Err(ClientError::NotRunning { .. }) if tries < MESSAGE_RETARGETS_MAX => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(run_id),
            }
        }
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
    /// closed), on whichever node holds the run's shard. While the shard moves the query is
    /// retried; after `lease_timeout_ms` plus two seconds without an answer it fails with
    /// [`ClientError::ShardUnavailable`].
    pub async fn query(
        &self,
        workflow_id: &WorkflowId,
        name: &str,
        args: Payload,
    ) -> Result<Payload, ClientError> {
        let shared = &self.shared;
        let current = self.current(workflow_id).await?;
        let shard = shared.shard_of(workflow_id);
        let query = PeerQuery {
            workflow_id: workflow_id.clone(),
            run_id: current.run_id,
            name: name.to_string(),
            args,
        };
        self.at_shard_holder(
            shard,
            || shared.answer_query(query.clone()),
            |peers, address| {
                shared
                    .metrics
                    .queries_forwarded
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let query = query.clone();
                async move { peers.0.query(&address, query).await }
            },
        )
        .await
    }

    /// Runs a call on the node holding `shard`: `here()` when this node holds it,
    /// `there(peers, address)` forwarded to its holder otherwise. An answer, or the call's own
    /// error (`PeerError::Query`, `PeerError::Update`), is final; anything else (the shard
    /// moved, the holder is unreachable) is retried, backing off, until `lease_timeout_ms`
    /// plus two seconds have passed: then [`ClientError::ShardUnavailable`].
    pub(crate) async fn at_shard_holder<T, H, HF, R, RF>(
        &self,
        shard: u32,
        here: H,
        there: R,
    ) -> Result<T, ClientError>
    where
        H: Fn() -> HF,
        HF: std::future::Future<Output = Result<T, PeerError>>,
        R: Fn(crate::PeersHandle, String) -> RF,
        RF: std::future::Future<Output = Result<T, PeerError>>,
    {
        let shared = &self.shared;
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(shared.config.lease_timeout_ms)
            + Duration::from_secs(2);
        let mut pause = Duration::from_millis(20);
        let end = |answer: Result<T, PeerError>| match answer {
            Ok(answer) => Ok(Ok(answer)),
            Err(PeerError::Query(e)) => Ok(Err(ClientError::Query(e))),
            Err(PeerError::Update(e)) => Ok(Err(ClientError::Update(e))),
            Err(e) => Err(e.to_string()),
        };
        loop {
            let reason = if shared.shard(shard).is_some() {
                match end(here().await) {
                    Ok(answer) => return answer,
                    Err(reason) => reason,
                }
            } else {
                match cluster::route(shared, shard).await? {
                    Route::Node { node_id, address } => match (&shared.config.peers, address) {
                        (Some(peers), Some(address)) => {
                            match end(there(peers.clone(), address.clone()).await) {
                                Ok(answer) => return answer,
                                Err(reason) => format!("node {node_id} at {address}: {reason}"),
                            }
                        }
                        (None, _) => {
                            return Err(ClientError::ShardUnavailable {
                                shard,
                                reason: format!(
                                    "node {node_id} holds it and this node has no transport to other nodes (NodeConfig::peers)"
                                ),
                            });
                        }
                        (_, None) => format!("node {node_id} holds it but advertises no address"),
                    },
                    Route::Nobody => "no live node holds it (it is moving)".to_string(),
                }
            };
            if tokio::time::Instant::now() + pause > deadline {
                return Err(ClientError::ShardUnavailable { shard, reason });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Waits for the current run of `workflow_id` to close and returns how it ended,
    /// following continue-as-new to the run that ends the chain. Works from any node: a run on
    /// a shard held here is awaited in memory, one held elsewhere through a store watch.
    pub async fn result(&self, workflow_id: &WorkflowId) -> Result<Outcome, ClientError> {
        let mut run_id = self.current(workflow_id).await?.run_id;
        loop {
            match self.run_result(workflow_id, run_id).await? {
                Outcome::ContinuedAsNew { new_run_id } => run_id = new_run_id,
                outcome => return Ok(outcome),
            }
        }
    }

    /// The workflow type of the workflow id's current run (one read).
    pub async fn current_workflow_type(
        &self,
        workflow_id: &WorkflowId,
    ) -> Result<String, ClientError> {
        Ok(self.current(workflow_id).await?.workflow_type)
    }

    /// The id of the workflow id's current run (one read).
    pub async fn current_run_id(&self, workflow_id: &WorkflowId) -> Result<RunId, ClientError> {
        Ok(self.current(workflow_id).await?.run_id)
    }

    /// Waits for run `run_id` of `workflow_id` to close and returns how it ended (a run that
    /// continued as new answers [`Outcome::ContinuedAsNew`]; nothing is followed).
    pub async fn run_outcome(
        &self,
        workflow_id: &WorkflowId,
        run_id: RunId,
    ) -> Result<Outcome, ClientError> {
        let mut tx = self.shared.store.begin()?;
        let key = self.shared.keys.run(&run_id);
        match load_record::<RunRecord>(&mut tx, &self.shared.keys, &key, "run").await? {
            Some((record, _)) if &record.workflow_id == workflow_id => {}
            _ => {
                return Err(ClientError::NotFound {
                    workflow_id: format!("{workflow_id} (run {run_id})"),
                });
            }
        }
        self.run_result(workflow_id, run_id).await
    }

    /// One run's history and outcome so far: run `run_id` of `workflow_id`, or its current
    /// run. [`ClientError::NotFound`] if the run is not one of that workflow id.
    pub async fn run_history(
        &self,
        workflow_id: &WorkflowId,
        run_id: Option<RunId>,
    ) -> Result<RunHistory, ClientError> {
        let mut tx = self.shared.store.begin()?;
        let run_id = match run_id {
            Some(run_id) => run_id,
            None => self.current_in(&mut tx, workflow_id).await?.run_id,
        };
        let key = self.shared.keys.run(&run_id);
        let record = match load_record::<RunRecord>(&mut tx, &self.shared.keys, &key, "run").await?
        {
            Some((record, _)) if &record.workflow_id == workflow_id => record,
            _ => {
                return Err(ClientError::NotFound {
                    workflow_id: format!("{workflow_id} (run {run_id})"),
                });
            }
        };
        let (begin, end) = self.shared.keys.history(&run_id);
        let rows = tx
            .get_range(&RangeRequest::new(begin, end).snapshot())
            .await?;
        let events = rows
            .iter()
            .map(|kv| decode("history event", &kv.value))
            .collect::<Result<_, _>>()?;
        Ok(RunHistory {
            run_id,
            events,
            outcome: record.outcome,
            started_unix_ms: record.created_unix_ms,
            remote: record.start.remote,
            previous_run: record.previous_run,
            next_run: record.next_run,
            parent: record.parent.map(|p| (p.workflow_id, p.run_id)),
        })
    }

    /// How run `run_id` of `workflow_id` ended, once it has.
    async fn run_result(
        &self,
        workflow_id: &WorkflowId,
        run_id: RunId,
    ) -> Result<Outcome, ClientError> {
        let shard = self.shared.shard_of(workflow_id);
        loop {
            if self.shared.shard(shard).is_some() {
                // Declared before the receiver, so it drops after it: a waiter that gives up
                // (its caller timed out) leaves no entry behind.
                let _slot = WaiterSlot {
                    shared: &self.shared,
                    run_id,
                };
                let (tx, rx) = oneshot::channel();
                self.shared
                    .waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(run_id)
                    .or_default()
                    .push((shard, tx));
                // Registered first, checked second: a close between the two is not missed; and
                // a shard lost in between is caught by the ownership check after.
                let record = self.run_record(&run_id).await?;
                if let Some(outcome) = record.outcome {
                    return Ok(outcome);
                }
                if self.shared.shard(shard).is_none() {
                    continue;
                }
                match rx.await {
                    Ok(Some(outcome)) => return Ok(outcome),
                    // The shard left this node (or the node stops): watch the store instead.
                    Ok(None) => continue,
                    Err(_) => return Err(ClientError::NodeStopped),
                }
            }
            // Held elsewhere: watch the workflow record, which changes only when the run first
            // runs and when it closes (not on every transition, as the run record does), armed
            // in the transaction that reads both, so nothing slips between read and watch.
            let wf_key = self
                .shared
                .keys
                .workflow(&self.shared.config.namespace, workflow_id.as_str());
            let run_key = self.shared.keys.run(&run_id);
            let armed = async {
                let mut tx = self.shared.store.begin()?;
                let _ = tx.get_snapshot(&wf_key).await?;
                let record =
                    load_record::<RunRecord>(&mut tx, &self.shared.keys, &run_key, "run").await?;
                let watch = tx.watch(&wf_key)?;
                tx.commit().await?;
                Ok::<_, StoreError>((record, watch))
            }
            .await;
            let (record, watch) = match armed {
                Ok(armed) => armed,
                Err(e) if e.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if let Some((record, _)) = record
                && let Some(outcome) = record.outcome
            {
                return Ok(outcome);
            }
            // Re-check ownership now and then: the shard may have come to this node.
            let _ = tokio::time::timeout(
                Duration::from_millis(self.shared.config.lease_timeout_ms),
                watch,
            )
            .await;
        }
    }

    /// The current run's summary, pending activities and history length.
    pub async fn describe(&self, workflow_id: &WorkflowId) -> Result<Description, ClientError> {
        // Both records from one snapshot, so the summary and the pending work agree.
        let mut tx = self.shared.store.begin()?;
        let current = self.current_in(&mut tx, workflow_id).await?;
        let record = self.run_in(&mut tx, &current.run_id).await?;
        let state = record.state.as_ref();
        let mut summary = WorkflowSummary::from_record(workflow_id.to_string(), current);
        // The run's own snapshot is fresher than its workflow record between writes of the
        // latter.
        summary.status = state.map(|s| s.status).or(summary.status);
        summary.closed_unix_ms = state
            .and_then(|s| s.closed_unix_ms)
            .or(summary.closed_unix_ms);
        if let Some(state) = state {
            summary.history_length = state.next_event_id - 1;
            summary.memo.clone_from(&state.memo);
        }
        Ok(Description {
            summary,
            pending_activities: state
                .map(|s| s.activities.iter().map(|(k, v)| (*k, v.clone())).collect())
                .unwrap_or_default(),
            pending_children: state
                .map(|s| s.children.iter().map(|(k, v)| (*k, v.clone())).collect())
                .unwrap_or_default(),
            history_length: state.map_or(0, |s| s.next_event_id - 1),
            outcome: record.outcome,
            parent: record.parent.map(|p| (p.workflow_id, p.run_id)),
            previous_run: record.previous_run,
            search_attributes: state.map_or_else(
                || record.start.search_attributes.clone(),
                |s| s.search_attributes.clone(),
            ),
            remote: record.start.remote,
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

    /// Workflows of this namespace, optionally of one type and/or status, newest first, a
    /// page at a time (see [`Self::list_workflows`]).
    pub async fn list(
        &self,
        workflow_type: Option<&str>,
        status: Option<RunStatus>,
        page_size: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<WorkflowPage, ClientError> {
        let mut condition = Condition::True;
        let mut and = |c: Condition| {
            condition = match std::mem::replace(&mut condition, Condition::True) {
                Condition::True => c,
                other => Condition::And(Box::new(other), Box::new(c)),
            };
        };
        if let Some(t) = workflow_type {
            and(Condition::Compare(
                "WorkflowType".into(),
                CompareOp::Eq,
                SearchValue::Keyword(t.into()),
            ));
        }
        if let Some(s) = status {
            and(Condition::Compare(
                "ExecutionStatus".into(),
                CompareOp::Eq,
                SearchValue::Keyword(status_name(Some(s)).into()),
            ));
        }
        let filter = Filter {
            condition,
            order: Vec::new(),
        };
        self.list_filtered(&filter, page_size, page_token).await
    }

    /// Parses `query` in the visibility filter language against the built-in attributes and
    /// those registered on this node.
    pub fn parse_query(&self, query: &str) -> Result<Filter, ClientError> {
        let registry = &self.shared.registry;
        Ok(Filter::parse(query, &|name| {
            registry.search_attribute_type(name)
        })?)
    }

    /// The workflows matching `query` (see `cairn_core::visibility`), in its `ORDER BY` order
    /// (newest first without one), `page_size` at a time (default 100, at most 1,000).
    /// Visibility records and their indexes are written in the same transactions as the runs,
    /// so a page is never stale; pages are keyset-paged, so a workflow started meanwhile does
    /// not shift them. A page reads O(page) keys when the query names an indexed equality
    /// (see `visibility`), and may come back short (even empty) with a token after examining
    /// `LIST_SCAN_ENTRIES_MAX` entries.
    pub async fn list_workflows(
        &self,
        query: &str,
        page_size: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<WorkflowPage, ClientError> {
        let filter = self.parse_query(query)?;
        self.list_filtered(&filter, page_size, page_token).await
    }

    async fn list_filtered(
        &self,
        filter: &Filter,
        page_size: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<WorkflowPage, ClientError> {
        let page_size = page_size.unwrap_or(LIST_PAGE_SIZE_DEFAULT);
        if !(1..=LIST_PAGE_SIZE_MAX).contains(&page_size) {
            return Err(ClientError::InvalidPageSize {
                page_size,
                max: LIST_PAGE_SIZE_MAX,
            });
        }
        let after = page_token.map(decode_page_token).transpose()?;
        self.visibility().list(filter, page_size, after).await
    }

    /// How many workflows match `query`: one read of a maintained counter for no filter,
    /// `ExecutionStatus = s`, `WorkflowType = t` and both; otherwise a walk of the narrowest
    /// index, a chunk per transaction.
    pub async fn count_workflows(&self, query: &str) -> Result<u64, ClientError> {
        let filter = self.parse_query(query)?;
        self.visibility().count(&filter).await
    }

    fn visibility(&self) -> Visibility<'_, S> {
        Visibility {
            store: &self.shared.store,
            keys: &self.shared.keys,
            namespace: &self.shared.config.namespace,
            registry: &self.shared.registry,
        }
    }

    /// Creates a schedule. Refused, writing nothing, if the id exists, the spec or policies
    /// are invalid, or the workflow type is not registered here.
    pub async fn create_schedule(&self, request: CreateSchedule) -> Result<(), ClientError> {
        let shared = &self.shared;
        let remote = request.action.remote.is_some();
        let registered = remote
            || shared
                .registry
                .workflow_def(&request.action.workflow_type)
                .is_some();
        check_payload("schedule input", &request.action.input)?;
        cairn_types::memo::validate_memo(&request.action.memo)?;
        self.check_search_attributes(&request.action.search_attributes)?;
        check_start_bytes(
            &request.action.input,
            &request.action.memo,
            &request.action.search_attributes,
        )?;
        let now = self.shared.now_ms();
        let (record, spec) = schedules::new_record(
            request,
            &shared.config.namespace,
            registered,
            now,
            shared.config.entropy.uuid_v7(now),
        )
        .map_err(|e| match e {
            ClientError::UnknownWorkflowType { workflow_type, .. } => {
                ClientError::UnknownWorkflowType {
                    workflow_type,
                    registered: shared.registry.workflow_names(),
                }
            }
            other => other,
        })?;
        // Checked after the spec, as start checks its input: a schedule whose every start
        // would be refused is refused itself.
        if !remote {
            shared
                .registry
                .check_input(&record.action.workflow_type, &record.action.input)
                .map_err(|reason| ClientError::InputDoesNotDecode {
                    workflow_type: record.action.workflow_type.clone(),
                    reason,
                })?;
        }
        let id = record.schedule_id.clone();
        let key = shared.keys.schedule(&record.namespace, &id);
        let exists = Check::key(key, {
            let id = id.clone();
            move |value: Option<&[u8]>| match value {
                None => Ok(()),
                Some(_) => Err(ClientError::ScheduleExists {
                    schedule_id: id.clone(),
                }),
            }
        });
        let request_id = record.request_id.clone();
        let wake = schedules::next_wake(&record, &spec, now);
        let ops = schedules::store_record(
            &shared.keys,
            shared.shard_of_id(&id),
            record,
            wake,
            Stored::Whole,
        );
        match self.submit(ops, vec![exists], None).await {
            // A retry after `MaybeCommitted` finds the schedule its first attempt wrote.
            Err(ClientError::ScheduleExists { schedule_id }) => {
                let mut tx = shared.store.begin()?;
                let stored = schedules::read_schedule(
                    &mut tx,
                    &shared.keys,
                    &shared.config.namespace,
                    &schedule_id,
                )
                .await?;
                match stored {
                    Some((record, _)) if record.request_id == request_id => Ok(()),
                    _ => Err(ClientError::ScheduleExists { schedule_id }),
                }
            }
            other => other,
        }
    }

    /// A schedule, and its next `count` start times (after jitter).
    pub async fn describe_schedule(
        &self,
        schedule_id: &str,
        count: usize,
    ) -> Result<ScheduleDescription, ClientError> {
        schedules::check_schedule_id(schedule_id)?;
        let mut tx = self.shared.store.begin()?;
        let namespace = &self.shared.config.namespace;
        let (record, _) =
            schedules::read_schedule(&mut tx, &self.shared.keys, namespace, schedule_id)
                .await?
                .ok_or_else(|| ClientError::ScheduleNotFound {
                    schedule_id: schedule_id.to_string(),
                })?;
        let mut next_times_unix_ms = Vec::new();
        if !record.paused
            && let Ok(spec) = record.spec.compile()
        {
            let mut at = record.processed_until_unix_ms.max(self.shared.now_ms());
            while next_times_unix_ms.len() < count.min(100) {
                let Some(next) = spec.next_after(at) else {
                    break;
                };
                next_times_unix_ms.push(next.saturating_add(spec.jitter(schedule_id, next)));
                at = next;
            }
        }
        Ok(ScheduleDescription {
            record,
            next_times_unix_ms,
        })
    }

    /// Every schedule of the namespace.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, ClientError> {
        let (begin, end) = self.shared.keys.schedules(&self.shared.config.namespace);
        let mut tx = self.shared.store.begin()?;
        let rows = tx
            .get_range(&RangeRequest::new(begin, end).snapshot())
            .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            records.push(decode_row(&mut tx, &self.shared.keys, row, "schedule").await?);
        }
        Ok(records)
    }

    /// Applies `change` to schedule `schedule_id` inside a commit (refused if it is missing).
    async fn change_schedule(
        &self,
        schedule_id: &str,
        change: impl Fn(&mut ScheduleRecord, u64) + Send + Sync + 'static,
    ) -> Result<(), ClientError> {
        schedules::check_schedule_id(schedule_id)?;
        let shared = &self.shared;
        let namespace = shared.config.namespace.clone();
        let key = shared.keys.schedule(&namespace, schedule_id);
        let op = schedules::update(
            shared.keys.clone(),
            namespace,
            schedule_id.to_string(),
            shared.shard_of_id(schedule_id),
            Arc::new(change),
            {
                let clock = shared.config.clock.clone();
                move || clock.now_ms()
            },
        );
        self.submit(vec![op], vec![must_exist(key, schedule_id)], None)
            .await
    }

    /// Pauses a schedule (no starts until unpaused; times passing meanwhile are not made up).
    pub async fn pause_schedule(&self, schedule_id: &str, note: &str) -> Result<(), ClientError> {
        schedules::check_note(note)?;
        let note = note.to_string();
        self.change_schedule(schedule_id, move |record, _| {
            record.paused = true;
            record.note = note.clone();
        })
        .await
    }

    /// Unpauses a schedule; it goes on from now.
    pub async fn unpause_schedule(&self, schedule_id: &str, note: &str) -> Result<(), ClientError> {
        schedules::check_note(note)?;
        let note = note.to_string();
        self.change_schedule(schedule_id, move |record, now| {
            record.paused = false;
            record.note = note.clone();
            record.processed_until_unix_ms = record.processed_until_unix_ms.max(now);
        })
        .await
    }

    /// Starts the schedule's workflow now, whatever the spec says, under `overlap` (`None`:
    /// the schedule's overlap policy).
    pub async fn trigger_schedule(
        &self,
        schedule_id: &str,
        overlap: Option<OverlapPolicy>,
    ) -> Result<(), ClientError> {
        // The time is fixed here, not in the transaction: a commit retried after
        // `MaybeCommitted` then repeats the same trigger, whose workflow id (from its time) is
        // started at most once.
        let at = self.shared.now_ms();
        self.change_schedule(schedule_id, move |record, _| {
            if !record.triggers.contains(&(at, overlap)) {
                record.triggers.push((at, overlap));
            }
        })
        .await
    }

    /// Starts the workflows of every spec time in `[start, end]`, whatever the catch-up
    /// window says, under `overlap` (`None`: the schedule's overlap policy; `AllowAll` starts
    /// them all at once, `BufferAll` one after another).
    pub async fn backfill_schedule(
        &self,
        schedule_id: &str,
        start_unix_ms: u64,
        end_unix_ms: u64,
        overlap: Option<OverlapPolicy>,
    ) -> Result<(), ClientError> {
        if start_unix_ms > end_unix_ms {
            return Err(ClientError::InvalidSchedule {
                reason: format!("backfill start {start_unix_ms} is after its end {end_unix_ms}"),
            });
        }
        let described = self.describe_schedule(schedule_id, 0).await?;
        let spec = described
            .record
            .spec
            .compile()
            .map_err(|e| ClientError::InvalidSchedule {
                reason: e.to_string(),
            })?;
        let count = spec
            .times_between(
                start_unix_ms.saturating_sub(1),
                end_unix_ms,
                schedules::SCHEDULE_BACKFILL_TIMES_MAX + 1,
            )
            .len();
        if count > schedules::SCHEDULE_BACKFILL_TIMES_MAX {
            return Err(ClientError::InvalidSchedule {
                reason: format!(
                    "the backfill covers more than {} start times; split it",
                    schedules::SCHEDULE_BACKFILL_TIMES_MAX
                ),
            });
        }
        let backfill = schedules::Backfill {
            start_unix_ms,
            end_unix_ms,
            overlap,
        };
        // Repeated by a retried commit, a backfill starts nothing twice (each time's workflow
        // id is started at most once), but is not queued twice either.
        self.change_schedule(schedule_id, move |record, _| {
            if !record.backfills.contains(&backfill) {
                record.backfills.push_back(backfill);
            }
        })
        .await
    }

    /// Deletes a schedule (the workflows it started run on).
    pub async fn delete_schedule(&self, schedule_id: &str) -> Result<(), ClientError> {
        schedules::check_schedule_id(schedule_id)?;
        let shared = &self.shared;
        let namespace = shared.config.namespace.clone();
        let key = shared.keys.schedule(&namespace, schedule_id);
        let exists_key = key.clone();
        let keys = shared.keys.clone();
        let shard = shared.shard_of_id(schedule_id);
        let id = schedule_id.to_string();
        let op = Op::Derived(crate::ops::Derive::new(move |tx| {
            let (keys, key, id, namespace) =
                (keys.clone(), key.clone(), id.clone(), namespace.clone());
            Box::pin(async move {
                let Some((record, _)) =
                    schedules::read_schedule(tx, &keys, &namespace, &id).await?
                else {
                    return Ok(Vec::new());
                };
                let mut ops = clear_record_ops(&keys, &key);
                if let Some(at) = record.wake_at_unix_ms {
                    ops.push(Op::Clear(keys.schedule_wake(shard, at, &id)));
                }
                Ok(ops)
            })
        }));
        // After `MaybeCommitted`, a schedule that is gone was deleted by this request.
        let verify = Some((exists_key.clone(), Verify::Absent));
        self.submit(vec![op], vec![must_exist(exists_key, schedule_id)], verify)
            .await
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

    pub async fn shutdown(&self) {
        cluster::drain(&self.shared).await;
        self.shared.notify_stopping();
        self.shared.committer.stop(None);
        self.shared.workers.close();
    }
}

/// A local result waiter's place in `Shared::waiters`: on drop, the run's waiters whose callers
/// are gone are removed (and the run's entry with them when none is left).
struct WaiterSlot<'a, S: Store> {
    shared: &'a Shared<S>,
    run_id: RunId,
}

impl<S: Store> Drop for WaiterSlot<'_, S> {
    fn drop(&mut self) {
        let mut waiters = self
            .shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(list) = waiters.get_mut(&self.run_id) {
            list.retain(|(_, waiter)| !waiter.is_closed());
            if list.is_empty() {
                waiters.remove(&self.run_id);
            }
        }
    }
}

fn missing_run(run_id: &RunId) -> ClientError {
    ClientError::Store(StoreError::Backend {
        message: format!("run {run_id} is listed but has no record"),
    })
}

/// A start's input, memo and search attributes must fit one started event together.
fn check_start_bytes(
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
