//! Node-to-node calls over the nodes' own HTTP APIs: a forwarded query goes to
//! `POST /api/v1/internal/query` of the node holding the run, and a remote worker's task call
//! (a take of a task waiting there, an answer to one it handed out) to
//! `POST /api/v1/internal/tasks`, with MessagePack bodies and the cluster's bearer token.
//!
//! Why the HTTP API and not `ractor_cluster`: the API is already there on every node, already
//! authenticated and observable, and node discovery comes free from the membership records in
//! the store; ractor_cluster's own documentation calls it not production-ready, wants nodes
//! wired up by hand, and would make every message type serializable. Only queries and remote
//! workers' tasks travel this way; starts, signals and cancellations go through the store.

use cairn_runtime::{
    PeerError, PeerFuture, PeerQuery, PeerTaskAnswer, PeerTaskCall, Peers, QueryError,
};
use cairn_types::{Payload, RunId, WorkflowId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest one forwarded call may take.
pub const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(35);

/// The body of a forwarded query.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ForwardedQuery {
    pub workflow_id: WorkflowId,
    pub run_id: RunId,
    pub name: String,
    pub args: Payload,
}

/// The answer to a forwarded query.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ForwardedAnswer {
    pub answer: Payload,
}

impl From<PeerQuery> for ForwardedQuery {
    fn from(q: PeerQuery) -> Self {
        Self {
            workflow_id: q.workflow_id,
            run_id: q.run_id,
            name: q.name,
            args: q.args,
        }
    }
}

impl From<ForwardedQuery> for PeerQuery {
    fn from(q: ForwardedQuery) -> Self {
        Self {
            workflow_id: q.workflow_id,
            run_id: q.run_id,
            name: q.name,
            args: q.args,
        }
    }
}

/// [`Peers`] over HTTP: other nodes are reached at the `advertise_address` in their
/// membership records.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// let peers = cairn_server::HttpPeers::new(Some("s3cret".into()));
/// let config = cairn_runtime::NodeConfig {
///     advertise_address: Some("http://10.0.0.7:7280".into()),
///     peers: Some(cairn_runtime::PeersHandle(Arc::new(peers))),
///     ..cairn_runtime::NodeConfig::default()
/// };
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct HttpPeers {
    agent: ureq::Agent,
    auth: Option<String>,
}

impl std::fmt::Debug for HttpPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPeers")
            .field("token", &self.auth.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl HttpPeers {
    /// Peers reached with `Authorization: Bearer <auth_token>` when one is given (every node of
    /// a cluster shares the token).
    pub fn new(auth_token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(PEER_CALL_TIMEOUT))
            .build()
            .into();
        Self {
            agent,
            auth: auth_token.map(|t| format!("Bearer {t}")),
        }
    }

    fn call(&self, address: &str, query: PeerQuery) -> Result<Payload, PeerError> {
        let url = format!("{}/api/v1/internal/query", address.trim_end_matches('/'));
        let body = rmp_serde::to_vec_named(&ForwardedQuery::from(query))
            .map_err(|e| PeerError::Unreachable(format!("query does not encode: {e}")))?;
        let (status, bytes) = self.post(&url, &body)?;
        if status == 200 {
            let answer: ForwardedAnswer = rmp_serde::from_slice(&bytes).map_err(|e| {
                PeerError::Unreachable(format!("{url}: answer does not decode: {e}"))
            })?;
            return Ok(answer.answer);
        }
        let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let code = error["code"].as_str().unwrap_or("");
        let message = error["message"].as_str().unwrap_or("").to_string();
        Err(match code {
            "not_owner" => PeerError::NotOwner,
            "query_failed" => PeerError::Query(QueryError::Handler(message)),
            _ => PeerError::Unreachable(format!("{url}: HTTP {status} {code} {message}")),
        })
    }
}

impl HttpPeers {
    /// Posts a MessagePack `body` to `url` with the cluster's token: the status and the answer.
    fn post(&self, url: &str, body: &[u8]) -> Result<(u16, Vec<u8>), PeerError> {
        let mut request = self
            .agent
            .post(url)
            .header("Content-Type", crate::MSGPACK)
            .header("Accept", crate::MSGPACK);
        if let Some(auth) = &self.auth {
            request = request.header("Authorization", auth);
        }
        let mut response = request
            .send(body)
            .map_err(|e| PeerError::Unreachable(format!("{url}: {e}")))?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .read_to_vec()
            .map_err(|e| PeerError::Unreachable(format!("{url}: reading the answer: {e}")))?;
        Ok((status, bytes))
    }

    fn call_task(&self, address: &str, call: PeerTaskCall) -> Result<PeerTaskAnswer, PeerError> {
        let url = format!("{}/api/v1/internal/tasks", address.trim_end_matches('/'));
        let body = rmp_serde::to_vec_named(&call)
            .map_err(|e| PeerError::Unreachable(format!("task call does not encode: {e}")))?;
        let (status, bytes) = self.post(&url, &body)?;
        if status != 200 {
            return Err(PeerError::Unreachable(format!(
                "{url}: HTTP {status} {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        rmp_serde::from_slice(&bytes)
            .map_err(|e| PeerError::Unreachable(format!("{url}: answer does not decode: {e}")))
    }
}

impl Peers for HttpPeers {
    fn task(&self, address: &str, call: PeerTaskCall) -> PeerFuture<PeerTaskAnswer> {
        let peers = self.clone();
        let address = address.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || peers.call_task(&address, call))
                .await
                .map_err(|e| PeerError::Unreachable(format!("peer call task failed: {e}")))?
        })
    }

    fn query(&self, address: &str, query: PeerQuery) -> PeerFuture<Payload> {
        let peers = self.clone();
        let address = address.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || peers.call(&address, query))
                .await
                .map_err(|e| PeerError::Unreachable(format!("peer call task failed: {e}")))?
        })
    }
}
