//! Retention: closed workflows are deleted `retention_ms` after they close, in bounded
//! background batches — the workflow record and its visibility entries and counts, the run
//! record, its history, mailbox leftovers, request guards and heartbeat details — and so are
//! the earlier runs of a workflow id (replaced by a new start or a continue-as-new).
//!
//! Two indexes name what to delete, both written in the commit that makes it deletable:
//! `("vis", ns, "ct", close_ms, workflow_id)` (by `visibility::index_ops`, for every closed
//! workflow record) and `("retire", ns, close_ms, run_id) -> (workflow_id, start)` (by
//! `visibility::put_workflow`, when a record replaces one of another run, with the past-run
//! record that lists it under its workflow id).
//!
//! Invariants:
//! - One sweeper per cluster: the node holding shard 0. Deletes are idempotent, so a second
//!   sweeper during a hand-off only repeats work.
//! - A batch deletes at most [`RETENTION_BATCH_MAX`] workflows or runs in one commit, and one
//!   pass at most [`RETENTION_BATCHES_PER_PASS_MAX`] batches: the sweeper never holds a large
//!   transaction and never starves the committer.
//! - A workflow is deleted only if its record, read in the deleting transaction, is still
//!   the closed one the entry names: a workflow id started again meanwhile is left alone.

use crate::keys::Keys;
use crate::ops::{Derive, Op};
use crate::records::{WorkflowRecord, clear_record_ops, decode};
use crate::shared::Shared;
use crate::visibility::RetiredRun;
use cairn_store::{RangeRequest, Store, StoreError, Transaction};
use cairn_types::RunId;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Most workflows (or retired runs) one retention commit deletes.
pub const RETENTION_BATCH_MAX: usize = 100;
/// Most batches one sweep pass commits before it waits for the next pass.
pub const RETENTION_BATCHES_PER_PASS_MAX: usize = 20;
/// Shortest retention period a node accepts, in milliseconds.
pub const RETENTION_MS_MIN: u64 = 100;

/// How often the sweeper looks: a quarter of the retention period, between 50 ms and a minute.
fn sweep_interval(retention_ms: u64) -> Duration {
    Duration::from_millis((retention_ms / 4).clamp(50, 60_000))
}

/// The writes that delete run `run_id` (of a workflow id living in `shard`): its record and
/// chunks, history, mailbox, request guards and heartbeat details.
pub(crate) fn run_deletion_ops(keys: &Keys, shard: u32, run_id: &RunId) -> Vec<Op> {
    let mut ops = clear_record_ops(keys, &keys.run(run_id));
    for (begin, end) in [
        keys.history(run_id),
        keys.inbox_of_run(shard, run_id),
        keys.request_guards(run_id),
        keys.heartbeats(run_id),
    ] {
        ops.push(Op::ClearRange(begin, end));
    }
    ops
}

/// Deletes workflow `workflow_id` if its record is still the closed one that closed at
/// `closed_unix_ms`; clears the close-time entry either way.
fn delete_workflow(
    keys: &Keys,
    namespace: &str,
    workflow_id: String,
    closed_unix_ms: u64,
    shard: u32,
) -> Op {
    let key = keys.workflow(namespace, &workflow_id);
    let entry = keys.closed_entry(namespace, closed_unix_ms, &workflow_id);
    let (keys, namespace) = (keys.clone(), namespace.to_string());
    Op::Derived(Derive::new(move |tx| {
        let (keys, namespace, key, entry, workflow_id) = (
            keys.clone(),
            namespace.clone(),
            key.clone(),
            entry.clone(),
            workflow_id.clone(),
        );
        Box::pin(async move {
            let Some(bytes) = tx.read(&key).await? else {
                return Ok(vec![Op::Clear(entry)]);
            };
            let record: WorkflowRecord = decode("workflow", &bytes)?;
            if record.closed_unix_ms != Some(closed_unix_ms) {
                return Ok(vec![Op::Clear(entry)]);
            }
            let mut ops =
                crate::visibility::index_ops(&keys, &namespace, &workflow_id, Some(&record), None);
            ops.push(Op::Clear(key));
            ops.push(Op::Clear(entry));
            ops.extend(run_deletion_ops(&keys, shard, &record.run_id));
            Ok(ops)
        })
    }))
}

/// Starts the sweeper loop. It holds the node weakly and ends with it.
pub(crate) fn spawn<S: Store>(shared: &Arc<Shared<S>>) {
    let weak: Weak<Shared<S>> = Arc::downgrade(shared);
    let every = sweep_interval(shared.config.retention_ms);
    shared.runtime.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            if shared.cluster.is_stopped() {
                return;
            }
            if shared.cluster.ownership.epoch_of(0).is_none() {
                continue;
            }
            if let Err(error) = sweep(&shared).await {
                tracing::warn!(%error, "retention sweep failed; retrying next pass");
            }
        }
    });
}

/// One pass: deletes what closed before `now - retention_ms`, a batch per commit. Returns how
/// many workflows and retired runs it deleted.
pub(crate) async fn sweep<S: Store>(shared: &Shared<S>) -> Result<usize, StoreError> {
    let config = &shared.config;
    let keys = &shared.keys;
    let namespace = config.namespace.as_str();
    let cutoff = shared.now_ms().saturating_sub(config.retention_ms);
    let mut deleted = 0;
    for _ in 0..RETENTION_BATCHES_PER_PASS_MAX {
        // The first batch of each index, from its start up to the cutoff.
        let due = |begin: Vec<u8>, end: Vec<u8>| async move {
            let mut tx = shared.store.begin()?;
            tx.get_range(
                &RangeRequest::new(begin, end)
                    .limit(RETENTION_BATCH_MAX)
                    .snapshot(),
            )
            .await
        };
        let closed = due(
            keys.closed_entries(namespace).0,
            keys.closed_before(namespace, cutoff),
        )
        .await?;
        let retired = due(
            keys.retired_runs(namespace).0,
            keys.retired_before(namespace, cutoff),
        )
        .await?;
        if closed.is_empty() && retired.is_empty() {
            break;
        }
        let mut ops = Vec::new();
        for row in &closed {
            if let Some((closed_unix_ms, workflow_id)) = keys.parse_closed_entry(&row.key) {
                let shard = shared.shard_of_id(&workflow_id);
                ops.push(delete_workflow(
                    keys,
                    namespace,
                    workflow_id,
                    closed_unix_ms,
                    shard,
                ));
            } else {
                ops.push(Op::Clear(row.key.clone()));
            }
        }
        for row in &retired {
            if let Some(run_id) = keys.parse_retired_run(&row.key) {
                let retired = RetiredRun::decode(&row.value)?;
                ops.extend(run_deletion_ops(
                    keys,
                    shared.shard_of_id(&retired.workflow_id),
                    &run_id,
                ));
                if let Some(started) = retired.started_unix_ms {
                    ops.push(Op::Clear(keys.past_run(
                        namespace,
                        &retired.workflow_id,
                        started,
                        &run_id,
                    )));
                }
            }
            ops.push(Op::Clear(row.key.clone()));
        }
        let count = closed.len() + retired.len();
        match shared.commit(ops, Vec::new(), None, None).await {
            Ok(()) => deleted += count,
            Err(crate::ops::CommitError::Store(error)) => return Err(error),
            Err(other) => {
                return Err(StoreError::Backend {
                    message: format!("retention batch not committed: {other:?}"),
                });
            }
        }
    }
    if deleted > 0 {
        shared
            .metrics
            .retention_deleted
            .fetch_add(deleted as u64, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(deleted)
}
