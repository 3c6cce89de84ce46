//! Cairn's HTTP API: every client operation of a node as JSON over HTTP.
//!
//! Invariants: this is an edge — it knows wire formats (JSON for people; MessagePack for
//! programs, with `Content-Type`/`Accept: application/msgpack`; payloads are converted at this
//! boundary) and nothing about how runs execute. Every
//! error is a JSON object `{"code": ..., "message": ...}` with a stable `code`, and a request
//! that is malformed (bad JSON, bad id, unknown type, oversized body) is refused before anything
//! is written.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /healthz` | liveness |
//! | `GET /api/v1/openapi.json` | this table as an OpenAPI 3 document |
//! | `GET /`, `GET /ui/{file}` | the web UI (ES modules and CSS built into the binary): workflows (query box, counts, saved views, columns, live), a run (summary, pending work, relationships, history views, a timeline that zooms and pages, signal/query/update, cancel/terminate), schedules, the cluster (with each shard's lag) |
//! | `POST /api/v1/workflows` | start (`workflow_id`, `workflow_type`, `input`, `id_reuse_policy`, `execution_timeout_ms`) |
//! | `GET /api/v1/workflows?workflow_type=&status=` | list |
//! | `GET /api/v1/workflows/{id}?run_id=` | describe a run (default: the current one) |
//! | `GET /api/v1/workflows/{id}/history` | history events |
//! | `GET /api/v1/workflows/{id}/events?run_id=&from=&page_size=&wait_ms=` | a page of history from event `from`; with `wait_ms`, waits for the next event (live) |
//! | `GET /api/v1/workflows/{id}/result?wait_ms=` | result, waiting up to `wait_ms` (long-poll) |
//! | `POST /api/v1/workflows/{id}/signals/{name}` | signal (body: the input) |
//! | `POST /api/v1/workflows/{id}/queries/{name}` | query (body: the arguments) |
//! | `POST /api/v1/workflows/{id}/updates/{name}?update_id=&wait=&wait_ms=` | update (body: the arguments); waits until it is `accepted` or `completed` (default) |
//! | `GET /api/v1/workflows/{id}/updates/{update_id}?wait=&wait_ms=` | where an update got; waits for `wait` (default: answers at once) |
//! | `POST /api/v1/workflows/{id}/cancel` | request cancellation (`reason`) |
//! | `POST /api/v1/workflows/{id}/terminate` | terminate (`reason`) |
//! | `GET /api/v1/visibility/workflows?query=&page_size=&page_token=` | workflows matching a filter (`WorkflowType = 'Order' AND ExecutionStatus = 'Running'`), a page at a time |
//! | `GET /api/v1/visibility/count?query=` | how many match |
//! | `GET /api/v1/visibility/counts?wait_ms=&known=` | counts in all and by status (counters); with `wait_ms`, waits until a workflow record is written (live) |
//! | `POST /api/v1/schedules` | create a schedule (cron and/or intervals, time zone, jitter, start/end, overlap policy, catch-up window) |
//! | `GET /api/v1/schedules` | list schedules |
//! | `GET /api/v1/schedules/{id}` / `PUT` / `DELETE` | describe (next times, recent actions) / replace its spec, action and policies (a create's body; history kept) / delete |
//! | `POST /api/v1/schedules/{id}/pause`, `/unpause` (`note`), `/trigger`, `/backfill` (`start`, `end`) | steer a schedule |
//! | `POST /api/v1/batches` (`operation`: cancel or terminate, `query`, `reason`), `GET /api/v1/batches`, `GET /api/v1/batches/{id}` | a batch operation over what a query selects, run in the background with stored progress |
//! | `GET /api/v1/task-queues?scope=` | this node's task queues: the workers that polled them lately (identity, kind, last poll) and the tasks waiting; with `scope=cluster`, every live node's too (`nodes`) |
//! | `GET /api/v1/cluster` | membership, shard leases (holder, epoch, expiry, placement) and lag (earliest due timer or schedule wake, how long past its time), what this node holds |
//! | `POST /api/v1/internal/query` | a query forwarded by another node (MessagePack; answered only by the shard's holder) |
//! | `POST /api/v1/internal/tasks` | a remote worker's task call forwarded by another node (MessagePack) |
//! | `GET /metrics` | Prometheus text: runs, transitions, activities, commits, batch sizes, actor cache, shards |

mod edge;
mod json;
mod peers;

pub use edge::{
    HEAD_BUFFER_BYTES, HEADER_BYTES_MAX, HEADER_READ_TIMEOUT_MS, LISTEN_BACKLOG, PATH_BYTES_MAX,
    SHUTDOWN_GRACE_MS, bind, serve,
};
pub use peers::{HttpPeers, PEER_CALL_TIMEOUT};

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn_core::RunStatus;
use cairn_runtime::{
    ClientError, IdReusePolicy, Node, Outcome, StartWorkflow, UpdateAnswer, UpdateError,
    UpdateStage, UpdateWorkflow,
};
use cairn_store::Store;
use cairn_types::{RunId, WorkflowId, WorkflowTimeouts};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted, in bytes.
pub const REQUEST_BODY_BYTES_MAX: usize = 256 * 1024;
/// Longest a result request may wait, in milliseconds.
pub const RESULT_WAIT_MS_MAX: u64 = 60_000;

