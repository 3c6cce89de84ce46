//! Facade: batch operations — cancel or terminate every workflow a visibility query selects,
//! as a background job with its own stored progress, not a loop in a client.
//!
//! A batch is a record `("batch", ns, id)` (ids are UUIDv7, so key order is creation order):
//! what to do, the query, the reason, and how far it got (the query's page token, counts).
//! One runner per cluster, on the node holding shard 0 (as retention), started by
//! [`Node::run_batches`] (the `cairn` crate's `NodeBuilder::start` calls it; any batch call
//! does too): each pass takes every
//! running batch a page of [`BATCH_PAGE_WORKFLOWS`] further, at most
//! [`BATCH_CALLS_IN_FLIGHT`] calls at once, and stores the new position and counts in one
//! write. A runner that dies mid-page leaves the last stored position: the next holder of
//! shard 0 repeats that page, and a repeated cancel or terminate of a run it already reached
//! is harmless (a closed run counts as skipped).
//!
//! Invariants: at most [`BATCHES_RUNNING_MAX`] batches run and [`BATCHES_KEPT_MAX`] are kept
//! (a new one replaces the oldest finished one); a pass holds no transaction across calls;
//! the position only moves forward.

use crate::error::ClientError;
use crate::local::Local;
use crate::node::Node;
use crate::ops::{Check, Op};
use crate::records::{decode, encode};
use crate::shared::Shared;
use cairn_store::{RangeRequest, Store, Transaction};
use cairn_types::WorkflowId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Workflows one pass of a batch visits.
pub const BATCH_PAGE_WORKFLOWS: usize = 100;
/// Cancels or terminates one batch has in flight at once.
pub const BATCH_CALLS_IN_FLIGHT: usize = 16;
/// Batches running at once; past it a new one is refused.
pub const BATCHES_RUNNING_MAX: usize = 8;
/// Batch records kept (running or finished); a new one past it replaces the oldest finished.
pub const BATCHES_KEPT_MAX: usize = 100;
/// Longest reason a batch records, in bytes.
pub const BATCH_REASON_BYTES_MAX: usize = 1_024;
/// How often the runner looks for work.
pub const BATCH_PASS_MS: u64 = 200;

/// What a batch does to each workflow its query selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchOperation {
    Cancel,
    Terminate,
}

/// Where a batch is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BatchState {
    Running,
    Completed,
    /// Stopped by an error that retrying would not mend (the query no longer parses).
    Failed {
        message: String,
    },
}

/// A batch operation and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub batch_id: String,
    pub operation: BatchOperation,
    pub query: String,
    pub reason: String,
    pub state: BatchState,
    /// The query's page token where the next pass starts (`None`: from the start).
    pub position: Option<String>,
    /// Workflows the query selected so far.
    pub visited: u64,
    /// Workflows canceled or terminated.
    pub applied: u64,
    /// Workflows already closed when reached.
    pub skipped: u64,
    /// Workflows whose call failed (the error of the last one is kept).
    pub failed: u64,
    pub last_error: Option<String>,
    pub created_unix_ms: u64,
    pub updated_unix_ms: u64,
    pub finished_unix_ms: Option<u64>,
}

