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

use crate::local::Local;
use crate::ops::Op;
use crate::shared::Shared;
use crate::visibility::{self, RetiredRun};
use cairn_store::{RangeRequest, Store, StoreError, Transaction};
use std::sync::Arc;
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

/// Starts the sweeper loop (on shard 0's holder). It holds the node weakly and ends with it.
pub(crate) fn spawn<S: Store>(shared: &Arc<Local<S>>) {
    let every = sweep_interval(shared.config.retention_ms);
    crate::local::spawn_on_shard_zero(shared, every, |shared| async move {
        if let Err(error) = sweep(&shared).await {
            tracing::warn!(%error, "retention sweep failed; retrying next pass");
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
                ops.push(visibility::delete_closed_workflow(
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
                ops.extend(visibility::run_deletion_ops(
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
