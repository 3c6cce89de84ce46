//! The client: start workflows and talk to them, typed by the workflow function.

use crate::workflow::{Query, Signal, Update, function_name};
use cairn_core::WorkflowError;
use cairn_runtime::{
    ClientError, Description, IdReusePolicy, Outcome, StartWorkflow, UpdateStage, UpdateState,
    WorkflowPage,
};
use cairn_store::Store;
use cairn_types::{
    Failure, HistoryEvent, Memo, Payload, RunId, SearchAttributes, UpdateOutcome, WorkflowId,
    WorkflowTimeouts,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// How a workflow ended, when it did not return a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkflowOutcomeError {
    #[error("workflow failed: {0}")]
    Failed(Failure),
    #[error("workflow was canceled")]
    Canceled,
    #[error("workflow was terminated: {0}")]
    Terminated(String),
    #[error("workflow timed out")]
    TimedOut,
    #[error("workflow result does not decode as the expected type: {0}")]
    ResultDoesNotDecode(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Why an update did not give its result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpdateCallError {
    /// Its validator rejected it (nothing of it is in the history), or its handler failed,
    /// or the workflow closed before its handler finished.
    #[error("update failed: {0}")]
    Failed(Failure),
    #[error("update result does not decode as the expected type: {0}")]
    ResultDoesNotDecode(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A client of a node (in-process).
pub struct Client<S: Store> {
    node: Arc<cairn_runtime::Node<S>>,
}

impl<S: Store> Clone for Client<S> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
        }
    }
}

impl<S: Store> std::fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client")
    }
}

impl<S: Store> Client<S> {
    pub(crate) fn new(node: Arc<cairn_runtime::Node<S>>) -> Self {
        Self { node }
    }

    pub(crate) fn node(&self) -> &cairn_runtime::Node<S> {
        &self.node
    }

    /// Prepares to start workflow function `f` as `workflow_id` with `input`; set options on
    /// the returned call, then `.send().await` it.
    pub fn start<F, I, O, Fut>(&self, f: F, workflow_id: &str, input: I) -> StartCall<S, O>
    where
        F: Fn(crate::Ctx, I) -> Fut + 'static,
        I: Serialize,
        Fut: Future<Output = Result<O, WorkflowError>>,
    {
        let _ = f;
        StartCall {
            client: self.clone(),
            workflow_type: function_name::<F>().to_string(),
            workflow_id: workflow_id.to_string(),
            input: Payload::encode(&input).map_err(|e| e.to_string()),
            id_reuse_policy: IdReusePolicy::default(),
            timeouts: WorkflowTimeouts::default(),
            remote: None,
            memo: Ok(Memo::new()),
            search_attributes: SearchAttributes::new(),
            cron_schedule: None,
            _output: PhantomData,
        }
    }

    /// Prepares to start a workflow whose code this node does not have: type `workflow_type`,
    /// run by the Temporal SDK workers (Python, Go, TypeScript, Java) polling `task_queue`
    /// through the node's Temporal gRPC API. `input` reaches them as one JSON argument, and
    /// their JSON result decodes as `O`.
    pub fn start_remote<I, O>(
        &self,
        workflow_type: &str,
        task_queue: &str,
        workflow_id: &str,
        input: I,
    ) -> StartCall<S, O>
    where
        I: Serialize,
    {
        StartCall {
            client: self.clone(),
            workflow_type: workflow_type.to_string(),
            workflow_id: workflow_id.to_string(),
            input: Payload::encode(&input).map_err(|e| e.to_string()),
            id_reuse_policy: IdReusePolicy::default(),
            timeouts: WorkflowTimeouts::default(),
            remote: Some(cairn_runtime::RemoteStart {
                task_queue: task_queue.to_string(),
                task_timeout_ms: cairn_runtime::WORKFLOW_TASK_TIMEOUT_DEFAULT_MS,
            }),
            memo: Ok(Memo::new()),
            search_attributes: SearchAttributes::new(),
            cron_schedule: None,
            _output: PhantomData,
        }
    }

    /// A handle on an existing workflow whose result type is `O`.
    pub fn handle<O>(&self, workflow_id: &str) -> Result<WorkflowHandle<S, O>, ClientError> {
        let workflow_id = WorkflowId::new(workflow_id)?;
        Ok(WorkflowHandle {
            client: self.clone(),
            workflow_id,
            _output: PhantomData,
        })
    }

