//! The `WorkflowService` RPCs Cairn serves, over one node.
//!
//! Workflows run as the node's registered Rust functions, or, for a type not registered here,
//! on the SDK workers polling their task queue (workflow and activity tasks). Everything a request asks that Cairn cannot honour is refused with a message
//! naming it, never silently dropped.

use crate::IN_PROCESS_TASK_QUEUE;
use crate::activities;
use crate::history::{self, RunContext, duration, failure, search_attributes, timestamp};
use crate::payloads::{payloads, to_cairn};
use crate::proto::workflow_service_server::WorkflowService;
use crate::schedules;
use crate::status;
use crate::workflow_tasks;
use cairn_core::RunStatus;
use cairn_runtime::{
    ClientError, IdReusePolicy, Node, Outcome, RemoteOutcome, RemoteStart, StartWorkflow,
    UPDATE_WAIT_MS_MAX, UpdateStage, UpdateWorkflow, WORKFLOW_TASK_TIMEOUT_DEFAULT_MS,
    WORKFLOW_TASK_TIMEOUT_MAX_MS, WorkflowSummary,
};
use cairn_store::Store;
use cairn_types::{RunId, WorkflowId, WorkflowTimeouts};
use std::sync::Arc;
use std::time::Duration;
use temporalio_protos::temporal::api::common::v1::{
    self as common, WorkflowExecution, WorkflowType,
};
use temporalio_protos::temporal::api::enums::v1::TaskQueueKind;
use temporalio_protos::temporal::api::enums::v1::{
    HistoryEventFilterType, WorkflowExecutionStatus, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy,
};
use temporalio_protos::temporal::api::history::v1::History;
use temporalio_protos::temporal::api::namespace::v1::{NamespaceConfig, NamespaceInfo};
use temporalio_protos::temporal::api::replication::v1::{
    ClusterReplicationConfig, NamespaceReplicationConfig,
};
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_protos::temporal::api::workflow::v1 as wf;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::{Request, Response, Status};

/// Longest a `GetWorkflowExecutionHistory` long poll waits before answering with nothing
/// (and a token to poll again), under the 60 s deadline Temporal's clients give it.
pub const HISTORY_LONG_POLL_MS: u64 = 20_000;
/// Longest an activity poll waits before answering with no task (Temporal's clients give it
/// about 70 s).
pub const ACTIVITY_POLL_MS: u64 = 55_000;
/// Most events of one history page.
pub const HISTORY_PAGE_EVENTS_MAX: usize = 1_000;

/// Temporal's `WorkflowService` over a Cairn node.
#[derive(Debug)]
pub struct Frontend<S: Store> {
    node: Arc<Node<S>>,
    namespace: String,
}

impl<S: Store> Frontend<S> {
    /// Serves `node`'s namespace (the node's `NodeConfig::namespace`).
    pub fn new(node: Arc<Node<S>>) -> Self {
        let namespace = node.config().namespace.clone();
        Self { node, namespace }
    }

    fn check_namespace(&self, namespace: &str) -> Result<(), Status> {
        if namespace == self.namespace {
            Ok(())
        } else {
            Err(status::namespace_not_found(namespace, &self.namespace))
        }
    }

    fn namespace_info(&self) -> ws::DescribeNamespaceResponse {
        ws::DescribeNamespaceResponse {
            namespace_info: Some(NamespaceInfo {
                name: self.namespace.clone(),
                state: 1, // REGISTERED
                description: "Cairn".into(),
                id: self.namespace.clone(),
                // What this node does, said explicitly: SDKs pick their code paths by these.
                // Updates, eager workflow start, worker heartbeats and the rest are not served.
                capabilities: Some(namespace_capabilities()),
                ..Default::default()
            }),
            config: Some(NamespaceConfig {
                workflow_execution_retention_ttl: Some(duration(Duration::from_millis(
                    self.node.config().retention_ms,
                ))),
                ..Default::default()
            }),
            // Temporal's CLI reads the replication config unconditionally.
            replication_config: Some(NamespaceReplicationConfig {
                active_cluster_name: "cairn".into(),
                clusters: vec![ClusterReplicationConfig {
                    cluster_name: "cairn".into(),
                }],
                state: 1, // NORMAL
            }),
            ..Default::default()
        }
    }
}

/// The namespace capabilities a Cairn node has.
fn namespace_capabilities()
-> temporalio_protos::temporal::api::namespace::v1::namespace_info::Capabilities {
    temporalio_protos::temporal::api::namespace::v1::namespace_info::Capabilities {
        eager_workflow_start: false,
        sync_update: true,
        async_update: true,
        worker_heartbeats: false,
        ..Default::default()
    }
}

fn workflow_id(id: &str) -> Result<WorkflowId, Status> {
    WorkflowId::new(id).map_err(|e| Status::invalid_argument(format!("workflow_id: {e}")))
}

fn run_id(id: &str) -> Result<Option<RunId>, Status> {
    if id.is_empty() {
        return Ok(None);
    }
    // Temporal's wording, which clients match (the feature suite's readiness check does).
    id.parse::<RunId>()
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("Invalid RunId {id:?}: {e}")))
}

fn std_duration(
    d: Option<&prost_wkt_types::Duration>,
    what: &str,
) -> Result<Option<Duration>, Status> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds == 0 && d.nanos == 0 => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            Err(Status::invalid_argument(format!("{what} is negative")))
        }
        Some(d) => Ok(Some(Duration::new(d.seconds as u64, d.nanos as u32))),
    }
}

fn execution_status(status: Option<RunStatus>) -> WorkflowExecutionStatus {
    match status {
        None | Some(RunStatus::Running) => WorkflowExecutionStatus::Running,
        Some(RunStatus::Completed) => WorkflowExecutionStatus::Completed,
        Some(RunStatus::Failed) => WorkflowExecutionStatus::Failed,
        Some(RunStatus::Canceled) => WorkflowExecutionStatus::Canceled,
        Some(RunStatus::Terminated) => WorkflowExecutionStatus::Terminated,
        Some(RunStatus::TimedOut) => WorkflowExecutionStatus::TimedOut,
        Some(RunStatus::ContinuedAsNew) => WorkflowExecutionStatus::ContinuedAsNew,
    }
}

/// A visibility summary as Temporal's execution info.
fn execution_info(summary: &WorkflowSummary) -> wf::WorkflowExecutionInfo {
    wf::WorkflowExecutionInfo {
        execution: Some(WorkflowExecution {
            workflow_id: summary.workflow_id.clone(),
            run_id: summary.run_id.to_string(),
        }),
        r#type: Some(WorkflowType {
            name: summary.workflow_type.clone(),
        }),
        start_time: Some(timestamp(summary.started_unix_ms)),
        execution_time: Some(timestamp(summary.started_unix_ms)),
        close_time: summary.closed_unix_ms.map(timestamp),
        status: execution_status(summary.status) as i32,
        history_length: summary.history_length as i64,
        search_attributes: Some(search_attributes(&summary.search_attributes)),
        memo: Some(crate::properties::memo_out(&summary.memo)),
        task_queue: IN_PROCESS_TASK_QUEUE.into(),
        parent_execution: summary
            .parent_workflow_id
            .as_ref()
            .map(|id| WorkflowExecution {
                workflow_id: id.clone(),
                run_id: String::new(),
            }),
        ..Default::default()
    }
}

