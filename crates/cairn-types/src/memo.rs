//! Memo: a workflow's unindexed notes (who asked, why, a summary for a UI), set at start and
//! changed by the workflow (`upsert_memo` in Temporal's SDKs). Shown by describe and list,
//! never queried.

use crate::Payload;
use crate::limits::{MEMO_BYTES_MAX, MEMO_FIELDS_MAX, MEMO_KEY_BYTES_MAX};
use std::collections::BTreeMap;

/// A workflow's memo, by key.
pub type Memo = BTreeMap<String, Payload>;

/// A change to a memo: each key set to its value, or removed (`None`).
pub type MemoUpdate = BTreeMap<String, Option<Payload>>;

/// Why a memo was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoError {
    #[error("memo key {key:?} must be 1 to {max} bytes with no control characters")]
    BadKey { key: String, max: usize },
    #[error("the memo has {count} fields; the limit is {max}")]
    TooMany { count: usize, max: usize },
    #[error("the memo holds {len} bytes in all; the limit is {max}")]
    TooLarge { len: usize, max: usize },
}

/// Bytes of a memo's keys and values, as [`MEMO_BYTES_MAX`] counts them.
pub fn memo_bytes(memo: &Memo) -> usize {
    memo.iter()
        .map(|(key, value)| key.len() + value.len())
        .sum()
}

/// Checks a whole memo (as it will be stored).
pub fn validate_memo(memo: &Memo) -> Result<(), MemoError> {
    if memo.len() > MEMO_FIELDS_MAX {
        return Err(MemoError::TooMany {
            count: memo.len(),
            max: MEMO_FIELDS_MAX,
        });
    }
    for key in memo.keys() {
        check_key(key)?;
    }
    let total = memo_bytes(memo);
    if total > MEMO_BYTES_MAX {
        return Err(MemoError::TooLarge {
            len: total,
            max: MEMO_BYTES_MAX,
        });
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), MemoError> {
    if key.is_empty() || key.len() > MEMO_KEY_BYTES_MAX || key.chars().any(char::is_control) {
        return Err(MemoError::BadKey {
            key: key.chars().take(80).collect(),
            max: MEMO_KEY_BYTES_MAX,
        });
    }
    Ok(())
}

/// `memo` after `update`, checked.
pub fn updated(memo: &Memo, update: &MemoUpdate) -> Result<Memo, MemoError> {
    let mut out = memo.clone();
    apply(&mut out, update);
    for key in update.keys() {
        check_key(key)?;
    }
    validate_memo(&out)?;
    Ok(out)
}

/// Applies `update` to `memo` in place (unchecked: for updates already validated).
pub fn apply(memo: &mut Memo, update: &MemoUpdate) {
    for (key, value) in update {
        match value {
            Some(value) => {
                memo.insert(key.clone(), value.clone());
            }
            None => {
                memo.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bytes: usize) -> Payload {
        Payload::encode(&"x".repeat(bytes)).unwrap()
    }

    /// Proves a memo at each bound passes and one past it is refused with its own error; bad
    /// keys are refused; an update removes and sets keys and is checked as a whole.
    #[test]
    fn memos_are_bounded() {
        let full: Memo = (0..MEMO_FIELDS_MAX)
            .map(|i| (format!("k{i}"), value(1)))
            .collect();
        assert_eq!(validate_memo(&full), Ok(()));
        let mut over = full.clone();
        over.insert("one-more".into(), value(1));
        assert!(matches!(
            validate_memo(&over),
            Err(MemoError::TooMany { count, .. }) if count == MEMO_FIELDS_MAX + 1
        ));
        let big: Memo = [("a".to_string(), value(MEMO_BYTES_MAX))].into();
        assert!(matches!(
            validate_memo(&big),
            Err(MemoError::TooLarge { .. })
        ));
        for key in ["", "line\nbreak", &"k".repeat(MEMO_KEY_BYTES_MAX + 1)] {
            let memo: Memo = [(key.to_string(), value(1))].into();
            assert!(matches!(
                validate_memo(&memo),
                Err(MemoError::BadKey { .. })
            ));
        }
        let update: MemoUpdate = [
            ("k0".to_string(), None),
            ("fresh".to_string(), Some(value(3))),
        ]
        .into();
        let after = updated(&full, &update).unwrap();
        assert!(!after.contains_key("k0") && after.contains_key("fresh"));
        assert_eq!(after.len(), full.len());
        let removing_bad: MemoUpdate = [("\u{7}".to_string(), None)].into();
        assert!(matches!(
            updated(&full, &removing_bad),
            Err(MemoError::BadKey { .. })
        ));
    }
}
