//! FoundationDB's conflict resolution for a single process.

use crate::{StoreError, StoreResult, Version};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Remembers the write ranges of recent commits and rejects a transaction whose read ranges
/// intersect a write committed after its read version.
///
/// Commits older than `window` (the transaction age limit plus a margin) are forgotten; a
/// transaction whose read version predates what is remembered is rejected as a conflict, which
/// is always safe. Only transactions older than the age limit can hit that case, and those are
/// refused before the check anyway.
#[derive(Debug)]
pub struct Resolver {
    history: VecDeque<CommittedWrites>,
    forgotten_through: Version,
    window: Duration,
}

#[derive(Debug)]
struct CommittedWrites {
    version: Version,
    at: Instant,
    /// Keys written, sorted and distinct.
    points: Vec<Vec<u8>>,
    /// Ranges cleared, sorted and non-overlapping.
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl CommittedWrites {
    fn intersects(&self, read: &(Vec<u8>, Vec<u8>)) -> bool {
        let (begin, end) = (read.0.as_slice(), read.1.as_slice());
        let index = self.points.partition_point(|p| p.as_slice() < begin);
        let point_hit = self.points.get(index).is_some_and(|p| p.as_slice() < end);
        point_hit || intersects(&self.ranges, read)
    }
}

impl Resolver {
    /// A resolver that remembers commits for `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            history: VecDeque::new(),
            forgotten_through: 0,
            window,
        }
    }

    /// Fails with [`StoreError::Conflict`] if any range in `reads` was written after
    /// `read_version`.
    pub fn check(&self, read_version: Version, reads: &[(Vec<u8>, Vec<u8>)]) -> StoreResult<()> {
        if reads.is_empty() {
            return Ok(());
        }
        if read_version < self.forgotten_through {
            return Err(StoreError::Conflict);
        }
        for committed in self.history.iter().rev() {
            if committed.version <= read_version {
                break;
            }
            if reads.iter().any(|read| committed.intersects(read)) {
                return Err(StoreError::Conflict);
            }
        }
        Ok(())
    }

    /// Forgets commits older than the window. `record` does this on every commit; a backend
    /// also calls it when idle so the last burst's keys are not held until the next commit.
    pub fn prune(&mut self) {
        self.forget_before(Instant::now());
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some(front) = self.history.front() {
            if now.duration_since(front.at) <= self.window {
                break;
            }
            self.forgotten_through = front.version;
            self.history.pop_front();
        }
    }

    /// Records a commit's writes — `points` (sorted, distinct keys) and cleared `ranges` — and
    /// forgets commits older than the window.
    pub fn record(
        &mut self,
        version: Version,
        points: Vec<Vec<u8>>,
        mut ranges: Vec<(Vec<u8>, Vec<u8>)>,
    ) {
        debug_assert!(points.windows(2).all(|w| w[0] < w[1]), "points unsorted");
        if let Some(last) = self.history.back() {
            assert!(version > last.version, "commit versions must increase");
        }
        let now = Instant::now();
        self.forget_before(now);
        if points.is_empty() && ranges.is_empty() {
            return;
        }
        coalesce(&mut ranges);
        self.history.push_back(CommittedWrites {
            version,
            at: now,
            points,
            ranges,
        });
    }
}

/// Sorts ranges and merges overlapping or touching ones, so that both begins and ends ascend.
fn coalesce(ranges: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    ranges.retain(|(b, e)| b < e);
    ranges.sort();
    let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(ranges.len());
    for (begin, end) in ranges.drain(..) {
        match merged.last_mut() {
            Some(last) if begin <= last.1 => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => merged.push((begin, end)),
        }
    }
    *ranges = merged;
}

/// Whether `read` intersects any of the sorted, non-overlapping `writes`.
fn intersects(writes: &[(Vec<u8>, Vec<u8>)], read: &(Vec<u8>, Vec<u8>)) -> bool {
    // First write range that ends after the read begins; it conflicts if it begins before the
    // read ends.
    let index = writes.partition_point(|(_, end)| end.as_slice() <= read.0.as_slice());
    writes
        .get(index)
        .is_some_and(|(begin, _)| begin.as_slice() < read.1.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(b: &str, e: &str) -> (Vec<u8>, Vec<u8>) {
        (b.as_bytes().to_vec(), e.as_bytes().to_vec())
    }

    /// Proves half-open intersection: touching ranges do not conflict, overlapping ones do.
    #[test]
    fn intersection_is_half_open() {
        let mut resolver = Resolver::new(Duration::from_secs(60));
        resolver.record(2, vec![b"a".to_vec()], vec![r("c", "e")]);
        assert!(resolver.check(1, &[r("b", "c")]).is_ok());
        assert!(resolver.check(1, &[r("e", "f")]).is_ok());
        assert_eq!(resolver.check(1, &[r("d", "z")]), Err(StoreError::Conflict));
        assert_eq!(
            resolver.check(1, &[r("0", "a\0")]),
            Err(StoreError::Conflict)
        );
        assert!(resolver.check(1, &[r("a\0", "c")]).is_ok());
        // A reader at version 2 already saw the write.
        assert!(resolver.check(2, &[r("a", "z")]).is_ok());
    }

    /// Proves pruning forgets commits older than the window, and that a reader older than
    /// what is remembered is refused (conservatively) rather than waved through.
    #[test]
    fn prune_forgets_old_commits_safely() {
        let mut resolver = Resolver::new(Duration::from_millis(10));
        resolver.record(2, vec![b"k".to_vec()], vec![]);
        assert_eq!(resolver.history.len(), 1);
        std::thread::sleep(Duration::from_millis(20));
        resolver.prune();
        assert!(resolver.history.is_empty());
        assert_eq!(resolver.check(1, &[r("x", "y")]), Err(StoreError::Conflict));
        assert!(resolver.check(2, &[r("k", "l")]).is_ok());
    }

    /// Proves coalescing keeps both begins and ends ascending.
    #[test]
    fn coalesce_merges_overlaps() {
        let mut ranges = vec![r("d", "f"), r("a", "c"), r("b", "e"), r("x", "x")];
        coalesce(&mut ranges);
        assert_eq!(ranges, vec![r("a", "f")]);
    }
}