/// A start's cron schedule, if it has one; refuses the start options Cairn cannot honour, by
/// name.
fn cron_of_start(
    cron_schedule: &str,
    start_delay: Option<&prost_wkt_types::Duration>,
) -> Result<Option<String>, Status> {
    if std_duration(start_delay, "workflow_start_delay")?.is_some() {
        if !cron_schedule.is_empty() {
            return Err(Status::invalid_argument(
                "cron_schedule and workflow_start_delay may not be used together",
            ));
        }
        return Err(status::unsupported("workflow_start_delay"));
    }
    Ok((!cron_schedule.is_empty()).then(|| cron_schedule.to_string()))
}

/// What a start request (`StartWorkflowExecution`, `SignalWithStart…`) asks for.
struct StartParams<'a> {
    workflow_id: &'a str,
    workflow_type: Option<&'a WorkflowType>,
    task_queue: Option<&'a TaskQueue>,
    input: Option<&'a common::Payloads>,
    execution_timeout: Option<&'a prost_wkt_types::Duration>,
    run_timeout: Option<&'a prost_wkt_types::Duration>,
    task_timeout: Option<&'a prost_wkt_types::Duration>,
    reuse: i32,
    conflict: i32,
    request_id: &'a str,
    memo: Option<&'a common::Memo>,
    search_attributes: Option<&'a common::SearchAttributes>,
    cron_schedule: Option<String>,
}

impl<S: Store> Frontend<S> {
    /// A signal's arguments for workflow `id`: for a workflow the node's Rust code runs, one
    /// value (several arguments as a tuple); for one an SDK worker runs, exactly as sent
    /// (several arguments stay several). One plain JSON argument reads the same either way,
    /// so only other shapes look the workflow's type up.
    async fn signal_input(
        &self,
        id: &WorkflowId,
        input: Option<&common::Payloads>,
    ) -> Result<cairn_types::Payload, Status> {
        let plain_one = match input.map(|p| p.payloads.as_slice()).unwrap_or_default() {
            [one] => {
                one.metadata.len() == 1
                    && one.metadata.get("encoding").map(Vec::as_slice) == Some(b"json/plain")
            }
            _ => false,
        };
        let remote = !plain_one && {
            let workflow_type = self
                .node
                .current_workflow_type(id)
                .await
                .map_err(status::of)?;
            self.node.registry().workflow_def(&workflow_type).is_none()
        };
        if remote {
            crate::payloads::to_cairn_exact(input, "signal input")
        } else {
            to_cairn(input, "signal input")
        }
        .map_err(|e| Status::invalid_argument(e.0))
    }

    /// Starts a run as `StartWorkflowExecution` asks; answers the run id and whether it is new.
    async fn start(&self, params: StartParams<'_>) -> Result<(RunId, bool), Status> {
        let StartParams {
            workflow_id,
            workflow_type,
            task_queue,
            input,
            execution_timeout,
            run_timeout,
            task_timeout,
            reuse,
            conflict,
            request_id,
            memo,
            search_attributes,
            cron_schedule,
        } = params;
        let id = workflow_id_of(workflow_id)?;
        let workflow_type = workflow_type
            .map(|t| t.name.clone())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Status::invalid_argument("workflow_type is required"))?;
        let task_queue_name = match task_queue {
            Some(q) if !q.name.is_empty() => q.name.clone(),
            _ => return Err(Status::invalid_argument("task_queue is required")),
        };
        let workflow_type_name = workflow_type.clone();
        let task_timeout_ms = match std_duration(task_timeout, "workflow_task_timeout")? {
            None => WORKFLOW_TASK_TIMEOUT_DEFAULT_MS,
            Some(d) => (d.as_millis() as u64).clamp(1_000, WORKFLOW_TASK_TIMEOUT_MAX_MS),
        };
        // A type this node has no code for runs in the workers polling its task queue; its
        // input passes to them exactly.
        let remote = self
            .node
            .registry()
            .workflow_def(&workflow_type_name)
            .is_none()
            .then(|| RemoteStart {
                task_queue: task_queue_name.clone(),
                task_timeout_ms,
            });
        let input = if remote.is_some() {
            crate::payloads::to_cairn_exact(input, "input")
        } else {
            to_cairn(input, "input")
        }
        .map_err(|e| Status::invalid_argument(e.0))?;
        let timeouts = WorkflowTimeouts {
            execution: std_duration(execution_timeout, "workflow_execution_timeout")?,
            run: std_duration(run_timeout, "workflow_run_timeout")?,
        };
        let (id_reuse_policy, terminate_running) =
            match WorkflowIdReusePolicy::try_from(reuse).unwrap_or_default() {
                WorkflowIdReusePolicy::Unspecified | WorkflowIdReusePolicy::AllowDuplicate => {
                    (IdReusePolicy::AllowDuplicate, false)
                }
                WorkflowIdReusePolicy::AllowDuplicateFailedOnly => {
                    (IdReusePolicy::AllowDuplicateFailedOnly, false)
                }
                WorkflowIdReusePolicy::RejectDuplicate => (IdReusePolicy::RejectDuplicate, false),
                #[allow(deprecated)]
                WorkflowIdReusePolicy::TerminateIfRunning => (IdReusePolicy::AllowDuplicate, true),
            };
        let conflict = WorkflowIdConflictPolicy::try_from(conflict).unwrap_or_default();
        let registry = self.node.registry();
        let memo = crate::properties::memo_in(memo, "memo")?;
        let search_attributes = crate::properties::start_search_in(search_attributes, &|name| {
            registry.search_attribute_type(name)
        })?;
        let request = StartWorkflow {
            workflow_id: id.clone(),
            workflow_type,
            input,
            id_reuse_policy,
            timeouts,
            request_id: (!request_id.is_empty()).then(|| request_id.to_string()),
            remote,
            memo,
            search_attributes,
            cron_schedule,
        };
        match self.node.start_workflow(request.clone()).await {
            Ok(run_id) => Ok((run_id, true)),
            Err(ClientError::AlreadyRunning { run_id, .. })
                if conflict == WorkflowIdConflictPolicy::UseExisting =>
            {
                Ok((run_id, false))
            }
            Err(ClientError::AlreadyRunning { .. })
                if terminate_running || conflict == WorkflowIdConflictPolicy::TerminateExisting =>
            {
                match self
                    .node
                    .terminate(
                        &id,
                        "terminated by a start with the TerminateExisting policy",
                    )
                    .await
                {
                    Ok(()) | Err(ClientError::NotRunning { .. }) => {}
                    Err(e) => return Err(status::of(e)),
                }
                // The running run closes with its next transition; the start waits for it.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                loop {
                    match self.node.start_workflow(request.clone()).await {
                        Ok(run_id) => return Ok((run_id, true)),
                        Err(ClientError::AlreadyRunning { .. })
                            if tokio::time::Instant::now() < deadline =>
                        {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => return Err(status::of(e)),
                    }
                }
            }
            Err(e) => Err(status::of(e)),
        }
    }

    /// What converting `read` to Temporal's events needs beside the events.
    fn run_context(&self, read: &cairn_runtime::RunHistory) -> RunContext {
        RunContext {
            task_queue: read
                .remote
                .as_ref()
                .map_or(IN_PROCESS_TASK_QUEUE.into(), |r| r.task_queue.clone()),
            new_run_id: match read.outcome {
                Some(Outcome::ContinuedAsNew { new_run_id }) => Some(new_run_id),
                _ => read.next_run,
            },
            previous_run: read.previous_run,
            parent: read.parent.as_ref().map(|(w, r)| (w.to_string(), *r)),
            task_timeout_ms: read
                .remote
                .as_ref()
                .map_or(WORKFLOW_TASK_TIMEOUT_DEFAULT_MS, |r| r.task_timeout_ms),
            ..RunContext::new(&self.namespace, "", read.run_id, read.remote.is_some())
        }
    }

    /// The execution a request names: its workflow id, and its run id if one is given (which
    /// must then be the current run for operations that act on the current run).
    async fn current_run(
        &self,
        execution: Option<&WorkflowExecution>,
    ) -> Result<WorkflowId, Status> {
        let execution =
            execution.ok_or_else(|| Status::invalid_argument("workflow_execution is required"))?;
        // The run id is checked first, as Temporal's server does.
        let run = run_id(&execution.run_id)?;
        let id = workflow_id_of(&execution.workflow_id)?;
        if let Some(run) = run {
            let current = self.node.current_run_id(&id).await.map_err(status::of)?;
            if current != run {
                return Err(status::of(ClientError::NotRunning {
                    workflow_id: format!("{id} (run {run})"),
                    status: None,
                }));
            }
        }
        Ok(id)
    }
}

