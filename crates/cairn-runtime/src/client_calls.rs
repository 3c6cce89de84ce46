//! Client calls on workflows: start, signal, cancel, terminate, query, result, describe,
//! history. Every write goes through the committer; a query runs where the run's shard is held.

use crate::backoff::Backoff;
use crate::cluster::{self, Route};
use crate::error::{ClientError, IdReusePolicy};
use crate::local::Local;
use crate::node::Node;
use crate::node::{check_payload, check_start_bytes};
use crate::ops::{Check, CommitError, Op, Verify};
use crate::peers::{PeerError, PeerQuery};
use crate::records::{
    InboxItem, NewRun, Outcome, RunRecord, WorkflowRecord, decode, encode, load_record,
};
use crate::visibility::WorkflowSummary;
use cairn_core::{Message, PendingActivity, PendingChild};
use cairn_store::{Store, StoreError, Transaction};
use cairn_types::{
    HistoryEvent, Payload, RunId, SearchAttributes, Seq, WorkflowId, WorkflowTimeouts,
};
use std::sync::atomic::Ordering;
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
    /// The run's input.
    pub input: Payload,
    /// The run that continued this one (continue-as-new or its cron schedule's next run).
    pub next_run: Option<RunId>,
    /// The schedule whose action started the run, if one did.
    pub scheduled_by: Option<String>,
    /// Whether this run is its workflow id's current run.
    pub current: bool,
    /// The last heartbeat (details, and when it was sent) of pending activities that have
    /// sent one.
    pub heartbeats: Vec<(Seq, crate::records::Heartbeat)>,
}

/// Most events [`Node::history_page`] returns at once.
pub const HISTORY_PAGE_EVENTS_MAX: usize = 1_000;

/// A stretch of one run's history, as [`Node::history_page`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub run_id: RunId,
    /// Events from the requested id on, in order.
    pub events: Vec<HistoryEvent>,
    /// The id the next page starts at.
    pub next_event_id: cairn_types::EventId,
    /// Whether the run had closed when the page was read (then no event follows the last).
    pub closed: bool,
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

/// Most times a client call reads one record (a workflow's current run, a run) when the store
/// answers with a retryable error (see `Node::current`).
pub const CURRENT_READ_TRIES_MAX: u32 = 5;
/// First pause between two of those reads (doubling, at most a second).
const CURRENT_READ_RETRY_FIRST_MS: u64 = 100;

/// The reads again of one record by a client call: a read the store answered with a
/// retryable error (a transaction that grew too old while the store stalled, as
/// FoundationDB's does through a recovery) is made again after a pause, up to
/// [`CURRENT_READ_TRIES_MAX`] reads in all.
struct ReadAgain {
    tries: u32,
    backoff: Backoff,
}

impl ReadAgain {
    fn new() -> Self {
        Self {
            tries: 1,
            backoff: Backoff::new(
                Duration::from_millis(CURRENT_READ_RETRY_FIRST_MS),
                Duration::from_secs(1),
            ),
        }
    }

    /// True, after the pause, if `result` is a retryable store error and a read is left.
    async fn after<T>(&mut self, result: &Result<T, ClientError>) -> bool {
        match result {
            Err(ClientError::Store(e))
                if e.is_retryable() && self.tries < CURRENT_READ_TRIES_MAX =>
            {
                self.tries += 1;
                self.backoff.wait().await;
                true
            }
            _ => false,
        }
    }
}

impl<S: Store> Node<S> {
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
    pub(crate) async fn start_request_id(
        &self,
        run_id: &RunId,
    ) -> Result<Option<String>, ClientError> {
        let mut tx = self.shared.store.begin()?;
        Ok(self.run_in(&mut tx, run_id).await?.start.request_id)
    }

