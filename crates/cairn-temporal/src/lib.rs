//! Temporal's gRPC `WorkflowService` in front of a Cairn node.

pub mod proto {
    //! The generated server of `temporal.api.workflowservice.v1.WorkflowService`.
    #![allow(
        missing_docs,
        clippy::all,
        missing_debug_implementations,
        rust_2018_idioms
    )]
    tonic::include_proto!("temporal.api.workflowservice.v1");
}

pub mod activities;
pub mod history;
pub mod payloads;
pub mod properties;
pub mod schedules;
pub mod service;
pub mod status;
pub mod updates;
pub mod workflow_tasks;

pub use service::Frontend;

/// The task queue Cairn reports for in-process workflows (it keeps none of its own).
pub const IN_PROCESS_TASK_QUEUE: &str = "cairn-in-process";

use cairn_runtime::Node;
use cairn_store::Store;
use std::future::Future;
use std::sync::Arc;
use tonic::service::interceptor::InterceptedService;

/// Temporal's default frontend port, where `cairn server start-dev` serves by default.
pub const DEFAULT_PORT: u16 = 7233;
/// Most concurrent requests on one connection (long polls included).
pub const REQUESTS_PER_CONNECTION_MAX: usize = 1_024;
/// Largest request accepted, as Temporal's frontend (4 MiB, gRPC's default).
pub const REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The `WorkflowService` over `node`, as a tonic service. With `token`, every call must
/// carry `authorization: Bearer <token>` metadata (what Temporal's clients send for an API
/// key), or it is refused with `UNAUTHENTICATED`.
pub fn service<S: Store>(
    node: Arc<Node<S>>,
    token: Option<String>,
) -> InterceptedService<proto::workflow_service_server::WorkflowServiceServer<Frontend<S>>, Authorize>
{
    let server = proto::workflow_service_server::WorkflowServiceServer::new(Frontend::new(node))
        .max_decoding_message_size(REQUEST_BYTES_MAX)
        // Temporal's clients compress requests with gzip; answers go uncompressed (they are
        // small, and compressing them cost CPU on both sides for nothing on loopback).
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    InterceptedService::new(server, Authorize { token })
}

/// Checks the bearer token of each call, when the node has one.
#[derive(Clone)]
pub struct Authorize {
    token: Option<String>,
}

impl std::fmt::Debug for Authorize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorize")
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

impl tonic::service::Interceptor for Authorize {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if cairn_runtime::auth::bearer_matches(given, token.as_bytes()) {
            Ok(request)
        } else {
            Err(tonic::Status::unauthenticated(
                "missing or wrong bearer token (authorization: Bearer <token>; Temporal's clients send it as api_key)",
            ))
        }
    }
}

/// Accepted connections with Nagle's algorithm off: small request/answer exchanges (a poll
/// answer, an activity result) otherwise wait on the peer's delayed ACK, about 40 ms each.
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            let _ = stream.set_nodelay(true);
        }
        accepted
    })
}

/// Serves Temporal's gRPC API for `node` on `listener` until `shutdown` resolves.
pub async fn serve<S: Store>(
    listener: tokio::net::TcpListener,
    node: Arc<Node<S>>,
    token: Option<String>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(REQUESTS_PER_CONNECTION_MAX)
        .add_service(service(node, token))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}