fn workflow_id_of(id: &str) -> Result<WorkflowId, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("workflow_id is required"));
    }
    workflow_id(id)
}

/// A history page token: the index of the next event.
fn page_offset(token: &[u8]) -> Result<usize, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    std::str::from_utf8(token)
        .ok()
        .and_then(|s| s.strip_prefix("cairn-history:"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Status::invalid_argument("next_page_token is not one this server issued"))
}

fn page_token(offset: usize) -> Vec<u8> {
    format!("cairn-history:{offset}").into_bytes()
}

#[tonic::async_trait]
impl<S: Store> WorkflowService for Frontend<S> {
    async fn get_system_info(
        &self,
        _request: Request<ws::GetSystemInfoRequest>,
    ) -> Result<Response<ws::GetSystemInfoResponse>, Status> {
        Ok(Response::new(ws::GetSystemInfoResponse {
            server_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
            capabilities: Some(ws::get_system_info_response::Capabilities {
                signal_and_query_header: true,
                activity_failure_include_heartbeat: true,
                internal_error_differentiation: true,
                supports_schedules: true,
                encoded_failure_attributes: true,
                ..Default::default()
            }),
        }))
    }

    async fn describe_namespace(
        &self,
        request: Request<ws::DescribeNamespaceRequest>,
    ) -> Result<Response<ws::DescribeNamespaceResponse>, Status> {
        let request = request.into_inner();
        if !request.id.is_empty() && request.id != self.namespace {
            return Err(status::namespace_not_found(&request.id, &self.namespace));
        }
        if !request.namespace.is_empty() {
            self.check_namespace(&request.namespace)?;
        }
        Ok(Response::new(self.namespace_info()))
    }

    async fn list_namespaces(
        &self,
        _request: Request<ws::ListNamespacesRequest>,
    ) -> Result<Response<ws::ListNamespacesResponse>, Status> {
        Ok(Response::new(ws::ListNamespacesResponse {
            namespaces: vec![self.namespace_info()],
            next_page_token: Vec::new(),
        }))
    }

