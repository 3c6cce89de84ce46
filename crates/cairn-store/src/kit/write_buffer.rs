//! A local transaction's buffered state.

use super::{
    Mutation, add_le, check_range_bounds, check_read_key, check_value, check_write_key,
    versionstamp_offset,
};
use crate::keyspace::key_after;
use crate::{KeyValue, Limits, RangeRequest, StoreError, StoreResult, Watch};
use std::collections::BTreeMap;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// What the overlay knows about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// This transaction decided the value (`None`: cleared).
    Known(Option<Vec<u8>>),
    /// This transaction added `delta` to whatever the snapshot holds.
    AddTo(i64),
    /// Read the snapshot.
    Snapshot,
}

#[derive(Debug, Clone)]
enum Overlay {
    Value(Option<Vec<u8>>),
    Add(i64),
}

/// Mutations, read-your-writes overlay, read conflict set, size and age of one transaction.
#[derive(Debug)]
pub struct WriteBuffer {
    limits: Limits,
    started: Instant,
    mutations: Vec<Mutation>,
    /// Read-your-writes view of `mutations[..folded]`, built lazily: a transaction that only
    /// writes (the engine's common case) never pays for it.
    overlay: BTreeMap<Vec<u8>, Overlay>,
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
    folded: usize,
    read_ranges: Vec<(Vec<u8>, Vec<u8>)>,
    bytes: usize,
    watches: Vec<(Vec<u8>, oneshot::Sender<StoreResult<()>>)>,
}

