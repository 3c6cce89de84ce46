//! Matching for remote workers: activity attempts and workflow tasks.
//!
//! With `NodeConfig::remote_activities`, an attempt of an activity type not registered on this
//! node is not failed: after its claim (as any attempt) it waits here, in its task queue, for a
//! poller — a Temporal SDK worker through the gRPC frontend. A poll takes the oldest waiting
//! attempt of its queue, or waits for one (a long poll, at most the caller's wait). The
//! attempt is then in flight under an opaque token until the worker answers (completed,
//! failed, canceled), and its heartbeats go to the attempt's recorder, as an in-process
//! activity's do. Everything else — timeouts, retries, the dispatch bound, at-most-once starts
//! — is the attempt's own, in `worker`: matching only carries the attempt to the worker and
//! the answer back. An attempt whose worker never answers ends by its start-to-close (or
//! heartbeat) timer, and its entry leaves with it.
//!
//! Matching is in memory and per node: a poller receives attempts of the shards the node it
//! polls holds. Tokens name the node and its incarnation (a fresh id per process), so an
//! answer to another node's token, or to a token handed out before a restart, is refused
//! rather than landing on whichever attempt reuses the number.

//! Workflow tasks of remote runs (`StartRecord::remote`) are matched by reference: a run
//! with a task owed offers `(shard, run id)` in its task queue (once: a run is queued at most
//! once); a poll takes the oldest reference and asks the run's actor for the task, which the
//! actor builds then (history as committed) or refuses if it is no longer owed. The queue
//! holds no task contents, so it is bounded by the number of runs, and a lost reference
//! costs nothing: the run's check timer (`TimerId::WorkflowTask`) offers it again.

use crate::registry::HeartbeatSink;
use cairn_types::{ActivityTimeouts, Failure, Payload, RetryPolicy, RunId, Seq, WorkflowId};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, oneshot, watch};

/// Most polls waiting on one node at once; past it a poll is refused (`Overloaded`).
pub const ACTIVITY_POLLS_WAITING_MAX: usize = 4_096;
/// Longest wait of one poll (Temporal's frontend answers an empty poll after about a minute).
pub const ACTIVITY_POLL_WAIT_MAX_MS: u64 = 60_000;

/// Most pollers matching remembers (queue, kind and identity); past it the one heard from
/// longest ago is forgotten.
pub const POLLERS_TRACKED_MAX: usize = 1_024;
/// A poller not heard from for this long is forgotten.
pub const POLLER_FORGET_MS: u64 = 300_000;

/// What a poller polls for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PollKind {
    Workflow,
    Activity,
}

/// A worker that polled a task queue of this node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Poller {
    pub identity: String,
    pub kind: PollKind,
    pub last_poll_unix_ms: u64,
}

/// A task queue as this node's matching sees it: who polls it and what waits in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskQueueStatus {
    pub name: String,
    pub pollers: Vec<Poller>,
    /// Activity attempts waiting for a poll.
    pub activities_waiting: usize,
    /// Remote runs with a workflow task owed, waiting for a poll.
    pub workflow_tasks_waiting: usize,
}

/// One node's task queues in `Node::cluster_task_queues`; `None` if the node did not
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeTaskQueues {
    pub node_id: String,
    pub task_queues: Option<Vec<TaskQueueStatus>>,
}

/// An activity attempt as a remote worker receives it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RemoteActivityTask {
    /// Opaque; names the node and the hand-out.
    pub token: String,
    pub workflow_id: WorkflowId,
    pub run_id: RunId,
    pub seq: Seq,
    pub activity_type: String,
    pub task_queue: String,
    pub input: Payload,
    pub attempt: u32,
    pub scheduled_unix_ms: u64,
    pub started_unix_ms: u64,
    pub timeouts: ActivityTimeouts,
    pub retry: RetryPolicy,
    /// The last heartbeat details of an earlier attempt.
    pub heartbeat_details: Option<Payload>,
}

/// How a remote worker ended an attempt.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum RemoteOutcome {
    Completed(Payload),
    Failed(Failure),
}

