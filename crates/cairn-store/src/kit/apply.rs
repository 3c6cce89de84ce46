//! Resolving a transaction's mutation log into final writes at commit time.

use super::add_le;
use crate::{StoreResult, Versionstamp};
use std::collections::BTreeMap;

/// One buffered write, in the order the transaction issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Clear {
        key: Vec<u8>,
    },
    ClearRange {
        begin: Vec<u8>,
        end: Vec<u8>,
    },
    AtomicAdd {
        key: Vec<u8>,
        delta: i64,
    },
    /// `key` is already split: `offset` is where the 10-byte versionstamp goes.
    SetVersionstampedKey {
        key: Vec<u8>,
        offset: usize,
        value: Vec<u8>,
    },
}

/// Read access to the latest committed state, used while the backend holds its commit lock.
pub trait LatestReader {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;
    /// Every key currently present in `[begin, end)`.
    fn keys_in(&self, begin: &[u8], end: &[u8]) -> StoreResult<Vec<Vec<u8>>>;
}

/// The outcome of [`finalize`].
#[derive(Debug, Default)]
pub struct Finalized {
    /// Final value per key: `Some` to write, `None` to delete. Every key here is also a point
    /// write conflict.
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Write conflict ranges beyond the keys of `writes` (from clear ranges), `[begin, end)`.
    pub cleared_ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Applies `mutations` in order on top of `latest`, filling in `versionstamp`.
pub fn finalize(
    mutations: Vec<Mutation>,
    versionstamp: Versionstamp,
    latest: &impl LatestReader,
) -> StoreResult<Finalized> {
    let mut out = Finalized::default();
    for mutation in mutations {
        match mutation {
            Mutation::Set { key, value } => {
                out.writes.insert(key, Some(value));
            }
            Mutation::Clear { key } => {
                out.writes.insert(key, None);
            }
            Mutation::ClearRange { begin, end } => {
                for (_, value) in out.writes.range_mut(begin.clone()..end.clone()) {
                    *value = None;
                }
                for key in latest.keys_in(&begin, &end)? {
                    out.writes.insert(key, None);
                }
                out.cleared_ranges.push((begin, end));
            }
            Mutation::AtomicAdd { key, delta } => {
                let base = match out.writes.get(&key) {
                    Some(known) => known.clone(),
                    None => latest.get(&key)?,
                };
                out.writes.insert(key, Some(add_le(base.as_deref(), delta)));
            }
            Mutation::SetVersionstampedKey {
                mut key,
                offset,
                value,
            } => {
                key[offset..offset + 10].copy_from_slice(&versionstamp.0);
                out.writes.insert(key, Some(value));
            }
        }
    }
    Ok(out)
}
