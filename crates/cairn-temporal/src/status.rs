//! Cairn's errors as gRPC statuses, with the error details Temporal's SDKs look for.

use cairn_runtime::{ClientError, QueryError, UpdateError};
use prost::{Message, Name};
use temporalio_protos::google::rpc::Status as RpcStatus;
use temporalio_protos::temporal::api::errordetails::v1 as details;
use tonic::{Code, Status};

/// A status carrying one error detail message (as `google.rpc.Status` in the details header,
/// where Temporal's clients read it).
fn with_detail<M: Message + Name>(code: Code, message: String, detail: &M) -> Status {
    let status = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_wkt_types::Any {
            type_url: format!("type.googleapis.com/{}", M::full_name()),
            value: detail.encode_to_vec(),
        }],
    };
    Status::with_details(code, message, status.encode_to_vec().into())
}

/// The workflow is already running (or its id may not be used again).
pub fn already_started(message: String, run_id: String) -> Status {
    with_detail(
        Code::AlreadyExists,
        message,
        &details::WorkflowExecutionAlreadyStartedFailure {
            run_id,
            ..Default::default()
        },
    )
}

/// Only the `default` namespace exists on a Cairn node.
pub fn namespace_not_found(namespace: &str, served: &str) -> Status {
    with_detail(
        Code::NotFound,
        format!("namespace {namespace:?} not found: this Cairn node serves only {served:?}"),
        &details::NamespaceNotFoundFailure {
            namespace: namespace.to_string(),
        },
    )
}

/// A request field Cairn cannot honour yet: refused rather than ignored.
pub fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not supported by Cairn yet"))
}

/// A Cairn client error as the status Temporal's server gives for the same case.
pub fn of(error: ClientError) -> Status {
    let message = error.to_string();
    match error {
        ClientError::AlreadyRunning { run_id, .. } => already_started(message, run_id.to_string()),
        ClientError::DuplicateRejected { .. } => already_started(message, String::new()),
        ClientError::NotFound { .. } | ClientError::NotRunning { .. } => with_detail(
            Code::NotFound,
            message,
            &details::NotFoundFailure::default(),
        ),
        ClientError::Query(QueryError::Handler(_)) | ClientError::Query(QueryError::Held(_)) => {
            with_detail(
                Code::InvalidArgument,
                message,
                &details::QueryFailedFailure::default(),
            )
        }
        ClientError::Query(_) | ClientError::NodeStopped | ClientError::ShardUnavailable { .. } => {
            Status::unavailable(message)
        }
        ClientError::Overloaded { .. } => with_detail(
            Code::ResourceExhausted,
            message,
            &details::ResourceExhaustedFailure {
                cause: 3, // RESOURCE_EXHAUSTED_CAUSE_SYSTEM_OVERLOADED
                ..Default::default()
            },
        ),
        ClientError::Update(update) => match update {
            UpdateError::TooManyInFlight => with_detail(
                Code::ResourceExhausted,
                message,
                &details::ResourceExhaustedFailure {
                    cause: 2, // RESOURCE_EXHAUSTED_CAUSE_CONCURRENT_LIMIT
                    ..Default::default()
                },
            ),
            UpdateError::TooMany => Status::failed_precondition(message),
            UpdateError::NotFound { .. } | UpdateError::Closed => with_detail(
                Code::NotFound,
                message,
                &details::NotFoundFailure::default(),
            ),
            UpdateError::Invalid(_) => Status::invalid_argument(message),
            UpdateError::Held(_)
            | UpdateError::NotStarted
            | UpdateError::Unavailable
            | UpdateError::Store(_) => Status::unavailable(message),
        },
        ClientError::InvalidUpdate { .. } => Status::invalid_argument(message),
        ClientError::ScheduleNotFound { .. } | ClientError::BatchNotFound { .. } => {
            Status::not_found(message)
        }
        ClientError::TooManyBatches { .. } => Status::resource_exhausted(message),
        ClientError::InvalidBatch { .. } => Status::invalid_argument(message),
        // Temporal's server answers with the detail of a running workflow (a schedule runs
        // as one); its SDKs raise their "schedule already running" error on that detail.
        ClientError::ScheduleExists { .. } => already_started(message, String::new()),
        ClientError::UnknownWorkflowType { .. }
        | ClientError::InputDoesNotDecode { .. }
        | ClientError::InvalidWorkflowId(_)
        | ClientError::PayloadTooLarge { .. }
        | ClientError::InvalidTimeouts(_)
        | ClientError::InvalidSchedule { .. }
        | ClientError::InvalidCronSchedule { .. }
        | ClientError::InvalidSearchAttributes { .. }
        | ClientError::InvalidMemo(_)
        | ClientError::InvalidQuery(_)
        | ClientError::InvalidPageSize { .. }
        | ClientError::QueryTooBroad { .. }
        | ClientError::InvalidPageToken { .. } => Status::invalid_argument(message),
        ClientError::Cluster(_) | ClientError::Store(_) => Status::unavailable(message),
        _ => Status::internal(message),
    }
}