/// An API error: HTTP status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code, "message": self.message});
        let mut response = (self.status, axum::Json(body)).into_response();
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"cairn\""),
            );
        }
        response
    }
}

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> Self {
        use StatusCode as S;
        let (status, code) = match &error {
            ClientError::UnknownWorkflowType { .. } => (S::BAD_REQUEST, "unknown_workflow_type"),
            ClientError::InputDoesNotDecode { .. } => (S::BAD_REQUEST, "input_does_not_decode"),
            ClientError::InvalidWorkflowId(_) => (S::BAD_REQUEST, "invalid_workflow_id"),
            ClientError::InvalidTimeouts(_) => (S::BAD_REQUEST, "invalid_timeouts"),
            ClientError::AlreadyRunning { .. } => (S::CONFLICT, "already_running"),
            ClientError::DuplicateRejected { .. } => (S::CONFLICT, "duplicate_rejected"),
            ClientError::NotRunning { .. } => (S::CONFLICT, "not_running"),
            ClientError::NotFound { .. } => (S::NOT_FOUND, "not_found"),
            ClientError::PayloadTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ClientError::Query(_) => (S::UNPROCESSABLE_ENTITY, "query_failed"),
            ClientError::NodeStopped => (S::SERVICE_UNAVAILABLE, "unavailable"),
            ClientError::ShardUnavailable { .. } => (S::SERVICE_UNAVAILABLE, "shard_unavailable"),
            ClientError::InvalidQuery(_) => (S::BAD_REQUEST, "invalid_query"),
            ClientError::InvalidPageToken { .. } => (S::BAD_REQUEST, "invalid_page_token"),
            ClientError::InvalidPageSize { .. } => (S::BAD_REQUEST, "invalid_page_size"),
            ClientError::QueryTooBroad { .. } => (S::BAD_REQUEST, "query_too_broad"),
            ClientError::Overloaded { .. } => (S::TOO_MANY_REQUESTS, "overloaded"),
            ClientError::InvalidSchedule { .. } => (S::BAD_REQUEST, "invalid_schedule"),
            ClientError::InvalidCronSchedule { .. } => (S::BAD_REQUEST, "invalid_cron_schedule"),
            ClientError::InvalidSearchAttributes { .. } => {
                (S::BAD_REQUEST, "invalid_search_attributes")
            }
            ClientError::InvalidMemo(_) => (S::BAD_REQUEST, "invalid_memo"),
            ClientError::ScheduleNotFound { .. } => (S::NOT_FOUND, "schedule_not_found"),
            ClientError::BatchNotFound { .. } => (S::NOT_FOUND, "batch_not_found"),
            ClientError::TooManyBatches { .. } => (S::TOO_MANY_REQUESTS, "too_many_batches"),
            ClientError::InvalidBatch { .. } => (S::BAD_REQUEST, "invalid_batch"),
            ClientError::ScheduleExists { .. } => (S::CONFLICT, "schedule_exists"),
            ClientError::InvalidUpdate { .. } => (S::BAD_REQUEST, "invalid_update"),
            ClientError::Update(e) => match e {
                UpdateError::TooManyInFlight => (S::TOO_MANY_REQUESTS, "updates_in_flight"),
                UpdateError::TooMany => (S::CONFLICT, "too_many_updates"),
                UpdateError::NotFound { .. } => (S::NOT_FOUND, "update_not_found"),
                UpdateError::Closed => (S::CONFLICT, "not_running"),
                UpdateError::Invalid(_) => (S::BAD_REQUEST, "invalid_update"),
                _ => (S::SERVICE_UNAVAILABLE, "unavailable"),
            },
            // A conflict, an unknown commit outcome, a transaction grown too old while the
            // store stalled: the call may be made again (as Temporal's API answers
            // UNAVAILABLE).
            ClientError::Store(e) if e.is_retryable() => (S::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (S::INTERNAL_SERVER_ERROR, "store_error"),
        };
        Self::new(status, code, error.to_string())
    }
}

/// The media type of MessagePack bodies (requests with this `Content-Type`, responses when the
/// client sends it in `Accept`).
pub const MSGPACK: &str = "application/msgpack";

/// A request body in JSON or, with `Content-Type: application/msgpack`, MessagePack.
struct Wire<T>(T);

impl<T: serde::de::DeserializeOwned, St: Send + Sync> axum::extract::FromRequest<St> for Wire<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &St) -> Result<Self, ApiError> {
        if is_msgpack(&request) {
            let RawBody(bytes) = RawBody::from_request(request, state).await?;
            let value = rmp_serde::from_slice(&bytes).map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string())
            })?;
            return Ok(Self(value));
        }
        let axum::Json(value) = axum::Json::<T>::from_request(request, state)
            .await
            .map_err(body_error)?;
        Ok(Self(value))
    }
}

/// Whether the request's body is MessagePack (by its `Content-Type`).
fn is_msgpack(request: &axum::extract::Request) -> bool {
    request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(MSGPACK.as_bytes()))
}

/// A request body as bytes; too large is a JSON `payload_too_large` error.
struct RawBody(axum::body::Bytes);

impl<St: Send + Sync> axum::extract::FromRequest<St> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &St) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(request, state)
            .await
            .map(Self)
            .map_err(|e| ApiError::new(e.status(), "payload_too_large", e.body_text()))
    }
}

/// A request body that may be left out (or empty): then `T::default()`. JSON or MessagePack
/// as [`Wire`].
struct OptionalWire<T>(T);

impl<T: serde::de::DeserializeOwned + Default, St: Send + Sync> axum::extract::FromRequest<St>
    for OptionalWire<T>
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &St) -> Result<Self, ApiError> {
        let msgpack = is_msgpack(&request);
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        // An empty body is "no input". Blank JSON is too, but never blank MessagePack: the
        // one byte 0x09, 0x0a, 0x0c, 0x0d or 0x20 is the integer 9, 10, 12, 13 or 32.
        let blank = if msgpack {
            bytes.is_empty()
        } else {
            bytes.iter().all(u8::is_ascii_whitespace)
        };
        if blank {
            return Ok(Self(T::default()));
        }
        let value = if msgpack {
            rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())
        };
        value
            .map(Self)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", e))
    }
}

/// Query-string parameters; a malformed one is a JSON `invalid_parameter` error.
struct Params<T>(T);

impl<T: serde::de::DeserializeOwned, St: Send + Sync> axum::extract::FromRequestParts<St>
    for Params<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &St,
    ) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter", e.body_text()))
    }
}

/// Path segments; a malformed one (bad percent-encoding, not UTF-8) is a JSON
/// `invalid_path` error.
struct Segments<T>(T);

impl<T: serde::de::DeserializeOwned + Send, St: Send + Sync> axum::extract::FromRequestParts<St>
    for Segments<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &St,
    ) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text()))
    }
}

/// How to encode a response: MessagePack if the client accepts it, JSON otherwise.
struct Format {
    msgpack: bool,
}

impl<St: Send + Sync> axum::extract::FromRequestParts<St> for Format {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &St,
    ) -> Result<Self, Self::Rejection> {
        let msgpack = parts
            .headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(MSGPACK));
        Ok(Self { msgpack })
    }
}

impl Format {
    fn reply(&self, status: StatusCode, value: &Value) -> Response {
        if self.msgpack {
            match rmp_serde::to_vec_named(value) {
                Ok(bytes) => {
                    (status, [(axum::http::header::CONTENT_TYPE, MSGPACK)], bytes).into_response()
                }
                Err(e) => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    e.to_string(),
                )
                .into_response(),
            }
        } else {
            (status, axum::Json(value)).into_response()
        }
    }
}

fn body_error(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "payload_too_large"
    } else {
        "malformed_body"
    };
    ApiError::new(status, code, rejection.body_text())
}

fn workflow_id(text: &str) -> Result<WorkflowId, ApiError> {
    WorkflowId::new(text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_workflow_id",
            e.to_string(),
        )
    })
}

