//! Building blocks for local backends (`MemStore`, the embedded store): everything FoundationDB
//! does inside its cluster that a single-process engine lacks.
//!
//! - [`WriteBuffer`]: a transaction's buffered mutations, read-your-writes overlay, read
//!   conflict set, size and age accounting, and pending watches.
//! - [`finalize`]: turns the mutation log into the final key → value writes at commit time
//!   (atomic adds and clear ranges resolved against the latest state, versionstamps filled in).
//! - [`Resolver`]: FoundationDB's conflict check — a transaction conflicts if a transaction that
//!   committed after its read version wrote a range it read.
//! - [`WatchRegistry`]: armed watches, fired when a commit changes their key's value.
//!
//! With these, a backend is an engine that can (a) read a consistent snapshot and (b) apply a
//! batch of writes atomically.

mod apply;
mod resolver;
mod validate;
mod watches;
mod write_buffer;

pub use apply::{Finalized, LatestReader, Mutation, finalize};
pub use resolver::Resolver;
pub use validate::{
    check_range_bounds, check_read_key, check_value, check_write_key, versionstamp_offset,
};
pub use watches::WatchRegistry;
pub use write_buffer::{Lookup, WriteBuffer};

/// Implements the write methods of [`crate::Transaction`] (`set`, `clear`, `clear_range`,
/// `atomic_add`, `set_versionstamped_key`) by delegating to a [`WriteBuffer`] field, for local
/// backends whose writes are all buffered until commit. Use inside the `impl Transaction`.
#[macro_export]
macro_rules! buffered_writes {
    ($buffer:ident) => {
        fn set(&mut self, key: &[u8], value: &[u8]) -> $crate::StoreResult<()> {
            self.$buffer.set(key, value)
        }

        fn clear(&mut self, key: &[u8]) -> $crate::StoreResult<()> {
            self.$buffer.clear(key)
        }

        fn clear_range(&mut self, begin: &[u8], end: &[u8]) -> $crate::StoreResult<()> {
            self.$buffer.clear_range(begin, end)
        }

        fn atomic_add(&mut self, key: &[u8], delta: i64) -> $crate::StoreResult<()> {
            self.$buffer.atomic_add(key, delta)
        }

        fn set_versionstamped_key(&mut self, key: &[u8], value: &[u8]) -> $crate::StoreResult<()> {
            self.$buffer.set_versionstamped_key(key, value)
        }
    };
}

/// Interprets `value` as a little-endian integer (shorter values are zero-extended, longer ones
/// truncated to 8 bytes), adds `delta` with wrap-around, and encodes the result as 8 bytes.
/// This is FoundationDB's `ADD` for an 8-byte parameter.
pub fn add_le(value: Option<&[u8]>, delta: i64) -> Vec<u8> {
    let mut bytes = [0u8; 8];
    if let Some(v) = value {
        let n = v.len().min(8);
        bytes[..n].copy_from_slice(&v[..n]);
    }
    let sum = i64::from_le_bytes(bytes).wrapping_add(delta);
    sum.to_le_bytes().to_vec()
}
