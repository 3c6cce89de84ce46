//! The shard actor: owns one shard's runs on this node — routes work to their workflow actors
//! (activating them on demand, passivating idle ones under a bounded cache), keeps the shard's
//! durable timers in memory and fires them.
//!
//! A timer entry stays in memory after it fires until the transition that consumed it commits
//! (`RemoveTimers`); an entry delivered but not removed is delivered again after
//! `TIMER_REDELIVERY_MS`, so a delivery lost with a stopped actor is not lost for good.
//!
//! Timers are paged in by time window: memory holds exactly the shard's timers whose keys sort
//! below `loaded_through` (those due within `timer_window_ms`, at most
//! `timers_in_memory_max_per_shard` of them); later ones stay in the store and are read a page
//! at a time when half the window has passed. A timer added beyond the horizon is not held:
//! the store has it (timers are added after their commit), and a later page brings it in. So a
//! million workflows sleeping for a week cost the shard no memory until their week is nearly
//! up.

use crate::local::Local;
use crate::messages::ShardMsg;
use crate::messages::{Delivery, WorkflowMsg};
use crate::records::InboxItem;
use crate::schedules::{self, Placement};
use crate::timers::TimerEntry;
use crate::workflow::{OnCallerThread, WorkflowActor, WorkflowArgs};
use cairn_core::Message;
use cairn_store::{Store, Transaction};
use cairn_types::RunId;
use ractor::thread_local::ThreadLocalActor;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the shard checks for due timers and idle actors.
pub const TICK_MS: u64 = 5;
/// How long a passivation sweep waits for the actors' answers.
pub const PASSIVATE_ANSWER_MS: u64 = 100;
/// Most actors one passivation sweep asks to stop.
pub const PASSIVATIONS_PER_SWEEP_MAX: usize = 512;

/// A fired timer not consumed within this long is delivered again.
pub const TIMER_REDELIVERY_MS: u64 = 2_000;

/// Timers one page-in reads from the store.
pub const TIMER_PAGE_KEYS: usize = 1_024;

/// A schedule whose fire pass did not commit is looked at again after this long.
pub const SCHEDULE_RETRY_MS: u64 = 100;

/// The actor.
pub struct ShardActor<S>(std::marker::PhantomData<S>);

impl<S> Default for ShardActor<S> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

/// What a shard actor starts with.
pub struct ShardArgs<S: Store> {
    pub shared: Arc<Local<S>>,
    pub shard: u32,
    pub epoch: u64,
}

struct Active {
    actor: ActorRef<WorkflowMsg>,
    last_used: Instant,
    /// The run closed: the next sweep passivates it whatever its idle time.
    closed: bool,
}

/// The shard's state.
pub struct ShardState<S: Store> {
    shared: Arc<Local<S>>,
    shard: u32,
    epoch: u64,
    actors: BTreeMap<RunId, Active>,
    by_actor: BTreeMap<ActorId, RunId>,
    /// (fire time, key) → entry, and when it was last delivered.
    timers: BTreeMap<(u64, Vec<u8>), (TimerEntry, Option<Instant>)>,
    timer_fire_at: BTreeMap<Vec<u8>, u64>,
    /// Every timer of the shard whose key sorts below this is in `timers` (or consumed).
    loaded_through: Vec<u8>,
    /// Timers due before this time are all in memory (or consumed).
    loaded_until_ms: u64,
    /// Schedule wake-ups: (time, schedule id).
    schedule_wakes: BTreeSet<(u64, String)>,
    /// Schedules with a fire pass in flight.
    schedules_firing: BTreeSet<String>,
    last_sweep: Instant,
}