/// Most requests the API serves at once; past it a request is answered 503 with
/// `Retry-After` at once instead of queueing (the default of [`ApiOptions::requests_in_flight_max`]).
pub const REQUESTS_IN_FLIGHT_MAX: usize = 1_024;
/// Longest a request may take before it is answered 503 (longer than [`RESULT_WAIT_MS_MAX`],
/// so a result long-poll ends by itself first).
pub const REQUEST_TIMEOUT_MS: u64 = RESULT_WAIT_MS_MAX + 15_000;

/// How the API guards its edge.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApiOptions {
    /// With a token, every route but `/healthz` and the UI page requires
    /// `Authorization: Bearer <token>`. Default none.
    pub auth_token: Option<String>,
    /// Host names (without port) accepted in the `Host` header when there is no token, besides
    /// IP addresses, `localhost` and `*.localhost`: a page on another site that resolves its
    /// own name to this machine (DNS rebinding) is refused. Default none.
    pub allowed_hosts: Vec<String>,
    /// Default [`REQUESTS_IN_FLIGHT_MAX`].
    pub requests_in_flight_max: usize,
    /// Default [`REQUEST_TIMEOUT_MS`].
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's head (request line and headers) on a
    /// connection served by [`serve`]; past it the connection is closed. Default
    /// [`HEADER_READ_TIMEOUT_MS`].
    pub header_read_timeout: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            auth_token: None,
            allowed_hosts: Vec::new(),
            requests_in_flight_max: REQUESTS_IN_FLIGHT_MAX,
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
            header_read_timeout: Duration::from_millis(HEADER_READ_TIMEOUT_MS),
        }
    }
}

impl ApiOptions {
    /// Defaults, with `auth_token`.
    pub fn with_token(auth_token: Option<String>) -> Self {
        Self {
            auth_token,
            ..Self::default()
        }
    }
}

/// The API over `node`. With `auth_token`, every route but `/healthz` requires
/// `Authorization: Bearer <token>`; see [`router_with`] for the other options.
pub fn router<S: Store>(node: Arc<Node<S>>, auth_token: Option<String>) -> Router {
    router_with(node, ApiOptions::with_token(auth_token))
}

/// The API over `node`, guarded as `options` say.
pub fn router_with<S: Store>(node: Arc<Node<S>>, options: ApiOptions) -> Router {
    let api = Router::new()
        .route("/api/v1/workflows", post(start::<S>).get(list::<S>))
        .route("/api/v1/workflows/{id}", get(describe::<S>))
        .route("/api/v1/workflows/{id}/history", get(history::<S>))
        .route("/api/v1/workflows/{id}/events", get(events::<S>))
        .route("/api/v1/workflows/{id}/result", get(result::<S>))
        .route("/api/v1/workflows/{id}/signals/{name}", post(signal::<S>))
        .route("/api/v1/workflows/{id}/queries/{name}", post(query::<S>))
        .route(
            "/api/v1/workflows/{id}/updates/{name}",
            post(update::<S>).get(poll_update::<S>),
        )
        .route("/api/v1/workflows/{id}/cancel", post(cancel::<S>))
        .route("/api/v1/workflows/{id}/terminate", post(terminate::<S>))
        .route("/api/v1/visibility/workflows", get(visibility_list::<S>))
        .route("/api/v1/visibility/count", get(visibility_count::<S>))
        .route("/api/v1/visibility/counts", get(visibility_counts::<S>))
        .route(
            "/api/v1/schedules",
            post(schedule_create::<S>).get(schedule_list::<S>),
        )
        .route(
            "/api/v1/schedules/{id}",
            get(schedule_describe::<S>)
                .put(schedule_update::<S>)
                .delete(schedule_delete::<S>),
        )
        .route("/api/v1/schedules/{id}/pause", post(schedule_pause::<S>))
        .route(
            "/api/v1/schedules/{id}/unpause",
            post(schedule_unpause::<S>),
        )
        .route(
            "/api/v1/schedules/{id}/trigger",
            post(schedule_trigger::<S>),
        )
        .route(
            "/api/v1/schedules/{id}/backfill",
            post(schedule_backfill::<S>),
        )
        .route("/api/v1/cluster", get(cluster::<S>))
        .route("/api/v1/task-queues", get(task_queues::<S>))
        .route(
            "/api/v1/batches",
            post(batch_start::<S>).get(batch_list::<S>),
        )
        .route("/api/v1/batches/{id}", get(batch_describe::<S>))
        .route("/api/v1/internal/query", post(internal_query::<S>))
        .route("/api/v1/internal/tasks", post(internal_tasks::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/api/v1/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .with_state(node);
    let edge = Arc::new(edge::Edge::new(options));
    let authorized = {
        let edge = edge.clone();
        axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let edge = edge.clone();
                async move { edge.authorize(request, next).await }
            },
        )
    };
    let guarded = axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let edge = edge.clone();
            async move { edge.guard(request, next).await }
        },
    );
    Router::new()
        .merge(api.layer(authorized))
        .route("/", get(ui))
        .route("/ui/{file}", get(ui_file))
        .route(
            "/favicon.ico",
            get(|| async { axum::response::Redirect::permanent("/ui/favicon.svg") }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(guarded)
        .route("/healthz", get(|| async { "ok" }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    workflow_id: String,
    workflow_type: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    id_reuse_policy: Option<String>,
    #[serde(default)]
    execution_timeout_ms: Option<u64>,
    #[serde(default)]
    memo: serde_json::Map<String, Value>,
    #[serde(default)]
    search_attributes: serde_json::Map<String, Value>,
    #[serde(default)]
    cron_schedule: Option<String>,
}

async fn start<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Wire(body): Wire<StartBody>,
) -> Result<Response, ApiError> {
    let id_reuse_policy = match body.id_reuse_policy.as_deref() {
        None | Some("allow_duplicate") => IdReusePolicy::AllowDuplicate,
        Some("allow_duplicate_failed_only") => IdReusePolicy::AllowDuplicateFailedOnly,
        Some("reject_duplicate") => IdReusePolicy::RejectDuplicate,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_id_reuse_policy",
                format!(
                    "id_reuse_policy {other:?} is not one of allow_duplicate, allow_duplicate_failed_only, reject_duplicate"
                ),
            ));
        }
    };
    let timeouts = WorkflowTimeouts {
        execution: body.execution_timeout_ms.map(Duration::from_millis),
        run: None,
    };
    let run_id = node
        .start_workflow(StartWorkflow {
            workflow_id: workflow_id(&body.workflow_id)?,
            workflow_type: body.workflow_type,
            input: json::payload_of(&body.input)?,
            id_reuse_policy,
            timeouts,
            request_id: None,
            remote: None,
            memo: json::memo_of(&body.memo)?,
            search_attributes: json::search_attributes_of(&body.search_attributes)?,
            cron_schedule: body.cron_schedule,
        })
        .await?;
    let answer = json!({"workflow_id": body.workflow_id, "run_id": run_id.to_string()});
    Ok(format.reply(StatusCode::CREATED, &answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    workflow_type: Option<String>,
    status: Option<String>,
    page_size: Option<usize>,
    page_token: Option<String>,
}

fn parse_status(text: &str) -> Result<RunStatus, ApiError> {
    Ok(match text {
        "running" => RunStatus::Running,
        "completed" => RunStatus::Completed,
        "failed" => RunStatus::Failed,
        "canceled" => RunStatus::Canceled,
        "terminated" => RunStatus::Terminated,
        "timed_out" => RunStatus::TimedOut,
        "continued_as_new" => RunStatus::ContinuedAsNew,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_status",
                format!(
                    "status {other:?} is not one of running, completed, failed, canceled, terminated, timed_out, continued_as_new"
                ),
            ));
        }
    })
}

