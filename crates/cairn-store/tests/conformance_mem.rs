//! The store conformance suite on `MemStore`, and again on `MemStore` behind a transparent
//! `FaultStore` (which must not change any behaviour when it injects nothing).

use cairn_store::{FaultConfig, FaultStore, Limits, MemStore};
use std::time::Duration;

fn limits() -> Limits {
    Limits::default().with_transaction_age_max(Duration::from_millis(300))
}

cairn_store::conformance_tests!(async { Some((MemStore::with_limits(limits()), ())) });

mod behind_transparent_fault_store {
    use super::*;
    cairn_store::conformance_tests!(async {
        Some((
            FaultStore::new(MemStore::with_limits(limits()), FaultConfig::none(3)),
            (),
        ))
    });
}
