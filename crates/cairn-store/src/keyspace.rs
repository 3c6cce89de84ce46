//! Keyspace helpers on FoundationDB's tuple encoding (`foundationdb-tuple`, pure Rust), so keys
//! built on the embedded store are byte-identical to those on FoundationDB.
//!
//! Cairn's keys are tuples under one subspace per kind of record (`("run", run_id, "hist",
//! event_id)` and so on, see DESIGN §4); tuple encoding keeps integers, strings and UUIDs in
//! their natural order, which is what range reads over history and queues rely on.
//!
//! # Examples
//! ```
//! use cairn_store::keyspace::{Subspace, unpack};
//! let runs = Subspace::all().subspace(&("run",));
//! let key = runs.pack(&("r-1", "hist", 7_i64));
//! let (run, kind, event): (String, String, i64) = runs.unpack(&key).unwrap();
//! assert_eq!((run.as_str(), kind.as_str(), event), ("r-1", "hist", 7));
//! // Event 8 sorts after event 7 and both sit inside the run's range.
//! let (begin, end) = runs.subspace(&("r-1",)).range();
//! let next = runs.pack(&("r-1", "hist", 8_i64));
//! assert!(begin < key && key < next && next < end);
//! # let _ = unpack::<(String,)>;
//! ```

pub use foundationdb_tuple::{
    Element, PackError, PackResult, Subspace, TuplePack, TupleUnpack,
    Versionstamp as TupleVersionstamp, pack, pack_with_versionstamp, unpack,
};

/// The smallest key greater than every key starting with `prefix` (FoundationDB's `strinc`):
/// drop trailing 0xFF bytes, then increment the last byte. A prefix of only 0xFF bytes (or
/// empty) has no such key; the end of the legal keyspace, `[0xFF]`, is returned instead.
pub fn strinc(prefix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    while let Some(&last) = out.last() {
        if last == 0xff {
            out.pop();
        } else {
            *out.last_mut().expect("non-empty") += 1;
            return out;
        }
    }
    vec![0xff]
}

/// `[prefix, strinc(prefix))`: every key that starts with `prefix`.
pub fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (prefix.to_vec(), strinc(prefix))
}

/// The key immediately after `key` in byte order (`key` + 0x00): `[key, key_after(key))` holds
/// exactly `key`.
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.extend_from_slice(key);
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves strinc gives the tight upper bound of a prefix, including 0xFF carries.
    #[test]
    fn strinc_bounds_prefixes() {
        assert_eq!(strinc(b"ab"), b"ac".to_vec());
        assert_eq!(strinc(&[1, 0xff, 0xff]), vec![2]);
        assert_eq!(strinc(&[0xff]), vec![0xff]);
        assert_eq!(strinc(&[]), vec![0xff]);
        assert_eq!(key_after(b"a"), b"a\0".to_vec());
    }
}
