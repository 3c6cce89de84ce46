//! The workflow side: `Ctx` and its typed calls.

use cairn_core::{ActivityError, WorkflowContext, WorkflowError};
use cairn_runtime::ActivityContext;
use cairn_types::{ActivityOptions, ActivityTimeouts, Failure, Payload, RetryPolicy};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::TypeId;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

/// Names given at registration (`NodeBuilder::workflow_named`, `activity_named`), by function.
fn names_given() -> &'static std::sync::RwLock<HashMap<TypeId, &'static str>> {
    static NAMES: OnceLock<std::sync::RwLock<HashMap<TypeId, &'static str>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

/// Gives function `F` the type name `name` in this process: history records it, and every
/// call that names the function (starts, activities, children, schedules) uses it. Giving one
/// function two names panics: history would then hold both.
pub(crate) fn give_name<F: 'static>(name: &str) -> &'static str {
    let mut names = names_given().write().unwrap_or_else(|p| p.into_inner());
    match names.get(&TypeId::of::<F>()) {
        Some(given) if *given == name => given,
        Some(given) => panic!(
            "{} is already named {given:?}; it cannot also be named {name:?}",
            std::any::type_name::<F>()
        ),
        None => {
            // Registrations are few and live for the process.
            let name: &'static str = Box::leak(name.to_string().into_boxed_str());
            names.insert(TypeId::of::<F>(), name);
            name
        }
    }
}

/// The name a function is registered and scheduled under, which history records: the name
/// given at registration, or else the function's own name (the last path segment of its type
/// name, which renaming the module or upgrading the compiler does not change). Closures have no
/// stable name and are refused.
pub fn function_name<F: 'static>() -> &'static str {
    if let Some(given) = names_given()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&TypeId::of::<F>())
    {
        return given;
    }
    let full = std::any::type_name::<F>();
    assert!(
        !full.contains("{{closure}}"),
        "workflows and activities must be named functions, not closures ({full})"
    );
    full.rsplit("::").next().unwrap_or(full)
}

/// The activity type name of activity function `F`.
pub fn activity_name<F: 'static>(_f: &F) -> &'static str {
    function_name::<F>()
}

/// The workflow type name of workflow function `F`.
pub fn workflow_name<F: 'static>(_f: &F) -> &'static str {
    function_name::<F>()
}

/// A typed signal: its name and payload type, shared by the workflow and its clients.
#[derive(Debug)]
pub struct Signal<T> {
    name: &'static str,
    _type: PhantomData<fn(T)>,
}

