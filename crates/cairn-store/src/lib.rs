//! The store contract every Cairn backend implements, shaped after FoundationDB: an ordered map
//! of byte keys to byte values with serializable, optimistic, multi-key transactions.
//!
//! Invariants:
//! - The contract is FoundationDB's, limits included ([`Limits`]). A backend may be faster or
//!   slower, never more permissive: what commits on the embedded store commits on FoundationDB.
//! - A transaction reads one consistent snapshot (its read version) plus its own writes, and
//!   commits only if nothing it read (with conflict tracking) was changed by a transaction that
//!   committed after its read version. Blind writes do not conflict, as in FoundationDB.
//! - `commit` reports [`StoreError::Conflict`] (nothing was written),
//!   [`StoreError::MaybeCommitted`] (outcome unknown: the caller must make the transaction
//!   idempotent) or a fatal error. [`transact`] owns the retry loop.
//! - This crate knows no backend. [`MemStore`] lives here because it is the reference model the
//!   conformance suite ([`conformance`]) is written against; [`kit`] holds the pieces (conflict
//!   resolver, read-your-writes overlay, watch registry) that let a local backend be a thin
//!   mapping onto an engine.

pub mod conformance;
mod contract;
mod error;
pub mod fault;
pub mod keyspace;
pub mod kit;
mod limits;
mod mem;
mod pages;
mod transact;

pub use contract::{
    CommitInfo, KeyValue, RangeRequest, Store, Transaction, Version, Versionstamp, Watch,
};
pub use error::{StoreError, StoreResult};
pub use fault::{FaultConfig, FaultStats, FaultStore};
pub use limits::{
    KEY_BYTES_MAX, Limits, TRANSACTION_AGE_MAX, TRANSACTION_BYTES_MAX, VALUE_BYTES_MAX, WATCHES_MAX,
};
pub use mem::MemStore;
pub use pages::Pages;
pub use transact::{Attempt, RetryClass, TransactOptions, transact};