    /// A client request's writes, unfenced, through the committer.
    pub(crate) async fn submit(
        &self,
        ops: Vec<Op>,
        checks: Vec<Check>,
        verify: Option<(Vec<u8>, Verify)>,
    ) -> Result<(), ClientError> {
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

    /// The workflow id's current run. A read the store answers with a retryable error (a
    /// transaction that grew too old while the store stalled, as FoundationDB's does through a
    /// recovery) is read again, up to [`CURRENT_READ_TRIES_MAX`] times.
    pub(crate) async fn current(
        &self,
        workflow_id: &WorkflowId,
    ) -> Result<WorkflowRecord, ClientError> {
        let mut again = ReadAgain::new();
        loop {
            let mut tx = self.shared.store.begin()?;
            let read = self.current_in(&mut tx, workflow_id).await;
            if !again.after(&read).await {
                return read;
            }
        }
    }

    /// The workflow id's current run, read in `tx`.
    pub(crate) async fn current_in(
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
    pub(crate) async fn run_in(
        &self,
        tx: &mut S::Tx,
        run_id: &RunId,
    ) -> Result<RunRecord, ClientError> {
        let key = self.shared.keys.run(run_id);
        match load_record(tx, &self.shared.keys, &key, "run").await? {
            Some((record, _)) => Ok(record),
            None => Err(missing_run(run_id)),
        }
    }

    /// Run `run_id`'s record, if it is a run of `workflow_id` ([`ClientError::NotFound`]
    /// otherwise: the caller named the run).
    async fn run_of(
        &self,
        tx: &mut S::Tx,
        workflow_id: &WorkflowId,
        run_id: &RunId,
    ) -> Result<RunRecord, ClientError> {
        let key = self.shared.keys.run(run_id);
        match load_record::<RunRecord>(tx, &self.shared.keys, &key, "run").await? {
            Some((record, _)) if &record.workflow_id == workflow_id => Ok(record),
            _ => Err(ClientError::NotFound {
                workflow_id: format!("{workflow_id} (run {run_id})"),
            }),
        }
    }

    /// Run `run_id`'s record, read again on a retryable error as [`Node::current`] is.
    pub(crate) async fn run_record(&self, run_id: &RunId) -> Result<RunRecord, ClientError> {
        let mut again = ReadAgain::new();
        loop {
            let mut tx = self.shared.store.begin()?;
            let read = self.run_in(&mut tx, run_id).await;
            if !again.after(&read).await {
                return read;
            }
        }
    }

    /// Puts a message in the mailbox of the workflow's current run, exactly once even when the
    /// store reports `MaybeCommitted` (a request id guards the write).
    pub(crate) async fn send_message(
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
                    .fetch_add(1, Ordering::Relaxed);
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
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(250));
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
            let pause = backoff.next_pause();
            if tokio::time::Instant::now() + pause > deadline {
                return Err(ClientError::ShardUnavailable { shard, reason });
            }
            tokio::time::sleep(pause).await;
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
        drop(tx);
        let events =
            crate::shared::read_history(&self.shared.store, &self.shared.keys, &run_id, None)
                .await?;
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
    pub(crate) async fn run_result(
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
            // Past the bound on watches, read the run again now and then instead.
            // Together the pollers read at most `RESULT_POLLS_PER_SECOND_MAX` times a second.
            let Ok(permit) = self.result_watches.clone().try_acquire_owned() else {
                let metrics = &self.shared.metrics;
                metrics.result_polls.fetch_add(1, Ordering::Relaxed);
                let _polling = Gauge::up(&metrics.result_pollers);
                if let Some(outcome) = self.run_record(&run_id).await?.outcome {
                    return Ok(outcome);
                }
                let pollers = metrics.result_pollers.load(Ordering::Relaxed);
                tokio::time::sleep(crate::config::result_poll_pause(pollers)).await;
                continue;
            };
            let _watching = WatchCount::new(&self.shared.metrics, permit);
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
        self.describe_run(workflow_id, None).await
    }

    /// Run `run_id` of `workflow_id` (its current run if `None`) in detail: summary, pending
    /// work, links to the runs around it. [`ClientError::NotFound`] if the run is not one of
    /// that workflow id.
    pub async fn describe_run(
        &self,
        workflow_id: &WorkflowId,
        run_id: Option<RunId>,
    ) -> Result<Description, ClientError> {
        // Both records from one snapshot, so the summary and the pending work agree.
        let mut tx = self.shared.store.begin()?;
        let current = self.current_in(&mut tx, workflow_id).await?;
        let run_id = run_id.unwrap_or(current.run_id);
        let is_current = run_id == current.run_id;
        let record = self.run_of(&mut tx, workflow_id, &run_id).await?;
        let state = record.state.as_ref();
        let mut summary = if is_current {
            WorkflowSummary::from_record(workflow_id.to_string(), current)
        } else {
            WorkflowSummary {
                workflow_id: workflow_id.to_string(),
                run_id,
                workflow_type: record.start.workflow_type.clone(),
                status: None,
                started_unix_ms: record.created_unix_ms,
                closed_unix_ms: None,
                parent_workflow_id: record.parent.as_ref().map(|p| p.workflow_id.to_string()),
                search_attributes: record.start.search_attributes.clone(),
                memo: record.start.memo.clone(),
                history_length: 0,
            }
        };
        // The run's own snapshot is fresher than its workflow record between writes of the
        // latter.
        summary.status = state.map(|s| s.status).or(summary.status);
        summary.closed_unix_ms = state
            .and_then(|s| s.closed_unix_ms)
            .or(summary.closed_unix_ms);
        if let Some(state) = state {
            summary.history_length = state.next_event_id - 1;
            summary.memo.clone_from(&state.memo);
            summary
                .search_attributes
                .clone_from(&state.search_attributes);
        }
        // One point read per pending activity (their number is bounded by the run's own
        // limit on pending activities).
        let mut heartbeats = Vec::new();
        for seq in state.iter().flat_map(|s| s.activities.keys()) {
            if let Some(bytes) = tx
                .get_snapshot(&self.shared.keys.heartbeat(&run_id, *seq))
                .await?
            {
                heartbeats.push((*seq, crate::records::Heartbeat::decode(&bytes)?));
            }
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
            input: record.start.input,
            next_run: record.next_run,
            scheduled_by: record.scheduled_by,
            current: is_current,
            heartbeats,
        })
    }

    /// Up to `limit` events (at most [`HISTORY_PAGE_EVENTS_MAX`]) of run `run_id` of
    /// `workflow_id` (its current run if `None`) from event `from` on, read in one
    /// transaction, and whether the run had closed by then.
    pub async fn history_page(
        &self,
        workflow_id: &WorkflowId,
        run_id: Option<RunId>,
        from: cairn_types::EventId,
        limit: usize,
    ) -> Result<HistoryPage, ClientError> {
        let limit = limit.clamp(1, HISTORY_PAGE_EVENTS_MAX);
        // Event ids are stored as signed 64-bit integers: past that, no event.
        let from = from.clamp(1, i64::MAX as u64);
        let mut tx = self.shared.store.begin()?;
        let run_id = match run_id {
            Some(run_id) => run_id,
            None => self.current_in(&mut tx, workflow_id).await?.run_id,
        };
        let record = self.run_of(&mut tx, workflow_id, &run_id).await?;
        let keys = &self.shared.keys;
        let (_, end) = keys.history(&run_id);
        let rows = tx
            .get_range(
                &cairn_store::RangeRequest::new(keys.history_event(&run_id, from), end)
                    .limit(limit)
                    .snapshot(),
            )
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            events.push(decode::<HistoryEvent>("history event", &row.value)?);
        }
        let next_event_id = events.last().map_or(from, |e| e.event_id + 1);
        Ok(HistoryPage {
            run_id,
            events,
            next_event_id,
            closed: record.outcome.is_some(),
        })
    }