async fn list<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Params(params): Params<ListParams>,
) -> Result<Response, ApiError> {
    let status = params.status.as_deref().map(parse_status).transpose()?;
    if let Some(t) = &params.workflow_type
        && t.len() > cairn_types::limits::TYPE_NAME_BYTES_MAX
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            format!(
                "workflow_type is {} bytes; type names are at most {}",
                t.len(),
                cairn_types::limits::TYPE_NAME_BYTES_MAX
            ),
        ));
    }
    let page = node
        .list(
            params.workflow_type.as_deref(),
            status,
            params.page_size,
            params.page_token.as_deref(),
        )
        .await?;
    Ok(format.reply(StatusCode::OK, &page_json(&page)))
}

fn page_json(page: &cairn_runtime::WorkflowPage) -> Value {
    json!({
        "workflows": page.workflows.iter().map(json::summary).collect::<Vec<_>>(),
        "next_page_token": page.next_page_token,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunParams {
    run_id: Option<String>,
}

fn run_id(text: Option<&str>) -> Result<Option<RunId>, ApiError> {
    text.map(|t| {
        t.parse::<RunId>()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_run_id", e.to_string()))
    })
    .transpose()
}

async fn describe<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Segments(id): Segments<String>,
    Params(params): Params<RunParams>,
) -> Result<Response, ApiError> {
    let run = run_id(params.run_id.as_deref())?;
    let description = node.describe_run(&workflow_id(&id)?, run).await?;
    Ok(format.reply(StatusCode::OK, &json::description(&description)))
}

/// Longest a live request (`wait_ms`) waits before answering what it has.
pub const LIVE_WAIT_MS_MAX: u64 = 30_000;

/// How often a live request reads the store again while it waits.
pub const LIVE_POLL_MS: u64 = 250;

/// Most live requests waiting at once on a node; past it a live request answers at once
/// (as if its wait had run out), so waiting clients never pile up reads.
pub const LIVE_WAITS_MAX: usize = 256;

static LIVE_WAITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LIVE_WAITS_MAX);

/// Reads with `read` until `changed` says the answer changed or `wait_ms` (at most
/// [`LIVE_WAIT_MS_MAX`]) runs out, one read per [`LIVE_POLL_MS`]; answers the last read.
async fn live<T, F, Fut>(
    wait_ms: Option<u64>,
    mut read: F,
    changed: impl Fn(&T) -> bool,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let first = read().await?;
    let wait = wait_ms.unwrap_or(0).min(LIVE_WAIT_MS_MAX);
    if wait == 0 || changed(&first) {
        return Ok(first);
    }
    let Ok(_permit) = LIVE_WAITS.try_acquire() else {
        return Ok(first);
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
    let mut last = first;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(LIVE_POLL_MS)).await;
        last = read().await?;
        if changed(&last) {
            break;
        }
    }
    Ok(last)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsParams {
    run_id: Option<String>,
    #[serde(default)]
    from: u64,
    page_size: Option<usize>,
    wait_ms: Option<u64>,
}

/// Default events in a page of `/events`.
pub const EVENTS_PAGE_DEFAULT: usize = 200;

/// A stretch of a run's history from event `from`; with `wait_ms`, waits for an event at or
/// past `from` while the run is open (live histories).
async fn events<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Segments(id): Segments<String>,
    Params(params): Params<EventsParams>,
) -> Result<Response, ApiError> {
    let id = workflow_id(&id)?;
    let run = run_id(params.run_id.as_deref())?;
    let size = params.page_size.unwrap_or(EVENTS_PAGE_DEFAULT);
    if size == 0 || size > cairn_runtime::HISTORY_PAGE_EVENTS_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_page_size",
            format!(
                "page_size must be 1 to {}",
                cairn_runtime::HISTORY_PAGE_EVENTS_MAX
            ),
        ));
    }
    // A live wait stays on the run it started on, even if a new run takes the id meanwhile.
    let first = node.history_page(&id, run, params.from, size).await?;
    let pinned = Some(first.run_id);
    let mut first = Some(first);
    let page = live(
        params.wait_ms,
        || {
            let taken = first.take();
            let node = &node;
            let id = &id;
            async move {
                match taken {
                    Some(page) => Ok(page),
                    None => Ok(node.history_page(id, pinned, params.from, size).await?),
                }
            }
        },
        |page| !page.events.is_empty() || page.closed,
    )
    .await?;
    let body = json!({
        "run_id": page.run_id.to_string(),
        "events": page.events.iter().map(json::event).collect::<Vec<_>>(),
        "next_event_id": page.next_event_id,
        "closed": page.closed,
    });
    Ok(format.reply(StatusCode::OK, &body))
}

async fn history<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Segments(id): Segments<String>,
) -> Result<Response, ApiError> {
    let events = node.history(&workflow_id(&id)?).await?;
    let events = Value::Array(events.iter().map(json::event).collect());
    Ok(format.reply(StatusCode::OK, &events))
}

#[derive(Deserialize)]
struct ResultParams {
    wait_ms: Option<u64>,
}

async fn result<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Segments(id): Segments<String>,
    Params(params): Params<ResultParams>,
) -> Result<Response, ApiError> {
    let id = workflow_id(&id)?;
    let wait = Duration::from_millis(params.wait_ms.unwrap_or(0).min(RESULT_WAIT_MS_MAX));
    match tokio::time::timeout(wait, node.result(&id)).await {
        Ok(outcome) => Ok(format.reply(StatusCode::OK, &json::outcome(&outcome?))),
        Err(_) => Ok(format.reply(StatusCode::ACCEPTED, &json!({"status": "running"}))),
    }
}

