//! Cairn's keyspace on the store, tuple-encoded under one root subspace.
//!
//! ```text
//! ("wf", ns, workflow_id)                         -> WorkflowRecord (current run, status)
//! ("vis", ns, index..., -start_ms, workflow_id)  -> () visibility index entries (`visibility`)
//! ("viscount", ns, index...)                      -> i64 visibility counts (atomic add)
//! ("vis", ns, "ct", close_ms, workflow_id)        -> () closed workflows by close time
//! ("retire", ns, close_ms, run_id)                -> workflow id: replaced runs (`retention`)
//! ("run", run_id)                                 -> RunRecord (snapshot, version, outcome)
//! ("hist", run_id, event_id)                      -> HistoryEvent
//! ("inbox", shard, run_id, versionstamp)          -> InboxItem (mailbox, unconsumed)
//! ("timer", shard, fire_at_ms, run_id, timer_id)  -> TimerId (durable timers)
//! ("task", shard, run_id, seq, attempt)           -> TaskRecord (activity tasks not yet done)
//! ("defer", shard, run_id, seq, attempt)          -> () a task left for the pull dispatcher
//!                                                    (written when the workers were full)
//! ("hb", run_id, seq)                             -> last heartbeat details
//! ("lease", shard)                                -> Lease
//! ("ready", shard, versionstamp)                  -> run id with mail, or a schedule to look at,
//!                                                    written by a non-holder
//! ("sched", ns, schedule_id)                      -> ScheduleRecord
//! ("schedq", shard, at_ms, schedule_id)           -> () when the holder looks at a schedule
//! ("bell", shard)                                 -> doorbell counter (atomic add; watched)
//! ("node", node_id)                               -> NodeRecord (membership heartbeat)
//! ("cluster",)                                    -> ClusterRecord (shard count)
//! ("chunk", record key, index)                     -> a piece of a record too large for one value
//! ```
//!
//! Deviation from the design sketch: the mailbox lives under the shard (`inbox/shard/run`), not
//! under the run, so that one range read per shard finds every run with pending messages on
//! recovery; a separate "ready" index would need a read-modify-write that conflicts with every
//! concurrent signal.

use cairn_core::TimerId;
use cairn_store::keyspace::{Subspace, TupleVersionstamp};
use cairn_types::{EventId, RunId, Seq};
use uuid::Uuid;

/// Key builder for one Cairn deployment (one root prefix in the store).
#[derive(Debug, Clone)]
pub struct Keys {
    root: Subspace,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new(b"cairn")
    }
}

fn uuid(run: &RunId) -> Uuid {
    *run.as_uuid()
}

impl Keys {
    pub fn new(prefix: &[u8]) -> Self {
        Self {
            root: Subspace::from_bytes(prefix.to_vec()).subspace(&("v1",)),
        }
    }

    pub fn workflow(&self, namespace: &str, workflow_id: &str) -> Vec<u8> {
        self.root.pack(&("wf", namespace, workflow_id))
    }

    /// The workflow id in a key made by [`Self::workflow`].
    pub fn workflow_id_of(&self, key: &[u8]) -> Option<String> {
        let (_, _, id): (String, String, String) = self.root.unpack(key).ok()?;
        Some(id)
    }

    /// Marks a client request (signal, cancel, terminate) as applied, so a retry after
    /// `MaybeCommitted` does not apply it twice.
    pub fn request_guard(&self, run: &RunId, request: &Uuid) -> Vec<u8> {
        self.root.pack(&("req", uuid(run), *request))
    }

