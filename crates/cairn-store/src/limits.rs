//! FoundationDB's limits, enforced by every backend so that nothing that works on the embedded
//! store breaks on FoundationDB.

use std::time::Duration;

/// The limits a backend enforces. [`Limits::default`] is FoundationDB's; local backends accept
/// a shorter `transaction_age_max` so tests of the age limit need not sleep five seconds.
///
/// # Examples
/// ```
/// use cairn_store::Limits;
/// let limits = Limits::default();
/// assert_eq!(limits.key_bytes_max, 10_000);
/// assert_eq!(limits.value_bytes_max, 100_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key. FoundationDB: 10,000 bytes.
    pub key_bytes_max: usize,
    /// Longest value. FoundationDB: 100,000 bytes.
    pub value_bytes_max: usize,
    /// Largest transaction: keys and values written plus conflict ranges. FoundationDB: 10 MB.
    pub transaction_bytes_max: usize,
    /// Longest a transaction may live from its first operation to its commit. FoundationDB: 5 s.
    /// Past it, every read and the commit fail `TransactionTooOld`, on every backend (the
    /// FoundationDB backend checks the age itself: FoundationDB alone lets a transaction run
    /// somewhat longer, and answers reads of its own writes regardless).
    pub transaction_age_max: Duration,
    /// Most watches armed at once. FoundationDB's default per client: 10,000.
    pub watches_max: usize,
}

/// FoundationDB's key limit.
pub const KEY_BYTES_MAX: usize = 10_000;
/// FoundationDB's value limit.
pub const VALUE_BYTES_MAX: usize = 100_000;
/// FoundationDB's transaction size limit.
pub const TRANSACTION_BYTES_MAX: usize = 10_000_000;
/// FoundationDB's transaction age limit.
pub const TRANSACTION_AGE_MAX: Duration = Duration::from_secs(5);
/// FoundationDB's default watch limit.
pub const WATCHES_MAX: usize = 10_000;

const _: () = assert!(KEY_BYTES_MAX < VALUE_BYTES_MAX);
const _: () = assert!(VALUE_BYTES_MAX < TRANSACTION_BYTES_MAX);

impl Default for Limits {
    fn default() -> Self {
        Self {
            key_bytes_max: KEY_BYTES_MAX,
            value_bytes_max: VALUE_BYTES_MAX,
            transaction_bytes_max: TRANSACTION_BYTES_MAX,
            transaction_age_max: TRANSACTION_AGE_MAX,
            watches_max: WATCHES_MAX,
        }
    }
}

impl Limits {
    /// FoundationDB's limits with a different age limit, for tests of local backends. A limit
    /// longer than FoundationDB's is refused, because it would admit transactions FDB rejects.
    pub fn with_transaction_age_max(mut self, age: Duration) -> Self {
        assert!(
            age <= TRANSACTION_AGE_MAX,
            "age limit above FoundationDB's 5 s"
        );
        assert!(!age.is_zero(), "a zero age limit admits no transaction");
        self.transaction_age_max = age;
        self
    }
}