/// Why an answer to a task was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum MatchingError {
    #[error(
        "activity task not found: it already ended (completed, timed out, canceled) or was handed out by another node"
    )]
    NotFound,
    #[error(
        "workflow task not found: it was completed, failed or timed out, or it was handed out by another node or before a restart"
    )]
    WorkflowTaskNotFound,
    #[error(
        "the workflow task's completion closes the workflow, but new events (a signal, an activity result) arrived while it was out: it was not applied, and a new workflow task carries them"
    )]
    WorkflowTaskStale,
    #[error("the workflow task's commands were refused: {0}")]
    WorkflowTaskRefused(String),
    #[error("the workflow's actor stopped before answering; retry")]
    WorkflowTaskUnavailable,
    #[error("{0} polls are waiting on this node already; poll again shortly")]
    TooManyPolls(usize),
    #[error(
        "the heartbeat details are {len} bytes; the limit is {max} bytes: the attempt failed as PayloadTooLarge"
    )]
    HeartbeatTooLarge { len: usize, max: usize },
}

/// An attempt waiting for, or held by, a remote worker.
struct Entry {
    task: RemoteActivityTask,
    /// Told when a poll takes the task (the attempt then starts).
    taken: Option<oneshot::Sender<()>>,
    reply: oneshot::Sender<RemoteOutcome>,
    heartbeat: HeartbeatSink,
    cancel: watch::Receiver<bool>,
}

/// What a workflow task token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkflowTaskToken {
    pub owed: WorkflowTaskRef,
    pub task: u32,
    pub attempt: u32,
    /// `None`: handed out by this node's current life. Otherwise handed out by an earlier
    /// holder of the run (another node, or this node's previous life), when the run's next
    /// event id was this: the run adopts the task only if its history is still that.
    pub earlier_holder: Option<u64>,
}

/// A remote run with a workflow task owed, as matching queues it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkflowTaskRef {
    pub shard: u32,
    pub run_id: RunId,
}

#[derive(Default)]
struct WorkflowQueue {
    ready: VecDeque<WorkflowTaskRef>,
    queued: std::collections::BTreeSet<RunId>,
    notify: std::sync::Arc<Notify>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<String>,
    notify: std::sync::Arc<Notify>,
}

/// The node's remote-activity matching.
pub struct Matching {
    node_id: String,
    /// Fresh per process: tokens of an earlier incarnation never match.
    incarnation: String,
    next: AtomicU64,
    queues: Mutex<BTreeMap<String, Queue>>,
    /// Every entry, waiting or in flight, by token.
    entries: Mutex<BTreeMap<String, Entry>>,
    in_flight: Mutex<std::collections::BTreeSet<String>>,
    polls: std::sync::atomic::AtomicUsize,
    workflow_queues: Mutex<BTreeMap<String, WorkflowQueue>>,
    /// Who polled which queue, and when last: at most [`POLLERS_TRACKED_MAX`].
    pollers: Mutex<BTreeMap<(String, PollKind, String), u64>>,
    /// The node's clock (an attempt taken by a poll starts then).
    clock: crate::Clock,
}

impl std::fmt::Debug for Matching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matching")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The next field of a task token, parsed.
fn token_field<T: std::str::FromStr>(
    fields: &mut std::str::Split<'_, char>,
) -> Result<T, MatchingError> {
    fields
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or(MatchingError::WorkflowTaskNotFound)
}

/// The run a workflow or query task token names, whichever node's life handed it out (the
/// run's history is in the store for any node to read).
pub(crate) fn token_run(token: &str) -> Result<RunId, MatchingError> {
    let mut fields = token.split('/');
    match fields.next() {
        Some("cairn-wft" | "cairn-wfq") => {}
        _ => return Err(MatchingError::WorkflowTaskNotFound),
    }
    // Node, incarnation, shard, then the run.
    fields.nth(2);
    token_field(&mut fields)
}