impl<S: Store> Node<S> {
    /// Starts a batch: `operation` on every workflow `query` selects, with `reason`. Refused,
    /// writing nothing, if the query does not parse, the reason is too long, or
    /// [`BATCHES_RUNNING_MAX`] batches run already.
    pub async fn start_batch(
        &self,
        operation: BatchOperation,
        query: &str,
        reason: &str,
    ) -> Result<BatchRecord, ClientError> {
        self.run_batches();
        self.parse_query(query)?;
        if reason.len() > BATCH_REASON_BYTES_MAX {
            return Err(ClientError::InvalidBatch {
                reason: format!(
                    "the reason is {} bytes; at most {BATCH_REASON_BYTES_MAX}",
                    reason.len()
                ),
            });
        }
        let shared = &self.shared;
        let namespace = &shared.config.namespace;
        let kept = read_batches(shared).await?;
        let running = kept
            .iter()
            .filter(|b| b.state == BatchState::Running)
            .count();
        if running >= BATCHES_RUNNING_MAX {
            return Err(ClientError::TooManyBatches {
                running,
                max: BATCHES_RUNNING_MAX,
            });
        }
        let now = shared.now_ms();
        let batch_id = shared.config.entropy.uuid_v7(now).to_string();
        let record = BatchRecord {
            batch_id: batch_id.clone(),
            operation,
            query: query.to_string(),
            reason: reason.to_string(),
            state: BatchState::Running,
            position: None,
            visited: 0,
            applied: 0,
            skipped: 0,
            failed: 0,
            last_error: None,
            created_unix_ms: now,
            updated_unix_ms: now,
            finished_unix_ms: None,
        };
        let key = shared.keys.batch(namespace, &batch_id);
        let mut ops = vec![Op::Set(key.clone(), encode(&record))];
        // Oldest first: the finished ones past the bound make room.
        let over = (kept.len() + 1).saturating_sub(BATCHES_KEPT_MAX);
        ops.extend(
            kept.iter()
                .filter(|b| b.state != BatchState::Running)
                .take(over)
                .map(|b| Op::Clear(shared.keys.batch(namespace, &b.batch_id))),
        );
        let fresh = Check::key(key, |value| match value {
            None => Ok(()),
            Some(_) => Err(ClientError::InvalidBatch {
                reason: "a batch with this id exists".into(),
            }),
        });
        self.submit(ops, vec![fresh], None).await?;
        Ok(record)
    }

    /// Batch `batch_id` and its progress.
    pub async fn describe_batch(&self, batch_id: &str) -> Result<BatchRecord, ClientError> {
        self.run_batches();
        let shared = &self.shared;
        let mut tx = shared.store.begin()?;
        let key = shared.keys.batch(&shared.config.namespace, batch_id);
        match tx.get_snapshot(&key).await? {
            Some(bytes) => Ok(decode("batch", &bytes)?),
            None => Err(ClientError::BatchNotFound {
                batch_id: batch_id.to_string(),
            }),
        }
    }

    /// Every batch kept (at most [`BATCHES_KEPT_MAX`]), newest first.
    pub async fn list_batches(&self) -> Result<Vec<BatchRecord>, ClientError> {
        self.run_batches();
        let mut batches = read_batches(&self.shared).await?;
        batches.reverse();
        Ok(batches)
    }
}

/// The kept batches, oldest first (one read: there are at most [`BATCHES_KEPT_MAX`]).
async fn read_batches<S: Store>(shared: &Shared<S>) -> Result<Vec<BatchRecord>, ClientError> {
    let (begin, end) = shared.keys.batches(&shared.config.namespace);
    let mut tx = shared.store.begin()?;
    let rows = tx
        .get_range(
            &RangeRequest::new(begin, end)
                .limit(BATCHES_KEPT_MAX + 1)
                .snapshot(),
        )
        .await?;
    let mut batches = Vec::with_capacity(rows.len());
    for row in rows {
        batches.push(decode::<BatchRecord>("batch", &row.value)?);
    }
    Ok(batches)
}

impl<S: Store> Node<S> {
    /// Starts this node's batch runner (once; later calls do nothing). It works while the
    /// node holds shard 0, holds the node weakly, and ends with it.
    pub fn run_batches(&self) {
        if self
            .batch_runner
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let watches = self.result_watches.clone();
        let every = Duration::from_millis(BATCH_PASS_MS);
        crate::local::spawn_on_shard_zero(&self.shared, every, move |shared| {
            let node = Node::sharing(shared, watches.clone());
            async move {
                if let Err(error) = pass(&node).await {
                    tracing::warn!(%error, "batch pass failed; retrying next pass");
                }
            }
        });
    }

