//! One snapshot sees a commit whole or not at all, while memtables flush and compact beneath
//! it. fjall publishes a write batch only once all of it is in the memtable, but a flush or
//! compaction finishing meanwhile raised the visible sequence number past the batch being
//! applied: a snapshot opened then saw part of it. In the engine that was a deferred marker
//! without its task, cleared as stale, and the activity never ran (a W2 stall, one run in ten).

use cairn_store::{RangeRequest, Store, Transaction};
use cairn_store_embedded::{Durability, EmbeddedConfig, EmbeddedStore};

/// Commits that each write a pair of keys (and clear an old pair), against a reader that
/// lists one half of the pairs and reads the other half of each in the same snapshot. A small
/// memtable makes flushes and compactions run all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_never_sees_part_of_a_commit() {
    const COMMITS: u32 = 60_000;
    const LIVE_PAIRS: u32 = 64;
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path()).durability(Durability::OsBuffered);
    config.memtable_bytes = 16 * 1024;
    let store = EmbeddedStore::open(config).unwrap();
    let key = |half: &[u8], i: u32| [half, &i.to_be_bytes()].concat();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..COMMITS {
                let mut tx = store.begin().unwrap();
                tx.set(&key(b"b/", i), &[7u8; 200]).unwrap();
                tx.set(&key(b"a/", i), b"").unwrap();
                if let Some(old) = i.checked_sub(LIVE_PAIRS) {
                    tx.clear(&key(b"a/", old)).unwrap();
                    tx.clear(&key(b"b/", old)).unwrap();
                }
                tx.commit().await.unwrap();
            }
        })
    };
    let (mut torn, mut reads) = (0u64, 0u64);
    while !writer.is_finished() {
        let mut tx = store.begin().unwrap();
        let listed = tx
            .get_range(&RangeRequest::new(b"a/".to_vec(), b"a0".to_vec()).snapshot())
            .await
            .unwrap();
        for row in listed {
            reads += 1;
            let other = [b"b/".as_slice(), &row.key[2..]].concat();
            if tx.get_snapshot(&other).await.unwrap().is_none() {
                torn += 1;
            }
        }
    }
    writer.await.unwrap();
    assert!(reads > 0, "the reader ran alongside the writer");
    assert_eq!(torn, 0, "{torn} of {reads} reads saw half a commit");
}
