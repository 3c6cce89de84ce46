//! What a transition writes, as data, below the actors that commit it.
//!
//! - [`keys`]: the store's keyspace, one function per kind of key, and shard placement.
//! - [`records`]: what is stored under those keys (run, workflow, task, lease records…).
//! - [`ops`]: the write vocabulary: [`ops::Op`], [`ops::Check`], [`ops::Verify`].
//! - [`timers`]: durable timers and the timers an activity attempt's enqueuing arms.
//! - [`visibility`]: the list and count indexes, and the query language over them.
//! - [`plan`]: the planner: a transition of the state machine in, its writes out.
//! - [`schedules`]: schedule records and their fire decisions.
//! - [`entropy`]: the node's random source, passed in.
//! - [`error`]: the errors clients and operators see.
//!
//! No tokio, no actors, no clock: time and randomness come in as arguments, the store only
//! through `cairn_store`'s traits. The architecture test forbids the edges.

pub mod entropy;
pub mod error;
pub mod keys;
pub mod ops;
pub mod plan;
pub mod records;
pub mod schedules;
pub mod timers;
pub mod visibility;

/// The task queue of an activity whose caller names none: the node's own workers serve it.
pub const LOCAL_TASK_QUEUE: &str = "default";

/// Whether an attempt of `activity_type` on `task_queue` runs on this node's own workers: its
/// type is registered here and, when remote workers may poll the node (`remote_activities`),
/// it is on [`LOCAL_TASK_QUEUE`] — as in Temporal, a task queue routes: an attempt on another
/// queue goes to the workers polling that queue, whatever this node has registered.
pub fn runs_locally(
    registry: &dyn Registered,
    remote_activities: bool,
    activity_type: &str,
    task_queue: &str,
) -> bool {
    registry.has_activity(activity_type) && (!remote_activities || task_queue == LOCAL_TASK_QUEUE)
}

/// What the planner and the visibility queries know of a node's registrations: whether a
/// workflow or activity type runs here, and the declared type of a search attribute.
pub trait Registered: Send + Sync {
    fn has_workflow(&self, name: &str) -> bool;
    /// Whether this node's own workers run activity type `name` (others go to remote
    /// workers, or fail as not registered).
    fn has_activity(&self, name: &str) -> bool;
    fn search_attribute_type(&self, name: &str) -> Option<cairn_types::SearchType>;
}
