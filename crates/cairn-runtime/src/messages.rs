//! What the actors of a node say to each other: the shard actor's inputs ([`ShardMsg`]), a run
//! actor's ([`WorkflowMsg`]), the work delivered to a run ([`Delivery`]) and a durable timer as
//! held in memory ([`TimerEntry`]). Plain data and reply ports, below every actor, so each actor
//! module depends on the messages, not on the actors it talks to.

use crate::error::{QueryError, UpdateError};
use crate::matching::WorkflowTask;
use crate::records::{InboxItem, ReadyItem};
pub use crate::timers::TimerEntry;
use crate::updates::{UpdateRequest, UpdateState};
use cairn_core::Message;
use cairn_types::{Failure, Payload, RunId};
use ractor::RpcReplyPort;
use tokio::sync::watch;

/// Work for a run, with the store keys its transition must clear (mailbox entry, fired timer,
/// finished task) so that it is consumed exactly once.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub item: InboxItem,
    pub consume: Vec<Vec<u8>>,
}

impl Delivery {
    /// A signal or cancel request: a client's message, acknowledged once in the mailbox.
    pub(crate) fn is_client_message(&self) -> bool {
        matches!(
            self.item,
            InboxItem::Message(Message::Signal { .. } | Message::CancelRequested { .. })
        )
    }
}

/// The answer to an update call: the channel that follows it.
pub type UpdateReply = RpcReplyPort<Result<watch::Receiver<UpdateState>, UpdateError>>;

/// The answer to a workflow task's completion.
pub type TaskReply = RpcReplyPort<Result<(), crate::matching::MatchingError>>;

/// The workflow actor's inputs.
pub enum WorkflowMsg {
    /// Hand the owed workflow task of a remote run to a worker (`None`: none is owed).
    TakeWorkflowTask(RpcReplyPort<Option<WorkflowTask>>),
    /// A worker's completion of workflow task `task`, answered once it committed.
    CompleteWorkflowTask {
        task: u32,
        attempt: u32,
        /// Handed out by an earlier holder of the run when its next event id was this
        /// (`WorkflowTaskToken::earlier_holder`); `None`: by this node's current life.
        earlier_holder: Option<u64>,
        commands: Vec<cairn_types::Command>,
        /// Answers to the queries attached to the task, by query id.
        query_results: Vec<(u64, Result<Payload, String>)>,
        /// The worker wants the next task at once (`Message::WorkflowTaskCompleted`).
        new_task: bool,
        /// Updates the worker rejected (its validator failed), by update id.
        rejections: Vec<(String, Failure)>,
        reply: TaskReply,
    },
    /// A worker's answer to query `id` (handed out alone), or its wait ended (`None`).
    AnswerQuery {
        id: u64,
        answer: Option<Result<Payload, String>>,
    },
    /// A worker failed workflow task `task`, or held it past its timeout (`why`: recorded
    /// in the history; `None`: not the worker's doing).
    FailWorkflowTask {
        task: u32,
        attempt: u32,
        why: Option<cairn_core::WorkflowTaskFailure>,
    },
    Load,
    Deliver(Vec<Delivery>),
    /// Read the run's mailbox from the store.
    Wake,
    Flush,
    Query {
        name: String,
        args: Payload,
        reply: RpcReplyPort<Result<Payload, QueryError>>,
    },
    /// Admit an update (or find the one with its id): answers with the channel that follows
    /// it.
    Update {
        request: UpdateRequest,
        reply: UpdateReply,
    },
    /// Find update `update_id` of this run, admitted or accepted.
    PollUpdate {
        update_id: String,
        reply: UpdateReply,
    },
    /// Stop if idle; answers whether it stopped.
    Passivate(RpcReplyPort<bool>),
}

impl std::fmt::Debug for WorkflowMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Load => "Load",
            Self::Deliver(_) => "Deliver",
            Self::Wake => "Wake",
            Self::Flush => "Flush",
            Self::Query { .. } => "Query",
            Self::Update { .. } => "Update",
            Self::PollUpdate { .. } => "PollUpdate",
            Self::Passivate(_) => "Passivate",
            Self::TakeWorkflowTask(_) => "TakeWorkflowTask",
            Self::CompleteWorkflowTask { .. } => "CompleteWorkflowTask",
            Self::FailWorkflowTask { .. } => "FailWorkflowTask",
            Self::AnswerQuery { .. } => "AnswerQuery",
        })
    }
}

/// The shard actor's inputs.
pub enum ShardMsg {
    Deliver {
        run_id: RunId,
        deliveries: Vec<Delivery>,
    },
    /// New mailbox entries for `run_id` are in the store.
    Wake {
        run_id: RunId,
    },
    Query {
        run_id: RunId,
        name: String,
        args: Payload,
        reply: RpcReplyPort<Result<Payload, QueryError>>,
    },
    /// Any message for the run's actor (activated if it is not in memory).
    ToRun {
        run_id: RunId,
        message: WorkflowMsg,
    },
    AddTimers(Vec<TimerEntry>),
    /// Keys consumed by a committed transition (timers among them are forgotten).
    RemoveTimers(Vec<Vec<u8>>),
    /// Look at schedule `schedule_id` from `at_unix_ms` on (its wake-up index entry).
    ScheduleWake {
        schedule_id: String,
        at_unix_ms: u64,
    },
    /// A fire pass over the schedules `firing` finished. If it committed, each one's next
    /// wake-up came as a `ScheduleWake`; if not, they are tried again shortly.
    SchedulesFired {
        firing: Vec<String>,
        committed: bool,
    },
    /// The run's actor committed the run's close: it only answers queries and forwards late
    /// mail from now on, so the next sweep passivates it ahead of idle ones. (The shard does
    /// it, not the actor itself: an actor that stopped on its own could drop a wake-up cast to
    /// it before the shard saw it stop.)
    Closed {
        run_id: RunId,
    },
    Tick,
}

impl From<ReadyItem> for ShardMsg {
    fn from(item: ReadyItem) -> Self {
        match item {
            ReadyItem::Run(run_id) => Self::Wake { run_id },
            ReadyItem::Schedule {
                schedule_id,
                at_unix_ms,
            } => Self::ScheduleWake {
                schedule_id,
                at_unix_ms,
            },
        }
    }
}
