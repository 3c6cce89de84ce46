//! What must hold after a simulation, however the faults fell:
//!
//! 1. Every accepted workflow completed exactly once, with the result its input implies: one
//!    run, one `WorkflowExecutionCompleted`, a gap-free linear history (ids 1..n, no event id
//!    ever written twice with different contents), and each activity's result applied once.
//! 2. Fencing: every commit that wrote a run's history read its shard's lease inside the same
//!    transaction and found it held by the committing node; so no two nodes committed for one
//!    (shard, epoch), each epoch was claimed by one node, and in store order a shard's epochs
//!    never go backwards.

use crate::audit::AuditedCommit;
use cairn_types::{EventId, EventKind, HistoryEvent, RunId};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One workflow the simulation got an acceptance for, and how it ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub workflow_id: String,
    pub run_id: RunId,
    pub shard: u32,
    pub expected: u64,
    pub result: u64,
    pub history: Vec<HistoryEvent>,
    /// Every run of the workflow id, the last one included (visibility lists them all).
    pub runs: Vec<RunId>,
    /// How many runs its continue-as-new chain must have.
    pub runs_expected: usize,
}

/// Everything that went wrong, one line each.
#[derive(Debug, Default)]
pub struct Violations(pub Vec<String>);

impl Violations {
    fn push(&mut self, line: String) {
        // One bug tends to break many runs the same way; a few lines say enough.
        if self.0.len() < 40 {
            self.0.push(line);
        }
    }
}

/// Checks the finished workflows and the audited commits.
pub fn check(finished: &[Finished], commits: &[AuditedCommit]) -> Violations {
    let mut out = Violations::default();
    check_workflows(finished, &mut out);
    let shard_of_run: HashMap<RunId, u32> = finished
        .iter()
        .flat_map(|f| f.runs.iter().map(|run| (*run, f.shard)))
        .collect();
    check_histories_linear(commits, &mut out);
    check_fencing(commits, &shard_of_run, &mut out);
    out
}

fn check_workflows(finished: &[Finished], out: &mut Violations) {
    for f in finished {
        let id = &f.workflow_id;
        if f.runs.len() != f.runs_expected || !f.runs.contains(&f.run_id) {
            out.push(format!(
                "{id}: {} runs listed ({:?}), the chain has {} ending in {}",
                f.runs.len(),
                f.runs,
                f.runs_expected,
                f.run_id
            ));
        }
        if f.result != f.expected {
            out.push(format!(
                "{id}: result {} but expected {}",
                f.result, f.expected
            ));
        }
        for (position, event) in f.history.iter().enumerate() {
            if event.event_id != position as EventId + 1 {
                out.push(format!(
                    "{id}: history position {} holds event {}",
                    position + 1,
                    event.event_id
                ));
                break;
            }
        }
        let completions = f
            .history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::WorkflowExecutionCompleted { .. }))
            .count();
        if completions != 1 {
            out.push(format!("{id}: {completions} completion events"));
        }
        let mut applied: BTreeMap<u32, usize> = BTreeMap::new();
        let mut scheduled = BTreeSet::new();
        for event in &f.history {
            match &event.kind {
                EventKind::ActivityTaskScheduled { seq, .. } => {
                    scheduled.insert(*seq);
                }
                EventKind::ActivityTaskCompleted { seq, .. }
                | EventKind::ActivityTaskFailed { seq, .. }
                | EventKind::ActivityTaskTimedOut { seq, .. } => {
                    *applied.entry(*seq).or_default() += 1;
                }
                _ => {}
            }
        }
        for (seq, count) in &applied {
            if *count != 1 {
                out.push(format!(
                    "{id}: activity {seq} has {count} results in history"
                ));
            }
        }
        for seq in scheduled {
            if !applied.contains_key(&seq) {
                out.push(format!("{id}: activity {seq} scheduled, never resolved"));
            }
        }
        check_attempts(f, out);
    }
}

