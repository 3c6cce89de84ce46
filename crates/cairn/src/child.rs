//! Child workflows as the parent's code sees them: `ctx.child_workflow(f, input)`, configured
//! like an activity call, awaited for the typed result or started for a handle.

use crate::workflow::{Ctx, function_name};
use cairn_core::{ChildError, ChildFuture, WorkflowContext, WorkflowError};
use cairn_types::{ChildOptions, Failure, ParentClosePolicy, Payload, RunId, WorkflowId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A child workflow call being configured; `.await` it for the child's result, or
/// `.start().await` for a [`ChildHandle`] once the child has started.
///
/// # Examples
/// ```no_run
/// use cairn::{Ctx, WorkflowError, ParentClosePolicy};
/// async fn fulfil(_ctx: Ctx, order: String) -> Result<String, WorkflowError> { Ok(order) }
///
/// async fn batch(ctx: Ctx, orders: Vec<String>) -> Result<Vec<String>, WorkflowError> {
///     let mut done = Vec::new();
///     for order in orders {
///         let receipt = ctx
///             .child_workflow(fulfil, order.clone())
///             .id(format!("order-{order}-fulfillment"))
///             .parent_close_policy(ParentClosePolicy::Abandon)
///             .await?;
///         done.push(receipt);
///     }
///     Ok(done)
/// }
/// ```
pub struct ChildCall<O> {
    ctx: WorkflowContext,
    workflow_type: &'static str,
    workflow_id: Option<String>,
    input: Result<Payload, Failure>,
    options: ChildOptions,
    /// Why a memo value did not encode, if one did not.
    memo_error: Option<String>,
    _output: PhantomData<fn() -> O>,
}

impl<O> std::fmt::Debug for ChildCall<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildCall")
            .field("workflow_type", &self.workflow_type)
            .field("workflow_id", &self.workflow_id)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// Starts workflow `f` as a child of this one, with `input`.
    pub fn child_workflow<F, I, O, Fut>(&self, f: F, input: I) -> ChildCall<O>
    where
        F: Fn(Ctx, I) -> Fut + 'static,
        I: Serialize,
        O: DeserializeOwned,
        Fut: Future<Output = Result<O, WorkflowError>>,
    {
        let _ = f;
        ChildCall {
            ctx: self.inner().clone(),
            workflow_type: function_name::<F>(),
            workflow_id: None,
            input: Payload::encode(&input).map_err(|e| {
                Failure::new("PayloadEncode", format!("child input: {e}")).non_retryable()
            }),
            options: ChildOptions::default(),
            memo_error: None,
            _output: PhantomData,
        }
    }
}

impl<O> ChildCall<O> {
    /// The child's workflow id. Default: a UUID from the run's deterministic random source.
    pub fn id(mut self, workflow_id: impl Into<String>) -> Self {
        self.workflow_id = Some(workflow_id.into());
        self
    }

    /// What happens to the child if this workflow closes first. Default
    /// [`ParentClosePolicy::Terminate`].
    pub fn parent_close_policy(mut self, policy: ParentClosePolicy) -> Self {
        self.options.parent_close_policy = policy;
        self
    }

    /// Limit on the child's whole execution (its continue-as-new chain). Default none.
    pub fn execution_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeouts.execution = Some(timeout);
        self
    }

    /// Limit on one run of the child. Default none.
    pub fn run_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeouts.run = Some(timeout);
        self
    }

    /// Adds `key` to the child's memo.
    pub fn memo<T: Serialize>(mut self, key: &str, value: &T) -> Self {
        match Payload::encode(value) {
            Ok(value) => {
                self.options.memo.insert(key.to_string(), value);
            }
            Err(e) => self.memo_error = Some(format!("memo {key:?}: {e}")),
        }
        self
    }

    /// Starts the child with search attribute `attribute` set to `value`.
    pub fn search_attribute<T: crate::SearchAttributeType>(
        mut self,
        attribute: &crate::SearchAttribute<T>,
        value: T,
    ) -> Self {
        self.options
            .search_attributes
            .insert(attribute.name().to_string(), value.into_value());
        self
    }
}

impl<O: DeserializeOwned> ChildCall<O> {
    /// Issues the start (recorded in this run's next commit, with the child's own start) and
    /// waits until the child started: the handle then awaits its result or cancels it.
    pub async fn start(self) -> Result<ChildHandle<O>, ChildError> {
        let mut handle = self.issue();
        match handle.future.as_mut() {
            Some(future) => {
                handle.run_id = Some(future.started().await?);
                Ok(handle)
            }
            None => Err(handle.refused.take().expect("refused or issued")),
        }
    }

    /// Records the start command, or a handle that resolves at once with why the start was
    /// refused before it was made (bad id, input or timeouts).
    fn issue(self) -> ChildHandle<O> {
        let refused = |cause: String| ChildHandle {
            future: None,
            refused: Some(ChildError::StartFailed { cause }),
            run_id: None,
            _output: PhantomData,
        };
        let input = match self.input {
            Ok(input) => input,
            Err(failure) => return refused(failure.to_string()),
        };
        if let Err(e) = self.options.timeouts.validate() {
            return refused(format!("invalid child timeouts: {e}"));
        }
        if let Some(e) = self.memo_error {
            return refused(e);
        }
        if let Err(e) = cairn_types::memo::validate_memo(&self.options.memo) {
            return refused(format!("invalid child memo: {e}"));
        }
        if let Err(e) =
            cairn_types::search::validate_search_attributes(&self.options.search_attributes)
        {
            return refused(format!("invalid child search attributes: {e}"));
        }
        let id = match self.workflow_id {
            Some(id) => id,
            None => self.ctx.uuid().to_string(),
        };
        let workflow_id = match WorkflowId::new(id) {
            Ok(id) => id,
            Err(e) => return refused(format!("invalid child workflow id: {e}")),
        };
        let future = self
            .ctx
            .start_child(self.workflow_type, workflow_id, input, self.options);
        ChildHandle {
            future: Some(future),
            refused: None,
            run_id: None,
            _output: PhantomData,
        }
    }
}

/// Awaiting the call starts the child and resolves with its typed result.
impl<O: DeserializeOwned + 'static> IntoFuture for ChildCall<O> {
    type Output = Result<O, ChildError>;
    type IntoFuture = ChildHandle<O>;

    fn into_future(self) -> ChildHandle<O> {
        self.issue()
    }
}

/// A started child: await it for the typed result, or cancel it.
pub struct ChildHandle<O> {
    future: Option<ChildFuture>,
    refused: Option<ChildError>,
    run_id: Option<RunId>,
    _output: PhantomData<fn() -> O>,
}

impl<O> std::fmt::Debug for ChildHandle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildHandle")
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

impl<O> ChildHandle<O> {
    /// The child's run id (known once started through [`ChildCall::start`]).
    pub fn run_id(&self) -> Option<RunId> {
        self.run_id
    }

    /// Asks the child to cancel; awaiting the handle then tells how it ended.
    pub fn cancel(&mut self) {
        if let Some(future) = &mut self.future {
            future.cancel();
        }
    }
}

impl<O: DeserializeOwned> Future for ChildHandle<O> {
    type Output = Result<O, ChildError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.future {
            Some(future) => Pin::new(future).poll(cx).map(|result| {
                result.and_then(|payload| {
                    payload.decode().map_err(|e| {
                        ChildError::Failed(
                            Failure::new("PayloadDecode", format!("child result: {e}"))
                                .non_retryable(),
                        )
                    })
                })
            }),
            None => Poll::Ready(Err(this
                .refused
                .take()
                .expect("child handle polled after completion"))),
        }
    }
}
