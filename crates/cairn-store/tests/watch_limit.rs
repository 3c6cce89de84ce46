//! The watch limit of local backends (FoundationDB enforces its own per client).

use cairn_store::{Limits, MemStore, Store, StoreError, Transaction};

/// Proves watches beyond `watches_max` are refused with an error naming the limit, and that a
/// fired watch frees its slot.
#[tokio::test]
async fn watches_beyond_the_limit_are_refused() {
    let limits = Limits {
        watches_max: 2,
        ..Limits::default()
    };
    let store = MemStore::with_limits(limits);
    let mut tx = store.begin().unwrap();
    let first = tx.watch(b"a").unwrap();
    let _second = tx.watch(b"b").unwrap();
    let err = tx.watch(b"c").unwrap_err();
    assert_eq!(err, StoreError::TooManyWatches { count: 2, limit: 2 });
    assert!(err.to_string().contains("watches_max"));
    tx.commit().await.unwrap();

    let mut tx = store.begin().unwrap();
    assert!(matches!(
        tx.watch(b"c"),
        Err(StoreError::TooManyWatches { .. })
    ));
    tx.set(b"a", b"changed").unwrap();
    tx.commit().await.unwrap();
    first.await.unwrap();

    let mut tx = store.begin().unwrap();
    assert!(
        tx.watch(b"c").is_ok(),
        "the fired watch's slot is free again"
    );
}