/// Offers a workflow task reference again when dropped armed (a poll that took it ended
/// before the run answered).
pub(crate) struct Reoffer<'a> {
    matching: &'a Matching,
    task_queue: &'a str,
    task: Option<WorkflowTaskRef>,
}

impl<'a> Reoffer<'a> {
    pub(crate) fn new(matching: &'a Matching, task_queue: &'a str, task: WorkflowTaskRef) -> Self {
        Self {
            matching,
            task_queue,
            task: Some(task),
        }
    }

    pub(crate) fn disarm(&mut self) {
        self.task = None;
    }
}

impl Drop for Reoffer<'_> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.matching.offer_workflow_task(self.task_queue, task);
        }
    }
}

/// Gives a waiting poll's place back however the poll ends.
struct Polling<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Removes its entry when the attempt stops waiting, however it stops.
pub(crate) struct Offered<'a> {
    matching: &'a Matching,
    token: String,
    /// Resolves when a worker's poll takes the task.
    pub(crate) taken: oneshot::Receiver<()>,
    pub(crate) outcome: oneshot::Receiver<RemoteOutcome>,
}

impl Drop for Offered<'_> {
    fn drop(&mut self) {
        self.matching.forget(&self.token);
    }
}

impl Matching {
    pub fn new(node_id: &str, clock: crate::Clock, entropy: &crate::Entropy) -> Self {
        Self {
            node_id: node_id.to_string(),
            incarnation: entropy.uuid_v7(clock.now_ms()).simple().to_string(),
            clock,
            next: AtomicU64::new(1),
            queues: Mutex::new(BTreeMap::new()),
            entries: Mutex::new(BTreeMap::new()),
            in_flight: Mutex::new(std::collections::BTreeSet::new()),
            polls: std::sync::atomic::AtomicUsize::new(0),
            workflow_queues: Mutex::new(BTreeMap::new()),
            pollers: Mutex::new(BTreeMap::new()),
        }
    }