    /// Workflows, optionally filtered by type name and status, newest first, `page_size` at a
    /// time (default 100, at most 1,000): pass the page's `next_page_token` back for the next.
    /// Each page reads O(page) keys from the store's visibility indexes.
    pub async fn list(
        &self,
        workflow_type: Option<&str>,
        status: Option<cairn_core::RunStatus>,
        page_size: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<WorkflowPage, ClientError> {
        self.node
            .list(workflow_type, status, page_size, page_token)
            .await
    }

    /// Workflows matching a visibility query (`WorkflowType = 'Order' AND ExecutionStatus =
    /// 'Running'`; see `cairn_core::visibility` for the language), a page at a time: pass the
    /// page's `next_page_token` back for the next.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn run(client: cairn::Client<cairn::MemStore>) -> Result<(), cairn::ClientError> {
    /// let mut token = None;
    /// loop {
    ///     let page = client
    ///         .list_workflows("ExecutionStatus = 'Failed' ORDER BY CloseTime DESC", Some(50), token.as_deref())
    ///         .await?;
    ///     for w in &page.workflows {
    ///         println!("{} failed", w.workflow_id);
    ///     }
    ///     match page.next_page_token {
    ///         Some(next) => token = Some(next),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_workflows(
        &self,
        query: &str,
        page_size: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<WorkflowPage, ClientError> {
        self.node.list_workflows(query, page_size, page_token).await
    }

    /// How many workflows match a visibility query.
    pub async fn count_workflows(&self, query: &str) -> Result<u64, ClientError> {
        self.node.count_workflows(query).await
    }
}

/// A workflow start being configured.
pub struct StartCall<S: Store, O> {
    client: Client<S>,
    workflow_type: String,
    workflow_id: String,
    input: Result<Payload, String>,
    id_reuse_policy: IdReusePolicy,
    timeouts: WorkflowTimeouts,
    remote: Option<cairn_runtime::RemoteStart>,
    memo: Result<Memo, String>,
    search_attributes: SearchAttributes,
    cron_schedule: Option<String>,
    _output: PhantomData<fn() -> O>,
}

impl<S: Store, O> std::fmt::Debug for StartCall<S, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartCall")
            .field("workflow_type", &self.workflow_type)
            .field("workflow_id", &self.workflow_id)
            .finish()
    }
}

impl<S: Store, O> StartCall<S, O> {
    /// What to do if the id was used before. Default [`IdReusePolicy::AllowDuplicate`].
    pub fn id_reuse_policy(mut self, policy: IdReusePolicy) -> Self {
        self.id_reuse_policy = policy;
        self
    }

    /// Limit on the whole execution (across continue-as-new). Default none.
    pub fn execution_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.execution = Some(timeout);
        self
    }

    /// Limit on one run (each continue-as-new starts the clock again). Default none.
    pub fn run_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.run = Some(timeout);
        self
    }

    /// Runs the workflow on a cron schedule (Temporal's `cron_schedule`: a standard
    /// expression, a nickname such as `@hourly`, or `@every 30s`, optionally after
    /// `CRON_TZ=<zone> `): each run waits for the schedule's next time, and each run that
    /// completes, fails or times out starts the next, until the workflow is terminated or
    /// canceled. `WorkflowId = '<id>'` lists every run. (A schedule, `Client::schedule`, is the
    /// richer way.)
    pub fn cron_schedule(mut self, expression: &str) -> Self {
        self.cron_schedule = Some(expression.to_string());
        self
    }

    /// Adds `key` to the run's memo: a note shown by describe and list (and to the workflow,
    /// `ctx.memo`), never queried. Bounded by `cairn_types::limits::MEMO_BYTES_MAX`.
    pub fn memo<T: Serialize>(mut self, key: &str, value: &T) -> Self {
        self.memo = self.memo.and_then(|mut memo| {
            let value = Payload::encode(value).map_err(|e| format!("memo {key:?}: {e}"))?;
            memo.insert(key.to_string(), value);
            Ok(memo)
        });
        self
    }

    /// Starts the run with search attribute `attribute` set to `value`: visibility queries
    /// find it from the start.
    pub fn search_attribute<T: crate::SearchAttributeType>(
        mut self,
        attribute: &crate::SearchAttribute<T>,
        value: T,
    ) -> Self {
        self.search_attributes
            .insert(attribute.name().to_string(), value.into_value());
        self
    }

    /// Starts the workflow.
    pub async fn send(self) -> Result<WorkflowHandle<S, O>, ClientError> {
        let workflow_id = WorkflowId::new(self.workflow_id.clone())?;
        let input = self
            .input
            .map_err(|reason| ClientError::InputDoesNotDecode {
                workflow_type: self.workflow_type.to_string(),
                reason,
            })?;
        self.client
            .node
            .start_workflow(StartWorkflow {
                workflow_id: workflow_id.clone(),
                workflow_type: self.workflow_type.clone(),
                input,
                id_reuse_policy: self.id_reuse_policy,
                timeouts: self.timeouts,
                request_id: None,
                remote: self.remote,
                memo: self
                    .memo
                    .map_err(|reason| ClientError::InputDoesNotDecode {
                        workflow_type: self.workflow_type.clone(),
                        reason,
                    })?,
                search_attributes: self.search_attributes,
                cron_schedule: self.cron_schedule,
            })
            .await?;
        Ok(WorkflowHandle {
            client: self.client,
            workflow_id,
            _output: PhantomData,
        })
    }

    /// Update-with-start: starts the workflow unless its id has a running run (that run is
    /// used instead, Temporal's `USE_EXISTING` conflict policy), then sends `update` with
    /// `args` as update `update_id`, returning once the run accepted or rejected it (a
    /// rejection is the update handle's result; the run stays started, as on Temporal). The
    /// start and the update are two steps, not one transaction: sent again with the same
    /// update id after an error, it finds the run started and joins the update if it was
    /// admitted (updates are deduplicated by id).
    pub async fn send_with_update<A: Serialize, R: DeserializeOwned>(
        self,
        update: &Update<A, R>,
        update_id: &str,
        args: A,
    ) -> Result<(WorkflowHandle<S, O>, UpdateHandle<S, R>), UpdateCallError>
    where
        O: DeserializeOwned,
    {
        let client = self.client.clone();
        let workflow_id = WorkflowId::new(self.workflow_id.clone()).map_err(ClientError::from)?;
        let handle = match self.send().await {
            Ok(handle) => handle,
            Err(ClientError::AlreadyRunning { .. }) => WorkflowHandle {
                client,
                workflow_id,
                _output: PhantomData,
            },
            Err(e) => return Err(e.into()),
        };
        let accepted = handle.start_update(update, update_id, args).await?;
        Ok((handle, accepted))
    }
}