    pub fn workflows(&self, namespace: &str) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("wf", namespace)).range()
    }

    /// Visibility index entries of a namespace (see `visibility`).
    pub fn visibility(&self, namespace: &str) -> Subspace {
        self.root.subspace(&("vis", namespace))
    }

    /// Visibility counters of a namespace (see `visibility`).
    pub fn visibility_counts(&self, namespace: &str) -> Subspace {
        self.root.subspace(&("viscount", namespace))
    }

    pub fn run(&self, run: &RunId) -> Vec<u8> {
        self.root.pack(&("run", uuid(run)))
    }

    pub fn history_event(&self, run: &RunId, event_id: EventId) -> Vec<u8> {
        self.root.pack(&("hist", uuid(run), event_id as i64))
    }

    /// The run and event id of a key made by [`Self::history_event`].
    pub fn parse_history_event(&self, key: &[u8]) -> Option<(RunId, EventId)> {
        let (kind, run, event_id): (String, Uuid, i64) = self.root.unpack(key).ok()?;
        if kind != "hist" {
            return None;
        }
        Some((RunId::from_uuid(run).ok()?, u64::try_from(event_id).ok()?))
    }

    pub fn history(&self, run: &RunId) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("hist", uuid(run))).range()
    }

    /// A new mailbox key for `run` (completed by the commit's versionstamp).
    pub fn inbox_new(&self, shard: u32, run: &RunId, user_version: u16) -> Vec<u8> {
        self.root.pack_with_versionstamp(&(
            "inbox",
            i64::from(shard),
            uuid(run),
            TupleVersionstamp::incomplete(user_version),
        ))
    }

    pub fn inbox_of_run(&self, shard: u32, run: &RunId) -> (Vec<u8>, Vec<u8>) {
        self.root
            .subspace(&("inbox", i64::from(shard), uuid(run)))
            .range()
    }

    pub fn inbox_of_shard(&self, shard: u32) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("inbox", i64::from(shard))).range()
    }

    /// The run a mailbox key belongs to.
    pub fn inbox_run(&self, key: &[u8]) -> Option<RunId> {
        let (_, _, run, _): (String, i64, Uuid, TupleVersionstamp) = self.root.unpack(key).ok()?;
        RunId::from_uuid(run).ok()
    }

    pub fn timer(&self, shard: u32, fire_at_ms: u64, run: &RunId, timer: &TimerId) -> Vec<u8> {
        let id = rmp_serde::to_vec(timer).expect("timer ids encode");
        self.root.pack(&(
            "timer",
            i64::from(shard),
            fire_at_ms as i64,
            uuid(run),
            cairn_store::keyspace::Element::Bytes(id.into()),
        ))
    }

    /// A position in the shard's timers: every timer due before `fire_at_ms` sorts below it.
    pub fn timers_due_before(&self, shard: u32, fire_at_ms: u64) -> Vec<u8> {
        self.root
            .pack(&("timer", i64::from(shard), fire_at_ms as i64))
    }

    pub fn timers_of_shard(&self, shard: u32) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("timer", i64::from(shard))).range()
    }

    /// Decodes a timer key into (fire time, run, timer).
    pub fn parse_timer(&self, key: &[u8]) -> Option<(u64, RunId, TimerId)> {
        let (_, _, fire_at, run, id): (String, i64, i64, Uuid, Vec<u8>) =
            self.root.unpack(key).ok()?;
        let timer = rmp_serde::from_slice(&id).ok()?;
        Some((
            u64::try_from(fire_at).ok()?,
            RunId::from_uuid(run).ok()?,
            timer,
        ))
    }

    pub fn task(&self, shard: u32, run: &RunId, seq: Seq, attempt: u32) -> Vec<u8> {
        self.root.pack(&(
            "task",
            i64::from(shard),
            uuid(run),
            i64::from(seq),
            i64::from(attempt),
        ))
    }

    pub fn tasks_of_shard(&self, shard: u32) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("task", i64::from(shard))).range()
    }

    /// An attempt's start mark (`AttemptRecord`), written by the claim that starts it.
    pub fn attempt(&self, shard: u32, run: &RunId, seq: Seq, attempt: u32) -> Vec<u8> {
        self.root.pack(&(
            "attempt",
            i64::from(shard),
            uuid(run),
            i64::from(seq),
            i64::from(attempt),
        ))
    }

    /// A task the node's workers had no room for when it was written: the pull dispatcher
    /// (`worker::refill`) hands it out later; its claim clears this key.
    pub fn deferred(&self, shard: u32, run: &RunId, seq: Seq, attempt: u32) -> Vec<u8> {
        self.root.pack(&(
            "defer",
            i64::from(shard),
            uuid(run),
            i64::from(seq),
            i64::from(attempt),
        ))
    }

    pub fn deferred_of_shard(&self, shard: u32) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("defer", i64::from(shard))).range()
    }

    pub fn attempts_of_shard(&self, shard: u32) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("attempt", i64::from(shard))).range()
    }

    /// Decodes an attempt key (or a task or deferred-task key: the same shape) into (run,
    /// activity, attempt).
    pub fn parse_attempt(&self, key: &[u8]) -> Option<(RunId, Seq, u32)> {
        let (_, _, run, seq, attempt): (String, i64, Uuid, i64, i64) =
            self.root.unpack(key).ok()?;
        Some((
            RunId::from_uuid(run).ok()?,
            Seq::try_from(seq).ok()?,
            u32::try_from(attempt).ok()?,
        ))
    }

    /// Every request guard of a run.
    pub fn request_guards(&self, run: &RunId) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("req", uuid(run))).range()
    }

    /// Every heartbeat record of a run.
    pub fn heartbeats(&self, run: &RunId) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("hb", uuid(run))).range()
    }

    /// A closed workflow's entry in the close-time index (what retention deletes, oldest first).
    pub fn closed_entry(&self, namespace: &str, closed_ms: u64, workflow_id: &str) -> Vec<u8> {
        self.visibility(namespace)
            .pack(&("ct", closed_ms as i64, workflow_id))
    }

    pub fn closed_entries(&self, namespace: &str) -> (Vec<u8>, Vec<u8>) {
        self.visibility(namespace).subspace(&("ct",)).range()
    }

    /// Every close-time entry of workflows closed before `closed_ms` sorts below this.
    pub fn closed_before(&self, namespace: &str, closed_ms: u64) -> Vec<u8> {
        self.visibility(namespace).pack(&("ct", closed_ms as i64))
    }

    /// (close time, workflow id) of a key made by [`Self::closed_entry`].
    pub fn parse_closed_entry(&self, key: &[u8]) -> Option<(u64, String)> {
        let (vis, _, kind, at, id): (String, String, String, i64, String) =
            self.root.unpack(key).ok()?;
        (vis == "vis").then_some(())?;
        (kind == "ct").then_some(())?;
        Some((u64::try_from(at).ok()?, id))
    }

    /// A past run of workflow id `workflow_id` (one a later run replaced as the id's current
    /// run), newest first; the value is its visibility record as it closed. What
    /// `WorkflowId = 'id'` lists besides the current run.
    pub fn past_run(
        &self,
        namespace: &str,
        workflow_id: &str,
        started_ms: u64,
        run: &RunId,
    ) -> Vec<u8> {
        self.past_runs(namespace, workflow_id)
            .pack(&(-(started_ms as i64), uuid(run)))
    }

    pub fn past_runs(&self, namespace: &str, workflow_id: &str) -> Subspace {
        self.visibility(namespace).subspace(&("runs", workflow_id))
    }

    /// An earlier run of a workflow id (replaced by a new start or a continue-as-new), by when
    /// it closed; the value is its workflow id and start time (`RetiredRun`), or (written
    /// before past runs were listed) its workflow id alone.
    pub fn retired_run(&self, namespace: &str, closed_ms: u64, run: &RunId) -> Vec<u8> {
        self.root
            .pack(&("retire", namespace, closed_ms as i64, uuid(run)))
    }

    pub fn retired_runs(&self, namespace: &str) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("retire", namespace)).range()
    }

    /// Every retired run that closed before `closed_ms` sorts below this.
    pub fn retired_before(&self, namespace: &str, closed_ms: u64) -> Vec<u8> {
        self.root.pack(&("retire", namespace, closed_ms as i64))
    }

    /// The run of a key made by [`Self::retired_run`].
    pub fn parse_retired_run(&self, key: &[u8]) -> Option<RunId> {
        let (kind, _, _, run): (String, String, i64, Uuid) = self.root.unpack(key).ok()?;
        (kind == "retire").then_some(())?;
        RunId::from_uuid(run).ok()
    }

    pub fn heartbeat(&self, run: &RunId, seq: Seq) -> Vec<u8> {
        self.root.pack(&("hb", uuid(run), i64::from(seq)))
    }

    pub fn schedule(&self, namespace: &str, schedule_id: &str) -> Vec<u8> {
        self.root.pack(&("sched", namespace, schedule_id))
    }

    /// A batch operation's record (ids are UUIDv7: key order is creation order).
    pub fn batch(&self, namespace: &str, batch_id: &str) -> Vec<u8> {
        self.root.pack(&("batch", namespace, batch_id))
    }

    pub fn batches(&self, namespace: &str) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("batch", namespace)).range()
    }

    pub fn schedules(&self, namespace: &str) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("sched", namespace)).range()
    }

    /// When the holder of `shard` is to look at schedule `schedule_id` next.
    pub fn schedule_wake(&self, shard: u32, at_ms: u64, schedule_id: &str) -> Vec<u8> {
        self.root
            .pack(&("schedq", i64::from(shard), at_ms as i64, schedule_id))
    }

    pub fn schedule_wakes_of_shard(&self, shard: u32) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("schedq", i64::from(shard))).range()
    }

    /// Decodes a key made by [`Self::schedule_wake`] into (time, schedule id).
    pub fn parse_schedule_wake(&self, key: &[u8]) -> Option<(u64, String)> {
        let (kind, _, at, id): (String, i64, i64, String) = self.root.unpack(key).ok()?;
        if kind != "schedq" {
            return None;
        }
        Some((u64::try_from(at).ok()?, id))
    }

    pub fn lease(&self, shard: u32) -> Vec<u8> {
        self.root.pack(&("lease", i64::from(shard)))
    }

    pub fn leases(&self) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("lease",)).range()
    }

    /// The shard of a key made by [`Self::lease`].
    pub fn lease_shard(&self, key: &[u8]) -> Option<u32> {
        let (kind, shard): (String, i64) = self.root.unpack(key).ok()?;
        if kind != "lease" {
            return None;
        }
        u32::try_from(shard).ok()
    }

    /// A new entry of the shard's ready queue (completed by the commit's versionstamp): a run
    /// that got mail from a node that does not hold the shard. The holder reads the queue from
    /// where it last stopped, so it never walks the consumed mailbox entries of the shard.
    pub fn ready_new(&self, shard: u32, user_version: u16) -> Vec<u8> {
        self.root.pack_with_versionstamp(&(
            "ready",
            i64::from(shard),
            TupleVersionstamp::incomplete(user_version),
        ))
    }

    pub fn ready_of_shard(&self, shard: u32) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("ready", i64::from(shard))).range()
    }

    /// The shard's doorbell: mailbox writers that do not hold the shard add to it, and the
    /// holder watches it.
    pub fn bell(&self, shard: u32) -> Vec<u8> {
        self.root.pack(&("bell", i64::from(shard)))
    }

    pub fn node(&self, node_id: &str) -> Vec<u8> {
        self.root.pack(&("node", node_id))
    }

    pub fn nodes(&self) -> (Vec<u8>, Vec<u8>) {
        self.root.subspace(&("node",)).range()
    }

    /// Piece `index` of the record at `key`, when it is stored in chunks. Chunks live in
    /// their own subspace, so range reads over records never meet them.
    pub fn chunk(&self, key: &[u8], index: u32) -> Vec<u8> {
        self.root.pack(&(
            "chunk",
            cairn_store::keyspace::Element::Bytes(key.to_vec().into()),
            i64::from(index),
        ))
    }

    pub fn chunks(&self, key: &[u8]) -> (Vec<u8>, Vec<u8>) {
        self.root
            .subspace(&(
                "chunk",
                cairn_store::keyspace::Element::Bytes(key.to_vec().into()),
            ))
            .range()
    }

    pub fn cluster(&self) -> Vec<u8> {
        self.root.pack(&("cluster",))
    }
}

/// FNV-1a: stable across processes and versions, which shard placement must be.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The shard of `workflow_id` in a store of `shard_count` shards (FNV-1a of the id, modulo).
///
/// # Examples
/// ```
/// let shard = cairn_plan::keys::shard_of("order-42", 16);
/// assert!(shard < 16);
/// assert_eq!(shard, cairn_plan::keys::shard_of("order-42", 16));
/// ```
pub fn shard_of(workflow_id: &str, shard_count: u32) -> u32 {
    assert!(shard_count > 0, "shard_count must be positive");
    (fnv1a(workflow_id.as_bytes()) % u64::from(shard_count)) as u32
}