    async fn start_workflow_execution(
        &self,
        request: Request<ws::StartWorkflowExecutionRequest>,
    ) -> Result<Response<ws::StartWorkflowExecutionResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let cron_schedule = cron_of_start(&r.cron_schedule, r.workflow_start_delay.as_ref())?;
        let (run_id, started) = self
            .start(StartParams {
                workflow_id: &r.workflow_id,
                workflow_type: r.workflow_type.as_ref(),
                task_queue: r.task_queue.as_ref(),
                input: r.input.as_ref(),
                execution_timeout: r.workflow_execution_timeout.as_ref(),
                run_timeout: r.workflow_run_timeout.as_ref(),
                task_timeout: r.workflow_task_timeout.as_ref(),
                reuse: r.workflow_id_reuse_policy,
                conflict: r.workflow_id_conflict_policy,
                request_id: &r.request_id,
                memo: r.memo.as_ref(),
                search_attributes: r.search_attributes.as_ref(),
                cron_schedule,
            })
            .await?;
        Ok(Response::new(ws::StartWorkflowExecutionResponse {
            run_id: run_id.to_string(),
            started,
            ..Default::default()
        }))
    }

    async fn signal_workflow_execution(
        &self,
        request: Request<ws::SignalWorkflowExecutionRequest>,
    ) -> Result<Response<ws::SignalWorkflowExecutionResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        if r.signal_name.is_empty() {
            return Err(Status::invalid_argument("signal_name is required"));
        }
        let id = self.current_run(r.workflow_execution.as_ref()).await?;
        let input = self.signal_input(&id, r.input.as_ref()).await?;
        self.node
            .signal(&id, &r.signal_name, input)
            .await
            .map_err(status::of)?;
        Ok(Response::new(ws::SignalWorkflowExecutionResponse::default()))
    }

    async fn signal_with_start_workflow_execution(
        &self,
        request: Request<ws::SignalWithStartWorkflowExecutionRequest>,
    ) -> Result<Response<ws::SignalWithStartWorkflowExecutionResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let cron_schedule = cron_of_start(&r.cron_schedule, r.workflow_start_delay.as_ref())?;
        if r.signal_name.is_empty() {
            return Err(Status::invalid_argument("signal_name is required"));
        }
        // The request names the type: its code decides the arguments' shape (see
        // `signal_input`).
        let remote = r
            .workflow_type
            .as_ref()
            .is_some_and(|t| self.node.registry().workflow_def(&t.name).is_none());
        let signal_input = if remote {
            crate::payloads::to_cairn_exact(r.signal_input.as_ref(), "signal input")
        } else {
            to_cairn(r.signal_input.as_ref(), "signal input")
        }
        .map_err(|e| Status::invalid_argument(e.0))?;
        // Start unless running (the conflict policy of signal-with-start is "use existing"),
        // then signal: a run started here takes the signal as its first mail after the start.
        let (run_id, started) = self
            .start(StartParams {
                workflow_id: &r.workflow_id,
                workflow_type: r.workflow_type.as_ref(),
                task_queue: r.task_queue.as_ref(),
                input: r.input.as_ref(),
                execution_timeout: r.workflow_execution_timeout.as_ref(),
                run_timeout: r.workflow_run_timeout.as_ref(),
                task_timeout: r.workflow_task_timeout.as_ref(),
                reuse: r.workflow_id_reuse_policy,
                conflict: WorkflowIdConflictPolicy::UseExisting as i32,
                request_id: &r.request_id,
                memo: r.memo.as_ref(),
                search_attributes: r.search_attributes.as_ref(),
                cron_schedule,
            })
            .await?;
        let id = workflow_id_of(&r.workflow_id)?;
        self.node
            .signal(&id, &r.signal_name, signal_input)
            .await
            .map_err(status::of)?;
        Ok(Response::new(
            ws::SignalWithStartWorkflowExecutionResponse {
                run_id: run_id.to_string(),
                started,
                ..Default::default()
            },
        ))
    }

    async fn query_workflow(
        &self,
        request: Request<ws::QueryWorkflowRequest>,
    ) -> Result<Response<ws::QueryWorkflowResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let query = r
            .query
            .ok_or_else(|| Status::invalid_argument("query is required"))?;
        if query.query_type.is_empty() {
            return Err(Status::invalid_argument("query.query_type is required"));
        }
        let execution = r
            .execution
            .ok_or_else(|| Status::invalid_argument("execution is required"))?;
        let id = workflow_id_of(&execution.workflow_id)?;
        let args = to_cairn(query.query_args.as_ref(), "query args")
            .map_err(|e| Status::invalid_argument(e.0))?;
        let answer = self
            .node
            .query(&id, &query.query_type, args)
            .await
            .map_err(status::of)?;
        Ok(Response::new(ws::QueryWorkflowResponse {
            query_result: Some(payloads(&answer)),
            ..Default::default()
        }))
    }

    async fn request_cancel_workflow_execution(
        &self,
        request: Request<ws::RequestCancelWorkflowExecutionRequest>,
    ) -> Result<Response<ws::RequestCancelWorkflowExecutionResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let id = self.current_run(r.workflow_execution.as_ref()).await?;
        let reason = if r.reason.is_empty() {
            "cancel requested".to_string()
        } else {
            r.reason
        };
        self.node.cancel(&id, &reason).await.map_err(status::of)?;
        Ok(Response::new(
            ws::RequestCancelWorkflowExecutionResponse::default(),
        ))
    }

    async fn terminate_workflow_execution(
        &self,
        request: Request<ws::TerminateWorkflowExecutionRequest>,
    ) -> Result<Response<ws::TerminateWorkflowExecutionResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let id = self.current_run(r.workflow_execution.as_ref()).await?;
        let reason = if r.reason.is_empty() {
            "terminated".to_string()
        } else {
            r.reason
        };
        self.node
            .terminate(&id, &reason)
            .await
            .map_err(status::of)?;
        Ok(Response::new(
            ws::TerminateWorkflowExecutionResponse::default(),
        ))
    }

    async fn describe_workflow_execution(
        &self,
        request: Request<ws::DescribeWorkflowExecutionRequest>,
    ) -> Result<Response<ws::DescribeWorkflowExecutionResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let id = self.current_run(r.execution.as_ref()).await?;
        let description = self.node.describe(&id).await.map_err(status::of)?;
        let mut info = execution_info(&description.summary);
        // Temporal's count: the events `GetWorkflowExecutionHistory` returns, which has more
        // kinds than Cairn's own history (workflow task and activity start events).
        let read = self
            .node
            .run_history(&id, Some(description.summary.run_id))
            .await
            .map_err(status::of)?;
        info.history_length = history::convert(&read.events, &self.run_context(&read)).len() as i64;
        let task_queue = description
            .remote
            .as_ref()
            .map_or(IN_PROCESS_TASK_QUEUE.to_string(), |r| r.task_queue.clone());
        info.task_queue = task_queue.clone();
        let remote = description.remote.is_some();
        if let Some(previous) = description.previous_run {
            info.first_run_id = previous.to_string();
        }
        let pending_activities = description
            .pending_activities
            .iter()
            .map(|(seq, activity)| {
                let heartbeat = description
                    .heartbeats
                    .iter()
                    .find(|(s, _)| s == seq)
                    .map(|(_, beat)| beat);
                wf::PendingActivityInfo {
                    activity_id: if remote {
                        crate::history::sdk_id(*seq)
                    } else {
                        seq.to_string()
                    },
                    activity_type: Some(
                        temporalio_protos::temporal::api::common::v1::ActivityType {
                            name: activity.activity_type.clone(),
                        },
                    ),
                    state: 1, // SCHEDULED
                    attempt: activity.attempt as i32,
                    scheduled_time: Some(timestamp(activity.scheduled_unix_ms)),
                    last_failure: activity.last_failure.as_ref().map(failure),
                    next_attempt_schedule_time: activity.retry_at_unix_ms.map(timestamp),
                    heartbeat_details: heartbeat
                        .map(|beat| crate::payloads::payloads(&beat.details)),
                    last_heartbeat_time: heartbeat
                        .filter(|beat| beat.at_unix_ms > 0)
                        .map(|beat| timestamp(beat.at_unix_ms)),
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(ws::DescribeWorkflowExecutionResponse {
            execution_config: Some(wf::WorkflowExecutionConfig {
                task_queue: Some(TaskQueue {
                    name: task_queue.clone(),
                    kind: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            workflow_execution_info: Some(info),
            pending_activities,
            ..Default::default()
        }))
    }

    async fn get_workflow_execution_history(
        &self,
        request: Request<ws::GetWorkflowExecutionHistoryRequest>,
    ) -> Result<Response<ws::GetWorkflowExecutionHistoryResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let execution = r
            .execution
            .ok_or_else(|| Status::invalid_argument("execution is required"))?;
        let id = workflow_id_of(&execution.workflow_id)?;
        let run = run_id(&execution.run_id)?;
        let close_only = r.history_event_filter_type == HistoryEventFilterType::CloseEvent as i32;
        let offset = page_offset(&r.next_page_token)?;
        let page_max = match r.maximum_page_size {
            n if n <= 0 => HISTORY_PAGE_EVENTS_MAX,
            n => (n as usize).min(HISTORY_PAGE_EVENTS_MAX),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(HISTORY_LONG_POLL_MS);
        loop {
            let read = self.node.run_history(&id, run).await.map_err(status::of)?;
            let events = history::convert(&read.events, &self.run_context(&read));
            let closed = read.outcome.is_some();
            // Accepted, but its first transition (which writes the started event) has not
            // committed yet: Temporal's history is never empty, so this waits for it.
            let starting = events.is_empty() && !closed;
            if close_only {
                if closed {
                    let close: Vec<_> = events
                        .into_iter()
                        .rev()
                        .find(history::is_close_event)
                        .into_iter()
                        .collect();
                    return Ok(Response::new(ws::GetWorkflowExecutionHistoryResponse {
                        history: Some(History { events: close }),
                        ..Default::default()
                    }));
                }
            } else if !starting && (events.len() > offset || closed || !r.wait_new_event) {
                let end = events.len().min(offset + page_max);
                let page: Vec<_> = events.get(offset..end).unwrap_or_default().to_vec();
                let more = end < events.len() || (r.wait_new_event && !closed);
                return Ok(Response::new(ws::GetWorkflowExecutionHistoryResponse {
                    history: Some(History { events: page }),
                    next_page_token: if more { page_token(end) } else { Vec::new() },
                    ..Default::default()
                }));
            }
            // Long poll: wait for the run to close (or, for all events, for news).
            let now = tokio::time::Instant::now();
            if (!r.wait_new_event && !starting) || now >= deadline {
                return Ok(Response::new(ws::GetWorkflowExecutionHistoryResponse {
                    history: Some(History::default()),
                    next_page_token: page_token(offset),
                    ..Default::default()
                }));
            }
            let wait = if starting {
                Duration::from_millis(10)
            } else if close_only {
                deadline - now
            } else {
                (deadline - now).min(Duration::from_millis(200))
            };
            let _ = tokio::time::timeout(wait, self.node.run_outcome(&id, read.run_id)).await;
        }
    }

    async fn create_schedule(
        &self,
        request: Request<ws::CreateScheduleRequest>,
    ) -> Result<Response<ws::CreateScheduleResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        if r.memo.is_some() {
            return Err(status::unsupported("a memo on a schedule"));
        }
        let create =
            schedules::create_request(&r.schedule_id, r.schedule.as_ref(), self.node.registry())?;
        self.node
            .create_schedule(create)
            .await
            .map_err(status::of)?;
        if let Some(patch) = &r.initial_patch {
            self.patch(&r.schedule_id, patch).await?;
        }
        Ok(Response::new(ws::CreateScheduleResponse::default()))
    }

    async fn describe_schedule(
        &self,
        request: Request<ws::DescribeScheduleRequest>,
    ) -> Result<Response<ws::DescribeScheduleResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let description = self
            .node
            .describe_schedule(&r.schedule_id, 10)
            .await
            .map_err(status::of)?;
        Ok(Response::new(ws::DescribeScheduleResponse {
            schedule: Some(schedules::schedule_of(&description.record)),
            info: Some(schedules::info_of(&description)),
            ..Default::default()
        }))
    }

    async fn list_schedules(
        &self,
        request: Request<ws::ListSchedulesRequest>,
    ) -> Result<Response<ws::ListSchedulesResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        if !r.query.is_empty() {
            return Err(status::unsupported("a query on ListSchedules"));
        }
        let after = String::from_utf8(r.next_page_token)
            .map_err(|_| Status::invalid_argument("next_page_token is not one Cairn issued"))?;
        let page = usize::try_from(r.maximum_page_size)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(HISTORY_PAGE_EVENTS_MAX)
            .min(HISTORY_PAGE_EVENTS_MAX);
        let mut all = self.node.list_schedules().await.map_err(status::of)?;
        all.sort_by(|a, b| a.schedule_id.cmp(&b.schedule_id));
        let rest: Vec<_> = all
            .into_iter()
            .filter(|s| after.is_empty() || s.schedule_id > after)
            .collect();
        let next_page_token = if rest.len() > page {
            rest[page - 1].schedule_id.clone().into_bytes()
        } else {
            Vec::new()
        };
        Ok(Response::new(ws::ListSchedulesResponse {
            schedules: rest.iter().take(page).map(schedules::list_entry).collect(),
            next_page_token,
        }))
    }

    async fn patch_schedule(
        &self,
        request: Request<ws::PatchScheduleRequest>,
    ) -> Result<Response<ws::PatchScheduleResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let patch = r
            .patch
            .ok_or_else(|| Status::invalid_argument("patch is required"))?;
        self.patch(&r.schedule_id, &patch).await?;
        Ok(Response::new(ws::PatchScheduleResponse::default()))
    }

    async fn update_schedule(
        &self,
        request: Request<ws::UpdateScheduleRequest>,
    ) -> Result<Response<ws::UpdateScheduleResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        if r.memo.is_some() {
            return Err(status::unsupported("a memo on a schedule"));
        }
        let create =
            schedules::create_request(&r.schedule_id, r.schedule.as_ref(), self.node.registry())?;
        // Checked before anything changes: a bad update leaves the schedule as it was.
        create
            .spec
            .compile()
            .map_err(|e| Status::invalid_argument(format!("schedule.spec: {e}")))?;
        create
            .policies
            .validate()
            .map_err(|e| Status::invalid_argument(format!("schedule.policies: {e}")))?;
        // One commit: what the schedule does and when changes, its history stays.
        self.node
            .update_schedule(create)
            .await
            .map_err(status::of)?;
        Ok(Response::new(ws::UpdateScheduleResponse::default()))
    }

    async fn delete_schedule(
        &self,
        request: Request<ws::DeleteScheduleRequest>,
    ) -> Result<Response<ws::DeleteScheduleResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        self.node
            .delete_schedule(&r.schedule_id)
            .await
            .map_err(status::of)?;
        Ok(Response::new(ws::DeleteScheduleResponse::default()))
    }

    async fn poll_workflow_task_queue(
        &self,
        request: Request<ws::PollWorkflowTaskQueueRequest>,
    ) -> Result<Response<ws::PollWorkflowTaskQueueResponse>, Status> {
        let wait = Duration::from_millis(ACTIVITY_POLL_MS);
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let queue = r
            .task_queue
            .filter(|q| !q.name.is_empty())
            .ok_or_else(|| Status::invalid_argument("task_queue is required"))?;
        // Cairn has no sticky queues: every workflow task carries the whole history, and a
        // worker's poll of its sticky queue takes tasks of the normal queue it stands for
        // (the SDK's pollers are split between the two; none waits idle).
        let name = if queue.kind == TaskQueueKind::Sticky as i32 {
            if queue.normal_name.is_empty() {
                tokio::time::sleep(wait).await;
                return Ok(Response::new(ws::PollWorkflowTaskQueueResponse::default()));
            }
            queue.normal_name
        } else {
            queue.name
        };
        self.node
            .note_poller(&name, cairn_runtime::PollKind::Workflow, &r.identity);
        let task = self
            .node
            .poll_workflow_task(&name, wait)
            .await
            .map_err(activities::status)?;
        Ok(Response::new(match task {
            Some(task) => workflow_tasks::poll_response(task, self.node.config().clock.now_ms()),
            None => ws::PollWorkflowTaskQueueResponse::default(),
        }))
    }

    async fn respond_workflow_task_completed(
        &self,
        request: Request<ws::RespondWorkflowTaskCompletedRequest>,
    ) -> Result<Response<ws::RespondWorkflowTaskCompletedResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let token = workflow_token(&r.task_token)?;
        let answers = match crate::updates::answers(&r.messages) {
            Ok(answers) => answers,
            Err(refused) => {
                // As for commands Cairn refuses: the task fails, and the worker sees why.
                let failure =
                    cairn_types::Failure::new("MessagesRefused", refused.message().to_string())
                        .non_retryable();
                let _ = self.node.fail_workflow_task(token, Some(failure)).await;
                return Err(refused);
            }
        };
        let refs = if workflow_tasks::needs_history(&r.commands) {
            let (run_id, history) = self
                .node
                .workflow_task_history(token)
                .await
                .map_err(activities::status)?;
            let context = RunContext::new(&self.namespace, "", run_id, true);
            workflow_tasks::Refs::of(&history, &context)
        } else {
            Default::default()
        };
        let registry = self.node.registry();
        let declared = |name: &str| registry.search_attribute_type(name);
        let (commands, rejections) =
            match workflow_tasks::commands(&r.commands, answers, "", &refs, &declared) {
                Ok(converted) => converted,
                Err(refused) => {
                    // The task is failed, so it is handed out again once the worker's code (or
                    // Cairn) changes; the worker sees why.
                    let failure =
                        cairn_types::Failure::new("CommandsRefused", refused.message().to_string())
                            .non_retryable();
                    let _ = self.node.fail_workflow_task(token, Some(failure)).await;
                    return Err(refused);
                }
            };
        self.node
            .complete_workflow_task(
                token,
                commands,
                workflow_tasks::query_results(&r.query_results),
                r.force_create_new_workflow_task,
                rejections,
            )
            .await
            .map_err(activities::status)?;
        Ok(Response::new(
            ws::RespondWorkflowTaskCompletedResponse::default(),
        ))
    }

    async fn update_workflow_execution(
        &self,
        request: Request<ws::UpdateWorkflowExecutionRequest>,
    ) -> Result<Response<ws::UpdateWorkflowExecutionResponse>, Status> {
        let wait_ms = crate::updates::wait_ms(request.metadata(), UPDATE_WAIT_MS_MAX);
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let execution = r
            .workflow_execution
            .ok_or_else(|| Status::invalid_argument("workflow_execution is required"))?;
        let id = workflow_id_of(&execution.workflow_id)?;
        let run = run_id(&execution.run_id)?;
        let update = r
            .request
            .ok_or_else(|| Status::invalid_argument("request is required"))?;
        let input = update
            .input
            .ok_or_else(|| Status::invalid_argument("request.input is required"))?;
        if input.name.is_empty() {
            return Err(Status::invalid_argument("request.input.name is required"));
        }
        let update_id = match update.meta.map(|m| m.update_id).filter(|u| !u.is_empty()) {
            Some(update_id) => update_id,
            None => {
                let config = self.node.config();
                config.entropy.uuid_v7(config.clock.now_ms()).to_string()
            }
        };
        let wanted = crate::updates::stage_in(r.wait_policy.as_ref(), UpdateStage::Accepted);
        if wanted == UpdateStage::Admitted {
            return Err(status::unsupported(
                "waiting for an update's ADMITTED stage in UpdateWorkflowExecution",
            ));
        }
        let answer = self
            .node
            .update(UpdateWorkflow {
                workflow_id: id.clone(),
                run_id: run,
                update_id,
                name: input.name,
                input: crate::updates::update_input(input.args.as_ref())?,
                wait_for: wanted,
                wait_ms,
            })
            .await
            .map_err(status::of)?;
        let (stage, outcome) = crate::updates::stage_out(&answer, wanted);
        Ok(Response::new(ws::UpdateWorkflowExecutionResponse {
            update_ref: Some(crate::updates::update_ref(id.as_str(), &answer)),
            outcome,
            stage: stage as i32,
            ..Default::default()
        }))
    }

    /// Update-with-start: a start (or, with its conflict policy `USE_EXISTING`, the running
    /// workflow) and an update of it. The two are not one transaction: an update lost
    /// before acceptance is asked again by the caller with the same request ids, which find
    /// the started run and the update.
    async fn execute_multi_operation(
        &self,
        request: Request<ws::ExecuteMultiOperationRequest>,
    ) -> Result<Response<ws::ExecuteMultiOperationResponse>, Status> {
        use ws::execute_multi_operation_request::operation::Operation;
        use ws::execute_multi_operation_response::{Response as OperationResponse, response};
        let timeout = request.metadata().get("grpc-timeout").cloned();
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let [first, second] = <[_; 2]>::try_from(r.operations).map_err(|operations| {
            Status::invalid_argument(format!(
                "operations: {} given; Cairn takes a start and an update (update-with-start)",
                operations.len()
            ))
        })?;
        let (Some(Operation::StartWorkflow(start)), Some(Operation::UpdateWorkflow(update))) =
            (first.operation, second.operation)
        else {
            return Err(Status::invalid_argument(
                "operations: a start then an update (update-with-start) are taken",
            ));
        };
        let update_target = update
            .workflow_execution
            .as_ref()
            .map_or("", |e| e.workflow_id.as_str());
        if update_target != start.workflow_id {
            return Err(Status::invalid_argument(format!(
                "the update names workflow {update_target:?}, the start {:?}",
                start.workflow_id
            )));
        }
        if update
            .workflow_execution
            .as_ref()
            .is_some_and(|e| !e.run_id.is_empty())
        {
            return Err(Status::invalid_argument(
                "the update of an update-with-start names no run id",
            ));
        }
        let started = self
            .start_workflow_execution(Request::new(start))
            .await?
            .into_inner();
        let mut update_request = Request::new(update);
        if let Some(timeout) = timeout {
            update_request
                .metadata_mut()
                .insert("grpc-timeout", timeout);
        }
        let updated = self
            .update_workflow_execution(update_request)
            .await?
            .into_inner();
        Ok(Response::new(ws::ExecuteMultiOperationResponse {
            responses: vec![
                OperationResponse {
                    response: Some(response::Response::StartWorkflow(started)),
                },
                OperationResponse {
                    response: Some(response::Response::UpdateWorkflow(updated)),
                },
            ],
        }))
    }

    async fn poll_workflow_execution_update(
        &self,
        request: Request<ws::PollWorkflowExecutionUpdateRequest>,
    ) -> Result<Response<ws::PollWorkflowExecutionUpdateResponse>, Status> {
        let wait_ms = crate::updates::wait_ms(request.metadata(), UPDATE_WAIT_MS_MAX);
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let update_ref = r
            .update_ref
            .ok_or_else(|| Status::invalid_argument("update_ref is required"))?;
        let execution = update_ref
            .workflow_execution
            .ok_or_else(|| Status::invalid_argument("update_ref.workflow_execution is required"))?;
        if update_ref.update_id.is_empty() {
            return Err(Status::invalid_argument("update_ref.update_id is required"));
        }
        let id = workflow_id_of(&execution.workflow_id)?;
        let run = run_id(&execution.run_id)?;
        // No wait policy: answer at once with the stage the update reached.
        let wanted = crate::updates::stage_in(r.wait_policy.as_ref(), UpdateStage::Admitted);
        let wait_ms = if wanted == UpdateStage::Admitted {
            0
        } else {
            wait_ms
        };
        let answer = self
            .node
            .poll_update(&id, run, &update_ref.update_id, wanted, wait_ms)
            .await
            .map_err(status::of)?;
        let (stage, outcome) = crate::updates::stage_out(&answer, wanted);
        Ok(Response::new(ws::PollWorkflowExecutionUpdateResponse {
            outcome,
            stage: stage as i32,
            update_ref: Some(crate::updates::update_ref(id.as_str(), &answer)),
        }))
    }

    async fn respond_query_task_completed(
        &self,
        request: Request<ws::RespondQueryTaskCompletedRequest>,
    ) -> Result<Response<ws::RespondQueryTaskCompletedResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let token = std::str::from_utf8(&r.task_token)
            .ok()
            .filter(|t| t.starts_with("cairn-wfq/"))
            .ok_or_else(|| {
                Status::invalid_argument("task_token is not a query task token this server issued")
            })?;
        let answer = workflow_tasks::query_answer(
            r.completed_type,
            r.query_result.as_ref(),
            &r.error_message,
        );
        self.node
            .answer_query_task(token, answer)
            .await
            .map_err(activities::status)?;
        Ok(Response::new(
            ws::RespondQueryTaskCompletedResponse::default(),
        ))
    }

    async fn respond_workflow_task_failed(
        &self,
        request: Request<ws::RespondWorkflowTaskFailedRequest>,
    ) -> Result<Response<ws::RespondWorkflowTaskFailedResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let token = workflow_token(&r.task_token)?;
        tracing::warn!(
            cause = r.cause,
            failure = r.failure.as_ref().map_or("", |f| f.message.as_str()),
            "a worker failed a workflow task; it is handed out again"
        );
        let failure = crate::payloads::workflow_failure(r.failure.as_ref());
        self.node
            .fail_workflow_task(token, Some(failure))
            .await
            .map_err(activities::status)?;
        Ok(Response::new(
            ws::RespondWorkflowTaskFailedResponse::default(),
        ))
    }

    async fn poll_activity_task_queue(
        &self,
        request: Request<ws::PollActivityTaskQueueRequest>,
    ) -> Result<Response<ws::PollActivityTaskQueueResponse>, Status> {
        let wait = Duration::from_millis(ACTIVITY_POLL_MS);
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let queue = r
            .task_queue
            .map(|q| q.name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Status::invalid_argument("task_queue is required"))?;
        self.node
            .note_poller(&queue, cairn_runtime::PollKind::Activity, &r.identity);
        let task = self
            .node
            .poll_activity_task(&queue, wait)
            .await
            .map_err(activities::status)?;
        Ok(Response::new(match task {
            Some(task) => activities::poll_response(&self.namespace, task),
            None => ws::PollActivityTaskQueueResponse::default(),
        }))
    }

    async fn respond_activity_task_completed(
        &self,
        request: Request<ws::RespondActivityTaskCompletedRequest>,
    ) -> Result<Response<ws::RespondActivityTaskCompletedResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let result = activities::result(r.result.as_ref())?;
        self.node
            .answer_activity_task(token(&r.task_token)?, RemoteOutcome::Completed(result))
            .await
            .map_err(activities::status)?;
        Ok(Response::new(
            ws::RespondActivityTaskCompletedResponse::default(),
        ))
    }

    async fn respond_activity_task_completed_by_id(
        &self,
        request: Request<ws::RespondActivityTaskCompletedByIdRequest>,
    ) -> Result<Response<ws::RespondActivityTaskCompletedByIdResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let token = self
            .token_by_id(&r.workflow_id, &r.run_id, &r.activity_id)
            .await?;
        let result = activities::result(r.result.as_ref())?;
        self.node
            .answer_activity_task(&token, RemoteOutcome::Completed(result))
            .await
            .map_err(activities::status)?;
        Ok(Response::new(
            ws::RespondActivityTaskCompletedByIdResponse::default(),
        ))
    }

    async fn respond_activity_task_failed(
        &self,
        request: Request<ws::RespondActivityTaskFailedRequest>,
    ) -> Result<Response<ws::RespondActivityTaskFailedResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let token = token(&r.task_token)?;
        if let Some(details) = r.last_heartbeat_details.as_ref() {
            let details = activities::result(Some(details))?;
            let _ = self.node.heartbeat_activity_task(token, details).await;
        }
        let failure = crate::payloads::failure_of(r.failure.as_ref());
        self.node
            .answer_activity_task(token, RemoteOutcome::Failed(failure))
            .await
            .map_err(activities::status)?;
        Ok(Response::new(
            ws::RespondActivityTaskFailedResponse::default(),
        ))
    }

    async fn respond_activity_task_failed_by_id(
        &self,
        request: Request<ws::RespondActivityTaskFailedByIdRequest>,
    ) -> Result<Response<ws::RespondActivityTaskFailedByIdResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let token = self
            .token_by_id(&r.workflow_id, &r.run_id, &r.activity_id)
            .await?;
        let failure = crate::payloads::failure_of(r.failure.as_ref());
        self.node
            .answer_activity_task(&token, RemoteOutcome::Failed(failure))
            .await
            .map_err(activities::status)?;
        Ok(Response::new(
            ws::RespondActivityTaskFailedByIdResponse::default(),
        ))
    }

    async fn respond_activity_task_canceled(
        &self,
        request: Request<ws::RespondActivityTaskCanceledRequest>,
    ) -> Result<Response<ws::RespondActivityTaskCanceledResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        self.node
            .answer_activity_task(
                token(&r.task_token)?,
                RemoteOutcome::Failed(activities::canceled()),
            )
            .await
            .map_err(activities::status)?;
        Ok(Response::new(
            ws::RespondActivityTaskCanceledResponse::default(),
        ))
    }

    async fn respond_activity_task_canceled_by_id(
        &self,
        request: Request<ws::RespondActivityTaskCanceledByIdRequest>,
    ) -> Result<Response<ws::RespondActivityTaskCanceledByIdResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let token = self
            .token_by_id(&r.workflow_id, &r.run_id, &r.activity_id)
            .await?;
        self.node
            .answer_activity_task(&token, RemoteOutcome::Failed(activities::canceled()))
            .await
            .map_err(activities::status)?;
        Ok(Response::new(
            ws::RespondActivityTaskCanceledByIdResponse::default(),
        ))
    }

    async fn record_activity_task_heartbeat(
        &self,
        request: Request<ws::RecordActivityTaskHeartbeatRequest>,
    ) -> Result<Response<ws::RecordActivityTaskHeartbeatResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let details = activities::result(r.details.as_ref())?;
        let cancel_requested = self
            .node
            .heartbeat_activity_task(token(&r.task_token)?, details)
            .await
            .map_err(activities::status)?;
        Ok(Response::new(ws::RecordActivityTaskHeartbeatResponse {
            cancel_requested,
            ..Default::default()
        }))
    }

    async fn record_activity_task_heartbeat_by_id(
        &self,
        request: Request<ws::RecordActivityTaskHeartbeatByIdRequest>,
    ) -> Result<Response<ws::RecordActivityTaskHeartbeatByIdResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let token = self
            .token_by_id(&r.workflow_id, &r.run_id, &r.activity_id)
            .await?;
        let details = activities::result(r.details.as_ref())?;
        let cancel_requested = self
            .node
            .heartbeat_activity_task(&token, details)
            .await
            .map_err(activities::status)?;
        Ok(Response::new(ws::RecordActivityTaskHeartbeatByIdResponse {
            cancel_requested,
            ..Default::default()
        }))
    }

    async fn list_workflow_executions(
        &self,
        request: Request<ws::ListWorkflowExecutionsRequest>,
    ) -> Result<Response<ws::ListWorkflowExecutionsResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let (executions, next_page_token) =
            self.list(&r.query, r.page_size, &r.next_page_token).await?;
        Ok(Response::new(ws::ListWorkflowExecutionsResponse {
            executions,
            next_page_token,
        }))
    }

    async fn scan_workflow_executions(
        &self,
        request: Request<ws::ScanWorkflowExecutionsRequest>,
    ) -> Result<Response<ws::ScanWorkflowExecutionsResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let (executions, next_page_token) =
            self.list(&r.query, r.page_size, &r.next_page_token).await?;
        Ok(Response::new(ws::ScanWorkflowExecutionsResponse {
            executions,
            next_page_token,
        }))
    }

    async fn count_workflow_executions(
        &self,
        request: Request<ws::CountWorkflowExecutionsRequest>,
    ) -> Result<Response<ws::CountWorkflowExecutionsResponse>, Status> {
        let r = request.into_inner();
        self.check_namespace(&r.namespace)?;
        let count = self
            .node
            .count_workflows(&r.query)
            .await
            .map_err(status::of)?;
        Ok(Response::new(ws::CountWorkflowExecutionsResponse {
            count: count as i64,
            groups: Vec::new(),
        }))
    }
}

