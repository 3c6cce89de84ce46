//! Limit checks shared by local backends; each error names the limit.

use crate::{Limits, StoreError, StoreResult};

/// A key that may be read: within the key limit and outside the system keyspace.
pub fn check_read_key(limits: &Limits, key: &[u8]) -> StoreResult<()> {
    if key.len() > limits.key_bytes_max {
        return Err(StoreError::KeyTooLarge {
            size: key.len(),
            limit: limits.key_bytes_max,
        });
    }
    if key.first() == Some(&0xff) {
        return Err(StoreError::KeyOutsideLegalRange);
    }
    Ok(())
}

/// A key that may be written: same rules as reading.
pub fn check_write_key(limits: &Limits, key: &[u8]) -> StoreResult<()> {
    check_read_key(limits, key)
}

/// A value within the value limit.
pub fn check_value(limits: &Limits, value: &[u8]) -> StoreResult<()> {
    if value.len() > limits.value_bytes_max {
        return Err(StoreError::ValueTooLarge {
            size: value.len(),
            limit: limits.value_bytes_max,
        });
    }
    Ok(())
}

/// Splits a versionstamped key into the key without its 4-byte offset suffix and the offset of
/// the 10-byte placeholder, checking the placeholder lies inside the key.
pub fn versionstamp_offset(key: &[u8]) -> StoreResult<(&[u8], usize)> {
    let Some(split) = key.len().checked_sub(4) else {
        return Err(StoreError::InvalidVersionstampOffset);
    };
    let (body, suffix) = key.split_at(split);
    let offset = u32::from_le_bytes(suffix.try_into().expect("4 bytes")) as usize;
    if offset.checked_add(10).is_none_or(|end| end > body.len()) {
        return Err(StoreError::InvalidVersionstampOffset);
    }
    Ok((body, offset))
}

/// Range bounds: within the key limit (plus one byte, for `key_after`-style ends), starting
/// inside the legal keyspace and ending no later than `[0xFF]`.
pub fn check_range_bounds(limits: &Limits, begin: &[u8], end: &[u8]) -> StoreResult<()> {
    for key in [begin, end] {
        if key.len() > limits.key_bytes_max + 1 {
            return Err(StoreError::KeyTooLarge {
                size: key.len(),
                limit: limits.key_bytes_max,
            });
        }
    }
    // The legal keyspace ends at [0xFF]: a range may end there but not beyond it.
    if begin.first() == Some(&0xff) || end > [0xff].as_slice() {
        return Err(StoreError::KeyOutsideLegalRange);
    }
    Ok(())
}
