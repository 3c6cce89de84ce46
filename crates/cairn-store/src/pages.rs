//! A range read a page per transaction.

use crate::{KeyValue, RangeRequest, Store, StoreResult, Transaction};

/// Reads `[begin, end)` in key order, at most `limit` rows per transaction (snapshot reads, no
/// conflicts): a scan of any length keeps every transaction within FoundationDB's 5 s and
/// 10 MB. Each page is one consistent snapshot; successive pages are not one snapshot, so a
/// row written during the scan is seen if it sorts after the position reached.
#[derive(Debug, Clone)]
pub struct Pages {
    next: Vec<u8>,
    end: Vec<u8>,
    limit: usize,
    done: bool,
}

impl Pages {
    /// `limit` rows per page (at least 1).
    pub fn new(begin: Vec<u8>, end: Vec<u8>, limit: usize) -> Self {
        assert!(limit > 0, "a page holds at least one row");
        Self {
            next: begin,
            end,
            limit,
            done: false,
        }
    }

    /// The next page, or `None` once the range is read to its end.
    pub async fn next<S: Store>(&mut self, store: &S) -> StoreResult<Option<Vec<KeyValue>>> {
        if self.done {
            return Ok(None);
        }
        let mut tx = store.begin()?;
        let rows = tx
            .get_range(
                &RangeRequest::new(self.next.clone(), self.end.clone())
                    .limit(self.limit)
                    .snapshot(),
            )
            .await?;
        drop(tx);
        if let Some(last) = rows.last() {
            self.next = crate::keyspace::key_after(&last.key);
        }
        self.done = rows.len() < self.limit;
        Ok((!rows.is_empty()).then_some(rows))
    }

    /// Where the next page starts: every row before it has been returned.
    pub fn position(&self) -> &[u8] {
        &self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStore;

    /// 10 rows in pages of 3: four pages (3, 3, 3, 1), every row once, in order; a row
    /// written behind the position is not seen, one ahead of it is.
    #[tokio::test]
    async fn pages_cover_the_range_once_in_order() {
        let store = MemStore::new();
        let mut tx = store.begin().unwrap();
        for i in 0..10u8 {
            tx.set(&[b'k', i * 2], &[i]).unwrap();
        }
        tx.commit().await.unwrap();
        let mut pages = Pages::new(vec![b'k'], vec![b'l'], 3);
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        while let Some(page) = pages.next(&store).await.unwrap() {
            sizes.push(page.len());
            seen.extend(page.into_iter().map(|kv| kv.value[0]));
            if sizes.len() == 1 {
                let mut tx = store.begin().unwrap();
                tx.set(&[b'k', 1], &[100]).unwrap(); // behind the position
                tx.set(&[b'k', 19], &[101]).unwrap(); // ahead of it
                tx.commit().await.unwrap();
            }
        }
        assert_eq!(sizes, vec![3, 3, 3, 2]);
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 101]);
        assert!(pages.next(&store).await.unwrap().is_none());
    }
}