/// A task token as this server issued it.
fn workflow_token(bytes: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|t| t.starts_with("cairn-wft/"))
        .ok_or_else(|| {
            Status::invalid_argument("task_token is not a workflow task token this server issued")
        })
}

/// An activity task token as this server issued it.
fn token(bytes: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|t| t.starts_with("cairn/"))
        .ok_or_else(|| Status::invalid_argument("task_token is not one this server issued"))
}

impl<S: Store> Frontend<S> {
    /// Applies a schedule patch: pause or unpause (with its note), trigger now, backfills.
    async fn patch(
        &self,
        schedule_id: &str,
        patch: &temporalio_protos::temporal::api::schedule::v1::SchedulePatch,
    ) -> Result<(), Status> {
        if !patch.pause.is_empty() {
            self.node
                .pause_schedule(schedule_id, &patch.pause)
                .await
                .map_err(status::of)?;
        }
        if !patch.unpause.is_empty() {
            self.node
                .unpause_schedule(schedule_id, &patch.unpause)
                .await
                .map_err(status::of)?;
        }
        if let Some(trigger) = &patch.trigger_immediately {
            self.node
                .trigger_schedule(schedule_id, schedules::overlap(trigger.overlap_policy))
                .await
                .map_err(status::of)?;
        }
        for backfill in &patch.backfill_request {
            let at = |t: &Option<prost_wkt_types::Timestamp>, what: &str| {
                t.as_ref()
                    .map(|t| {
                        (t.seconds.max(0) as u64)
                            .saturating_mul(1000)
                            .saturating_add((t.nanos.max(0) as u64) / 1_000_000)
                    })
                    .ok_or_else(|| Status::invalid_argument(format!("backfill {what} is required")))
            };
            self.node
                .backfill_schedule(
                    schedule_id,
                    at(&backfill.start_time, "start_time")?,
                    at(&backfill.end_time, "end_time")?,
                    schedules::overlap(backfill.overlap_policy),
                )
                .await
                .map_err(status::of)?;
        }
        Ok(())
    }

