//! Workflow-side helpers: sagas (compensations run on failure) and a semaphore that bounds
//! how many things a workflow does at once. Both are deterministic: they live in the run's
//! single-threaded executor and change only as history is applied.

use crate::workflow::Ctx;
use cairn_core::WorkflowContext;
use cairn_types::Failure;
use std::cell::Cell;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

type Compensation = Pin<Box<dyn Future<Output = Result<(), Failure>>>>;

/// Compensations to run if a later step fails: push one after each step that needs undoing,
/// and on failure `compensate` runs them newest first (or all at once), collecting failures
/// instead of stopping at the first.
///
/// A compensation is any future, typically an activity call: activity calls schedule only
/// when first polled, so `saga.add(ctx.activity(refund, charge_id))` records the refund and
/// runs it only if the saga compensates.
///
/// # Examples
/// ```no_run
/// use cairn::{ActivityContext, Ctx, Failure, Saga, WorkflowError};
/// async fn charge(_: ActivityContext, cents: u64) -> Result<String, Failure> { Ok("ch_1".into()) }
/// async fn refund(_: ActivityContext, charge_id: String) -> Result<(), Failure> { Ok(()) }
/// async fn reserve(_: ActivityContext, item: String) -> Result<(), Failure> { Ok(()) }
///
/// async fn order(ctx: Ctx, cents: u64) -> Result<(), WorkflowError> {
///     let mut saga = Saga::new();
///     let charge_id = ctx.activity(charge, cents).await?;
///     saga.add(ctx.activity(refund, charge_id));
///     if let Err(e) = ctx.activity(reserve, "lamp".to_string()).await {
///         let failures = saga.compensate().await;
///         assert!(failures.is_empty(), "refund failed: {failures:?}");
///         return Err(e.into());
///     }
///     Ok(())
/// }
/// ```
#[derive(Default)]
pub struct Saga {
    compensations: Vec<Compensation>,
    parallel: bool,
}

impl std::fmt::Debug for Saga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saga")
            .field("compensations", &self.compensations.len())
            .field("parallel", &self.parallel)
            .finish()
    }
}

impl Saga {
    pub fn new() -> Self {
        Self::default()
    }

    /// Run the compensations all at once rather than newest first, one at a time. Default:
    /// one at a time, newest first (each undoes a step whose successors were undone already).
    pub fn parallel_compensation(mut self, parallel: bool) -> Self {
        self.parallel = parallel;
        self
    }

    /// Adds a compensation for the step just done.
    pub fn add<F, T, E>(&mut self, compensation: F)
    where
        F: Future<Output = Result<T, E>> + 'static,
        E: Display,
    {
        self.compensations.push(Box::pin(async move {
            compensation
                .await
                .map(|_| ())
                .map_err(|e| Failure::new("CompensationFailed", e.to_string()))
        }));
    }

    /// How many compensations are pending.
    pub fn len(&self) -> usize {
        self.compensations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.compensations.is_empty()
    }

    /// Runs every compensation and returns the failures (empty when all succeeded); a failing
    /// compensation does not stop the others.
    pub async fn compensate(self) -> Vec<Failure> {
        let mut compensations = self.compensations;
        compensations.reverse();
        let results = if self.parallel {
            futures::future::join_all(compensations).await
        } else {
            let mut results = Vec::new();
            for compensation in compensations {
                results.push(compensation.await);
            }
            results
        };
        results.into_iter().filter_map(Result::err).collect()
    }
}

/// Bounds how many of a workflow's tasks run at once (the Temporal guide's
/// `asyncio.Semaphore(10)` around child workflows). Clones share the permits.
///
/// # Examples
/// ```no_run
/// use cairn::{Ctx, Semaphore, WorkflowError};
/// async fn child(_ctx: Ctx, n: u32) -> Result<u32, WorkflowError> { Ok(n) }
///
/// async fn batch(ctx: Ctx, items: Vec<u32>) -> Result<usize, WorkflowError> {
///     let slots = Semaphore::new(&ctx, 10);
///     let runs = items.into_iter().map(|n| {
///         let (ctx, slots) = (ctx.clone(), slots.clone());
///         async move {
///             let _permit = slots.acquire().await;
///             ctx.child_workflow(child, n).await
///         }
///     });
///     let results = futures::future::join_all(runs).await;
///     Ok(results.into_iter().filter(Result::is_ok).count())
/// }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    ctx: WorkflowContext,
    available: Rc<Cell<usize>>,
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("available", &self.available.get())
            .finish()
    }
}

impl Semaphore {
    /// A semaphore with `permits` permits (at least 1).
    pub fn new(ctx: &Ctx, permits: usize) -> Self {
        assert!(permits > 0, "a semaphore needs at least one permit");
        Self {
            ctx: ctx.inner().clone(),
            available: Rc::new(Cell::new(permits)),
        }
    }

    /// Waits for a permit; it is returned when the [`Permit`] is dropped.
    pub async fn acquire(&self) -> Permit {
        let available = self.available.clone();
        self.ctx.wait_condition(move || available.get() > 0).await;
        // No await between the check and the take: the executor is single-threaded.
        self.available.set(self.available.get() - 1);
        Permit {
            ctx: self.ctx.clone(),
            available: self.available.clone(),
        }
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.available.get()
    }
}

/// A held permit of a [`Semaphore`].
pub struct Permit {
    ctx: WorkflowContext,
    available: Rc<Cell<usize>>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permit")
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.available.set(self.available.get() + 1);
        // Waiters re-check their condition on the next poll.
        self.ctx.notify();
    }
}
