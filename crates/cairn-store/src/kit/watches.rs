//! Armed watches of a local backend.

use crate::StoreResult;
use std::collections::BTreeMap;
use tokio::sync::oneshot;

/// Watches armed by committed transactions, keyed by the watched key.
#[derive(Debug, Default)]
pub struct WatchRegistry {
    by_key: BTreeMap<Vec<u8>, Vec<Armed>>,
}

#[derive(Debug)]
struct Armed {
    baseline: Option<Vec<u8>>,
    fire: oneshot::Sender<StoreResult<()>>,
}

impl WatchRegistry {
    /// Number of armed watches whose receiver is still alive.
    pub fn len(&mut self) -> usize {
        self.by_key.retain(|_, armed| {
            armed.retain(|a| !a.fire.is_closed());
            !armed.is_empty()
        });
        self.by_key.values().map(Vec::len).sum()
    }

    /// True when no watch is armed.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// Arms a watch on `key`. `baseline` is the value the arming transaction could read (its
    /// snapshot plus its own writes), `current` the latest committed value: as in
    /// FoundationDB, a change that landed between the transaction's read version and its commit
    /// fires the watch at once instead of being missed.
    pub fn arm(
        &mut self,
        key: Vec<u8>,
        baseline: Option<Vec<u8>>,
        current: Option<&[u8]>,
        fire: oneshot::Sender<StoreResult<()>>,
    ) {
        if baseline.as_deref() != current {
            // The receiver may be gone; nobody is waiting then.
            let _ = fire.send(Ok(()));
            return;
        }
        self.by_key
            .entry(key)
            .or_default()
            .push(Armed { baseline, fire });
    }

    /// Fires every watch whose key was written with a value different from its baseline.
    pub fn notify(&mut self, writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        if self.by_key.is_empty() {
            return;
        }
        // Usually a few watched keys and many written ones: look up from the smaller side.
        let hit: Vec<&Vec<u8>> = if self.by_key.len() < writes.len() {
            self.by_key
                .keys()
                .filter_map(|k| writes.get_key_value(k))
                .map(|(k, _)| k)
                .collect()
        } else {
            writes
                .keys()
                .filter(|k| self.by_key.contains_key(*k))
                .collect()
        };
        for key in hit {
            let value = &writes[key];
            let Some(armed) = self.by_key.get_mut(key) else {
                continue;
            };
            let mut kept = Vec::with_capacity(armed.len());
            for watch in armed.drain(..) {
                if watch.baseline == *value {
                    kept.push(watch);
                } else {
                    // The receiver may be gone; nobody is waiting then.
                    let _ = watch.fire.send(Ok(()));
                }
            }
            if kept.is_empty() {
                self.by_key.remove(key);
            } else {
                *armed = kept;
            }
        }
    }
}