    /// Another handle on this node's state, for a background task (it starts no runner).
    fn sharing(shared: Arc<Local<S>>, result_watches: Arc<tokio::sync::Semaphore>) -> Self {
        Node {
            shared,
            result_watches,
            batch_runner: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

/// Takes every running batch one page further.
async fn pass<S: Store>(node: &Node<S>) -> Result<(), ClientError> {
    for batch in read_batches(&node.shared).await? {
        if batch.state == BatchState::Running {
            step(node, batch).await?;
        }
    }
    Ok(())
}

/// One page of `batch`: its calls, then its new position and counts in one write.
async fn step<S: Store>(node: &Node<S>, mut batch: BatchRecord) -> Result<(), ClientError> {
    let shared = &node.shared;
    let filter = match node.parse_query(&batch.query) {
        Ok(filter) => filter,
        Err(e) => {
            return finish(
                node,
                batch,
                BatchState::Failed {
                    message: e.to_string(),
                },
            )
            .await;
        }
    };
    let page = match node
        .list_filtered(
            &filter,
            Some(BATCH_PAGE_WORKFLOWS),
            batch.position.as_deref(),
        )
        .await
    {
        Ok(page) => page,
        Err(e @ (ClientError::InvalidQuery(_) | ClientError::QueryTooBroad { .. })) => {
            let message = e.to_string();
            return finish(node, batch, BatchState::Failed { message }).await;
        }
        Err(e) => return Err(e),
    };
    // Calls in rounds of at most BATCH_CALLS_IN_FLIGHT, each its own task (owning what it
    // needs, so the pass borrows nothing across them).
    let mut calls = Vec::with_capacity(page.workflows.len());
    for round in page.workflows.chunks(BATCH_CALLS_IN_FLIGHT) {
        let mut running = tokio::task::JoinSet::new();
        for workflow in round {
            let node = Node::sharing(node.shared.clone(), node.result_watches.clone());
            let (operation, reason) = (batch.operation, batch.reason.clone());
            let workflow_id = workflow.workflow_id.clone();
            running.spawn(async move {
                let id = WorkflowId::new(&workflow_id)?;
                match operation {
                    BatchOperation::Cancel => node.cancel(&id, &reason).await,
                    BatchOperation::Terminate => node.terminate(&id, &reason).await,
                }
            });
        }
        while let Some(joined) = running.join_next().await {
            calls.push(joined.unwrap_or_else(|e| {
                Err(ClientError::InvalidBatch {
                    reason: format!("a call panicked: {e}"),
                })
            }));
        }
    }
    for result in calls {
        batch.visited += 1;
        match result {
            Ok(()) => batch.applied += 1,
            Err(ClientError::NotRunning { .. } | ClientError::NotFound { .. }) => {
                batch.skipped += 1;
            }
            Err(e) => {
                batch.failed += 1;
                batch.last_error = Some(e.to_string());
            }
        }
    }
    match page.next_page_token {
        Some(token) => {
            batch.position = Some(token);
            batch.updated_unix_ms = shared.now_ms();
            store(node, &batch).await
        }
        None => finish(node, batch, BatchState::Completed).await,
    }
}

async fn finish<S: Store>(
    node: &Node<S>,
    mut batch: BatchRecord,
    state: BatchState,
) -> Result<(), ClientError> {
    let now = node.shared.now_ms();
    batch.state = state;
    batch.updated_unix_ms = now;
    batch.finished_unix_ms = Some(now);
    store(node, &batch).await
}

/// Writes `batch` back, unless it was deleted meanwhile.
async fn store<S: Store>(node: &Node<S>, batch: &BatchRecord) -> Result<(), ClientError> {
    let key = node
        .shared
        .keys
        .batch(&node.shared.config.namespace, &batch.batch_id);
    let kept = Check::key(key.clone(), |value| match value {
        Some(_) => Ok(()),
        None => Err(ClientError::BatchNotFound {
            batch_id: String::new(),
        }),
    });
    match node
        .submit(vec![Op::Set(key, encode(batch))], vec![kept], None)
        .await
    {
        Err(ClientError::BatchNotFound { .. }) => Ok(()),
        other => other,
    }
}
