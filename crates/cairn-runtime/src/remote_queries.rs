//! Queries of remote runs: the code that answers them is a worker's, so a query waits in its
//! run's actor until a worker takes it — attached to the workflow task being handed out (the
//! worker answers with the task's completion), or, when the run has no task owed, as a query
//! task of its own. Nothing here is stored: a query lives as long as its caller waits.

use crate::error::QueryError;
use cairn_types::Payload;
use ractor::RpcReplyPort;

/// Most queries waiting in one remote run; past it a query is refused.
pub const REMOTE_QUERIES_WAITING_MAX: usize = 64;

/// How long a query waits for a worker's answer.
pub const REMOTE_QUERY_WAIT_MS: u64 = 20_000;

/// A query of a remote run as a worker receives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RemoteQuery {
    /// Names the query within its run.
    pub id: u64,
    pub name: String,
    pub args: Payload,
}

/// Where a waiting query is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Not handed to a worker yet.
    Waiting,
    /// Attached to workflow task `(task, attempt)`.
    Task(u32, u32),
    /// Handed out as a query task of its own.
    Alone,
}

struct Waiting {
    query: RemoteQuery,
    held: Held,
    reply: RpcReplyPort<Result<Payload, QueryError>>,
}

/// A remote run's waiting queries.
#[derive(Default)]
pub struct RemoteQueries {
    next: u64,
    waiting: Vec<Waiting>,
}

impl RemoteQueries {
    /// Adds a query; answers `Overloaded` at the bound. Returns its id.
    pub fn add(
        &mut self,
        name: String,
        args: Payload,
        reply: RpcReplyPort<Result<Payload, QueryError>>,
    ) -> Option<u64> {
        if self.waiting.len() >= REMOTE_QUERIES_WAITING_MAX {
            let _ = reply.send(Err(QueryError::Handler(format!(
                "{REMOTE_QUERIES_WAITING_MAX} queries already wait for this workflow's worker; retry shortly"
            ))));
            return None;
        }
        self.next += 1;
        self.waiting.push(Waiting {
            query: RemoteQuery {
                id: self.next,
                name,
                args,
            },
            held: Held::Waiting,
            reply,
        });
        Some(self.next)
    }

    /// Whether no query waits at all (handed out or not).
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Whether a query waits for a worker.
    pub fn any_waiting(&self) -> bool {
        self.waiting.iter().any(|w| w.held == Held::Waiting)
    }

    /// Attaches every waiting query to workflow task `(task, attempt)`.
    pub fn attach(&mut self, task: u32, attempt: u32) -> Vec<RemoteQuery> {
        self.waiting
            .iter_mut()
            .filter(|w| w.held == Held::Waiting)
            .map(|w| {
                w.held = Held::Task(task, attempt);
                w.query.clone()
            })
            .collect()
    }

    /// Hands the oldest waiting query out on its own.
    pub fn take_alone(&mut self) -> Option<RemoteQuery> {
        let w = self.waiting.iter_mut().find(|w| w.held == Held::Waiting)?;
        w.held = Held::Alone;
        Some(w.query.clone())
    }

    /// The queries of a task that ended without answering them wait again.
    pub fn detach(&mut self, task: u32, attempt: u32) {
        for w in &mut self.waiting {
            if w.held == Held::Task(task, attempt) {
                w.held = Held::Waiting;
            }
        }
    }

    /// A worker's answer to query `id`. Answers whether the query was still waiting.
    pub fn answer(&mut self, id: u64, answer: Result<Payload, String>) -> bool {
        let Some(index) = self.waiting.iter().position(|w| w.query.id == id) else {
            return false;
        };
        let w = self.waiting.remove(index);
        let _ = w.reply.send(answer.map_err(QueryError::Handler));
        true
    }

    /// Gives up on query `id` (its wait is over).
    pub fn expire(&mut self, id: u64) {
        self.answer(
            id,
            Err(format!(
                "no worker answered the query within {} s: is a worker polling the workflow's task queue?",
                REMOTE_QUERY_WAIT_MS / 1000
            )),
        );
    }
}