    /// Notes that `identity` polls `task_queue` for `kind` tasks now.
    pub fn note_poller(&self, task_queue: &str, kind: PollKind, identity: &str) {
        let now = self.clock.now_ms();
        let mut pollers = lock(&self.pollers);
        pollers.insert((task_queue.to_string(), kind, identity.to_string()), now);
        pollers.retain(|_, last| now.saturating_sub(*last) < POLLER_FORGET_MS);
        while pollers.len() > POLLERS_TRACKED_MAX {
            let oldest = pollers
                .iter()
                .min_by_key(|(_, last)| **last)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => pollers.remove(&key),
                None => break,
            };
        }
    }

    /// Every task queue with a poller heard from lately or a task waiting, by name.
    pub fn task_queues(&self) -> Vec<TaskQueueStatus> {
        let now = self.clock.now_ms();
        let mut out: BTreeMap<String, TaskQueueStatus> = BTreeMap::new();
        fn status<'a>(
            out: &'a mut BTreeMap<String, TaskQueueStatus>,
            name: &str,
        ) -> &'a mut TaskQueueStatus {
            out.entry(name.to_string())
                .or_insert_with(|| TaskQueueStatus {
                    name: name.to_string(),
                    pollers: Vec::new(),
                    activities_waiting: 0,
                    workflow_tasks_waiting: 0,
                })
        }
        for ((queue, kind, identity), last) in lock(&self.pollers).iter() {
            if now.saturating_sub(*last) < POLLER_FORGET_MS {
                status(&mut out, queue).pollers.push(Poller {
                    identity: identity.clone(),
                    kind: *kind,
                    last_poll_unix_ms: *last,
                });
            }
        }
        for (queue, q) in lock(&self.queues)
            .iter()
            .filter(|(_, q)| !q.waiting.is_empty())
        {
            status(&mut out, queue).activities_waiting = q.waiting.len();
        }
        for (queue, q) in lock(&self.workflow_queues)
            .iter()
            .filter(|(_, q)| !q.ready.is_empty())
        {
            status(&mut out, queue).workflow_tasks_waiting = q.ready.len();
        }
        out.into_values().collect()
    }

    /// Queues a run's owed workflow task in `task_queue` (a run already queued stays once).
    pub(crate) fn offer_workflow_task(&self, task_queue: &str, task: WorkflowTaskRef) {
        let mut queues = lock(&self.workflow_queues);
        let queue = queues.entry(task_queue.to_string()).or_default();
        if queue.queued.insert(task.run_id) {
            queue.ready.push_back(task);
            queue.notify.notify_one();
        }
    }

    /// The oldest run with a workflow task owed in `task_queue`, waiting up to `wait` (at most
    /// [`ACTIVITY_POLL_WAIT_MAX_MS`]); `None` if none came. Counts against the node's bound
    /// of waiting polls with activity polls.
    pub async fn poll_workflow_task(
        &self,
        task_queue: &str,
        wait: Duration,
    ) -> Result<Option<WorkflowTaskRef>, MatchingError> {
        let polls = self.polls.fetch_add(1, Ordering::AcqRel);
        let _polling = Polling(&self.polls);
        if polls >= ACTIVITY_POLLS_WAITING_MAX {
            return Err(MatchingError::TooManyPolls(polls));
        }
        let wait = wait.min(Duration::from_millis(ACTIVITY_POLL_WAIT_MAX_MS));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notify = {
                let mut queues = lock(&self.workflow_queues);
                let queue = queues.entry(task_queue.to_string()).or_default();
                if let Some(task) = queue.ready.pop_front() {
                    queue.queued.remove(&task.run_id);
                    return Ok(Some(task));
                }
                queue.notify.clone()
            };
            let notified = notify.notified();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Runs queued for workflow tasks, over all queues.
    pub fn workflow_tasks_queued(&self) -> usize {
        lock(&self.workflow_queues)
            .values()
            .map(|q| q.ready.len())
            .sum()
    }

    /// The opaque token of a workflow task handed out when the run's next event id was
    /// `next_event_id`.
    pub(crate) fn workflow_token(
        &self,
        shard: u32,
        run_id: RunId,
        task: u32,
        attempt: u32,
        next_event_id: u64,
    ) -> String {
        format!(
            "cairn-wft/{}/{}/{shard}/{run_id}/{task}/{attempt}/{next_event_id}",
            self.node_id, self.incarnation
        )
    }

    /// The opaque token of a query handed out on its own.
    pub(crate) fn query_token(&self, shard: u32, run_id: RunId, query: u64) -> String {
        format!(
            "cairn-wfq/{}/{}/{shard}/{run_id}/{query}",
            self.node_id, self.incarnation
        )
    }

    /// The fields after node and incarnation of a `kind` token (`cairn-wft`, `cairn-wfq`), if
    /// this node's current life issued it.
    fn own_token_fields<'t>(
        &self,
        token: &'t str,
        kind: &str,
    ) -> Result<std::str::Split<'t, char>, MatchingError> {
        let mut parts = token.split('/');
        let (Some(prefix), Some(node), Some(incarnation)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(MatchingError::WorkflowTaskNotFound);
        };
        if prefix != kind || node != self.node_id || incarnation != self.incarnation {
            return Err(MatchingError::WorkflowTaskNotFound);
        }
        Ok(parts)
    }

    /// The query a query token names, if this node's current life handed it out.
    pub(crate) fn parse_query_token(
        &self,
        token: &str,
    ) -> Result<(WorkflowTaskRef, u64), MatchingError> {
        let mut fields = self.own_token_fields(token, "cairn-wfq")?;
        let owed = WorkflowTaskRef {
            shard: token_field(&mut fields)?,
            run_id: token_field(&mut fields)?,
        };
        Ok((owed, token_field(&mut fields)?))
    }

    /// The task a workflow task token names, whoever handed it out (a token without the
    /// run's next event id, of an earlier version, only if this node's current life did).
    pub(crate) fn parse_workflow_token(
        &self,
        token: &str,
    ) -> Result<WorkflowTaskToken, MatchingError> {
        let mut parts = token.split('/');
        let (Some("cairn-wft"), Some(node), Some(incarnation)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(MatchingError::WorkflowTaskNotFound);
        };
        let this_life = node == self.node_id && incarnation == self.incarnation;
        let owed = WorkflowTaskRef {
            shard: token_field(&mut parts)?,
            run_id: token_field(&mut parts)?,
        };
        let task = token_field(&mut parts)?;
        let attempt = token_field(&mut parts)?;
        let next_event_id = token_field::<u64>(&mut parts).ok();
        let earlier_holder = match (this_life, next_event_id) {
            (true, _) => None,
            (false, Some(next_event_id)) => Some(next_event_id),
            (false, None) => return Err(MatchingError::WorkflowTaskNotFound),
        };
        Ok(WorkflowTaskToken {
            owed,
            task,
            attempt,
            earlier_holder,
        })
    }

    /// Puts an attempt in its task queue; the answer comes on `Offered::outcome`.
    pub(crate) fn offer(
        &self,
        mut task: RemoteActivityTask,
        heartbeat: HeartbeatSink,
        cancel: watch::Receiver<bool>,
    ) -> Offered<'_> {
        let token = format!(
            "cairn/{}/{}/{}",
            self.node_id,
            self.incarnation,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        task.token = token.clone();
        let (reply, outcome) = oneshot::channel();
        let (taken_tx, taken) = oneshot::channel();
        let queue_name = task.task_queue.clone();
        lock(&self.entries).insert(
            token.clone(),
            Entry {
                task,
                taken: Some(taken_tx),
                reply,
                heartbeat,
                cancel,
            },
        );
        let mut queues = lock(&self.queues);
        let queue = queues.entry(queue_name).or_default();
        queue.waiting.push_back(token.clone());
        queue.notify.notify_one();
        Offered {
            matching: self,
            token,
            taken,
            outcome,
        }
    }

    fn forget(&self, token: &str) {
        let entry = lock(&self.entries).remove(token);
        lock(&self.in_flight).remove(token);
        if let Some(entry) = entry {
            let mut queues = lock(&self.queues);
            if let Some(queue) = queues.get_mut(&entry.task.task_queue) {
                queue.waiting.retain(|t| t != token);
                if queue.waiting.is_empty() && std::sync::Arc::strong_count(&queue.notify) == 1 {
                    queues.remove(&entry.task.task_queue);
                }
            }
        }
    }

    /// The oldest attempt waiting in `task_queue`, waiting up to `wait` for one.
    pub async fn poll(
        &self,
        task_queue: &str,
        wait: Duration,
    ) -> Result<Option<RemoteActivityTask>, MatchingError> {
        let polls = self.polls.fetch_add(1, Ordering::AcqRel);
        let _polling = Polling(&self.polls);
        if polls >= ACTIVITY_POLLS_WAITING_MAX {
            return Err(MatchingError::TooManyPolls(polls));
        }
        let wait = wait.min(Duration::from_millis(ACTIVITY_POLL_WAIT_MAX_MS));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notify = {
                let mut queues = lock(&self.queues);
                let queue = queues.entry(task_queue.to_string()).or_default();
                let mut entries = lock(&self.entries);
                while let Some(token) = queue.waiting.pop_front() {
                    if let Some(entry) = entries.get_mut(&token) {
                        lock(&self.in_flight).insert(token);
                        // The attempt starts now, as the worker sees it.
                        entry.task.started_unix_ms = self.clock.now_ms();
                        if let Some(taken) = entry.taken.take() {
                            let _ = taken.send(());
                        }
                        return Ok(Some(entry.task.clone()));
                    }
                }
                queue.notify.clone()
            };
            let notified = notify.notified();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Hands a worker's answer to the attempt. Refused if the token is not a task in flight.
    pub fn answer(&self, token: &str, outcome: RemoteOutcome) -> Result<(), MatchingError> {
        if !lock(&self.in_flight).remove(token) {
            return Err(MatchingError::NotFound);
        }
        let entry = lock(&self.entries)
            .remove(token)
            .ok_or(MatchingError::NotFound)?;
        entry
            .reply
            .send(outcome)
            .map_err(|_| MatchingError::NotFound)
    }

    /// Records a heartbeat of a task in flight; answers whether cancellation was requested.
    pub fn heartbeat(&self, token: &str, details: Payload) -> Result<bool, MatchingError> {
        if !lock(&self.in_flight).contains(token) {
            return Err(MatchingError::NotFound);
        }
        let entries = lock(&self.entries);
        let entry = entries.get(token).ok_or(MatchingError::NotFound)?;
        let len = details.len();
        // The sink fails an attempt whose details would not fit one stored value.
        (entry.heartbeat)(details);
        if len > cairn_types::limits::INLINE_PAYLOAD_BYTES_MAX {
            return Err(MatchingError::HeartbeatTooLarge {
                len,
                max: cairn_types::limits::INLINE_PAYLOAD_BYTES_MAX,
            });
        }
        Ok(*entry.cancel.borrow())
    }

    /// The token of the task in flight for activity `seq` of `run_id` (the `ById` calls).
    pub fn token_of(&self, run_id: &RunId, seq: Seq) -> Result<String, MatchingError> {
        // Locks in the order `poll` takes them: entries, then in-flight tokens.
        let entries = lock(&self.entries);
        let in_flight = lock(&self.in_flight);
        entries
            .iter()
            .find(|(token, e)| {
                e.task.run_id == *run_id && e.task.seq == seq && in_flight.contains(*token)
            })
            .map(|(token, _)| token.clone())
            .ok_or(MatchingError::NotFound)
    }

    /// Attempts waiting for a poller or held by one.
    pub fn tasks(&self) -> usize {
        lock(&self.entries).len()
    }
}