impl<T> Signal<T> {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _type: PhantomData,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A typed query: its name, argument type and answer type.
#[derive(Debug)]
pub struct Query<A, R> {
    name: &'static str,
    _type: PhantomData<fn(A) -> R>,
}

impl<A, R> Query<A, R> {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _type: PhantomData,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A typed update: its name, argument type and result type, shared by the workflow (its
/// handler) and its clients.
#[derive(Debug)]
pub struct Update<A, R> {
    name: &'static str,
    _type: PhantomData<fn(A) -> R>,
}

impl<A, R> Update<A, R> {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _type: PhantomData,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<Payload, Failure> {
    Payload::encode(value)
        .map_err(|e| Failure::new("PayloadEncode", format!("{what}: {e}")).non_retryable())
}

/// `encode`, refusing a payload too large for one stored event (`PayloadTooLarge`).
fn encode_stored<T: Serialize>(value: &T, what: &str) -> Result<Payload, Failure> {
    let payload = encode(value, what)?;
    if payload.len() > cairn_types::limits::INLINE_PAYLOAD_BYTES_MAX {
        return Err(Failure::payload_too_large(what, payload.len()));
    }
    Ok(payload)
}

fn decode<T: DeserializeOwned>(payload: &Payload, what: &str) -> Result<T, Failure> {
    payload
        .decode()
        .map_err(|e| Failure::new("PayloadDecode", format!("{what}: {e}")).non_retryable())
}

/// The workflow's handle on its run. Everything here is deterministic: results come from
/// history, never from the outside world directly.
#[derive(Clone, Debug)]
pub struct Ctx {
    inner: WorkflowContext,
}

impl Ctx {
    pub(crate) fn new(inner: WorkflowContext) -> Self {
        Self { inner }
    }

    pub(crate) fn inner(&self) -> &WorkflowContext {
        &self.inner
    }

    /// Ends this run and starts a new run of the same workflow id with `input`, a fresh history
    /// and the same options: `return Err(ctx.continue_as_new(&state))`. `result` on the
    /// workflow follows the chain to its end; the execution timeout spans the chain.
    pub fn continue_as_new<I: Serialize>(&self, input: &I) -> WorkflowError {
        match Payload::encode(input) {
            Ok(input) => self.inner.continue_as_new(input),
            Err(e) => WorkflowError::Failed(
                Failure::new("PayloadEncode", format!("continue-as-new input: {e}"))
                    .non_retryable(),
            ),
        }
    }

    /// Events in this run's history so far (as of the transition running now).
    pub fn history_length(&self) -> u64 {
        self.inner.history_length()
    }

    /// Encoded bytes of this run's history so far.
    pub fn history_size_bytes(&self) -> u64 {
        self.inner.history_size_bytes()
    }

    /// True once the history is long enough (10,240 events or 10 MiB) that the run should
    /// continue as new; a run that goes on past 51,200 events or 50 MiB is terminated.
    pub fn continue_as_new_suggested(&self) -> bool {
        self.inner.continue_as_new_suggested()
    }

    /// Calls activity `f` with `input`. Configure with the builder methods, then `.await`.
    /// Defaults: start-to-close 60 s, Temporal's default retry policy, task queue `default`.
    pub fn activity<F, I, O, Fut>(&self, f: F, input: I) -> ActivityCall<O>
    where
        F: Fn(ActivityContext, I) -> Fut + 'static,
        I: Serialize,
        O: DeserializeOwned,
        Fut: Future<Output = Result<O, Failure>>,
    {
        let _ = f;
        ActivityCall {
            ctx: self.inner.clone(),
            activity_type: std::borrow::Cow::Borrowed(function_name::<F>()),
            input: encode_stored(&input, "the activity input"),
            options: ActivityOptions {
                task_queue: "default".into(),
                timeouts: ActivityTimeouts::default(),
                retry: RetryPolicy::default(),
            },
            started: None,
            _output: PhantomData,
        }
    }

    /// Calls the activity type `name`, which this node need not host: with
    /// `NodeConfig::remote_activities`, an attempt of a type not registered here waits in its
    /// task queue (set it with `.task_queue(...)`) for a remote worker, such as a Temporal SDK
    /// worker polling the node's gRPC API. The input is one value (a worker in another
    /// language receives it as one JSON argument); the result decodes as `O`.
    pub fn activity_named<I, O>(&self, name: &str, input: I) -> ActivityCall<O>
    where
        I: Serialize,
        O: DeserializeOwned,
    {
        ActivityCall {
            ctx: self.inner.clone(),
            activity_type: std::borrow::Cow::Owned(name.to_string()),
            input: encode_stored(&input, "the activity input"),
            options: ActivityOptions {
                task_queue: "default".into(),
                timeouts: ActivityTimeouts::default(),
                retry: RetryPolicy::default(),
            },
            started: None,
            _output: PhantomData,
        }
    }

    /// Sleeps on a durable timer.
    pub async fn sleep(&self, duration: Duration) {
        self.inner.sleep(duration).await;
    }

    /// The current time of the run (the time of the transition being executed), Unix ms.
    pub fn now_unix_ms(&self) -> u64 {
        self.inner.now_unix_ms()
    }

    /// A deterministic random number.
    pub fn random(&self) -> u64 {
        self.inner.random_u64()
    }

    /// A deterministic UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        self.inner.uuid()
    }

    /// Runs `f` once; replays return the recorded value.
    pub fn side_effect<T: Serialize + DeserializeOwned>(&self, f: impl FnOnce() -> T) -> T {
        let payload = self
            .inner
            .side_effect(|| Payload::encode(&f()).expect("side effect value encodes"));
        payload
            .decode()
            .expect("a recorded side effect decodes as its own type")
    }

    /// See [`WorkflowContext::patched`].
    pub fn patched(&self, patch_id: &str) -> bool {
        self.inner.patched(patch_id)
    }

    /// Waits until `predicate` holds.
    pub async fn wait_condition(&self, predicate: impl FnMut() -> bool) {
        self.inner.wait_condition(predicate).await;
    }

    /// Waits until `predicate` holds or `timeout` passes; true if it held.
    pub async fn wait_condition_timeout(
        &self,
        predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> bool {
        self.inner.wait_condition_timeout(predicate, timeout).await
    }

    /// Calls `handler` with each signal `signal` (including ones that arrived earlier).
    pub fn on_signal<T: DeserializeOwned + 'static>(
        &self,
        signal: &Signal<T>,
        mut handler: impl FnMut(T) + 'static,
    ) {
        let name = signal.name;
        self.inner
            .on_signal(name, move |payload| match payload.decode::<T>() {
                Ok(value) => handler(value),
                Err(e) => log_undecodable_signal(name, &e.to_string()),
            });
    }

    /// A receiver of signal `signal`, for workflows that prefer awaiting signals in line.
    pub fn signal_receiver<T: DeserializeOwned>(&self, signal: &Signal<T>) -> SignalReceiver<T> {
        SignalReceiver {
            inner: self.inner.signal_channel(signal.name),
            _type: PhantomData,
        }
    }

    /// Answers query `query` with `handler`, which reads the workflow's state.
    pub fn on_query<A: DeserializeOwned + 'static, R: Serialize + 'static>(
        &self,
        query: &Query<A, R>,
        handler: impl Fn(A) -> R + 'static,
    ) {
        self.inner.on_query(query.name, move |args| {
            let args: A = decode(&args, "query arguments")?;
            encode(&handler(args), "query answer")
        });
    }

    /// Handles update `update` with `handler`: its result is the update's result, its
    /// failure the update's failure (the workflow runs on either way). The handler may wait
    /// on activities, timers and conditions like the workflow itself; once the update is
    /// accepted it runs to completion whatever restarts (replay starts it again).
    pub fn on_update<A, R, Fut>(&self, update: &Update<A, R>, handler: impl Fn(A) -> Fut + 'static)
    where
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        Fut: Future<Output = Result<R, Failure>> + 'static,
    {
        self.inner
            .on_update(update.name, typed_update_handler(update.name, handler));
    }

    /// Like [`on_update`](Self::on_update), with a validator that runs first and reads (never
    /// changes) the workflow's state: its failure rejects the update, and nothing of the
    /// update is written to history. An argument that does not decode is rejected too.
    pub fn on_update_validated<A, R, Fut>(
        &self,
        update: &Update<A, R>,
        validator: impl Fn(&A) -> Result<(), Failure> + 'static,
        handler: impl Fn(A) -> Fut + 'static,
    ) where
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        Fut: Future<Output = Result<R, Failure>> + 'static,
    {
        let name = update.name;
        self.inner.on_update_validated(
            name,
            move |input: &Payload| {
                let args: A = decode(input, &format!("the arguments of update {name:?}"))?;
                validator(&args)
            },
            typed_update_handler(name, handler),
        );
    }

    /// Whether cancellation of this workflow was requested.
    pub fn is_cancel_requested(&self) -> bool {
        self.inner.is_cancel_requested()
    }

    /// Resolves when cancellation is requested.
    pub async fn cancelled(&self) {
        self.inner.cancelled().await;
    }
}

/// A typed update handler as the executor's: decodes the arguments, encodes the result.
fn typed_update_handler<A, R, Fut>(
    name: &'static str,
    handler: impl Fn(A) -> Fut + 'static,
) -> impl Fn(Payload) -> Pin<Box<dyn Future<Output = Result<Payload, Failure>>>> + 'static
where
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
    Fut: Future<Output = Result<R, Failure>> + 'static,
{
    let handler = std::rc::Rc::new(handler);
    move |input: Payload| {
        let handler = handler.clone();
        Box::pin(async move {
            let args: A = decode(&input, &format!("the arguments of update {name:?}"))?;
            let result = handler(args).await?;
            encode_stored(&result, &format!("the result of update {name:?}"))
        })
    }
}

fn log_undecodable_signal(signal: &str, error: &str) {
    tracing::warn!(
        signal,
        error,
        "signal input does not decode as the handler's type; ignored"
    );
}

/// Typed signals received in line.
pub struct SignalReceiver<T> {
    inner: cairn_core::SignalChannel,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for SignalReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignalReceiver")
    }
}

impl<T: DeserializeOwned> SignalReceiver<T> {
    /// The next signal whose input decodes as `T` (others are skipped).
    pub async fn recv(&mut self) -> T {
        loop {
            if let Ok(value) = self.inner.recv().await.decode() {
                return value;
            }
        }
    }
}

/// A configured activity call; `.await` it for the typed result.
pub struct ActivityCall<O> {
    ctx: WorkflowContext,
    activity_type: std::borrow::Cow<'static, str>,
    input: Result<Payload, Failure>,
    options: ActivityOptions,
    started: Option<ActivityHandle<O>>,
    _output: PhantomData<fn() -> O>,
}

impl<O> std::fmt::Debug for ActivityCall<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityCall")
            .field("activity_type", &self.activity_type)
            .field("options", &self.options)
            .finish()
    }
}

impl<O> ActivityCall<O> {
    /// Longest one attempt may run. Default 60 s (when no schedule-to-close is set).
    pub fn start_to_close(mut self, timeout: Duration) -> Self {
        self.options.timeouts.start_to_close = Some(timeout);
        self
    }
    /// Longest the activity may take across all attempts. Default none.
    pub fn schedule_to_close(mut self, timeout: Duration) -> Self {
        self.options.timeouts.schedule_to_close = Some(timeout);
        self
    }
    /// Longest an attempt may wait for a worker. Default none.
    pub fn schedule_to_start(mut self, timeout: Duration) -> Self {
        self.options.timeouts.schedule_to_start = Some(timeout);
        self
    }
    /// Longest gap between heartbeats. Default none.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeouts.heartbeat = Some(timeout);
        self
    }
    /// Retry policy. Default: Temporal's (1 s, ×2, max 100 s, unlimited attempts).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.options.retry = policy;
        self
    }
    /// Task queue. Default `default`.
    pub fn task_queue(mut self, queue: &str) -> Self {
        self.options.task_queue = queue.to_string();
        self
    }
}