impl<S: Store, O: 'static> IntoFuture for StartCall<S, O> {
    type Output = Result<WorkflowHandle<S, O>, ClientError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// An update a workflow accepted (or rejected), as its caller follows it.
pub struct UpdateHandle<S: Store, R> {
    client: Client<S>,
    workflow_id: WorkflowId,
    run_id: RunId,
    update_id: String,
    known: Option<UpdateOutcome>,
    _result: PhantomData<fn() -> R>,
}

impl<S: Store, R> std::fmt::Debug for UpdateHandle<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateHandle")
            .field("workflow_id", &self.workflow_id)
            .field("update_id", &self.update_id)
            .finish()
    }
}

impl<S: Store, R: DeserializeOwned> UpdateHandle<S, R> {
    pub fn update_id(&self) -> &str {
        &self.update_id
    }

    /// The run that accepted the update.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// Waits for the update's handler to finish: its result, or its failure.
    pub async fn result(&self) -> Result<R, UpdateCallError> {
        let outcome = match &self.known {
            Some(outcome) => outcome.clone(),
            None => loop {
                let answer = self
                    .client
                    .node
                    .poll_update(
                        &self.workflow_id,
                        Some(self.run_id),
                        &self.update_id,
                        UpdateStage::Completed,
                        cairn_runtime::UPDATE_WAIT_MS_MAX,
                    )
                    .await?;
                if let UpdateState::Completed(outcome) = answer.state {
                    break outcome;
                }
            },
        };
        match outcome {
            UpdateOutcome::Success(result) => result
                .decode()
                .map_err(|e| UpdateCallError::ResultDoesNotDecode(e.to_string())),
            UpdateOutcome::Failure(failure) => Err(UpdateCallError::Failed(failure)),
        }
    }
}

/// A workflow, as a client sees it.
pub struct WorkflowHandle<S: Store, O> {
    client: Client<S>,
    workflow_id: WorkflowId,
    _output: PhantomData<fn() -> O>,
}

impl<S: Store, O> std::fmt::Debug for WorkflowHandle<S, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowHandle")
            .field("workflow_id", &self.workflow_id)
            .finish()
    }
}

impl<S: Store, O: DeserializeOwned> WorkflowHandle<S, O> {
    pub fn workflow_id(&self) -> &WorkflowId {
        &self.workflow_id
    }