async fn signal<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Segments((id, name)): Segments<(String, String)>,
    OptionalWire(input): OptionalWire<Value>,
) -> Result<StatusCode, ApiError> {
    node.signal(&workflow_id(&id)?, &name, json::payload_of(&input)?)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn query<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Segments((id, name)): Segments<(String, String)>,
    OptionalWire(args): OptionalWire<Value>,
) -> Result<Response, ApiError> {
    let answer = node
        .query(&workflow_id(&id)?, &name, json::payload_of(&args)?)
        .await?;
    Ok(format.reply(StatusCode::OK, &json::value_of(&answer)))
}

/// How long an update call waits by default.
pub const UPDATE_WAIT_MS_DEFAULT: u64 = 20_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UpdateParams {
    /// Names the update (a repeat joins it); made up when absent.
    update_id: Option<String>,
    /// `accepted` or `completed`.
    wait: Option<String>,
    wait_ms: Option<u64>,
}

impl UpdateParams {
    fn stage(&self, default: UpdateStage) -> Result<UpdateStage, ApiError> {
        match self.wait.as_deref() {
            None => Ok(default),
            Some("admitted") => Ok(UpdateStage::Admitted),
            Some("accepted") => Ok(UpdateStage::Accepted),
            Some("completed") => Ok(UpdateStage::Completed),
            Some(other) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!("wait is {other:?}; it must be admitted, accepted or completed"),
            )),
        }
    }

    fn wait_ms(&self) -> u64 {
        self.wait_ms
            .unwrap_or(UPDATE_WAIT_MS_DEFAULT)
            .min(cairn_runtime::UPDATE_WAIT_MS_MAX)
    }
}

/// An update's answer: 200 once it reached the stage waited for, 202 (ask again) before.
fn update_reply(format: Format, answer: &UpdateAnswer, wanted: UpdateStage) -> Response {
    let status = if answer.state.reached(wanted) {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    format.reply(status, &json::update_answer(answer))
}

async fn update<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Segments((id, name)): Segments<(String, String)>,
    Params(params): Params<UpdateParams>,
    OptionalWire(args): OptionalWire<Value>,
) -> Result<Response, ApiError> {
    let wanted = params.stage(UpdateStage::Completed)?;
    if wanted == UpdateStage::Admitted {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "an update call waits until the update is accepted or completed",
        ));
    }
    let answer = node
        .update(UpdateWorkflow {
            workflow_id: workflow_id(&id)?,
            run_id: None,
            update_id: params
                .update_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            name,
            input: json::payload_of(&args)?,
            wait_for: wanted,
            wait_ms: params.wait_ms(),
        })
        .await?;
    Ok(update_reply(format, &answer, wanted))
}

async fn poll_update<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Segments((id, update_id)): Segments<(String, String)>,
    Params(params): Params<UpdateParams>,
) -> Result<Response, ApiError> {
    if params.update_id.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "the update id is in the path",
        ));
    }
    let wanted = params.stage(UpdateStage::Admitted)?;
    let wait_ms = if wanted == UpdateStage::Admitted {
        0
    } else {
        params.wait_ms()
    };
    let answer = node
        .poll_update(&workflow_id(&id)?, None, &update_id, wanted, wait_ms)
        .await?;
    Ok(update_reply(format, &answer, wanted))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: String,
}

async fn cancel<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Segments(id): Segments<String>,
    OptionalWire(body): OptionalWire<ReasonBody>,
) -> Result<StatusCode, ApiError> {
    node.cancel(&workflow_id(&id)?, &body.reason).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn terminate<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Segments(id): Segments<String>,
    OptionalWire(body): OptionalWire<ReasonBody>,
) -> Result<StatusCode, ApiError> {
    node.terminate(&workflow_id(&id)?, &body.reason).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VisibilityParams {
    #[serde(default)]
    query: String,
    page_size: Option<usize>,
    page_token: Option<String>,
}

async fn visibility_list<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Params(params): Params<VisibilityParams>,
) -> Result<Response, ApiError> {
    let page = node
        .list_workflows(
            &params.query,
            params.page_size,
            params.page_token.as_deref(),
        )
        .await?;
    Ok(format.reply(StatusCode::OK, &page_json(&page)))
}

async fn visibility_count<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Params(params): Params<VisibilityParams>,
) -> Result<Response, ApiError> {
    let count = node.count_workflows(&params.query).await?;
    Ok(format.reply(StatusCode::OK, &json!({"count": count})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountsParams {
    wait_ms: Option<u64>,
    /// The `version` of counts the caller has: with `wait_ms`, the answer waits until the
    /// counts differ from it.
    known: Option<String>,
}

/// The statuses `/visibility/counts` counts, by their names in the query language.
const COUNTED_STATUSES: [(&str, &str); 7] = [
    ("running", "Running"),
    ("completed", "Completed"),
    ("failed", "Failed"),
    ("canceled", "Canceled"),
    ("terminated", "Terminated"),
    ("timed_out", "TimedOut"),
    ("continued_as_new", "ContinuedAsNew"),
];

/// How many workflows there are in all and in each status (reads of maintained counters, no
/// scan); with `wait_ms` and `known`, waits until they change (live lists).
async fn visibility_counts<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Params(params): Params<CountsParams>,
) -> Result<Response, ApiError> {
    let read = || async {
        let total = node.count_workflows("").await?;
        let mut by_status = serde_json::Map::new();
        // Every workflow-record write moves it, so the version changes whenever a list could
        // (a continue-as-new or an attribute upsert moves no count).
        let mut version = format!("{}.{total}", node.visibility_changes().await?);
        for (name, query_name) in COUNTED_STATUSES {
            let n = node
                .count_workflows(&format!("ExecutionStatus = '{query_name}'"))
                .await?;
            by_status.insert(name.to_string(), json!(n));
            version.push_str(&format!(".{n}"));
        }
        Ok::<_, ApiError>((total, by_status, version))
    };
    let known = params.known.clone();
    let (total, by_status, version) = live(params.wait_ms, read, |(_, _, version)| {
        known.as_deref() != Some(version.as_str())
    })
    .await?;
    Ok(format.reply(
        StatusCode::OK,
        &json!({"total": total, "by_status": by_status, "version": version}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntervalBody {
    every_ms: u64,
    #[serde(default)]
    offset_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateScheduleBody {
    schedule_id: String,
    workflow_type: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    cron: Vec<String>,
    #[serde(default)]
    intervals: Vec<IntervalBody>,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    jitter_ms: u64,
    /// RFC 3339.
    #[serde(default)]
    start_time: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    end_time: Option<String>,
    #[serde(default)]
    overlap_policy: Option<String>,
    #[serde(default)]
    catchup_window_ms: Option<u64>,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    note: String,
    #[serde(default)]
    execution_timeout_ms: Option<u64>,
}

fn time_param(field: &str, text: &str) -> Result<u64, ApiError> {
    cairn_core::visibility::parse_time(text).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_schedule",
            format!("{field} {text:?} is not an RFC 3339 time such as 2026-01-01T09:00:00Z"),
        )
    })
}

async fn schedule_create<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Wire(body): Wire<CreateScheduleBody>,
) -> Result<StatusCode, ApiError> {
    node.create_schedule(schedule_request(body)?).await?;
    Ok(StatusCode::CREATED)
}

/// Replaces a schedule's spec, action, policies, pause and note (the body is a create's, its
/// `schedule_id` the path's); its recent actions and counts stay.
async fn schedule_update<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Segments(id): Segments<String>,
    Wire(body): Wire<CreateScheduleBody>,
) -> Result<StatusCode, ApiError> {
    if body.schedule_id != id {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_schedule",
            format!(
                "the body's schedule_id {:?} is not the path's {id:?}",
                body.schedule_id
            ),
        ));
    }
    node.update_schedule(schedule_request(body)?).await?;
    Ok(StatusCode::ACCEPTED)
}