impl<O: DeserializeOwned> ActivityCall<O> {
    /// Schedules the activity now and returns a handle that can be awaited or canceled.
    pub fn start(mut self) -> ActivityHandle<O> {
        let timeouts = &mut self.options.timeouts;
        if timeouts.start_to_close.is_none() && timeouts.schedule_to_close.is_none() {
            timeouts.start_to_close = Some(Duration::from_secs(60));
        }
        let refused = match (&self.input, self.options.timeouts.validate()) {
            (Err(failure), _) => Some(failure.clone()),
            (_, Err(e)) => {
                Some(Failure::new("InvalidActivityOptions", e.to_string()).non_retryable())
            }
            _ => None,
        };
        let pending = match (refused, self.input) {
            (None, Ok(input)) => {
                Ok(self
                    .ctx
                    .schedule_activity(&self.activity_type, input, self.options))
            }
            (Some(failure), _) | (None, Err(failure)) => Err(Some(failure)),
        };
        ActivityHandle {
            pending,
            _output: PhantomData,
        }
    }
}

/// Awaiting the call schedules the activity on its first poll (in program order, as `join!`
/// and `select!` poll their branches) and resolves with its typed result.
impl<O: DeserializeOwned> Future for ActivityCall<O> {
    type Output = Result<O, ActivityError>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        if this.started.is_none() {
            let call = ActivityCall {
                ctx: this.ctx.clone(),
                activity_type: this.activity_type.clone(),
                input: std::mem::replace(&mut this.input, Err(Failure::new("Internal", "moved"))),
                options: this.options.clone(),
                started: None,
                _output: PhantomData,
            };
            this.started = Some(call.start());
        }
        Pin::new(this.started.as_mut().expect("started")).poll(cx)
    }
}

/// A scheduled activity: await it for the typed result, or `cancel` it.
pub struct ActivityHandle<O> {
    pending: Result<cairn_core::ActivityFuture, Option<Failure>>,
    _output: PhantomData<fn() -> O>,
}

impl<O> std::fmt::Debug for ActivityHandle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActivityHandle")
    }
}

impl<O> ActivityHandle<O> {
    /// Requests cancellation: the running attempt is told to stop, and this handle resolves
    /// with [`ActivityError::Canceled`] (unless the result already arrived).
    pub fn cancel(&mut self) {
        if let Ok(pending) = &mut self.pending {
            pending.cancel();
        }
    }
}

impl<O: DeserializeOwned> Future for ActivityHandle<O> {
    type Output = Result<O, ActivityError>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.pending {
            Ok(pending) => Pin::new(pending).poll(cx).map(|result| {
                result.and_then(|payload| {
                    decode(&payload, "activity result").map_err(ActivityError::Failed)
                })
            }),
            Err(failure) => std::task::Poll::Ready(Err(ActivityError::Failed(
                failure
                    .take()
                    .expect("activity handle polled after completion"),
            ))),
        }
    }
}
