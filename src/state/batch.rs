//! [`BatchOp`]: one update of a batch, and how far ahead a batch looks.

/// How many updates ahead of the one it applies a batch hashes keys and
/// prefetches their index slots. The loads of that many updates are in
/// flight at once; measured on W1 (`benches/ring0.rs`), 8 to 16 hide a
/// DRAM miss per update and more gains nothing.
pub(crate) const LOOKAHEAD: usize = 8;

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
