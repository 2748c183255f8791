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
        let found = self.table.find_mut(hash, |s| {
            s.hash == hash && &bytes[s.key_at..s.key_at + s.key_len as usize] == key
        });
        match found {
            Some(slot) => {
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
            None => {
                let key_at = bytes.len();
                bytes.extend_from_slice(key);
                let value_at = bytes.len();
                if let Some(v) = value {
                    bytes.extend_from_slice(v);
                }
                let slot = Slot {
                    hash,
                    key_at,
                    key_len: key.len() as u32,
                    value_len,
                    value_at,
                };
                let hasher = &self.hasher;
                self.table.insert_unique(hash, slot, |s| {
                    hasher.hash_one(&bytes[s.key_at..s.key_at + s.key_len as usize])
                });
            }
        }
    }

    /// The entries in key order (tombstones as `None`).
    pub(crate) fn sorted(&self) -> SortedDelta<'_> {
        let bytes = &self.bytes;
        let key = |s: &Slot| &bytes[s.key_at..s.key_at + s.key_len as usize];
        let mut slots: Vec<Slot> = self.table.iter().copied().collect();
        slots.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        SortedDelta {
            bytes,
            slots: slots.into_iter(),
        }
    }
}

/// [`DeltaBuilder::sorted`].
#[derive(Debug)]
pub(crate) struct SortedDelta<'a> {
    bytes: &'a [u8],
    slots: std::vec::IntoIter<Slot>,
}

impl<'a> Iterator for SortedDelta<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let s = self.slots.next()?;
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