/// A create (or update) request from its JSON body.
fn schedule_request(body: CreateScheduleBody) -> Result<cairn_runtime::CreateSchedule, ApiError> {
    let overlap = match body.overlap_policy.as_deref() {
        None => cairn_core::schedule::OverlapPolicy::default(),
        Some(text) => text
            .parse()
            .map_err(|e: cairn_core::schedule::ScheduleError| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_schedule", e.to_string())
            })?,
    };
    let mut policies = cairn_core::schedule::SchedulePolicies {
        overlap,
        ..Default::default()
    };
    if let Some(window) = body.catchup_window_ms {
        policies.catchup_window_ms = window;
    }
    let spec = cairn_core::schedule::ScheduleSpec {
        cron: body.cron,
        intervals: body
            .intervals
            .into_iter()
            .map(|i| cairn_core::schedule::IntervalSpec {
                every_ms: i.every_ms,
                offset_ms: i.offset_ms,
            })
            .collect(),
        time_zone: body.time_zone,
        jitter_ms: body.jitter_ms,
        start_unix_ms: body
            .start_time
            .as_deref()
            .map(|t| time_param("start_time", t))
            .transpose()?,
        end_unix_ms: body
            .end_time
            .as_deref()
            .map(|t| time_param("end_time", t))
            .transpose()?,
    };
    Ok(cairn_runtime::CreateSchedule {
        schedule_id: body.schedule_id,
        spec,
        action: cairn_runtime::ScheduleAction {
            workflow_type: body.workflow_type,
            input: json::payload_of(&body.input)?,
            timeouts: WorkflowTimeouts {
                execution: body.execution_timeout_ms.map(Duration::from_millis),
                run: None,
            },
            workflow_id: None,
            remote: None,
            memo: Default::default(),
            search_attributes: Default::default(),
        },
        policies,
        paused: body.paused,
        note: body.note,
    })
}

async fn schedule_list<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
) -> Result<Response, ApiError> {
    let schedules = node.list_schedules().await?;
    let list: Vec<Value> = schedules
        .into_iter()
        .map(|record| {
            json::schedule(&cairn_runtime::ScheduleDescription {
                record,
                next_times_unix_ms: Vec::new(),
            })
        })
        .collect();
    Ok(format.reply(StatusCode::OK, &Value::Array(list)))
}

async fn schedule_describe<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Segments(id): Segments<String>,
) -> Result<Response, ApiError> {
    let described = node.describe_schedule(&id, 5).await?;
    Ok(format.reply(StatusCode::OK, &json::schedule(&described)))
}

async fn schedule_delete<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Segments(id): Segments<String>,
) -> Result<StatusCode, ApiError> {
    node.delete_schedule(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    #[serde(default)]
    note: String,
}

async fn schedule_pause<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Segments(id): Segments<String>,
    OptionalWire(body): OptionalWire<NoteBody>,
) -> Result<StatusCode, ApiError> {
    node.pause_schedule(&id, &body.note).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn schedule_unpause<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Segments(id): Segments<String>,
    OptionalWire(body): OptionalWire<NoteBody>,
) -> Result<StatusCode, ApiError> {
    node.unpause_schedule(&id, &body.note).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    overlap_policy: Option<String>,
}

fn overlap_param(
    text: Option<&str>,
) -> Result<Option<cairn_core::schedule::OverlapPolicy>, ApiError> {
    text.map(|t| {
        t.parse().map_err(|e: cairn_core::schedule::ScheduleError| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_schedule", e.to_string())
        })
    })
    .transpose()
}

async fn schedule_trigger<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Segments(id): Segments<String>,
    OptionalWire(body): OptionalWire<TriggerBody>,
) -> Result<StatusCode, ApiError> {
    let overlap = overlap_param(body.overlap_policy.as_deref())?;
    node.trigger_schedule(&id, overlap).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillBody {
    /// RFC 3339.
    start: String,
    /// RFC 3339.
    end: String,
    #[serde(default)]
    overlap_policy: Option<String>,
}

async fn schedule_backfill<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Segments(id): Segments<String>,
    Wire(body): Wire<BackfillBody>,
) -> Result<StatusCode, ApiError> {
    let start = time_param("start", &body.start)?;
    let end = time_param("end", &body.end)?;
    let overlap = overlap_param(body.overlap_policy.as_deref())?;
    node.backfill_schedule(&id, start, end, overlap).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    /// `cancel` or `terminate`.
    operation: String,
    query: String,
    #[serde(default)]
    reason: String,
}

/// Starts a batch operation over what a visibility query selects; it runs in the background.
async fn batch_start<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Wire(body): Wire<BatchBody>,
) -> Result<Response, ApiError> {
    let operation = match body.operation.as_str() {
        "cancel" => cairn_runtime::BatchOperation::Cancel,
        "terminate" => cairn_runtime::BatchOperation::Terminate,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_batch",
                format!("operation {other:?} is not cancel or terminate"),
            ));
        }
    };
    let record = node
        .start_batch(operation, &body.query, &body.reason)
        .await?;
    Ok(format.reply(StatusCode::CREATED, &json::batch(&record)))
}