    /// The current run's history.
    pub async fn history(
        &self,
        workflow_id: &WorkflowId,
    ) -> Result<Vec<HistoryEvent>, ClientError> {
        let current = self.current(workflow_id).await?;
        Ok(crate::shared::read_history(
            &self.shared.store,
            &self.shared.keys,
            &current.run_id,
            None,
        )
        .await?)
    }
}

/// A local result waiter's place in `Local::waiters`: on drop, the run's waiters whose callers
/// are gone are removed (and the run's entry with them when none is left).
pub(crate) struct WaiterSlot<'a, S: Store> {
    shared: &'a Local<S>,
    run_id: RunId,
}

/// One more on a gauge while it lives.
struct Gauge<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> Gauge<'a> {
    fn up(gauge: &'a std::sync::atomic::AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A result waiter's store watch, counted in `Metrics::result_watches` while it is held.
struct WatchCount<'a> {
    _counted: Gauge<'a>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<'a> WatchCount<'a> {
    fn new(metrics: &'a crate::Metrics, permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        Self {
            _counted: Gauge::up(&metrics.result_watches),
            _permit: permit,
        }
    }
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

pub(crate) fn missing_run(run_id: &RunId) -> ClientError {
    ClientError::Store(StoreError::Backend {
        message: format!("run {run_id} is listed but has no record"),
    })
}