    /// The token of the attempt a remote worker holds, named by workflow, run and activity id.
    async fn token_by_id(
        &self,
        workflow_id: &str,
        run: &str,
        activity_id: &str,
    ) -> Result<String, Status> {
        let id = workflow_id_of(workflow_id)?;
        let seq = activity_id.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "activity_id {activity_id:?} is not one of Cairn's (they are the activity's sequence number)"
            ))
        })?;
        self.node
            .activity_task_token(&id, run_id(run)?, seq)
            .await
            .map_err(status::of)
    }

    async fn list(
        &self,
        query: &str,
        page_size: i32,
        token: &[u8],
    ) -> Result<(Vec<wf::WorkflowExecutionInfo>, Vec<u8>), Status> {
        let page_size = match page_size {
            n if n <= 0 => None,
            n => Some((n as usize).min(cairn_runtime::LIST_PAGE_SIZE_MAX)),
        };
        let token = if token.is_empty() {
            None
        } else {
            Some(
                std::str::from_utf8(token)
                    .map_err(|_| {
                        Status::invalid_argument("next_page_token is not one this server issued")
                    })?
                    .to_string(),
            )
        };
        let page = self
            .node
            .list_workflows(query, page_size, token.as_deref())
            .await
            .map_err(status::of)?;
        Ok((
            page.workflows.iter().map(execution_info).collect(),
            page.next_page_token
                .map(String::into_bytes)
                .unwrap_or_default(),
        ))
    }
}
