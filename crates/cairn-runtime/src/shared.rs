//! `Shared`: the core every part of a node holds — the store, the keys, the configuration,
//! the registry, the metrics and the committer's handle — with the operations on them alone
//! (commit through the committer, time, shard placement, history reads). The node's in-memory
//! parts (worker pool, matching, membership, result waiters) sit one level up, in
//! `Local` (module `local`).

use crate::Metrics;
use crate::committer::{CommitRequest, CommitterMsg};
use crate::config::NodeConfig;
use crate::keys::Keys;
pub use crate::keys::shard_of;
use crate::ops::{Check, CommitError, Op, Verify};
use crate::registry::Registry;
use cairn_store::Store;
use cairn_types::{RunId, WorkflowId};
use ractor::ActorRef;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

/// The core every part of a node holds.
pub struct Shared<S: Store> {
    pub store: S,
    pub keys: Keys,
    pub config: NodeConfig,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    /// The committer's handle: its actor, and the places in its queue
    /// (`NodeConfig::commit_requests_queued_max` permits).
    pub committer: ActorRef<CommitterMsg>,
    pub(crate) commit_slots: Arc<tokio::sync::Semaphore>,
    /// Client writes (starts, signals, cancels…) submitted and not yet answered; bounded by
    /// [`CLIENT_COMMITS_IN_FLIGHT_MAX`].
    pub(crate) client_commits: std::sync::atomic::AtomicUsize,
}

pub use crate::config::CLIENT_COMMITS_IN_FLIGHT_MAX;

/// Most history events one transaction reads. A history of any length is read a page per
/// transaction: events are written once and never change, so pages read at successive
/// versions still form a prefix of the history as committed.
pub const HISTORY_PAGE_EVENTS: usize = 256;

/// Run `run_id`'s history as committed, a page of [`HISTORY_PAGE_EVENTS`] per transaction;
/// with `before`, only the events whose ids are below it.
pub(crate) async fn read_history<S: Store>(
    store: &S,
    keys: &Keys,
    run_id: &RunId,
    before: Option<cairn_types::EventId>,
) -> Result<Vec<cairn_types::HistoryEvent>, cairn_store::StoreError> {
    let (begin, mut end) = keys.history(run_id);
    if let Some(before) = before {
        end = keys.history_event(run_id, before);
    }
    let mut pages = cairn_store::Pages::new(begin, end, HISTORY_PAGE_EVENTS);
    let mut events = Vec::new();
    while let Some(page) = pages.next(store).await? {
        for kv in page {
            events.push(crate::records::decode("history event", &kv.value)?);
        }
    }
    Ok(events)
}

/// How long an overloaded node asks clients to wait before retrying.
pub const OVERLOADED_RETRY_AFTER_MS: u64 = 1_000;

impl<S: Store> Shared<S> {
    /// The node's time (Unix milliseconds), from `NodeConfig::clock`.
    pub fn now_ms(&self) -> u64 {
        self.config.clock.now_ms()
    }

    /// Store retry options with the jitter drawn from the node's entropy.
    pub fn transact_options(&self) -> cairn_store::TransactOptions {
        cairn_store::TransactOptions {
            jitter_seed: self.config.entropy.jitter_seed(),
            ..cairn_store::TransactOptions::default()
        }
    }

    /// The shard of a workflow id.
    pub fn shard_of(&self, workflow_id: &WorkflowId) -> u32 {
        shard_of(workflow_id.as_str(), self.config.shard_count)
    }

    /// The shard of any id placed like workflow ids (schedule ids).
    pub fn shard_of_id(&self, id: &str) -> u32 {
        shard_of(id, self.config.shard_count)
    }

    pub(crate) async fn commit(
        &self,
        ops: Vec<Op>,
        checks: Vec<Check>,
        fence: Option<(u32, u64)>,
        verify: Option<(Vec<u8>, Verify)>,
    ) -> Result<(), CommitError> {
        let slot = match self.commit_slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                self.metrics
                    .commit_slot_waits
                    .fetch_add(1, Ordering::Relaxed);
                self.commit_slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| CommitError::Stopped)?
            }
        };
        self.commit_in(slot, ops, checks, fence, verify).await
    }

    /// A place in the committer's queue if one is free now (see [`Self::commit_in`]).
    pub(crate) fn try_commit_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.commit_slots.clone().try_acquire_owned().ok()
    }

    /// [`Self::commit`] in a place already taken.
    pub(crate) async fn commit_in(
        &self,
        slot: OwnedSemaphorePermit,
        ops: Vec<Op>,
        checks: Vec<Check>,
        fence: Option<(u32, u64)>,
        verify: Option<(Vec<u8>, Verify)>,
    ) -> Result<(), CommitError> {
        let (reply, answer) = oneshot::channel();
        let request = CommitRequest {
            ops,
            checks,
            fence,
            verify,
            reply,
            _slot: slot,
        };
        self.committer
            .cast(CommitterMsg::Submit(request))
            .map_err(|_| CommitError::Stopped)?;
        answer.await.map_err(|_| CommitError::Stopped)?
    }

    /// Hands writes to the committer without waiting for the outcome: housekeeping (clearing
    /// a consumed queue) whose loss only costs a repeat. Skipped when the committer's queue is
    /// full.
    pub(crate) fn submit_detached(&self, ops: Vec<Op>, fence: (u32, u64)) {
        self.submit_detached_checked(ops, Vec::new(), fence);
    }

    /// [`Self::submit_detached`], with `checks` the commit must pass (else nothing is written).
    pub(crate) fn submit_detached_checked(
        &self,
        ops: Vec<Op>,
        checks: Vec<Check>,
        fence: (u32, u64),
    ) {
        let Some(slot) = self.try_commit_slot() else {
            self.metrics.commits_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (reply, _) = oneshot::channel();
        let request = CommitRequest {
            ops,
            checks,
            fence: Some(fence),
            verify: None,
            reply,
            _slot: slot,
        };
        let _ = self.committer.cast(CommitterMsg::Submit(request));
    }
}