    /// Waits for the workflow to end; its result, or how it ended otherwise.
    pub async fn result(&self) -> Result<O, WorkflowOutcomeError> {
        match self.client.node.result(&self.workflow_id).await? {
            Outcome::Completed(payload) => payload
                .decode()
                .map_err(|e| WorkflowOutcomeError::ResultDoesNotDecode(e.to_string())),
            Outcome::Failed(failure) => Err(WorkflowOutcomeError::Failed(failure)),
            Outcome::Canceled => Err(WorkflowOutcomeError::Canceled),
            Outcome::Terminated(reason) => Err(WorkflowOutcomeError::Terminated(reason)),
            Outcome::TimedOut => Err(WorkflowOutcomeError::TimedOut),
            // The node follows the chain to its end; a continued run is never an end.
            Outcome::ContinuedAsNew { new_run_id } => Err(WorkflowOutcomeError::Client(
                ClientError::Store(cairn_store::StoreError::Backend {
                    message: format!("result stopped at a continued run (next: {new_run_id})"),
                }),
            )),
        }
    }

    /// Sends `signal` with `input`.
    pub async fn signal<T: Serialize>(
        &self,
        signal: &Signal<T>,
        input: T,
    ) -> Result<(), ClientError> {
        let payload = Payload::encode(&input).map_err(|e| ClientError::InputDoesNotDecode {
            workflow_type: signal.name().to_string(),
            reason: e.to_string(),
        })?;
        self.client
            .node
            .signal(&self.workflow_id, signal.name(), payload)
            .await
    }

    /// Runs `query` with `args` against the workflow's state.
    pub async fn query<A: Serialize, R: DeserializeOwned>(
        &self,
        query: &Query<A, R>,
        args: A,
    ) -> Result<R, ClientError> {
        let payload = Payload::encode(&args).map_err(|e| ClientError::InputDoesNotDecode {
            workflow_type: query.name().to_string(),
            reason: e.to_string(),
        })?;
        let answer = self
            .client
            .node
            .query(&self.workflow_id, query.name(), payload)
            .await?;
        answer.decode().map_err(|e| {
            ClientError::Query(cairn_runtime::QueryError::Handler(format!(
                "answer does not decode: {e}"
            )))
        })
    }

    /// Sends `update` with `args` and waits for its result. A new update id is made for it;
    /// use [`start_update`](Self::start_update) to name one (a retry with the same id joins
    /// the first, never runs it twice).
    pub async fn update<A: Serialize, R: DeserializeOwned>(
        &self,
        update: &Update<A, R>,
        args: A,
    ) -> Result<R, UpdateCallError> {
        let id = uuid::Uuid::now_v7().to_string();
        self.start_update(update, &id, args).await?.result().await
    }

    /// Sends `update` with `args` as update `update_id`, and returns once the workflow
    /// accepted it (its validator passed; the update is in the history and its handler runs
    /// to completion whatever restarts) or rejected it.
    pub async fn start_update<A: Serialize, R: DeserializeOwned>(
        &self,
        update: &Update<A, R>,
        update_id: &str,
        args: A,
    ) -> Result<UpdateHandle<S, R>, UpdateCallError> {
        let input = Payload::encode(&args).map_err(|e| ClientError::InvalidUpdate {
            reason: format!(
                "the arguments of update {:?} do not encode: {e}",
                update.name()
            ),
        })?;
        let request = cairn_runtime::UpdateWorkflow {
            workflow_id: self.workflow_id.clone(),
            run_id: None,
            update_id: update_id.to_string(),
            name: update.name().to_string(),
            input,
            wait_for: UpdateStage::Accepted,
            wait_ms: cairn_runtime::UPDATE_WAIT_MS_MAX,
        };
        loop {
            let answer = self.client.node.update(request.clone()).await?;
            let handle = UpdateHandle {
                client: self.client.clone(),
                workflow_id: self.workflow_id.clone(),
                run_id: answer.run_id,
                update_id: update_id.to_string(),
                known: None,
                _result: PhantomData,
            };
            match answer.state {
                UpdateState::Admitted => continue,
                UpdateState::Completed(outcome) => {
                    return Ok(UpdateHandle {
                        known: Some(outcome),
                        ..handle
                    });
                }
                _ => return Ok(handle),
            }
        }
    }

    /// Requests cancellation.
    pub async fn cancel(&self, reason: &str) -> Result<(), ClientError> {
        self.client.node.cancel(&self.workflow_id, reason).await
    }

    /// Ends the workflow at once.
    pub async fn terminate(&self, reason: &str) -> Result<(), ClientError> {
        self.client.node.terminate(&self.workflow_id, reason).await
    }

    /// Status, pending activities, history length.
    pub async fn describe(&self) -> Result<Description, ClientError> {
        self.client.node.describe(&self.workflow_id).await
    }

    /// The full history of the current run.
    pub async fn history(&self) -> Result<Vec<HistoryEvent>, ClientError> {
        self.client.node.history(&self.workflow_id).await
    }
}