async fn batch_list<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
) -> Result<Response, ApiError> {
    let batches = node.list_batches().await?;
    let list: Vec<Value> = batches.iter().map(json::batch).collect();
    Ok(format.reply(StatusCode::OK, &Value::Array(list)))
}

async fn batch_describe<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Segments(id): Segments<String>,
) -> Result<Response, ApiError> {
    let record = node.describe_batch(&id).await?;
    Ok(format.reply(StatusCode::OK, &json::batch(&record)))
}

#[derive(Deserialize)]
struct TaskQueuesParams {
    /// `node` (default): this node's queues; `cluster`: every live node's, each asked.
    scope: Option<String>,
}

/// This node's task queues (recent pollers and waiting tasks), or with `scope=cluster` every
/// live node's, by node.
async fn task_queues<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
    Params(params): Params<TaskQueuesParams>,
) -> Result<Response, ApiError> {
    let mut body = json!({"node_id": node.config().node_id, "task_queues": node.task_queues()});
    match params.scope.as_deref() {
        None | Some("node") => {}
        Some("cluster") => body["nodes"] = json!(node.cluster_task_queues().await),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!("scope must be node or cluster, not {other:?}"),
            ));
        }
    }
    Ok(format.reply(StatusCode::OK, &body))
}

async fn cluster<S: Store>(
    State(node): State<Arc<Node<S>>>,
    format: Format,
) -> Result<Response, ApiError> {
    let status = node.cluster_status().await?;
    Ok(format.reply(StatusCode::OK, &json::cluster(&status)))
}

/// A remote worker's task call forwarded by another node. MessagePack only; never forwarded
/// again.
async fn internal_tasks<S: Store>(
    State(node): State<Arc<Node<S>>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let call: cairn_runtime::PeerTaskCall = rmp_serde::from_slice(&body.0)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string()))?;
    let answer = node.serve_forwarded_task(call).await;
    let bytes = rmp_serde::to_vec_named(&answer).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            e.to_string(),
        )
    })?;
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, MSGPACK)],
        bytes,
    )
        .into_response())
}

/// A query forwarded by another node. MessagePack only; never forwarded again.
async fn internal_query<S: Store>(
    State(node): State<Arc<Node<S>>>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let query: peers::ForwardedQuery = rmp_serde::from_slice(&body.0)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string()))?;
    match node.answer_forwarded_query(query.into()).await {
        Ok(answer) => {
            let bytes =
                rmp_serde::to_vec_named(&peers::ForwardedAnswer { answer }).map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "store_error",
                        e.to_string(),
                    )
                })?;
            Ok((
                StatusCode::OK,
                [(axum::http::header::CONTENT_TYPE, MSGPACK)],
                bytes,
            )
                .into_response())
        }
        Err(cairn_runtime::PeerError::Query(e)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query_failed",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_owner",
            e.to_string(),
        )),
    }
}

/// The web UI: one static page that talks to the API (it asks for the token if the API needs
/// one, so the page itself is public).
async fn ui() -> Response {
    (
        [(axum::http::header::CACHE_CONTROL, "no-cache")],
        axum::response::Html(include_str!("../assets/index.html")),
    )
        .into_response()
}

/// The web UI's files, built into the binary: plain ES modules and CSS, no build step, so
/// `cargo build` alone makes the UI every node serves.
const UI_FILES: [(&str, &str, &str); 9] = [
    (
        "app.js",
        "text/javascript",
        include_str!("../assets/ui/app.js"),
    ),
    (
        "util.js",
        "text/javascript",
        include_str!("../assets/ui/util.js"),
    ),
    (
        "workflows.js",
        "text/javascript",
        include_str!("../assets/ui/workflows.js"),
    ),
    (
        "workflow.js",
        "text/javascript",
        include_str!("../assets/ui/workflow.js"),
    ),
    (
        "schedules.js",
        "text/javascript",
        include_str!("../assets/ui/schedules.js"),
    ),
    (
        "cluster.js",
        "text/javascript",
        include_str!("../assets/ui/cluster.js"),
    ),
    (
        "taskqueues.js",
        "text/javascript",
        include_str!("../assets/ui/taskqueues.js"),
    ),
    ("app.css", "text/css", include_str!("../assets/ui/app.css")),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../assets/ui/favicon.svg"),
    ),
];

/// A UI file's entity tag: a hash of its bytes (FNV-1a, 64 bits), quoted.
fn ui_etag(body: &str) -> String {
    let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

async fn ui_file(Path(name): Path<String>, headers: axum::http::HeaderMap) -> Response {
    match UI_FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => {
            // Revalidated each load (a new binary's UI is never mixed with an old one's), and
            // answered 304 without the body when the browser has this version.
            let etag = ui_etag(body);
            let cached = headers
                .get(axum::http::header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
            let head = [
                (axum::http::header::CONTENT_TYPE, content_type.to_string()),
                (axum::http::header::CACHE_CONTROL, "no-cache".to_string()),
                (axum::http::header::ETAG, etag),
            ];
            if cached {
                (StatusCode::NOT_MODIFIED, head).into_response()
            } else {
                (head, *body).into_response()
            }
        }
        None => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such UI file").into_response()
        }
    }
}

/// The OpenAPI document of this API.
pub const OPENAPI_JSON: &str = include_str!("../assets/openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI_JSON,
    )
        .into_response()
}

