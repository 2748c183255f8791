//! [`BatchOp`]: one update of a batch, how far ahead a batch looks, and
//! the slot-prefetching stage of its pipeline.

use std::hash::BuildHasher;

use super::store::StateStore;

/// How many updates ahead of the one it applies a batch hashes keys and
/// prefetches their index slots. The loads of that many updates are in
/// flight at once; measured on W1 (`benches/ring0.rs`), 8 to 16 hide a
/// DRAM miss per update and more gains nothing.
pub(crate) const LOOKAHEAD: usize = 8;

/// The first stage of a batch's software pipeline: the hashes of the next
/// `N` keys, whose index slots are already on their way into the cache.
/// Key `i` is taken with [`next`](Self::next) `N` keys after its slot was
/// asked for, by which time a DRAM miss has had time to complete.
pub(crate) struct SlotPrefetch<const N: usize> {
    /// Key `i`'s hash is at `i % N`.
    hashes: [u64; N],
}

impl<const N: usize> SlotPrefetch<N> {
    /// Hashes the first `N` of `keys` and starts fetching their slots.
    #[inline]
    pub(crate) fn start<'k, S: BuildHasher>(
        store: &StateStore<S>,
        keys: impl Iterator<Item = &'k [u8]>,
    ) -> Self {
        let mut hashes = [0u64; N];
        for (hash, key) in hashes.iter_mut().zip(keys) {
            *hash = store.hash(key);
            store.prefetch(*hash);
        }
        Self { hashes }
    }

    /// The hash of key `i`; hashes key `i + N` (`ahead`, if there is one)
    /// in its place and starts fetching its slot.
    #[inline]
    pub(crate) fn next<S: BuildHasher>(
        &mut self,
        store: &StateStore<S>,
        i: usize,
        ahead: Option<&[u8]>,
    ) -> u64 {
        let hash = self.hashes[i % N];
        if let Some(key) = ahead {
            self.hashes[i % N] = store.hash(key);
            store.prefetch(self.hashes[i % N]);
        }
        hash
    }

    /// The hash of key `i`, one of the `N` not yet taken by `next`.
    #[inline]
    pub(crate) fn peek(&self, i: usize) -> u64 {
        self.hashes[i % N]
    }
}

/// One update of a batch for
/// [`StateWriter::apply_batch`](super::StateWriter::apply_batch).
///
/// Generic over the key and value types, so a batch can hold arrays,
/// `Vec`s or slices borrowed from the events: anything `AsRef<[u8]>`.
///
/// ```
/// use laminar_storage::incremental::BatchOp;
///
/// let ops: [BatchOp<&[u8], &[u8]>; 2] = [
///     BatchOp::Put(b"user:1", b"alice"),
///     BatchOp::Delete(b"user:2"),
/// ];
/// assert_eq!(ops[1].key(), b"user:2");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchOp<K, V> {
    /// Set the key to the value, as [`StateWriter::put`](super::StateWriter::put) does.
    Put(K, V),
    /// Remove the key, as [`StateWriter::delete`](super::StateWriter::delete) does.
    Delete(K),
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> BatchOp<K, V> {
    /// The key the update is about.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Put(key, _) | Self::Delete(key) => key.as_ref(),
        }
    }

    /// The value a put sets; `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Self::Put(_, value) => Some(value.as_ref()),
            Self::Delete(_) => None,
        }
    }
}
