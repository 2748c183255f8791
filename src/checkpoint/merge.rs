//! Streaming k-way merge of sorted entry sources, newest wins.
//!
//! Used to load a chain (base, then deltas) into Ring 0, to fold a chain
//! and a new delta into a new base, and to fold spilled runs into a delta.
//! Memory is one head entry per source, whatever the sizes of the sources.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::data_file::Entry;

/// A source of entries in strictly increasing key order.
pub(crate) type Source<'a, E> = Box<dyn Iterator<Item = Result<Entry<'a>, E>> + 'a>;

/// A pending head: its key, and the source it came from (higher = newer).
#[derive(Debug, PartialEq, Eq)]
struct Head<'a> {
    key: &'a [u8],
    source: usize,
}

impl Ord for Head<'_> {
    /// Smallest key first; for equal keys, the newest source first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .cmp(other.key)
            .then_with(|| other.source.cmp(&self.source))
    }
}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The merged entries: each key once, with the value of the newest source
/// that has it.
pub(crate) struct Merge<'a, E> {
    sources: Vec<Source<'a, E>>,
    values: Vec<Option<&'a [u8]>>,
    heap: BinaryHeap<Reverse<Head<'a>>>,
    drop_tombstones: bool,
    started: bool,
    failed: bool,
}

impl<E> std::fmt::Debug for Merge<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merge")
            .field("sources", &self.sources.len())
            .field("drop_tombstones", &self.drop_tombstones)
            .finish()
    }
}

impl<'a, E> Merge<'a, E> {
    /// Merges `sources`, given oldest first. With `drop_tombstones` (when
    /// the result is a base), deleted keys are left out.
    pub(crate) fn new(sources: Vec<Source<'a, E>>, drop_tombstones: bool) -> Self {
        let n = sources.len();
        Self {
            sources,
            values: vec![None; n],
            heap: BinaryHeap::with_capacity(n),
            drop_tombstones,
            started: false,
            failed: false,
        }
    }

    /// Pulls the next entry of `source` into the heap.
    fn advance(&mut self, source: usize) -> Result<(), E> {
        if let Some(next) = self.sources[source].next() {
            let (key, value) = next?;
            self.values[source] = value;
            self.heap.push(Reverse(Head { key, source }));
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Entry<'a>>, E> {
        if !self.started {
            self.started = true;
            for s in 0..self.sources.len() {
                self.advance(s)?;
            }
        }
        while let Some(Reverse(Head { key, source })) = self.heap.pop() {
            let value = self.values[source];
            self.advance(source)?;
            // Older sources' entries for the same key are superseded.
            while let Some(Reverse(older)) = self.heap.peek() {
                if older.key != key {
                    break;
                }
                let s = older.source;
                self.heap.pop();
                self.advance(s)?;
            }
            if value.is_some() || !self.drop_tombstones {
                return Ok(Some((key, value)));
            }
        }
        Ok(None)
    }
}

impl<'a, E> Iterator for Merge<'a, E> {
    type Item = Result<Entry<'a>, E>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = self.step().transpose();
        if matches!(r, Some(Err(_))) {
            self.failed = true;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    type Owned = Vec<(Vec<u8>, Option<Vec<u8>>)>;

    fn source(entries: &Owned) -> Source<'_, ()> {
        Box::new(entries.iter().map(|(k, v)| Ok((k.as_slice(), v.as_deref()))))
    }

    proptest! {
        /// The merge equals applying the sources oldest to newest to a map.
        #[test]
        fn equals_applying_in_order(
            runs in proptest::collection::vec(
                proptest::collection::btree_map(0u8..40, proptest::option::of(any::<u8>()), 0..30), 0..6),
            drop in any::<bool>(),
        ) {
            let owned: Vec<Owned> = runs.iter().map(|r| {
                r.iter().map(|(k, v)| (vec![*k], v.map(|v| vec![v]))).collect()
            }).collect();
            let mut model: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            for r in &owned {
                for (k, v) in r {
                    model.insert(k.clone(), v.clone());
                }
            }
            if drop {
                model.retain(|_, v| v.is_some());
            }
            let merged: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                Merge::new(owned.iter().map(source).collect(), drop)
                    .map(|e| e.map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).unwrap())
                    .collect();
            prop_assert_eq!(merged, model.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn an_error_ends_the_merge() {
        let good: Owned = vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"c".to_vec(), None)];
        let bad: Source<'_, &str> = Box::new(vec![Ok((&b"b"[..], Some(&b"2"[..]))), Err("boom")].into_iter());
        let first: Source<'_, &str> = Box::new(good.iter().map(|(k, v)| Ok((k.as_slice(), v.as_deref()))));
        let mut m = Merge::new(vec![first, bad], false);
        assert_eq!(m.next(), Some(Ok((&b"a"[..], Some(&b"1"[..])))));
        assert_eq!(m.next(), Some(Err("boom")));
        assert_eq!(m.next(), None);
    }
}