/// Heartbeating activities: no attempt executed twice, no more attempts than the policy
/// allows, no started attempt failed by schedule-to-start, none timed out while beating (a
/// heartbeat timeout is an ended activity only after every attempt was lost).
fn check_attempts(f: &Finished, out: &mut Violations) {
    let id = &f.workflow_id;
    let beating: BTreeSet<u32> = f
        .history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActivityTaskScheduled {
                seq, activity_type, ..
            } if activity_type == "sim_beat" => Some(*seq),
            _ => None,
        })
        .collect();
    for seq in &beating {
        let key = format!("{id}/{seq}");
        let executed = crate::workload::attempts_executed(&key);
        let distinct: BTreeSet<u32> = executed.iter().copied().collect();
        if distinct.len() != executed.len() {
            out.push(format!("{key}: an attempt executed twice: {executed:?}"));
        }
        if let Some(max) = executed.iter().max()
            && *max > crate::workload::BEAT_ATTEMPTS_MAX
        {
            out.push(format!(
                "{key}: attempt {max} ran; the policy allows {}",
                crate::workload::BEAT_ATTEMPTS_MAX
            ));
        }
        for event in &f.history {
            if let EventKind::ActivityTaskTimedOut {
                seq: s,
                attempt,
                timeout,
            } = &event.kind
                && s == seq
            {
                if *timeout == cairn_types::TimeoutKind::ScheduleToStart
                    && executed.contains(attempt)
                {
                    out.push(format!(
                        "{key}: attempt {attempt} started, then failed by schedule-to-start"
                    ));
                }
                if *timeout == cairn_types::TimeoutKind::Heartbeat {
                    out.push(format!(
                        "{key}: timed out by heartbeat after {} executions",
                        executed.len()
                    ));
                }
            }
        }
    }
}

/// No history event id is ever written twice with different contents (a fork).
fn check_histories_linear(commits: &[AuditedCommit], out: &mut Violations) {
    let mut written: HashMap<(RunId, EventId), (&[u8], &str, u64)> = HashMap::new();
    for commit in commits {
        for (run, event_id, bytes) in &commit.history_writes {
            match written.get(&(*run, *event_id)) {
                Some((earlier, by, version)) if *earlier != bytes.as_slice() => {
                    out.push(format!(
                        "run {run} event {event_id}: written by {by} at version {version}, then differently by {} at version {}",
                        commit.node, commit.version
                    ));
                }
                Some(_) => {}
                None => {
                    written.insert(
                        (*run, *event_id),
                        (bytes.as_slice(), commit.node.as_str(), commit.version),
                    );
                }
            }
        }
    }
}

fn check_fencing(
    commits: &[AuditedCommit],
    shard_of_run: &HashMap<RunId, u32>,
    out: &mut Violations,
) {
    // Each (shard, epoch) is claimed by one node.
    let mut claimed_by: HashMap<(u32, u64), &str> = HashMap::new();
    for commit in commits {
        for (shard, lease) in &commit.lease_writes {
            if !lease.held {
                continue;
            }
            match claimed_by.get(&(*shard, lease.epoch)) {
                Some(node) if *node != lease.node_id => out.push(format!(
                    "shard {shard} epoch {} claimed by {node} and by {}",
                    lease.epoch, lease.node_id
                )),
                _ => {
                    claimed_by.insert((*shard, lease.epoch), lease.node_id.as_str());
                }
            }
        }
    }
    let mut committed_by: HashMap<(u32, u64), &str> = HashMap::new();
    let mut last_epoch: HashMap<u32, (u64, u64)> = HashMap::new();
    for commit in commits {
        let shards: BTreeSet<u32> = commit
            .history_writes
            .iter()
            .filter_map(|(run, _, _)| shard_of_run.get(run).copied())
            .collect();
        for shard in shards {
            let Some(Some(lease)) = commit.lease_reads.get(&shard) else {
                out.push(format!(
                    "{} wrote history of shard {shard} at version {} without reading its lease",
                    commit.node, commit.version
                ));
                continue;
            };
            if !lease.held || lease.node_id != commit.node {
                out.push(format!(
                    "{} wrote history of shard {shard} at version {} under a lease of {} (held {})",
                    commit.node, commit.version, lease.node_id, lease.held
                ));
            }
            match committed_by.get(&(shard, lease.epoch)) {
                Some(node) if *node != commit.node => out.push(format!(
                    "shard {shard} epoch {}: commits by {node} and by {}",
                    lease.epoch, commit.node
                )),
                _ => {
                    committed_by.insert((shard, lease.epoch), commit.node.as_str());
                }
            }
            if let Some((epoch, version)) = last_epoch.get(&shard)
                && lease.epoch < *epoch
            {
                out.push(format!(
                    "shard {shard}: commit at version {} under epoch {} after one at version {version} under epoch {epoch}",
                    commit.version, lease.epoch
                ));
            }
            last_epoch.insert(shard, (lease.epoch, commit.version));
        }
    }
}
