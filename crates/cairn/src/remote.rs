//! A client of a remote node, over its HTTP API with MessagePack bodies — the same typed calls
//! as the in-process [`crate::Client`], for services that do not host the workflows themselves.

use crate::workflow::{Query, Signal, Update, function_name};
use cairn_core::WorkflowError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

const MSGPACK: &str = "application/msgpack";

/// Most times a call refused as `overloaded` is tried again.
pub const REMOTE_OVERLOAD_RETRIES_MAX: u32 = 5;
/// Longest wait between two tries of an overloaded call.
pub const REMOTE_OVERLOAD_WAIT_MS_MAX: u64 = 8_000;

/// Why a remote call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteError {
    /// The node refused the request; `code` is the API's stable error code.
    #[error("[{code}] {message} (HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the node: {0}")]
    Transport(String),
    #[error("the node's answer does not decode: {0}")]
    Decode(String),
    #[error("workflow failed: {error_type}: {message}")]
    Failed { error_type: String, message: String },
    #[error("workflow was canceled")]
    Canceled,
    #[error("workflow was terminated: {0}")]
    Terminated(String),
    #[error("workflow timed out")]
    TimedOut,
    /// The update was rejected by its validator, or its handler failed.
    #[error("update {update_id} failed: {error_type}: {message}")]
    UpdateFailed {
        update_id: String,
        error_type: String,
        message: String,
    },
}

/// A client of a node's HTTP API.
///
/// # Examples
/// ```no_run
/// # async fn hello(_: cairn::Ctx, name: String) -> Result<String, cairn::WorkflowError> { Ok(name) }
/// # async fn run() -> Result<(), cairn::RemoteError> {
/// let client = cairn::RemoteClient::new("http://127.0.0.1:7280");
/// let handle = client.start(hello, "hello-1", "Ada".to_string()).send().await?;
/// let greeting: String = handle.result().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RemoteClient {
    agent: ureq::Agent,
    address: String,
    token: Option<String>,
}

impl std::fmt::Debug for RemoteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteClient")
            .field("address", &self.address)
            .finish()
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

