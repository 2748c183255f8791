//! Batches: [`BatchOp`], one update of a batch;
//! [`StateWriter::put_batch`] and [`StateWriter::apply_batch`], which
//! apply a batch all or nothing with the cache misses of its updates
//! overlapped; and the slot-prefetching stage of that pipeline, which
//! recovery's bulk load shares.

use std::hash::BuildHasher;

use super::arena::record_size;
use super::probe::Probe;
use super::store::StateStore;
use super::writer::{StateWriter, apply_update};
use crate::error::{IncrementalCheckpointError, Result};

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

impl StateWriter {
    /// Sets each key to its value, in order, as one batch: the same result
    /// and the same changelog entries as calling [`put`](Self::put) on each
    /// pair in turn, but several times faster when the state is larger than
    /// the CPU caches, because the batch loads the index slots of the next
    /// few keys while it updates the current one, instead of waiting for
    /// each cache miss in turn.
    ///
    /// The batch is all or nothing: it is checked first (every record fits,
    /// the changelog has room for the whole batch, the arena has room for
    /// every record as if none could be overwritten in place), and only then
    /// applied, so an error means nothing was applied. All of it goes into
    /// the open epoch. A key that appears twice ends with its later value;
    /// Ring 1 sees every put, in order.
    ///
    /// Batches of 16 to a few hundred updates pay best; a batch may not be
    /// longer than the changelog ring ([`max_batch_len`](Self::max_batch_len)).
    /// Allocation-free, like `put`.
    ///
    /// ```
    /// use laminar_storage::incremental::{StateConfig, StateWriter};
    ///
    /// let (mut writer, _drain) = StateWriter::standalone(StateConfig::new())?;
    /// let events: Vec<([u8; 8], [u8; 4])> = (0..100u64)
    ///     .map(|i| ((i % 10).to_be_bytes(), (i as u32).to_le_bytes()))
    ///     .collect();
    /// for batch in events.chunks(32) {
    ///     writer.put_batch(batch)?;
    /// }
    /// // Ten keys, each holding the last value put.
    /// assert_eq!(writer.len(), 10);
    /// assert_eq!(writer.get(&3u64.to_be_bytes()), Some(&93u32.to_le_bytes()[..]));
    /// # Ok::<(), laminar_storage::incremental::IncrementalCheckpointError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Nothing is applied on error.
    /// [`BufferOverflow`](IncrementalCheckpointError::BufferOverflow) when
    /// the changelog has no room for the whole batch (backpressure: retry
    /// the same batch once Ring 1 has caught up; every update of it is
    /// counted in [`StateWriterStats::changelog_overflows`](super::StateWriterStats::changelog_overflows));
    /// [`BatchTooLarge`](IncrementalCheckpointError::BatchTooLarge) when it
    /// is longer than the changelog ring, so no wait could help;
    /// [`ArenaFull`](IncrementalCheckpointError::ArenaFull) when the arena
    /// cannot take every record of the batch as a new one (near the limit,
    /// smaller batches or single puts may still fit);
    /// [`RecordTooLarge`](IncrementalCheckpointError::RecordTooLarge) for
    /// the first pair that does not fit in one arena segment;
    /// [`Io`](IncrementalCheckpointError::Io) when a new arena segment,
    /// or the larger index a new key needs, cannot be mapped.
    #[inline]
    pub fn put_batch<K, V>(&mut self, items: &[(K, V)]) -> Result<()>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        self.apply_each(items, |(key, value)| (key.as_ref(), Some(value.as_ref())))
            .map(drop)
    }

    /// Applies puts and deletes, in order, as one batch: the same result
    /// and changelog entries as calling [`put`](Self::put) and
    /// [`delete`](Self::delete) on each in turn, pipelined as
    /// [`put_batch`](Self::put_batch) explains, all or nothing, in the open
    /// epoch. Returns how many updates changed the state: every put, and
    /// every delete of a key present at its turn (an absent key's delete
    /// changes and logs nothing). That is also the number of changelog
    /// entries pushed.
    ///
    /// ```
    /// use laminar_storage::incremental::{BatchOp, StateConfig, StateWriter};
    ///
    /// let (mut writer, _drain) = StateWriter::standalone(StateConfig::new())?;
    /// let applied = writer.apply_batch(&[
    ///     BatchOp::Put(&b"a"[..], &b"1"[..]),
    ///     BatchOp::Put(b"b", b"2"),
    ///     BatchOp::Delete(b"a"),
    ///     BatchOp::Delete(b"never-stored"),
    ///     BatchOp::Put(b"a", b"3"),
    /// ])?;
    /// assert_eq!(applied, 4);
    /// assert_eq!(writer.get(b"a"), Some(&b"3"[..]));
    /// assert_eq!(writer.get(b"b"), Some(&b"2"[..]));
    /// # Ok::<(), laminar_storage::incremental::IncrementalCheckpointError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`put_batch`](Self::put_batch): nothing is applied on error.
    /// The changelog and the arena must have room for every update, deletes
    /// of absent keys included.
    #[inline]
    pub fn apply_batch<K, V>(&mut self, updates: &[BatchOp<K, V>]) -> Result<usize>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        self.apply_each(updates, |op| (op.key(), op.value()))
    }

    /// The most updates one [`put_batch`](Self::put_batch) or
    /// [`apply_batch`](Self::apply_batch) may hold: the changelog's
    /// capacity ([`StateConfig::with_changelog_capacity`](super::StateConfig::with_changelog_capacity), rounded up to a
    /// power of two).
    pub fn max_batch_len(&self) -> usize {
        self.log.capacity()
    }

    /// The batch engine behind [`put_batch`](Self::put_batch) and
    /// [`apply_batch`](Self::apply_batch): `view` gives an item's key and,
    /// for a put, its value (`None`: a delete).
    #[inline]
    fn apply_each<T>(&mut self, items: &[T], view: impl Fn(&T) -> (&[u8], Option<&[u8]>)) -> Result<usize> {
        if self.log.is_closed() {
            return Err(self.log.stopped());
        }
        // The batch goes behind every single update made before it.
        self.flush();
        if items.is_empty() {
            return Ok(0);
        }
        let max = self.log.capacity();
        if items.len() > max {
            return Err(IncrementalCheckpointError::BatchTooLarge {
                len: items.len(),
                max,
            });
        }
        // Check everything before changing anything.
        let size = |item: &T| {
            let (key, value) = view(item);
            (key.len(), value.map_or(0, <[u8]>::len))
        };
        let mut total = 0;
        for item in items {
            let (key_len, value_len) = size(item);
            total = usize::saturating_add(total, self.store.check_size(key_len, value_len)?);
        }
        if !self.log.has_room_for(items.len()) {
            return Err(self.log.refuse(self.epochs.open(), items.len() as u64));
        }
        let sizes = items.iter().map(|item| {
            let (key_len, value_len) = size(item);
            record_size(key_len, value_len)
        });
        self.store
            .reserve_updates(items.len(), total, sizes, &mut self.log)?;

        // Software pipeline, in three stages: item `i + 2 * LOOKAHEAD` is
        // hashed and its home index line prefetched; item `i + LOOKAHEAD`,
        // whose line has arrived by then, is looked for in it, which starts
        // loading its arena record and leaves its bucket as a hint; item
        // `i` is applied.
        let mut slots =
            SlotPrefetch::<{ 2 * LOOKAHEAD }>::start(&self.store, items.iter().map(|item| view(item).0));
        // Item `i`'s hint is at `i % LOOKAHEAD`. (Keeping its probe there
        // too, instead of building it again, runs more instructions: the
        // probes go through memory.)
        let mut hints = [None; LOOKAHEAD];
        let locate = |store: &StateStore, key, hash| store.locate(&Probe::new(key, hash), None).found();
        for (i, item) in items.iter().take(LOOKAHEAD).enumerate() {
            hints[i] = locate(&self.store, view(item).0, slots.peek(i));
        }
        let mut garbage = 0;
        let mut applied = 0;
        for (i, item) in items.iter().enumerate() {
            let ahead = items.get(i + 2 * LOOKAHEAD).map(|item| view(item).0);
            let key_hash = slots.next(&self.store, i, ahead);
            let hint = hints[i % LOOKAHEAD];
            if let Some(item) = items.get(i + LOOKAHEAD) {
                hints[i % LOOKAHEAD] = locate(&self.store, view(item).0, slots.peek(i + LOOKAHEAD));
            }
            // The checks above make these infallible: each record fits,
            // the arena holds segments for them all (and nothing else
            // allocates before `compact` below), and the ring has room.
            let (key, value) = view(item);
            let size = record_size(key.len(), value.map_or(0, <[u8]>::len));
            let (pushed, earned) = apply_update(
                &mut self.store,
                &mut self.log,
                self.epochs.open(),
                (&Probe::new(key, key_hash), value, size),
                hint,
            )?;
            garbage += earned;
            applied += usize::from(pushed);
        }
        // Ring 1 sees the whole batch at once, and is woken if it crossed a
        // doorbell mark.
        self.log.publish();
        // The reclamation work the updates earned, as single updates would
        // have done it one by one.
        self.store.compact(garbage, &mut self.log, &[]);
        Ok(applied)
    }
}
