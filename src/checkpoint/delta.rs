//! [`DeltaBuilder`]: the last write of every key changed in a range of
//! epochs, collected from the WAL, then handed out in key order.
//!
//! Keys and values are copied into one growing byte buffer and indexed by a
//! hash table, so collecting allocates only when the buffer or the table
//! grows. A key rewritten with a value of the same length is updated in
//! place (the common case for fixed-size state); otherwise the new value is
//! appended and the old bytes stay until the builder is dropped. Memory is
//! therefore bounded by the bytes the range of epochs wrote, which the
//! checkpoint policy bounds in turn (interval and WAL-size thresholds).

use std::hash::BuildHasher;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as TableEntry;

use super::data_file::Entry;

const TOMBSTONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    key_at: usize,
    key_len: u32,
    value_len: u32,
    value_at: usize,
}

/// Last write per key over a range of epochs.
#[derive(Debug, Default)]
pub(crate) struct DeltaBuilder {
    table: HashTable<Slot>,
    bytes: Vec<u8>,
    hasher: foldhash::fast::RandomState,
}

impl DeltaBuilder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Distinct keys changed.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Bytes of keys and values held.
    pub(crate) fn held_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Records a put.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) {
        self.set(key, Some(value));
    }

    /// Records a delete.
    pub(crate) fn delete(&mut self, key: &[u8]) {
        self.set(key, None);
    }

    fn set(&mut self, key: &[u8], value: Option<&[u8]>) {
        let hash = self.hasher.hash_one(key);
        let value_len = value.map_or(TOMBSTONE, |v| v.len() as u32);
        let bytes = &mut self.bytes;
        // One probe finds the key or where it goes; growing rehashes from
        // the slots' own hashes, without reading the keys scattered over
        // the buffer.
        let entry = self.table.entry(
            hash,
            |s| s.hash == hash && &bytes[s.key_at..s.key_at + s.key_len as usize] == key,
            |s| s.hash,
        );
        match entry {
            TableEntry::Occupied(mut found) => {
                let slot = found.get_mut();
                if let Some(v) = value {
                    if slot.value_len == value_len {
                        bytes[slot.value_at..slot.value_at + v.len()].copy_from_slice(v);
                    } else {
                        slot.value_at = bytes.len();
                        bytes.extend_from_slice(v);
                    }
                }
                slot.value_len = value_len;
            }
            TableEntry::Vacant(vacant) => {
                let key_at = bytes.len();
                bytes.extend_from_slice(key);
                let value_at = bytes.len();
                if let Some(v) = value {
                    bytes.extend_from_slice(v);
                }
                vacant.insert(Slot {
                    hash,
                    key_at,
                    key_len: key.len() as u32,
                    value_len,
                    value_at,
                });
            }
        }
    }

    /// The entries in key order (tombstones as `None`).
    ///
    /// Sorts on each key's first 8 bytes, held in the sort entries as a
    /// big-endian number (zero-padded), and compares the keys themselves
    /// only where those are equal: most comparisons then touch no key
    /// bytes, which are scattered over the buffer.
    pub(crate) fn sorted(&self) -> SortedDelta<'_> {
        let bytes = &self.bytes;
        let key = |s: &Slot| &bytes[s.key_at..s.key_at + s.key_len as usize];
        let mut slots: Vec<(u64, Slot)> = self.table.iter().map(|s| (key_prefix(key(s)), *s)).collect();
        let cmp = |(pa, a): &(u64, Slot), (pb, b): &(u64, Slot)| pa.cmp(pb).then_with(|| key(a).cmp(key(b)));
        let slots = if slots.len() >= PARALLEL_SORT_MIN
            && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
        {
            // A base's worth of changes: sort the halves on two cores,
            // then merge them.
            let mid = slots.len() / 2;
            let (lo, hi) = slots.split_at_mut(mid);
            std::thread::scope(|s| {
                s.spawn(|| lo.sort_unstable_by(cmp));
                hi.sort_unstable_by(cmp);
            });
            merge_sorted(lo, hi, cmp)
        } else {
            slots.sort_unstable_by(cmp);
            slots
        };
        SortedDelta {
            bytes,
            slots: slots.into_iter(),
        }
    }
}

/// Changes from which [`DeltaBuilder::sorted`] sorts on two threads.
const PARALLEL_SORT_MIN: usize = 1 << 16;

/// The sorted runs `a` and `b` merged into one.
fn merge_sorted<T: Copy>(a: &[T], b: &[T], cmp: impl Fn(&T, &T) -> std::cmp::Ordering) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if cmp(&b[j], &a[i]).is_lt() {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The first 8 bytes of `key` as a big-endian number, zero-padded: if two
/// keys' prefixes differ, they order the keys as the keys' bytes do (a
/// padding zero sorts like the end of the shorter key, which comes first,
/// or like a zero byte, in which case the prefixes tie).
fn key_prefix(key: &[u8]) -> u64 {
    let mut p = [0u8; 8];
    let n = key.len().min(8);
    p[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(p)
}

/// [`DeltaBuilder::sorted`].
#[derive(Debug)]
pub(crate) struct SortedDelta<'a> {
    bytes: &'a [u8],
    slots: std::vec::IntoIter<(u64, Slot)>,
}

impl<'a> Iterator for SortedDelta<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let (_, s) = self.slots.next()?;
        let key = &self.bytes[s.key_at..s.key_at + s.key_len as usize];
        let value =
            (s.value_len != TOMBSTONE).then(|| &self.bytes[s.value_at..s.value_at + s.value_len as usize]);
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.slots.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Keys of any length, with zero bytes where the sort's padding
        /// puts them, sort as their bytes do.
        #[test]
        fn sorts_as_bytes_do(keys in proptest::collection::btree_set(
            proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..12), 0..200)) {
            let mut b = DeltaBuilder::new();
            for k in keys.iter().rev() {
                b.put(k, k);
            }
            let got: Vec<Vec<u8>> = b.sorted().map(|(k, _)| k.to_vec()).collect();
            prop_assert_eq!(got, keys.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn last_write_wins_in_key_order(ops in proptest::collection::vec(
            (0u8..30, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6))), 0..300)) {
            let mut b = DeltaBuilder::new();
            let mut model = BTreeMap::new();
            for (k, v) in &ops {
                let key = [b'k', *k];
                match v {
                    Some(v) => b.put(&key, v),
                    None => b.delete(&key),
                }
                model.insert(key.to_vec(), v.clone());
            }
            prop_assert_eq!(b.len(), model.len());
            let got: Vec<_> = b.sorted().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
            prop_assert_eq!(got, model.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn large_deltas_sort_on_two_threads_like_small_ones() {
        let mut b = DeltaBuilder::new();
        let mut model = BTreeMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..PARALLEL_SORT_MIN as u64 + 999 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Shared 8-byte prefixes for some, so full keys are compared too.
            let key = [
                &(x % 1000).to_be_bytes()[..],
                &x.to_le_bytes()[..(i % 9) as usize],
            ]
            .concat();
            if i % 5 == 0 {
                b.delete(&key);
                model.insert(key, None);
            } else {
                b.put(&key, &i.to_le_bytes());
                model.insert(key, Some(i.to_le_bytes().to_vec()));
            }
        }
        let got: Vec<_> = b
            .sorted()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(got, model.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn same_length_rewrites_do_not_grow() {
        let mut b = DeltaBuilder::new();
        for round in 0..100u8 {
            for k in 0..50u8 {
                b.put(&[k], &[round; 16]);
            }
        }
        assert_eq!(b.held_bytes(), 50 * 17);
    }
}