impl<S: Store> Actor for ShardActor<S> {
    type Msg = ShardMsg;
    type State = ShardState<S>;
    type Arguments = ShardArgs<S>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(Duration::from_millis(TICK_MS), || ShardMsg::Tick);
        let loaded_through = args.shared.keys.timers_of_shard(args.shard).0;
        Ok(ShardState {
            shared: args.shared,
            shard: args.shard,
            epoch: args.epoch,
            actors: BTreeMap::new(),
            by_actor: BTreeMap::new(),
            timers: BTreeMap::new(),
            timer_fire_at: BTreeMap::new(),
            loaded_through,
            loaded_until_ms: 0,
            schedule_wakes: BTreeSet::new(),
            schedules_firing: BTreeSet::new(),
            last_sweep: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Deliver { run_id, deliveries } => {
                state
                    .send(&myself, run_id, WorkflowMsg::Deliver(deliveries))
                    .await;
            }
            ShardMsg::Wake { run_id } => {
                state.send(&myself, run_id, WorkflowMsg::Wake).await;
            }
            ShardMsg::Query {
                run_id,
                name,
                args,
                reply,
            } => {
                state
                    .send(&myself, run_id, WorkflowMsg::Query { name, args, reply })
                    .await;
            }
            ShardMsg::ToRun { run_id, message } => {
                state.send(&myself, run_id, message).await;
            }
            ShardMsg::AddTimers(entries) => {
                for entry in entries {
                    state.hold_timer(entry);
                }
                state.shed_timers();
            }
            ShardMsg::RemoveTimers(keys) => {
                for key in keys {
                    state.forget_timer(&key);
                }
            }
            ShardMsg::ScheduleWake {
                schedule_id,
                at_unix_ms,
            } => {
                state.schedule_wakes.insert((at_unix_ms, schedule_id));
            }
            ShardMsg::SchedulesFired { firing, committed } => {
                for schedule_id in firing {
                    state.schedules_firing.remove(&schedule_id);
                    // Did not commit (the shard may be moving): try again shortly.
                    if !committed {
                        let at = state.shared.now_ms() + SCHEDULE_RETRY_MS;
                        state.schedule_wakes.insert((at, schedule_id));
                    }
                }
            }
            ShardMsg::Closed { run_id } => {
                if let Some(active) = state.actors.get_mut(&run_id) {
                    active.closed = true;
                }
            }
            ShardMsg::Tick => {
                state.fire_due_schedules(&myself);
                state.page_in_timers().await;
                state.fire_due_timers(&myself).await;
                if state.last_sweep.elapsed() >= Duration::from_millis(250) {
                    state.last_sweep = Instant::now();
                    state.passivate_idle().await;
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The shard leaves this node: its timers leave memory with it.
        state.shared.metrics.timers_in_memory.fetch_sub(
            state.timers.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        state.timers.clear();
        state.timer_fire_at.clear();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A workflow actor stopped (passivated, fenced, failed): forget it; the next delivery
        // activates a fresh one from the store.
        if let SupervisionEvent::ActorTerminated(cell, _, _)
        | SupervisionEvent::ActorFailed(cell, _) = event
            && let Some(run_id) = state.by_actor.remove(&cell.get_id())
            && state
                .actors
                .get(&run_id)
                .is_some_and(|a| a.actor.get_id() == cell.get_id())
        {
            state.actors.remove(&run_id);
        }
        Ok(())
    }
}

impl<S: Store> ShardState<S> {
    /// Sends to the run's actor, activating it if needed (and once more if the first actor was
    /// already stopping).
    async fn send(&mut self, myself: &ActorRef<ShardMsg>, run_id: RunId, message: WorkflowMsg) {
        let mut message = message;
        for _ in 0..2 {
            let actor = match self.actors.get_mut(&run_id) {
                Some(active) => {
                    active.last_used = Instant::now();
                    active.actor.clone()
                }
                None => match self.activate(myself, run_id) {
                    Some(actor) => actor,
                    None => return,
                },
            };
            match actor.cast(message) {
                Ok(()) => return,
                Err(ractor::MessagingErr::SendErr(m)) => {
                    self.actors.remove(&run_id);
                    message = m;
                }
                Err(_) => return,
            }
        }
    }

    fn activate(
        &mut self,
        myself: &ActorRef<ShardMsg>,
        run_id: RunId,
    ) -> Option<ActorRef<WorkflowMsg>> {
        let args = WorkflowArgs {
            shared: self.shared.clone(),
            shard_ref: myself.clone(),
            run_id,
            shard: self.shard,
            epoch: self.epoch,
        };
        let spawned = match self.shared.spawner_for(&run_id) {
            Some(spawner) => {
                WorkflowActor::<S>::spawn_linked_instant(None, args, myself.get_cell(), spawner)
            }
            None => ractor::ActorRuntime::spawn_linked_instant(
                None,
                OnCallerThread::<S>::default(),
                args,
                myself.get_cell(),
            ),
        };
        match spawned {
            Ok((actor, _)) => {
                let _ = actor.cast(WorkflowMsg::Load);
                self.by_actor.insert(actor.get_id(), run_id);
                let previous = self.actors.insert(
                    run_id,
                    Active {
                        actor: actor.clone(),
                        last_used: Instant::now(),
                        closed: false,
                    },
                );
                // A run has one holder: its shard activates it only when no actor of it lives.
                assert!(previous.is_none(), "run {run_id} activated twice in shard");
                Some(actor)
            }
            Err(e) => {
                tracing::error!(%run_id, error = %e, "could not activate run");
                None
            }
        }
    }

    /// Fires every due schedule of the shard in one fenced commit (one pass per schedule, each
    /// decided inside the transaction), unless a pass for it is in flight.
    fn fire_due_schedules(&mut self, myself: &ActorRef<ShardMsg>) {
        let now = self.shared.now_ms();
        let mut due: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        while let Some((at, id)) = self.schedule_wakes.first().cloned() {
            if at > now {
                break;
            }
            self.schedule_wakes.pop_first();
            if self.schedules_firing.contains(&id) {
                // Keep it for after the pass in flight.
                self.schedule_wakes.insert((now + SCHEDULE_RETRY_MS, id));
                continue;
            }
            due.entry(id).or_default().push(at);
        }
        if due.is_empty() {
            return;
        }
        let placement = Placement {
            keys: self.shared.keys.clone(),
            shard_count: self.shared.config.shard_count,
        };
        let namespace = self.shared.config.namespace.clone();
        let mut ops = Vec::new();
        let mut firing = Vec::new();
        for (schedule_id, woken_at) in due {
            self.schedules_firing.insert(schedule_id.clone());
            ops.push(schedules::fire(
                placement.clone(),
                namespace.clone(),
                schedule_id.clone(),
                self.shard,
                woken_at,
                now,
                &self.shared.config.entropy,
            ));
            firing.push(schedule_id);
        }
        let shared = self.shared.clone();
        let fence = (self.shard, self.epoch);
        let myself = myself.clone();
        self.shared.runtime.spawn(async move {
            let committed = shared
                .commit(ops, Vec::new(), Some(fence), None)
                .await
                .is_ok();
            // A pass that committed wrote each schedule's next wake-up, which reaches this
            // shard as an `Op::WakeSchedule` notice.
            let _ = myself.cast(ShardMsg::SchedulesFired { firing, committed });
        });
    }

    /// Holds `entry` in memory if it sorts below the horizon (otherwise the store has it and
    /// a later page brings it in). A timer re-added under the same key moves (see the worker's
    /// exact start-to-close timer).
    fn hold_timer(&mut self, entry: TimerEntry) {
        self.forget_timer(&entry.key);
        if entry.key >= self.loaded_through {
            return;
        }
        self.timer_fire_at
            .insert(entry.key.clone(), entry.fire_at_unix_ms);
        self.timers
            .insert((entry.fire_at_unix_ms, entry.key.clone()), (entry, None));
        self.shared
            .metrics
            .timers_in_memory
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn forget_timer(&mut self, key: &[u8]) {
        if let Some(at) = self.timer_fire_at.remove(key) {
            self.timers.remove(&(at, key.to_vec()));
            self.shared
                .metrics
                .timers_in_memory
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Past the bound, lets go of the latest timers and pulls the horizon in to the first of
    /// them: they are in the store, and come back when there is room.
    fn shed_timers(&mut self) {
        let max = self.shared.config.timers_in_memory_max_per_shard.max(1);
        while self.timers.len() > max {
            let Some(((at, key), _)) = self.timers.pop_last() else {
                break;
            };
            self.timer_fire_at.remove(&key);
            self.shared
                .metrics
                .timers_in_memory
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            self.loaded_until_ms = self.loaded_until_ms.min(at);
            self.loaded_through = key;
        }
    }

    /// Reads the next page of timers from the store when half the window has passed since the
    /// horizon (or the last page was cut short by the page size) and there is room.
    async fn page_in_timers(&mut self) {
        let config = &self.shared.config;
        let window = config.timer_window_ms.max(1);
        let max = config.timers_in_memory_max_per_shard.max(1);
        let now = self.shared.now_ms();
        if self.loaded_until_ms > now.saturating_add(window / 2) || self.timers.len() >= max {
            return;
        }
        let until = now.saturating_add(window);
        let shared = self.shared.clone();
        let keys = &shared.keys;
        let end = keys.timers_due_before(self.shard, until);
        if self.loaded_through >= end {
            self.loaded_until_ms = until;
            return;
        }
        let limit = TIMER_PAGE_KEYS.min(max - self.timers.len());
        let read = async {
            let mut tx = self.shared.store.begin()?;
            tx.get_range(
                &cairn_store::RangeRequest::new(self.loaded_through.clone(), end.clone())
                    .limit(limit)
                    .snapshot(),
            )
            .await
        };
        let rows = match read.await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(shard = self.shard, %error, "reading timers failed; retrying");
                return;
            }
        };
        let full = rows.len() == limit;
        let (through, until_ms) = match rows.last() {
            Some(last) if full => (
                cairn_store::keyspace::key_after(&last.key),
                keys.parse_timer(&last.key).map_or(now, |(at, _, _)| at),
            ),
            _ => (end, until),
        };
        self.loaded_through = through;
        self.loaded_until_ms = until_ms;
        for row in rows {
            if let Some((fire_at_unix_ms, run_id, timer)) = keys.parse_timer(&row.key) {
                self.hold_timer(TimerEntry {
                    fire_at_unix_ms,
                    run_id,
                    timer,
                    key: row.key,
                });
            }
        }
    }

    async fn fire_due_timers(&mut self, myself: &ActorRef<ShardMsg>) {
        let now = self.shared.now_ms();
        let redeliver = Duration::from_millis(TIMER_REDELIVERY_MS);
        let mut due: Vec<TimerEntry> = Vec::new();
        for (_, (entry, delivered)) in self.timers.range_mut(..(now + 1, Vec::new())) {
            if delivered.is_none_or(|at| at.elapsed() >= redeliver) {
                *delivered = Some(Instant::now());
                due.push(entry.clone());
            }
        }
        for entry in due {
            let delivery = Delivery {
                item: InboxItem::Message(Message::TimerFired { timer: entry.timer }),
                consume: vec![entry.key],
            };
            self.send(myself, entry.run_id, WorkflowMsg::Deliver(vec![delivery]))
                .await;
        }
    }

    /// Asks idle actors to stop: those unused for `actor_idle_ms`, and the least recently used
    /// beyond `actor_cache_max`.
    async fn passivate_idle(&mut self) {
        let config = &self.shared.config;
        let idle_after = Duration::from_millis(config.actor_idle_ms);
        // Closed runs first, then the least recently used.
        let mut candidates: Vec<(bool, Instant, RunId)> = self
            .actors
            .iter()
            .map(|(run, a)| (!a.closed, a.last_used, *run))
            .collect();
        candidates.sort();
        let over = self
            .actors
            .len()
            .saturating_sub(config.actor_cache_max_per_shard);
        let mut asked = Vec::new();
        for (index, (open, last_used, run_id)) in candidates.into_iter().enumerate() {
            // Bound how many one sweep asks (the next sweep continues).
            if index >= PASSIVATIONS_PER_SWEEP_MAX
                || (open && index >= over && last_used.elapsed() < idle_after)
            {
                break;
            }
            if let Some(active) = self.actors.get(&run_id) {
                asked.push((run_id, active.actor.clone()));
            }
        }
        // Asked all at once: the sweep keeps the shard from routing for at most one answer's
        // timeout, not one per actor (512 actors busy on loaded executor threads once held the
        // shard for tens of seconds).
        let answers = futures::future::join_all(asked.iter().map(|(_, actor)| {
            actor.call(
                WorkflowMsg::Passivate,
                Some(Duration::from_millis(PASSIVATE_ANSWER_MS)),
            )
        }))
        .await;
        for ((run_id, _), answer) in asked.into_iter().zip(answers) {
            let stopped = matches!(answer, Ok(ractor::rpc::CallResult::Success(true)));
            if stopped {
                self.actors.remove(&run_id);
            }
        }
    }
}