/// Prometheus text exposition of the node's metrics.
async fn metrics<S: Store>(State(node): State<Arc<Node<S>>>) -> Response {
    use std::fmt::Write as _;
    let m = node.metrics();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let mut text = String::new();
    let mut counter = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    counter(
        "cairn_transitions_total",
        "counter",
        "Committed run transitions.",
        load(&m.transitions).to_string(),
    );
    counter(
        "cairn_activities_succeeded_total",
        "counter",
        "Activity attempts that returned a result.",
        load(&m.activities_succeeded).to_string(),
    );
    counter(
        "cairn_activities_failed_total",
        "counter",
        "Activity attempts that failed.",
        load(&m.activities_failed).to_string(),
    );
    counter(
        "cairn_store_commits_total",
        "counter",
        "Store transactions committed by the committer.",
        load(&m.commits).to_string(),
    );
    counter(
        "cairn_actor_activations_total",
        "counter",
        "Runs loaded into memory (snapshot + replay).",
        load(&m.activations).to_string(),
    );
    counter(
        "cairn_actor_passivations_total",
        "counter",
        "Idle runs dropped from memory.",
        load(&m.passivations).to_string(),
    );
    counter(
        "cairn_actor_cache_size",
        "gauge",
        "Runs currently in memory.",
        load(&m.active_actors).to_string(),
    );
    counter(
        "cairn_shards_owned",
        "gauge",
        "Shards this node holds.",
        node.held_shards().len().to_string(),
    );
    counter(
        "cairn_shard_claims_total",
        "counter",
        "Shards claimed by this node, takeovers included.",
        load(&m.shard_claims).to_string(),
    );
    counter(
        "cairn_shard_takeovers_total",
        "counter",
        "Shards claimed from a dead holder (its lease lapsed).",
        load(&m.shard_takeovers).to_string(),
    );
    counter(
        "cairn_shard_handoffs_total",
        "counter",
        "Shards this node handed off (placed elsewhere, or draining).",
        load(&m.shard_handoffs).to_string(),
    );
    counter(
        "cairn_shard_losses_total",
        "counter",
        "Shards this node found taken over while it still held them in memory.",
        load(&m.shard_losses).to_string(),
    );
    counter(
        "cairn_runs_rehydrated_total",
        "counter",
        "Runs with waiting mail woken when this node claimed their shard.",
        load(&m.runs_rehydrated).to_string(),
    );
    counter(
        "cairn_commit_slot_waits_total",
        "counter",
        "Commits of the node's own work that waited for a place in the full committer queue.",
        load(&m.commit_slot_waits).to_string(),
    );
    counter(
        "cairn_commits_skipped_total",
        "counter",
        "Housekeeping writes skipped (repeated later) because the committer queue was full.",
        load(&m.commits_skipped).to_string(),
    );
    counter(
        "cairn_activity_attempts_dispatched",
        "gauge",
        "Activity attempts dispatched to this node's workers now (running or waiting for a slot).",
        load(&m.activity_attempts_dispatched).to_string(),
    );
    counter(
        "cairn_activity_attempts_dispatched_peak",
        "gauge",
        "The most activity attempts ever dispatched at once (bounded by activity_attempts_dispatched_max).",
        load(&m.activity_attempts_dispatched_peak).to_string(),
    );
    counter(
        "cairn_activity_tasks_deferred_total",
        "counter",
        "Activity tasks written deferred because the workers were full, pulled as attempts ended.",
        load(&m.activity_tasks_deferred).to_string(),
    );
    counter(
        "cairn_result_watches",
        "gauge",
        "Store watches result waiters hold now (at most result_watches_max).",
        load(&m.result_watches).to_string(),
    );
    counter(
        "cairn_result_polls_total",
        "counter",
        "Reads of a run's record by result waiters past the watch bound.",
        load(&m.result_polls).to_string(),
    );
    counter(
        "cairn_result_pollers",
        "gauge",
        "Result waiters past the watch bound now; together they read at most 1,000 times a second.",
        load(&m.result_pollers).to_string(),
    );
    counter(
        "cairn_commit_batches_in_flight",
        "gauge",
        "Commit batches in flight now, each its own store transaction.",
        load(&m.commit_batches_in_flight).to_string(),
    );
    counter(
        "cairn_activity_attempts_lost_total",
        "counter",
        "Activity attempts of an earlier tenure of a shard, failed as lost by its new holder.",
        load(&m.activity_attempts_lost).to_string(),
    );
    counter(
        "cairn_queries_forwarded_total",
        "counter",
        "Queries sent to the node holding the run.",
        load(&m.queries_forwarded).to_string(),
    );
    let by_type = m.by_type();
    let _ = writeln!(
        text,
        "# HELP cairn_workflows_started_total Runs started by this node, by type.\n# TYPE cairn_workflows_started_total counter"
    );
    for (t, c) in &by_type {
        let _ = writeln!(
            text,
            "cairn_workflows_started_total{{workflow_type=\"{t}\"}} {}",
            c.started
        );
    }
    let _ = writeln!(
        text,
        "# HELP cairn_workflows_closed_total Runs closed by this node, by type and outcome.\n# TYPE cairn_workflows_closed_total counter"
    );
    for (t, c) in &by_type {
        for (outcome, n) in [
            ("completed", c.completed),
            ("failed", c.failed),
            ("canceled", c.canceled),
            ("terminated", c.terminated),
            ("timed_out", c.timed_out),
        ] {
            let _ = writeln!(
                text,
                "cairn_workflows_closed_total{{workflow_type=\"{t}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }
    let _ = writeln!(
        text,
        "# HELP cairn_workflows_active Runs started and not yet closed by this node, by type.\n# TYPE cairn_workflows_active gauge"
    );
    for (t, c) in &by_type {
        let closed = c.completed + c.failed + c.canceled + c.terminated + c.timed_out;
        let _ = writeln!(
            text,
            "cairn_workflows_active{{workflow_type=\"{t}\"}} {}",
            c.started.saturating_sub(closed)
        );
    }
    m.workflow_execution_time.render(
        "cairn_workflow_execution_seconds",
        "Start to close of runs closed by this node.",
        &mut text,
    );
    m.activity_schedule_to_start.render(
        "cairn_activity_schedule_to_start_seconds",
        "From scheduling an activity attempt to a worker starting it.",
        &mut text,
    );
    m.lease_renew_latency.render(
        "cairn_lease_renew_seconds",
        "Membership heartbeat commit latency (one heartbeat renews all of a node's leases).",
        &mut text,
    );
    m.commit_latency.render(
        "cairn_store_commit_seconds",
        "Latency of one batch commit.",
        &mut text,
    );
    m.commit_batch_size.render(
        "cairn_store_commit_batch_requests",
        "Commit requests per store transaction.",
        &mut text,
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

/// Kept public for the binary: an outcome as JSON.
pub fn outcome_json(outcome: &Outcome) -> Value {
    json::outcome(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::StoreError;

    /// A retryable store error (the store stalled, a conflict, an unknown commit outcome) is
    /// answered 503 `unavailable` with `Retry-After`, so clients call again; any other store
    /// error stays a 500.
    #[test]
    fn retryable_store_errors_are_unavailable() {
        let retryable = [
            StoreError::TransactionTooOld {
                age_ms: 5_193,
                limit_ms: 5_000,
            },
            StoreError::Conflict,
            StoreError::MaybeCommitted,
        ];
        for error in retryable {
            let api = ApiError::from(ClientError::Store(error.clone()));
            assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
            assert_eq!(api.code, "unavailable", "{error}");
            let response = api.into_response();
            assert!(
                response
                    .headers()
                    .contains_key(axum::http::header::RETRY_AFTER)
            );
        }
        let broken = ApiError::from(ClientError::Store(StoreError::Backend {
            message: "a value does not decode".into(),
        }));
        assert_eq!(broken.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(broken.code, "store_error");
    }
}
