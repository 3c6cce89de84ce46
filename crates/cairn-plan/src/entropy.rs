//! The randomness of a node ([`Entropy`]): the operating system's, or one seeded stream, so a
//! simulated cluster replays exactly. Passed in; nothing here reads a random source of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The randomness of a node: run ids and their workflow seeds, instance and claim ids, request
/// ids, retry jitter.
#[derive(Debug, Clone, Default)]
pub struct Entropy {
    /// `None`: the operating system's randomness. `Some`: a SplitMix64 stream, shared by every
    /// clone, so one seed drives a whole simulated cluster.
    seeded: Option<Arc<AtomicU64>>,
}

impl Entropy {
    /// The operating system's randomness.
    pub fn os() -> Self {
        Self::default()
    }

    /// A deterministic stream from `seed`: the same calls in the same order draw the same
    /// numbers.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seeded: Some(Arc::new(AtomicU64::new(seed))),
        }
    }

    /// Whether this is a seeded stream.
    pub fn is_seeded(&self) -> bool {
        self.seeded.is_some()
    }

    /// A random number.
    pub fn next_u64(&self) -> u64 {
        match &self.seeded {
            Some(state) => {
                // SplitMix64: one atomic step per draw, so clones on other tasks share it.
                let z = state
                    .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
                    .wrapping_add(0x9e37_79b9_7f4a_7c15);
                let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            }
            None => {
                let bytes = uuid::Uuid::now_v7().into_bytes();
                let mut tail = [0; 8];
                tail.copy_from_slice(&bytes[8..]);
                u64::from_be_bytes(tail)
            }
        }
    }

    /// A UUIDv7 for time `unix_ms` (time-ordered, with random bits from this source).
    pub fn uuid_v7(&self, unix_ms: u64) -> uuid::Uuid {
        if self.seeded.is_none() {
            return uuid::Uuid::now_v7();
        }
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        random[8..].copy_from_slice(&self.next_u64().to_be_bytes()[..2]);
        uuid::Builder::from_unix_timestamp_millis(unix_ms, &random).into_uuid()
    }

    /// A fresh run id for a run created at `unix_ms`.
    pub fn run_id(&self, unix_ms: u64) -> cairn_types::RunId {
        cairn_types::RunId::from_uuid(self.uuid_v7(unix_ms)).expect("a v7 uuid is a run id")
    }

    /// A seed for a store transaction's retry jitter (`None` when unseeded: jitter then
    /// differs per process).
    pub fn jitter_seed(&self) -> Option<u64> {
        self.seeded.as_ref().map(|_| self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_stream_replays_and_seeds_differ() {
        let draw = |seed| {
            let entropy = Entropy::seeded(seed);
            (0..4).map(|_| entropy.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let entropy = Entropy::seeded(7);
        assert_eq!(entropy.uuid_v7(1_000).get_version_num(), 7);
        assert_ne!(entropy.uuid_v7(1_000), entropy.uuid_v7(1_000));
    }
}