/// A workflow task as a remote worker receives it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkflowTask {
    /// Opaque; names the node's life, the run, the task and its attempt.
    pub token: String,
    pub namespace: String,
    pub workflow_id: cairn_types::WorkflowId,
    pub run_id: cairn_types::RunId,
    pub workflow_type: String,
    pub task_queue: String,
    pub attempt: u32,
    /// The run's history as committed (Cairn's events); the task's inputs are its tail.
    pub history: Vec<cairn_types::HistoryEvent>,
    /// The run this one continues (continue-as-new), if any.
    pub previous_run: Option<cairn_types::RunId>,
    /// The parent, for a child workflow's run.
    pub parent: Option<(cairn_types::WorkflowId, cairn_types::RunId)>,
    /// The workflow task timeout.
    pub task_timeout_ms: u64,
    pub scheduled_unix_ms: u64,
    /// Queries to answer with this task's completion.
    pub queries: Vec<crate::remote_queries::RemoteQuery>,
    /// Set for a query task: only this query to answer (`Node::answer_query_task`), no
    /// workflow task (the history is the run's, up to its last completed task).
    pub query: Option<crate::remote_queries::RemoteQuery>,
    /// Update requests for the worker to accept or reject with this task's completion.
    #[serde(default)]
    pub updates: Vec<crate::updates::UpdateRequest>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn task(queue: &str, seq: Seq) -> RemoteActivityTask {
        RemoteActivityTask {
            token: String::new(),
            workflow_id: WorkflowId::new("w").unwrap(),
            run_id: RunId::from_parts(1, [0; 10]),
            seq,
            activity_type: "a".into(),
            task_queue: queue.into(),
            input: Payload::encode(&seq).unwrap(),
            attempt: 1,
            scheduled_unix_ms: 0,
            started_unix_ms: 0,
            timeouts: ActivityTimeouts::default(),
            retry: RetryPolicy::default(),
            heartbeat_details: None,
        }
    }

    fn sink() -> HeartbeatSink {
        Arc::new(|_| {})
    }

    /// Polls take the oldest waiting attempt of their own queue; an attempt that stops waiting
    /// leaves its queue; answers reach the attempt once, and only for tokens in flight.
    #[tokio::test]
    async fn workflow_tasks_are_queued_once_and_a_dropped_take_offers_again() {
        let matching = Matching::new("n1", crate::Clock::System, &crate::Entropy::os());
        let run = |n: u64| WorkflowTaskRef {
            shard: 0,
            run_id: RunId::from_parts(n, [0; 10]),
        };
        matching.offer_workflow_task("q", run(1));
        matching.offer_workflow_task("q", run(1));
        matching.offer_workflow_task("q", run(2));
        assert_eq!(matching.workflow_tasks_queued(), 2, "a run is queued once");
        let first = matching
            .poll_workflow_task("q", Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first, run(1), "oldest first");
        drop(Reoffer::new(&matching, "q", first));
        let second = matching
            .poll_workflow_task("q", Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second, run(2));
        let mut taken = Reoffer::new(&matching, "q", second);
        taken.disarm();
        drop(taken);
        assert_eq!(
            matching
                .poll_workflow_task("q", Duration::ZERO)
                .await
                .unwrap(),
            Some(run(1)),
            "the dropped take offered run 1 again; the disarmed one did not"
        );
        assert!(
            matching
                .poll_workflow_task("q", Duration::ZERO)
                .await
                .unwrap()
                .is_none(),
            "run 2 was not offered again"
        );
        let token = matching.workflow_token(3, run(9).run_id, 4, 2, 17);
        let named = WorkflowTaskToken {
            owed: WorkflowTaskRef {
                shard: 3,
                run_id: run(9).run_id,
            },
            task: 4,
            attempt: 2,
            earlier_holder: None,
        };
        assert_eq!(matching.parse_workflow_token(&token).unwrap(), named);
        let other_life = Matching::new("n1", crate::Clock::System, &crate::Entropy::os());
        assert_eq!(
            other_life.parse_workflow_token(&token),
            Ok(WorkflowTaskToken {
                earlier_holder: Some(17),
                ..named
            }),
            "a token of another life names the history its worker saw"
        );
        let old_format = token.rsplit_once('/').unwrap().0;
        assert_eq!(
            matching.parse_workflow_token(old_format),
            Ok(named),
            "an earlier version's token of this life"
        );
        assert_eq!(
            other_life.parse_workflow_token(old_format),
            Err(MatchingError::WorkflowTaskNotFound),
            "an earlier version's token of another life is refused"
        );
    }

    #[tokio::test]
    async fn polls_take_the_oldest_of_their_queue_and_answers_land_once() {
        let matching = Matching::new("n1", crate::Clock::System, &crate::Entropy::os());
        let (_cancel, cancel_rx) = watch::channel(false);
        let mut first = matching.offer(task("q", 1), sink(), cancel_rx.clone());
        let second = matching.offer(task("q", 2), sink(), cancel_rx.clone());
        let other = matching.offer(task("other", 3), sink(), cancel_rx.clone());
        let gone = matching.offer(task("q", 4), sink(), cancel_rx.clone());
        drop(gone);
        let polled = matching.poll("q", Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(polled.seq, 1);
        assert!(polled.token.starts_with("cairn/n1/"));
        assert_eq!(
            matching.answer(
                &second.token,
                RemoteOutcome::Completed(Payload::encode(&0).unwrap())
            ),
            Err(MatchingError::NotFound),
            "not handed out yet"
        );
        matching
            .answer(
                &polled.token,
                RemoteOutcome::Completed(Payload::encode(&7).unwrap()),
            )
            .unwrap();
        assert_eq!(
            matching.answer(
                &polled.token,
                RemoteOutcome::Completed(Payload::encode(&8).unwrap())
            ),
            Err(MatchingError::NotFound),
            "answered once"
        );
        assert_eq!(
            (&mut first.outcome).await.unwrap(),
            RemoteOutcome::Completed(Payload::encode(&7).unwrap())
        );
        assert_eq!(
            matching
                .poll("q", Duration::ZERO)
                .await
                .unwrap()
                .unwrap()
                .seq,
            2
        );
        assert!(
            matching.poll("q", Duration::ZERO).await.unwrap().is_none(),
            "the dropped attempt left its queue"
        );
        drop(second);
        drop(other);
        assert_eq!(matching.tasks(), 0);
    }

    /// Tokens of an earlier incarnation of the same node (a restart) never match a new one's.
    #[tokio::test]
    async fn tokens_of_an_earlier_incarnation_are_refused() {
        let (_cancel, cancel_rx) = watch::channel(false);
        let before = Matching::new("n1", crate::Clock::System, &crate::Entropy::os());
        let _held = before.offer(task("q", 1), sink(), cancel_rx.clone());
        let old = before.poll("q", Duration::ZERO).await.unwrap().unwrap();
        let after = Matching::new("n1", crate::Clock::System, &crate::Entropy::os());
        let _new = after.offer(task("q", 1), sink(), cancel_rx);
        let new = after.poll("q", Duration::ZERO).await.unwrap().unwrap();
        assert_ne!(
            old.token, new.token,
            "same node, same number, different process"
        );
        assert_eq!(
            after.answer(
                &old.token,
                RemoteOutcome::Completed(Payload::encode(&1).unwrap())
            ),
            Err(MatchingError::NotFound)
        );
    }

    /// A poll waiting when an attempt arrives takes it; past `ACTIVITY_POLLS_WAITING_MAX`
    /// waiting polls, the next is refused at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_polls_are_bounded() {
        let matching = Arc::new(Matching::new(
            "n1",
            crate::Clock::System,
            &crate::Entropy::os(),
        ));
        let waiting: Vec<_> = (0..ACTIVITY_POLLS_WAITING_MAX)
            .map(|_| {
                let m = matching.clone();
                tokio::spawn(async move { m.poll("q", Duration::from_secs(20)).await })
            })
            .collect();
        while matching.polls.load(Ordering::Acquire) < ACTIVITY_POLLS_WAITING_MAX {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            matching
                .poll("q", Duration::from_secs(1))
                .await
                .unwrap_err(),
            MatchingError::TooManyPolls(ACTIVITY_POLLS_WAITING_MAX)
        );
        let (_cancel, cancel_rx) = watch::channel(false);
        let offered = matching.offer(task("q", 9), sink(), cancel_rx);
        let mut got = 0;
        for poll in waiting {
            poll.abort();
            if let Ok(Ok(Some(t))) = poll.await {
                assert_eq!(t.seq, 9);
                got += 1;
            }
        }
        assert!(got <= 1, "one attempt, one poller");
        drop(offered);
    }

    /// Pollers are remembered by queue, kind and identity, at most `POLLERS_TRACKED_MAX` (the
    /// one heard from longest ago goes first), and forgotten `POLLER_FORGET_MS` after their
    /// last poll; waiting tasks show with their queue.
    #[tokio::test(start_paused = true)]
    async fn pollers_are_bounded_and_forgotten() {
        let matching = Matching::new(
            "n1",
            crate::Clock::virtual_from(1_000),
            &crate::Entropy::os(),
        );
        matching.note_poller("q", PollKind::Activity, "worker-a");
        matching.note_poller("q", PollKind::Workflow, "worker-a");
        tokio::time::advance(Duration::from_millis(10)).await;
        matching.note_poller("q", PollKind::Activity, "worker-a");
        let queues = matching.task_queues();
        assert_eq!(queues.len(), 1);
        assert_eq!(queues[0].pollers.len(), 2, "{queues:?}");
        assert_eq!(queues[0].pollers[1].last_poll_unix_ms, 1_010);
        for i in 0..POLLERS_TRACKED_MAX + 5 {
            tokio::time::advance(Duration::from_millis(1)).await;
            matching.note_poller("busy", PollKind::Activity, &format!("w{i}"));
        }
        let pollers: usize = matching.task_queues().iter().map(|q| q.pollers.len()).sum();
        assert_eq!(pollers, POLLERS_TRACKED_MAX);
        assert!(
            matching.task_queues().iter().all(|q| q.name == "busy"),
            "the oldest went first"
        );
        tokio::time::advance(Duration::from_millis(POLLER_FORGET_MS)).await;
        assert!(matching.task_queues().is_empty());
    }
}