#[derive(Deserialize)]
struct OutcomeBody<O> {
    status: String,
    result: Option<O>,
    failure: Option<FailureBody>,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct UpdateBody<R> {
    update_id: String,
    stage: String,
    result: Option<R>,
    failure: Option<FailureBody>,
}

#[derive(Deserialize)]
struct FailureBody {
    error_type: String,
    message: String,
}

impl RemoteClient {
    /// A client of the node at `address` (for example `http://127.0.0.1:7280`).
    pub fn new(address: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Self {
            agent,
            address: address.trim_end_matches('/').to_string(),
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>`. Default: no token.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// One request with a MessagePack body (if any) and answer; runs on a blocking thread.
    /// One API call, retried with back-off while the node answers `overloaded` (429 or 503
    /// before the request reached a handler or wrote anything), at most
    /// [`REMOTE_OVERLOAD_RETRIES_MAX`] times, waiting the node's `Retry-After` (doubling).
    async fn call<R: DeserializeOwned + Send + 'static>(
        &self,
        post: bool,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Option<R>), RemoteError> {
        let mut attempt = 0u32;
        loop {
            match self.call_once(post, path.clone(), body.clone()).await {
                Err((RemoteError::Api { code, .. }, Some(after)))
                    if code == "overloaded" && attempt < REMOTE_OVERLOAD_RETRIES_MAX =>
                {
                    let wait = after
                        .saturating_mul(1 << attempt.min(3))
                        .min(Duration::from_millis(REMOTE_OVERLOAD_WAIT_MS_MAX));
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                Err((error, _)) => return Err(error),
                Ok(answer) => return Ok(answer),
            }
        }
    }

    /// One try: the answer, or the error and the node's `Retry-After` if it sent one.
    async fn call_once<R: DeserializeOwned + Send + 'static>(
        &self,
        post: bool,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Option<R>), (RemoteError, Option<Duration>)> {
        let client = self.clone();
        tokio::task::spawn_blocking(move || {
            let url = format!("{}{path}", client.address);
            let auth = client.token.as_ref().map(|t| format!("Bearer {t}"));
            let response = if post {
                let mut request = client
                    .agent
                    .post(&url)
                    .header("Content-Type", MSGPACK)
                    .header("Accept", MSGPACK);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.send(body.unwrap_or_else(|| vec![0xc0]))
            } else {
                let mut request = client.agent.get(&url).header("Accept", MSGPACK);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            };
            let transport = |e: ureq::Error| (RemoteError::Transport(e.to_string()), None);
            let mut response = response.map_err(transport)?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = response.body_mut().read_to_vec().map_err(transport)?;
            if status >= 400 {
                // Errors are always JSON.
                let error = match serde_json::from_slice::<ErrorBody>(&bytes) {
                    Ok(error) => RemoteError::Api {
                        status,
                        code: error.code,
                        message: error.message,
                    },
                    Err(_) => RemoteError::Api {
                        status,
                        code: "unknown".into(),
                        message: String::from_utf8_lossy(&bytes).into_owned(),
                    },
                };
                return Err((error, retry_after));
            }
            if bytes.is_empty() {
                return Ok((status, None));
            }
            let value = rmp_serde::from_slice(&bytes)
                .map_err(|e| (RemoteError::Decode(e.to_string()), None))?;
            Ok((status, Some(value)))
        })
        .await
        .map_err(|e| (RemoteError::Transport(e.to_string()), None))?
    }

    /// Prepares to start workflow function `f` as `workflow_id` with `input`.
    pub fn start<F, I, O, Fut>(&self, f: F, workflow_id: &str, input: I) -> RemoteStart<I, O>
    where
        F: Fn(crate::Ctx, I) -> Fut + 'static,
        I: Serialize,
        Fut: Future<Output = Result<O, WorkflowError>>,
    {
        let _ = f;
        RemoteStart {
            client: self.clone(),
            body: StartBody {
                workflow_id: workflow_id.to_string(),
                workflow_type: function_name::<F>().to_string(),
                input,
                id_reuse_policy: None,
                execution_timeout_ms: None,
            },
            _output: PhantomData,
        }
    }

    /// A handle on an existing workflow whose result type is `O`.
    pub fn handle<O>(&self, workflow_id: &str) -> RemoteHandle<O> {
        RemoteHandle {
            client: self.clone(),
            path: format!("/api/v1/workflows/{}", encode_path(workflow_id)),
            _output: PhantomData,
        }
    }
}

/// Percent-encodes a path segment.
fn encode_path(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[derive(Serialize)]
struct StartBody<I> {
    workflow_id: String,
    workflow_type: String,
    input: I,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_reuse_policy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    execution_timeout_ms: Option<u64>,
}

/// A remote start being configured; `.send().await` it.
pub struct RemoteStart<I, O> {
    client: RemoteClient,
    body: StartBody<I>,
    _output: PhantomData<fn() -> O>,
}

impl<I, O> std::fmt::Debug for RemoteStart<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStart")
            .field("workflow_id", &self.body.workflow_id)
            .finish()
    }
}

impl<I: Serialize, O> RemoteStart<I, O> {
    /// What to do if the id was used before. Default [`crate::IdReusePolicy::AllowDuplicate`].
    pub fn id_reuse_policy(mut self, policy: crate::IdReusePolicy) -> Self {
        self.body.id_reuse_policy = Some(match policy {
            crate::IdReusePolicy::AllowDuplicateFailedOnly => "allow_duplicate_failed_only",
            crate::IdReusePolicy::RejectDuplicate => "reject_duplicate",
            _ => "allow_duplicate",
        });
        self
    }

    /// Limit on the whole execution. Default none.
    pub fn execution_timeout(mut self, timeout: Duration) -> Self {
        self.body.execution_timeout_ms =
            Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Starts the workflow.
    pub async fn send(self) -> Result<RemoteHandle<O>, RemoteError> {
        let handle = self.client.handle(&self.body.workflow_id);
        let body =
            rmp_serde::to_vec_named(&self.body).map_err(|e| RemoteError::Decode(e.to_string()))?;
        self.client
            .call::<serde::de::IgnoredAny>(true, "/api/v1/workflows".into(), Some(body))
            .await?;
        Ok(handle)
    }
}

/// A remote workflow.
pub struct RemoteHandle<O> {
    client: RemoteClient,
    path: String,
    _output: PhantomData<fn() -> O>,
}

impl<O> std::fmt::Debug for RemoteHandle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteHandle")
            .field("path", &self.path)
            .finish()
    }
}

impl<O: DeserializeOwned + Send + 'static> RemoteHandle<O> {
    /// Waits for the workflow to end (long-polling) and returns its result.
    pub async fn result(&self) -> Result<O, RemoteError> {
        loop {
            let (status, body) = self
                .client
                .call::<OutcomeBody<O>>(false, format!("{}/result?wait_ms=55000", self.path), None)
                .await?;
            if status == 202 {
                continue;
            }
            let outcome = body.ok_or_else(|| RemoteError::Decode("empty result".into()))?;
            return match outcome.status.as_str() {
                "completed" => outcome
                    .result
                    .ok_or_else(|| RemoteError::Decode("no result".into())),
                "failed" => {
                    let f = outcome
                        .failure
                        .ok_or_else(|| RemoteError::Decode("no failure".into()))?;
                    Err(RemoteError::Failed {
                        error_type: f.error_type,
                        message: f.message,
                    })
                }
                "canceled" => Err(RemoteError::Canceled),
                "terminated" => Err(RemoteError::Terminated(outcome.reason.unwrap_or_default())),
                "timed_out" => Err(RemoteError::TimedOut),
                other => Err(RemoteError::Decode(format!("unknown status {other:?}"))),
            };
        }
    }

    /// Sends `signal` with `input`.
    pub async fn signal<T: Serialize>(
        &self,
        signal: &Signal<T>,
        input: T,
    ) -> Result<(), RemoteError> {
        let body =
            rmp_serde::to_vec_named(&input).map_err(|e| RemoteError::Decode(e.to_string()))?;
        let path = format!("{}/signals/{}", self.path, encode_path(signal.name()));
        self.client
            .call::<serde::de::IgnoredAny>(true, path, Some(body))
            .await?;
        Ok(())
    }

    /// Sends `update` with `args` and waits for its result (a new update id each call; see
    /// [`update_with_id`](Self::update_with_id)). Its validator's rejection or its handler's
    /// failure is [`RemoteError::UpdateFailed`].
    pub async fn update<A: Serialize, R: DeserializeOwned + Send + 'static>(
        &self,
        update: &Update<A, R>,
        args: A,
    ) -> Result<R, RemoteError> {
        let id = uuid::Uuid::now_v7().to_string();
        self.update_with_id(update, &id, args).await
    }

    /// Sends `update` with `args` as update `update_id` and waits for its result; sending it
    /// again (after a lost answer) joins the first, never runs it twice.
    pub async fn update_with_id<A: Serialize, R: DeserializeOwned + Send + 'static>(
        &self,
        update: &Update<A, R>,
        update_id: &str,
        args: A,
    ) -> Result<R, RemoteError> {
        let body =
            rmp_serde::to_vec_named(&args).map_err(|e| RemoteError::Decode(e.to_string()))?;
        let path = format!(
            "{}/updates/{}?update_id={}&wait=completed",
            self.path,
            encode_path(update.name()),
            encode_path(update_id)
        );
        loop {
            let (status, answer) = self
                .client
                .call::<UpdateBody<R>>(true, path.clone(), Some(body.clone()))
                .await?;
            let answer = answer.ok_or_else(|| RemoteError::Decode("empty answer".into()))?;
            if status == 202 || answer.stage != "completed" {
                // Not finished within the node's wait: ask again by id.
                continue;
            }
            if let Some(f) = answer.failure {
                return Err(RemoteError::UpdateFailed {
                    update_id: answer.update_id,
                    error_type: f.error_type,
                    message: f.message,
                });
            }
            return answer
                .result
                .ok_or_else(|| RemoteError::Decode("no update result".into()));
        }
    }

    /// Runs `query` with `args`.
    pub async fn query<A: Serialize, R: DeserializeOwned + Send + 'static>(
        &self,
        query: &Query<A, R>,
        args: A,
    ) -> Result<R, RemoteError> {
        let body =
            rmp_serde::to_vec_named(&args).map_err(|e| RemoteError::Decode(e.to_string()))?;
        let path = format!("{}/queries/{}", self.path, encode_path(query.name()));
        let (_, answer) = self.client.call::<R>(true, path, Some(body)).await?;
        answer.ok_or_else(|| RemoteError::Decode("empty answer".into()))
    }

    /// Requests cancellation.
    pub async fn cancel(&self, reason: &str) -> Result<(), RemoteError> {
        let body = rmp_serde::to_vec_named(&Reason { reason })
            .map_err(|e| RemoteError::Decode(e.to_string()))?;
        self.client
            .call::<serde::de::IgnoredAny>(true, format!("{}/cancel", self.path), Some(body))
            .await?;
        Ok(())
    }

    /// Ends the workflow at once.
    pub async fn terminate(&self, reason: &str) -> Result<(), RemoteError> {
        let body = rmp_serde::to_vec_named(&Reason { reason })
            .map_err(|e| RemoteError::Decode(e.to_string()))?;
        self.client
            .call::<serde::de::IgnoredAny>(true, format!("{}/terminate", self.path), Some(body))
            .await?;
        Ok(())
    }
}

#[derive(Serialize)]
struct Reason<'a> {
    reason: &'a str,
}