impl WriteBuffer {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            started: Instant::now(),
            mutations: Vec::new(),
            overlay: BTreeMap::new(),
            cleared: Vec::new(),
            folded: 0,
            read_ranges: Vec::new(),
            bytes: 0,
            watches: Vec::new(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Fails once the transaction is older than the age limit.
    pub fn check_age(&self) -> StoreResult<()> {
        let age = self.started.elapsed();
        if age > self.limits.transaction_age_max {
            return Err(StoreError::TransactionTooOld {
                age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                limit_ms: u64::try_from(self.limits.transaction_age_max.as_millis())
                    .unwrap_or(u64::MAX),
            });
        }
        Ok(())
    }

    /// Validates a point read and, unless `snapshot`, adds its conflict range.
    pub fn begin_get(&mut self, key: &[u8], snapshot: bool) -> StoreResult<Lookup> {
        self.check_age()?;
        check_read_key(&self.limits, key)?;
        if !snapshot {
            self.add_read_range(key.to_vec(), key_after(key));
        }
        self.fold();
        Ok(self.lookup(key))
    }

    fn lookup(&self, key: &[u8]) -> Lookup {
        match self.overlay.get(key) {
            Some(Overlay::Value(v)) => Lookup::Known(v.clone()),
            Some(Overlay::Add(d)) => Lookup::AddTo(*d),
            None if self.is_cleared(key) => Lookup::Known(None),
            None => Lookup::Snapshot,
        }
    }

    /// Brings the overlay up to date with the mutations issued since the last read.
    fn fold(&mut self) {
        for mutation in &self.mutations[self.folded..] {
            match mutation {
                Mutation::Set { key, value } => {
                    self.overlay
                        .insert(key.clone(), Overlay::Value(Some(value.clone())));
                }
                Mutation::Clear { key } => {
                    self.overlay.insert(key.clone(), Overlay::Value(None));
                }
                Mutation::ClearRange { begin, end } => {
                    let doomed: Vec<Vec<u8>> = self
                        .overlay
                        .range(begin.clone()..end.clone())
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in doomed {
                        self.overlay.remove(&key);
                    }
                    self.cleared.push((begin.clone(), end.clone()));
                }
                Mutation::AtomicAdd { key, delta } => {
                    let cleared = self.cleared.iter().any(|(b, e)| b <= key && key < e);
                    let entry = match self.overlay.get(key) {
                        Some(Overlay::Value(v)) => {
                            Overlay::Value(Some(add_le(v.as_deref(), *delta)))
                        }
                        Some(Overlay::Add(d)) => Overlay::Add(d.wrapping_add(*delta)),
                        None if cleared => Overlay::Value(Some(add_le(None, *delta))),
                        None => Overlay::Add(*delta),
                    };
                    self.overlay.insert(key.clone(), entry);
                }
                // Versionstamped keys are unknown until commit and cannot be read back.
                Mutation::SetVersionstampedKey { .. } => {}
            }
        }
        self.folded = self.mutations.len();
    }

    /// Combines a [`Lookup`] with the snapshot's value.
    pub fn resolve(
        lookup: Lookup,
        snapshot_value: impl FnOnce() -> StoreResult<Option<Vec<u8>>>,
    ) -> StoreResult<Option<Vec<u8>>> {
        match lookup {
            Lookup::Known(v) => Ok(v),
            Lookup::AddTo(delta) => Ok(Some(add_le(snapshot_value()?.as_deref(), delta))),
            Lookup::Snapshot => snapshot_value(),
        }
    }

    fn is_cleared(&self, key: &[u8]) -> bool {
        self.cleared
            .iter()
            .any(|(b, e)| b.as_slice() <= key && key < e.as_slice())
    }

    fn add_read_range(&mut self, begin: Vec<u8>, end: Vec<u8>) {
        self.bytes += begin.len() + end.len();
        self.read_ranges.push((begin, end));
    }

    /// Validates a range read. Returns `false` if the range is empty (inverted), in which case
    /// the result is empty and nothing is recorded.
    pub fn check_range(&self, range: &RangeRequest) -> StoreResult<bool> {
        self.check_age()?;
        check_range_bounds(&self.limits, &range.begin, &range.end)?;
        Ok(range.begin < range.end && range.limit != Some(0))
    }

    /// Merges the snapshot's pairs in `range` (in the requested direction, unlimited) with this
    /// transaction's writes, applies the limit, and records the conflict range actually read.
    pub fn merge_range(
        &mut self,
        range: &RangeRequest,
        snapshot: impl Iterator<Item = StoreResult<KeyValue>>,
    ) -> StoreResult<Vec<KeyValue>> {
        self.fold();
        let limit = range.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut snapshot = snapshot.peekable();
        let overlay_range = self.overlay.range(range.begin.clone()..range.end.clone());
        let mut overlay: Box<dyn Iterator<Item = (&Vec<u8>, &Overlay)>> = if range.reverse {
            Box::new(overlay_range.rev())
        } else {
            Box::new(overlay_range)
        };
        let mut pending_overlay = overlay.next();
        let before = |a: &[u8], b: &[u8]| if range.reverse { a > b } else { a < b };
        while out.len() < limit {
            let next_snapshot = match snapshot.peek() {
                Some(Ok(kv)) => Some(kv.key.clone()),
                Some(Err(_)) => return Err(snapshot.next().expect("peeked").expect_err("error")),
                None => None,
            };
            let take_overlay = match (&pending_overlay, &next_snapshot) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((ok, _)), Some(sk)) => before(ok, sk) || ok.as_slice() == sk.as_slice(),
            };
            if take_overlay {
                let (key, entry) = pending_overlay.take().expect("overlay entry");
                let same_key = next_snapshot.as_deref() == Some(key.as_slice());
                let base = if same_key {
                    snapshot
                        .next()
                        .map(|kv| kv.map(|kv| kv.value))
                        .transpose()?
                } else {
                    None
                };
                let value = match entry {
                    Overlay::Value(v) => v.clone(),
                    Overlay::Add(delta) => {
                        let base = if self.is_cleared(key) { None } else { base };
                        Some(add_le(base.as_deref(), *delta))
                    }
                };
                if let Some(value) = value {
                    out.push(KeyValue {
                        key: key.clone(),
                        value,
                    });
                }
                pending_overlay = overlay.next();
            } else {
                let kv = snapshot.next().expect("peeked")?;
                if !self.is_cleared(&kv.key) {
                    out.push(kv);
                }
            }
        }
        drop(overlay);
        if !range.snapshot {
            let hit_limit = out.len() >= limit;
            let (begin, end) = match (hit_limit, range.reverse, out.last()) {
                (true, false, Some(last)) => (range.begin.clone(), key_after(&last.key)),
                (true, true, Some(last)) => (last.key.clone(), range.end.clone()),
                _ => (range.begin.clone(), range.end.clone()),
            };
            self.add_read_range(begin, end);
        }
        Ok(out)
    }

    pub fn set(&mut self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.check_age()?;
        check_write_key(&self.limits, key)?;
        check_value(&self.limits, value)?;
        self.bytes += key.len() + value.len();
        self.mutations.push(Mutation::Set {
            key: key.to_vec(),
            value: value.to_vec(),
        });
        Ok(())
    }

    pub fn clear(&mut self, key: &[u8]) -> StoreResult<()> {
        self.check_age()?;
        check_write_key(&self.limits, key)?;
        self.bytes += key.len();
        self.mutations.push(Mutation::Clear { key: key.to_vec() });
        Ok(())
    }

    pub fn clear_range(&mut self, begin: &[u8], end: &[u8]) -> StoreResult<()> {
        self.check_age()?;
        check_range_bounds(&self.limits, begin, end)?;
        if begin > end {
            return Err(StoreError::InvalidRange);
        }
        if begin == end {
            return Ok(());
        }
        self.bytes += begin.len() + end.len();
        self.mutations.push(Mutation::ClearRange {
            begin: begin.to_vec(),
            end: end.to_vec(),
        });
        Ok(())
    }

    pub fn atomic_add(&mut self, key: &[u8], delta: i64) -> StoreResult<()> {
        self.check_age()?;
        check_write_key(&self.limits, key)?;
        self.bytes += key.len() + 8;
        self.mutations.push(Mutation::AtomicAdd {
            key: key.to_vec(),
            delta,
        });
        Ok(())
    }

    pub fn set_versionstamped_key(&mut self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.check_age()?;
        let (body, offset) = versionstamp_offset(key)?;
        check_write_key(&self.limits, body)?;
        check_value(&self.limits, value)?;
        self.bytes += body.len() + value.len();
        self.mutations.push(Mutation::SetVersionstampedKey {
            key: body.to_vec(),
            offset,
            value: value.to_vec(),
        });
        Ok(())
    }

    /// Queues a watch to be armed at commit. `armed` is how many watches the store holds now;
    /// at the limit the watch is refused.
    pub fn watch(&mut self, key: &[u8], armed: usize) -> StoreResult<Watch> {
        self.check_age()?;
        check_read_key(&self.limits, key)?;
        let limit = self.limits.watches_max;
        if armed + self.watches.len() >= limit {
            return Err(StoreError::TooManyWatches {
                count: armed + self.watches.len(),
                limit,
            });
        }
        let (fire, fired) = oneshot::channel();
        self.watches.push((key.to_vec(), fire));
        Ok(Watch::new(async move {
            match fired.await {
                Ok(result) => result,
                Err(_) => Err(StoreError::WatchCancelled),
            }
        }))
    }

    /// Final checks before commit: age and total size.
    pub fn check_commit(&self) -> StoreResult<()> {
        self.check_age()?;
        if self.bytes > self.limits.transaction_bytes_max {
            return Err(StoreError::TransactionTooLarge {
                size: self.bytes,
                limit: self.limits.transaction_bytes_max,
            });
        }
        Ok(())
    }

    /// Hands the mutation log to the commit.
    pub fn take_mutations(&mut self) -> Vec<Mutation> {
        std::mem::take(&mut self.mutations)
    }

    pub fn read_ranges(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.read_ranges
    }

    /// Pending watches, taken by the backend at commit.
    pub fn take_watches(&mut self) -> Vec<(Vec<u8>, oneshot::Sender<StoreResult<()>>)> {
        std::mem::take(&mut self.watches)
    }

    /// The keys of pending watches, in the order [`Self::take_watches`] returns them.
    pub fn watched_keys(&self) -> impl Iterator<Item = &[u8]> {
        self.watches.iter().map(|(key, _)| key.as_slice())
    }

    pub fn has_watches(&self) -> bool {
        !self.watches.is_empty()
    }

    pub fn is_read_only(&self) -> bool {
        self.mutations.is_empty()
    }
}
