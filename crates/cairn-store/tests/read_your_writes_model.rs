//! Property test: inside one transaction, every read (point and range, both directions, with
//! limits) agrees with a plain `BTreeMap` model of "committed state plus this transaction's
//! writes so far", and after commit the store equals the model. This exercises the
//! read-your-writes overlay that `MemStore` and the embedded store share.

use cairn_store::{KeyValue, MemStore, RangeRequest, Store, Transaction};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Op {
    Set(Vec<u8>, u8),
    Clear(Vec<u8>),
    ClearRange(Vec<u8>, Vec<u8>),
    Add(Vec<u8>, i8),
    Get(Vec<u8>),
    Range(Vec<u8>, Vec<u8>, Option<usize>, bool),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'c']), 1..3)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), any::<u8>()).prop_map(|(k, v)| Op::Set(k, v)),
        key().prop_map(Op::Clear),
        (key(), key()).prop_map(|(a, b)| Op::ClearRange(a.clone().min(b.clone()), a.max(b))),
        (key(), any::<i8>()).prop_map(|(k, d)| Op::Add(k, d)),
        key().prop_map(Op::Get),
        (key(), key(), prop::option::of(0usize..4), any::<bool>())
            .prop_map(|(a, b, l, r)| Op::Range(a.clone().min(b.clone()), a.max(b), l, r)),
    ]
}

fn add(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, key: &[u8], delta: i64) {
    let mut bytes = [0u8; 8];
    if let Some(v) = model.get(key) {
        let n = v.len().min(8);
        bytes[..n].copy_from_slice(&v[..n]);
    }
    let sum = i64::from_le_bytes(bytes).wrapping_add(delta);
    model.insert(key.to_vec(), sum.to_le_bytes().to_vec());
}

fn model_range(
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    begin: &[u8],
    end: &[u8],
    limit: Option<usize>,
    reverse: bool,
) -> Vec<KeyValue> {
    if begin >= end {
        return Vec::new();
    }
    let span = model.range(begin.to_vec()..end.to_vec());
    let pairs: Vec<KeyValue> = if reverse {
        span.rev()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect()
    } else {
        span.map(|(k, v)| KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
    };
    pairs
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Proves reads inside a transaction match the model after every operation.
    #[test]
    fn reads_match_model(base in prop::collection::btree_map(key(), any::<u8>(), 0..6),
                         ops in prop::collection::vec(op(), 1..30)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let store = MemStore::new();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut tx = store.begin().unwrap();
            for (k, v) in &base {
                tx.set(k, &[*v]).unwrap();
                model.insert(k.clone(), vec![*v]);
            }
            tx.commit().await.unwrap();

            let mut tx = store.begin().unwrap();
            for op in &ops {
                match op {
                    Op::Set(k, v) => {
                        tx.set(k, &[*v]).unwrap();
                        model.insert(k.clone(), vec![*v]);
                    }
                    Op::Clear(k) => {
                        tx.clear(k).unwrap();
                        model.remove(k);
                    }
                    Op::ClearRange(b, e) => {
                        tx.clear_range(b, e).unwrap();
                        model.retain(|k, _| !(b <= k && k < e));
                    }
                    Op::Add(k, d) => {
                        tx.atomic_add(k, i64::from(*d)).unwrap();
                        add(&mut model, k, i64::from(*d));
                    }
                    Op::Get(k) => {
                        prop_assert_eq!(tx.get(k).await.unwrap(), model.get(k).cloned());
                    }
                    Op::Range(b, e, limit, reverse) => {
                        let mut request = RangeRequest::new(b.clone(), e.clone());
                        request.limit = *limit;
                        request.reverse = *reverse;
                        let got = tx.get_range(&request).await.unwrap();
                        prop_assert_eq!(got, model_range(&model, b, e, *limit, *reverse));
                    }
                }
            }
            tx.commit().await.unwrap();
            let mut tx = store.begin().unwrap();
            let all = tx.get_range(&RangeRequest::new(b"".to_vec(), b"\xff".to_vec())).await.unwrap();
            prop_assert_eq!(all, model_range(&model, b"", b"\xff", None, false));
            Ok(())
        })?;
    }
}
