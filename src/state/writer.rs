//! [`StateWriter`]: Ring 0, the single producer of state updates.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use super::arena::record_size;
use super::batch::{BatchOp, LOOKAHEAD, SlotPrefetch};
use super::config::StateConfig;
use super::drain::StateDrain;
use super::pending::{DEPTH, LOCATE_STAGE, Pending, RETRY_STAGE, Update, fits};
use super::store::{Probe, Progress, StateStore, Written};
use crate::changelog::commit::{CommitEncodeError, commit_payload_len, encode_commit_payload};
use crate::changelog::{ChangelogProducer, StateChangelogBuffer, StateChangelogEntry, StateOp};
use crate::error::{IncrementalCheckpointError, RecoveryFailure, Result};
use crate::status::Ring1Watch;

/// The Ring 0 handle: synchronous, allocation-free updates of the keyed
/// state, each recorded in the changelog for Ring 1.
///
/// There is exactly one writer per state (it is `Send`, not `Clone`); keep it
/// on the thread or task that processes events. Reads ([`get`](Self::get))
/// see every update made through it, immediately.
///
/// Updates between two [`commit_epoch`](Self::commit_epoch) calls form one
/// epoch: recovery returns all of an epoch or none of it.
///
/// # Backpressure
///
/// Updates never block. When Ring 1 has fallen behind by a whole changelog
/// ring, an update returns
/// [`BufferOverflow`](IncrementalCheckpointError::BufferOverflow) and changes
/// nothing; retry it once Ring 1 has caught up (the error
/// [`is_transient`](IncrementalCheckpointError::is_transient)).
///
/// # Cache misses, write-behind and batches
///
/// Once the state outgrows the CPU caches (at about 100,000 keys of W1's
/// shape), an update applied at once waits for its index slot and arena
/// record to come from memory, which costs more than the rest of the
/// update. So a [`put`](Self::put) or [`delete`](Self::delete) whose key
/// and value fit in 240 bytes (a key shorter than 16 bytes counting as 16)
/// is checked, queued and its loads started,
/// and applied to the index, the arena and the changelog up to 16 updates
/// later, once those loads have completed, by a later call. This is
/// invisible to the state: [`get`](Self::get), [`len`](Self::len) and
/// [`iter`](Self::iter) see every accepted update at once, an update is
/// refused (with nothing changed) when it is made, never later, and the
/// changelog receives the entries in the order the updates were made.
/// Only the changelog sees them late: [`commit_epoch`](Self::commit_epoch)
/// first applies everything queued, so every update of an epoch reaches
/// Ring 1 before the epoch's commit, and [`flush`](Self::flush) does the
/// same without committing, for a [`StateDrain`] that wants to see the
/// updates made so far.
///
/// [`put_batch`](Self::put_batch) and [`apply_batch`](Self::apply_batch)
/// overlap the loads of the updates in a batch in the same way and save
/// the copy into the queue; their result, changelog entries and epoch are
/// those of the same updates made one by one, and a batch is applied whole
/// or not at all. [`prefetch`](Self::prefetch) lets a caller that can see
/// the next few events start their loads earlier still.
///
/// # Allocation
///
/// After warm-up (the index has room for the keys, the arena has mapped the
/// segments it cycles through, every source name has been seen once), puts,
/// deletes, batches, gets and commits allocate nothing and make no system call,
/// except that a commit may wake the Ring 1 task.
pub struct StateWriter {
    store: StateStore,
    producer: ChangelogProducer,
    epoch: u64,
    sources: HashMap<Box<str>, u64, foldhash::fast::RandomState>,
    watermark: Option<i64>,
    commit_scratch: Vec<u8>,
    doorbell: Arc<Notify>,
    /// Ring 1's status, when a manager runs one: lets a commit, and an
    /// update refused for backpressure, tell "Ring 1 stopped" from "Ring 1
    /// is busy".
    ring1: Option<Ring1Watch>,
    /// Ring the doorbell whenever the entries pushed reach a multiple of
    /// this mask plus one (a power of two: a quarter of the ring), so a long
    /// epoch does not fill the ring unseen. A mask, not a divisor: a
    /// division on every update costs more than the rest of the push.
    doorbell_mask: u64,
    /// The last epoch committed (pushed), for `checkpoint()` to aim at.
    committed: Arc<AtomicU64>,
    /// Single updates accepted but not yet applied (write-behind).
    pending: Pending,
    /// How many updates `pending` holds at most: [`DEPTH`], or the
    /// changelog's capacity if smaller (every queued update has a slot
    /// waiting for it).
    depth: usize,
    /// Entries pushed when the changelog position was last published.
    published: u64,
}

/// Loads keys in strictly increasing order into an empty state
/// ([`StateWriter::bulk_loader`]): distinct by construction, so no key is
/// looked up, and one that does not increase is refused.
#[derive(Debug)]
pub(crate) struct BulkLoader<'w> {
    store: &'w mut StateStore,
    last: Vec<u8>,
    any: bool,
}

impl BulkLoader<'_> {
    /// Adds `entries` in order; each key must be greater than every key
    /// added before. The index's cache misses overlap: while entry `i` is
    /// inserted, the slot of entry `i + LOOKAHEAD` is hashed and
    /// prefetched.
    ///
    /// # Errors
    ///
    /// [`Recovery`](IncrementalCheckpointError::Recovery) for a key that
    /// does not increase; the store's errors
    /// ([`RecordTooLarge`](IncrementalCheckpointError::RecordTooLarge),
    /// [`ArenaFull`](IncrementalCheckpointError::ArenaFull)). The failing
    /// entry is not added; those before it stay.
    pub(crate) fn put_all(&mut self, entries: &[(&[u8], &[u8])]) -> Result<()> {
        let mut slots = SlotPrefetch::<LOOKAHEAD>::start(self.store, entries.iter().map(|(k, _)| *k));
        for (i, (key, value)) in entries.iter().enumerate() {
            let hash = slots.next(self.store, i, entries.get(i + LOOKAHEAD).map(|(k, _)| *k));
            self.put_hashed(key, value, hash)?;
        }
        Ok(())
    }

    fn put_hashed(&mut self, key: &[u8], value: &[u8], key_hash: u64) -> Result<()> {
        if self.any && key <= self.last.as_slice() {
            return Err(IncrementalCheckpointError::Recovery {
                reason: RecoveryFailure::KeysOutOfOrder,
            });
        }
        self.store.insert_new(key, value, key_hash, &mut Loading)?;
        self.last.clear();
        self.last.extend_from_slice(key);
        self.any = true;
        Ok(())
    }
}

/// Progress while recovered state is loaded, before any entry is pushed:
/// loaded records are named by no entry and nothing waits for Ring 1.
struct Loading;

impl Progress for Loading {
    fn pushed(&self) -> u64 {
        0
    }
    fn next_seq(&self) -> u64 {
        0
    }
    fn released_cached(&self) -> u64 {
        u64::MAX
    }
    fn released_now(&mut self) -> u64 {
        u64::MAX
    }
}

impl Progress for ChangelogProducer {
    #[inline]
    fn pushed(&self) -> u64 {
        ChangelogProducer::pushed(self)
    }
    #[inline]
    fn released_cached(&self) -> u64 {
        ChangelogProducer::released_cached(self)
    }
    #[inline]
    fn released_now(&mut self) -> u64 {
        ChangelogProducer::released_now(self)
    }
}

impl StateWriter {
    /// Builds Ring 0 on its own, with no durability: the returned
    /// [`StateDrain`] hands you every update and commit, and you decide
    /// where they go. For durable state, use
    /// [`IncrementalCheckpointManager::open`](crate::incremental::IncrementalCheckpointManager::open),
    /// which builds the writer and runs Ring 1 on it.
    ///
    /// The first open epoch is 1.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`](IncrementalCheckpointError::InvalidConfig) for an
    /// invalid setting; [`Io`](IncrementalCheckpointError::Io) when the
    /// first arena segment or the index cannot be mapped.
    pub fn standalone(config: StateConfig) -> Result<(StateWriter, StateDrain)> {
        Self::with_first_epoch(config, 1)
    }

    pub(crate) fn with_first_epoch(config: StateConfig, epoch: u64) -> Result<(StateWriter, StateDrain)> {
        config.validate()?;
        let store = StateStore::new(&config.arena, config.expected_keys)?;
        let (producer, consumer) = StateChangelogBuffer::with_capacity(config.changelog_capacity).split();
        let doorbell = Arc::new(Notify::new());
        let drain = StateDrain::new(consumer, store.reader(), Arc::clone(&doorbell));
        let capacity = producer.capacity();
        // The capacity is a power of two, so a quarter of it (at least 1) is.
        let doorbell_mask = (capacity as u64 / 4).max(1) - 1;
        let writer = StateWriter {
            store,
            producer,
            epoch,
            sources: HashMap::default(),
            watermark: None,
            commit_scratch: Vec::new(),
            doorbell,
            ring1: None,
            doorbell_mask,
            committed: Arc::new(AtomicU64::new(epoch.saturating_sub(1))),
            pending: Pending::new(),
            depth: DEPTH.min(capacity),
            published: 0,
        };
        Ok((writer, drain))
    }

    /// Attaches Ring 1's status (the manager does this).
    pub(crate) fn attach_ring1(&mut self, ring1: Ring1Watch) {
        self.ring1 = Some(ring1);
    }

    /// Loads a recovered put, before Ring 1 starts: no changelog entry.
    pub(crate) fn load_put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        debug_assert!(
            self.producer.pushed() == 0 && self.pending.is_empty(),
            "recovered state loads before any update"
        );
        self.store.put(key, value, &mut Loading).map(drop)
    }

    /// Loads a checkpoint chain into this state, which must be empty and
    /// have pushed nothing: the keys must come in strictly increasing
    /// order (a merged chain's), so each is new and goes in without a
    /// lookup. Reserves the index for `expected_keys` (the caller bounds
    /// it by what it will load).
    ///
    /// # Errors
    ///
    /// [`Recovery`](IncrementalCheckpointError::Recovery) if the state is
    /// not empty; [`Io`](IncrementalCheckpointError::Io) if the index for
    /// `expected_keys` cannot be mapped.
    pub(crate) fn bulk_loader(&mut self, expected_keys: usize) -> Result<BulkLoader<'_>> {
        if !self.is_empty() || self.producer.pushed() != 0 || !self.pending.is_empty() {
            return Err(IncrementalCheckpointError::Recovery {
                reason: RecoveryFailure::StateNotEmpty,
            });
        }
        self.store.reserve(expected_keys)?;
        Ok(BulkLoader {
            store: &mut self.store,
            last: Vec::new(),
            any: false,
        })
    }

    /// Loads a recovered delete, before Ring 1 starts: no changelog entry.
    pub(crate) fn load_delete(&mut self, key: &[u8]) -> Result<()> {
        debug_assert!(
            self.producer.pushed() == 0 && self.pending.is_empty(),
            "recovered state loads before any update"
        );
        self.store.delete(key, &mut Loading).map(drop)
    }

    /// The last committed epoch, shared with the manager.
    pub(crate) fn committed_epoch(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.committed)
    }

    /// Restores what a recovered epoch committed; the next epoch follows it.
    pub(crate) fn restore_commit(&mut self, epoch: u64, watermark: Option<i64>, sources: &[(String, u64)]) {
        self.committed.store(epoch, Ordering::Release);
        self.epoch = epoch + 1;
        self.watermark = watermark;
        self.sources.clear();
        for (name, offset) in sources {
            self.sources.insert(name.as_str().into(), *offset);
        }
    }

    /// Sets `key` to `value`.
    ///
    /// Reads see the new value at once; the changelog receives its entry
    /// within the next 16 updates, or at the next
    /// [`commit_epoch`](Self::commit_epoch) or [`flush`](Self::flush) (see
    /// "Cache misses, write-behind and batches" above).
    ///
    /// # Errors
    ///
    /// Nothing is changed on error.
    /// [`BufferOverflow`](IncrementalCheckpointError::BufferOverflow) when the
    /// changelog is full (backpressure);
    /// [`ArenaFull`](IncrementalCheckpointError::ArenaFull) at the arena's
    /// size limit; [`RecordTooLarge`](IncrementalCheckpointError::RecordTooLarge)
    /// when key and value do not fit in one arena segment;
    /// [`Io`](IncrementalCheckpointError::Io) when a new arena segment,
    /// or the larger index a new key needs, cannot be mapped.
    #[inline]
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if !fits(key.len(), value.len()) {
            return self.apply_now(key, Some(value)).map(drop);
        }
        // Small enough for any arena segment: no size check.
        let size = record_size(key.len(), value.len());
        let hash = self.store.hash(key);
        self.enqueue(hash, key, Some(value), size)
    }

    /// An update too large for the queue (`value`: `None` for a delete),
    /// applied at once, behind everything queued; whether it changed
    /// anything (a delete of an absent key does not).
    fn apply_now(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<bool> {
        self.flush();
        self.reserve_slot()?;
        let size = self.store.check_size(key.len(), value.map_or(0, <[u8]>::len))?;
        let probe = Probe::new(key, self.store.hash(key));
        let (pushed, garbage) = apply_update(
            &mut self.store,
            &mut self.producer,
            self.epoch,
            (&probe, value, size),
            None,
        )?;
        self.store.compact(garbage, &mut self.producer, None);
        self.publish();
        Ok(pushed)
    }

    /// Admits a single update into the write-behind queue: applies the
    /// oldest queued update if the queue is full, checks that the changelog
    /// and the arena have room for this update after all those queued
    /// (nothing is queued if not), queues it, and moves the pipeline's
    /// loads along.
    #[inline]
    fn enqueue(&mut self, hash: u64, key: &[u8], value: Option<&[u8]>, size: usize) -> Result<()> {
        if self.pending.len() >= self.depth {
            self.apply_oldest();
        }
        if !self.producer.has_room_for(self.pending.len() + 1) {
            return Err(self.refuse());
        }
        let sizes = self.pending.record_sizes().chain(std::iter::once(size));
        self.store.reserve_updates(
            self.pending.len() + 1,
            self.pending.record_bytes() + size,
            sizes,
            &mut self.producer,
        )?;
        self.pending.push(hash, key, value);
        self.store.prefetch(hash);
        let store = &self.store;
        self.pending
            .start_lookup(LOCATE_STAGE, |probe| store.locate(probe, None));
        self.pending
            .continue_lookup(RETRY_STAGE, |probe, from| store.locate(probe, Some(from)));
        Ok(())
    }

    /// Applies the oldest queued update (if any) and pushes its changelog
    /// entry, published with every [`DEPTH`]th entry.
    #[inline]
    fn apply_oldest(&mut self) {
        let Some(update) = self.pending.oldest() else {
            return;
        };
        let hint = update.hint();
        let Update {
            probe, value, size, ..
        } = update;
        // Admission reserved a changelog slot and arena room for this
        // update, behind everything queued before it: applying it cannot
        // fail. Were it to, the state and its log would diverge, which must
        // not pass silently.
        let (_, garbage) = apply_update(
            &mut self.store,
            &mut self.producer,
            self.epoch,
            (&probe, value, size),
            hint,
        )
        .expect("room reserved when the update was queued");
        self.pending.pop();
        if garbage > 0 {
            self.store
                .compact(garbage, &mut self.producer, Some(&self.pending));
        }
        if self.producer.pushed().is_multiple_of(DEPTH as u64) {
            self.publish();
        }
    }

    /// Applies every queued update and makes every changelog entry pushed
    /// so far visible to the drain.
    ///
    /// [`commit_epoch`](Self::commit_epoch) does this itself; call it when
    /// a [`StateDrain`] should see the updates made so far without closing
    /// the epoch. Cannot fail: each update was checked when it was made.
    pub fn flush(&mut self) {
        while !self.pending.is_empty() {
            self.apply_oldest();
        }
        self.publish();
    }

    /// Makes the pushed entries visible to Ring 1, and wakes it if they
    /// crossed a doorbell mark since the last time.
    #[inline]
    fn publish(&mut self) {
        let pushed = self.producer.pushed();
        if pushed == self.published {
            return;
        }
        self.producer.publish();
        if self.published | self.doorbell_mask < pushed {
            self.doorbell.notify_one();
        }
        self.published = pushed;
    }

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
    /// counted in [`StateWriterStats::changelog_overflows`]);
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
    /// capacity ([`StateConfig::with_changelog_capacity`], rounded up to a
    /// power of two).
    pub fn max_batch_len(&self) -> usize {
        self.producer.capacity()
    }

    /// Hints that `key` will be updated or read soon: starts loading its
    /// index slot into the CPU cache and returns at once. A caller that
    /// handles events one at a time but can see a few ahead (a buffered
    /// source) calls this for the event a few places ahead, so its
    /// [`put`](Self::put) or [`get`](Self::get) finds the slot cached.
    /// Changes nothing, costs a hash and a few instructions; a wasted hint
    /// costs only memory bandwidth.
    ///
    /// ```
    /// use laminar_storage::incremental::{StateConfig, StateWriter};
    ///
    /// let (mut writer, _drain) = StateWriter::standalone(StateConfig::new())?;
    /// let keys: Vec<[u8; 8]> = (0..64u64).map(u64::to_be_bytes).collect();
    /// const AHEAD: usize = 8;
    /// for (i, key) in keys.iter().enumerate() {
    ///     if let Some(later) = keys.get(i + AHEAD) {
    ///         writer.prefetch(later);
    ///     }
    ///     writer.put(key, b"seen")?;
    /// }
    /// assert_eq!(writer.len(), 64);
    /// # Ok::<(), laminar_storage::incremental::IncrementalCheckpointError>(())
    /// ```
    #[inline]
    pub fn prefetch(&self, key: &[u8]) {
        self.store.prefetch(self.store.hash(key));
    }

    /// The batch engine behind [`put_batch`](Self::put_batch) and
    /// [`apply_batch`](Self::apply_batch): `view` gives an item's key and,
    /// for a put, its value (`None`: a delete).
    #[inline]
    fn apply_each<T>(&mut self, items: &[T], view: impl Fn(&T) -> (&[u8], Option<&[u8]>)) -> Result<usize> {
        // The batch goes behind every single update made before it.
        self.flush();
        if items.is_empty() {
            return Ok(0);
        }
        let max = self.producer.capacity();
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
        if !self.producer.has_room_for(items.len()) {
            self.producer.count_overflows(items.len() as u64 - 1);
            return Err(self.refuse());
        }
        let sizes = items.iter().map(|item| {
            let (key_len, value_len) = size(item);
            record_size(key_len, value_len)
        });
        self.store
            .reserve_updates(items.len(), total, sizes, &mut self.producer)?;

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
                &mut self.producer,
                self.epoch,
                (&Probe::new(key, key_hash), value, size),
                hint,
            )?;
            garbage += earned;
            applied += usize::from(pushed);
        }
        // Ring 1 sees the whole batch at once, and is woken if it crossed a
        // doorbell mark.
        self.publish();
        // The reclamation work the updates earned, as single updates would
        // have done it one by one.
        self.store.compact(garbage, &mut self.producer, None);
        Ok(applied)
    }

    /// The current value of `key`.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let hash = self.store.hash(key);
        match self.pending.latest(hash, key) {
            Some(queued) => queued,
            None => self.store.get_hashed(key, hash),
        }
    }

    /// Removes `key`; returns whether it was present (deleting an absent key
    /// changes and logs nothing). Like [`put`](Self::put), the delete
    /// reaches the changelog up to 16 updates later.
    ///
    /// # Errors
    ///
    /// As for [`put`](Self::put); nothing is changed on error.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        if !fits(key.len(), 0) {
            return self.apply_now(key, None);
        }
        let size = record_size(key.len(), 0);
        let hash = self.store.hash(key);
        let present = match self.pending.latest(hash, key) {
            Some(queued) => queued.is_some(),
            None => self.store.contains_hashed(key, hash),
        };
        if present {
            self.enqueue(hash, key, None, size)?;
        }
        Ok(present)
    }

    /// Records how far `source` has been consumed; committed with the epoch
    /// and returned by recovery, so a restarted pipeline resumes from it.
    ///
    /// Allocates only the first time a source name is seen.
    pub fn set_source_offset(&mut self, source: &str, offset: u64) {
        match self.sources.get_mut(source) {
            Some(slot) => *slot = offset,
            None => {
                self.sources.insert(source.into(), offset);
            }
        }
    }

    /// The offset last set for `source`, or recovered for it.
    pub fn source_offset(&self, source: &str) -> Option<u64> {
        self.sources.get(source).copied()
    }

    /// Records the event-time watermark, committed with the epoch.
    pub fn set_watermark(&mut self, watermark: i64) {
        self.watermark = Some(watermark);
    }

    /// The watermark last set or recovered.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// The open epoch: the one updates are going into now.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Closes the open epoch with the current source offsets and watermark,
    /// and returns its number; later updates go to the next epoch.
    ///
    /// # Errors
    ///
    /// Nothing is changed on error (the epoch stays open).
    /// [`BufferOverflow`](IncrementalCheckpointError::BufferOverflow) and
    /// [`ArenaFull`](IncrementalCheckpointError::ArenaFull) as for
    /// [`put`](Self::put); [`Wal`](IncrementalCheckpointError::Wal) when a
    /// source name is longer than 65,535 bytes;
    /// [`Failed`](IncrementalCheckpointError::Failed) or
    /// [`ShutDown`](IncrementalCheckpointError::ShutDown) when the manager's
    /// Ring 1 has stopped, since the epoch could never become durable.
    pub fn commit_epoch(&mut self) -> Result<u64> {
        if let Some(ring1) = &self.ring1 {
            ring1.check()?;
        }
        // Every update of the epoch goes before its commit.
        self.flush();
        self.reserve_slot()?;
        let sources = || self.sources.iter().map(|(name, offset)| (&**name, *offset));
        let as_wal = |e: CommitEncodeError| IncrementalCheckpointError::Wal(e.into());
        let len = commit_payload_len(sources()).map_err(as_wal)?;
        self.commit_scratch.resize(len, 0);
        encode_commit_payload(
            &mut self.commit_scratch,
            self.epoch,
            self.watermark,
            self.store.len() as u64,
            sources(),
        )
        .map_err(as_wal)?;
        let offset = self
            .store
            .commit_record(&self.commit_scratch, &mut self.producer)?;
        self.push(StateChangelogEntry::new(
            self.epoch,
            0,
            offset,
            0,
            StateOp::Commit,
        ));
        self.doorbell.notify_one();
        let closed = self.epoch;
        self.committed.store(closed, Ordering::Release);
        self.epoch += 1;
        Ok(closed)
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        let change = self
            .pending
            .key_count_change(|hash, key| self.store.contains_hashed(key, hash));
        self.store.len().saturating_add_signed(change)
    }

    /// Whether the state holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live key and value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let (store, pending) = (&self.store, &self.pending);
        // The store's keys with no update queued, then the queued puts that
        // are their key's newest update.
        let stored = store
            .iter()
            .filter(move |(key, _)| pending.is_empty() || pending.latest(store.hash(key), key).is_none());
        let queued = pending
            .newest_per_key()
            .filter_map(|update| Some((update.probe.key(), update.value?)));
        stored.chain(queued)
    }

    /// Memory and changelog figures, cheap to read. Applies the queued
    /// updates first ([`flush`](Self::flush)), so that the figures count
    /// them.
    pub fn stats(&mut self) -> StateWriterStats {
        self.flush();
        let arena = self.store.arena();
        StateWriterStats {
            keys: self.store.len() as u64,
            arena_mapped_bytes: arena.mapped_bytes(),
            arena_live_bytes: arena.live_bytes(),
            arena_dead_bytes: arena.dead_bytes(),
            changelog_pushed: self.producer.pushed(),
            changelog_pending: self.producer.len() as u64,
            changelog_overflows: self.producer.overflow_count(),
        }
    }

    #[inline]
    fn reserve_slot(&mut self) -> Result<()> {
        if self.producer.has_room() {
            return Ok(());
        }
        Err(self.refuse())
    }

    /// The error for an update the full changelog refuses: counts it,
    /// wakes Ring 1, and tells a stopped Ring 1 from a busy one.
    #[cold]
    fn refuse(&mut self) -> IncrementalCheckpointError {
        // Ring 1 can only make room by draining what it can see.
        self.publish();
        self.producer.count_overflow();
        self.doorbell.notify_one();
        if let Some(ring1) = &self.ring1
            && let Err(stopped) = ring1.check()
        {
            return stopped;
        }
        IncrementalCheckpointError::BufferOverflow { epoch: self.epoch }
    }

    #[inline]
    fn push(&mut self, entry: StateChangelogEntry) {
        // `reserve_slot` saw room and only this producer fills slots, so the
        // push cannot fail; a failure would mean the state and its log
        // diverged, which must not pass silently.
        self.producer
            .push_unpublished(entry)
            .expect("changelog slot reserved before the update");
        self.publish();
    }
}

/// Applies one update, `(key, value, size)` with `None` for a delete's
/// value and the record's [`record_size`], to the store, without
/// compacting, and pushes its changelog entry without publishing it;
/// returns whether it pushed one (a delete of an absent key changes and
/// logs nothing) and the compaction budget earned. `hint` is where the
/// index was seen to keep the key. The caller has checked the record's
/// size and reserved its changelog slot; without arena room reserved too,
/// the update may fail for lack of it, changing nothing. A free function,
/// not a method, so that the key and value may be borrowed from the
/// writer's own queue.
#[inline]
fn apply_update(
    store: &mut StateStore,
    producer: &mut ChangelogProducer,
    epoch: u64,
    (probe, value, size): (&Probe<'_>, Option<&[u8]>, usize),
    hint: Option<usize>,
) -> Result<(bool, usize)> {
    // The caller reserved the slot and only this producer fills slots, so
    // the push cannot fail; a failure would mean the state and its log
    // diverged, which must not pass silently.
    let push = |producer: &mut ChangelogProducer, entry| {
        producer
            .push_unpublished(entry)
            .expect("changelog slot reserved before the update");
    };
    match value {
        Some(value) => {
            let (Written { offset, key_hash }, earned) =
                store.put_hashed(probe, value, size, producer, hint)?;
            push(
                producer,
                StateChangelogEntry::new(epoch, key_hash, offset, value.len() as u32, StateOp::Put),
            );
            Ok((true, earned))
        }
        None => match store.delete_hashed(probe, size, producer, hint)? {
            (Some(Written { offset, key_hash }), earned) => {
                push(
                    producer,
                    StateChangelogEntry::new(epoch, key_hash, offset, 0, StateOp::Delete),
                );
                Ok((true, earned))
            }
            (None, earned) => Ok((false, earned)),
        },
    }
}

impl Drop for StateWriter {
    fn drop(&mut self) {
        // The drain sees every update made (an open epoch's are still
        // discarded by recovery), and Ring 1 sees the end promptly. Not
        // while unwinding: a panic may have left the queue half-applied.
        if !std::thread::panicking() {
            self.flush();
        }
        self.doorbell.notify_one();
    }
}

impl std::fmt::Debug for StateWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWriter")
            .field("epoch", &self.epoch)
            .field("keys", &self.store.len())
            .field("watermark", &self.watermark)
            .finish_non_exhaustive()
    }
}

/// Ring 0 figures from [`StateWriter::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StateWriterStats {
    /// Live keys.
    pub keys: u64,
    /// Arena memory mapped (the resident ceiling).
    pub arena_mapped_bytes: u64,
    /// Arena bytes holding the latest version of a key.
    pub arena_live_bytes: u64,
    /// Arena bytes in use that compaction or recycling will reclaim.
    pub arena_dead_bytes: u64,
    /// Changelog entries pushed.
    pub changelog_pushed: u64,
    /// Changelog entries not yet released by Ring 1.
    pub changelog_pending: u64,
    /// Updates refused because the changelog was full.
    pub changelog_overflows: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> StateWriter {
        StateWriter::standalone(StateConfig::new()).unwrap().0
    }

    #[test]
    fn bulk_load_inserts_increasing_keys_and_refuses_the_rest() {
        let mut w = writer();
        let mut loader = w.bulk_loader(1000).unwrap();
        let keys: Vec<[u8; 4]> = (0..1000u32).map(u32::to_be_bytes).collect();
        let values: Vec<[u8; 20]> = (0..1000u32).map(|i| [i as u8; 20]).collect();
        let entries: Vec<(&[u8], &[u8])> = keys.iter().zip(&values).map(|(k, v)| (&k[..], &v[..])).collect();
        loader.put_all(&entries[..500]).unwrap();
        for chunk in entries[500..].chunks(3) {
            loader.put_all(chunk).unwrap();
        }
        // A duplicate or a smaller key is refused, and nothing changes.
        for bad in [999u32, 5] {
            let e = loader.put_all(&[(&bad.to_be_bytes(), b"other")]).unwrap_err();
            assert!(matches!(e, IncrementalCheckpointError::Recovery { .. }), "{e}");
        }
        // A value too large for the arena is refused, and loading goes on;
        // the entries before a refused one stay.
        let huge = vec![0; 1 << 30];
        let e = loader.put_all(&[(&5000u32.to_be_bytes(), b"x"), (&5001u32.to_be_bytes(), &huge)]);
        assert!(e.is_err());
        loader.put_all(&[(&6000u32.to_be_bytes(), b"last")]).unwrap();
        assert_eq!(w.len(), 1002);
        assert_eq!(w.get(&5000u32.to_be_bytes()), Some(&b"x"[..]));
        assert_eq!(w.get(&5001u32.to_be_bytes()), None);
        for i in 0..1000u32 {
            assert_eq!(w.get(&i.to_be_bytes()), Some(&[i as u8; 20][..]));
        }
        assert_eq!(w.get(&6000u32.to_be_bytes()), Some(&b"last"[..]));
        // Updates after the load find the loaded keys (no duplicates).
        w.put(&7u32.to_be_bytes(), b"new").unwrap();
        w.delete(&8u32.to_be_bytes()).unwrap();
        assert_eq!(w.len(), 1001);
        assert_eq!(w.get(&7u32.to_be_bytes()), Some(&b"new"[..]));
        assert_eq!(w.iter().count(), 1001);
    }

    #[test]
    fn bulk_load_only_into_an_empty_state() {
        let mut w = writer();
        w.put(b"k", b"v").unwrap();
        assert!(matches!(
            w.bulk_loader(10),
            Err(IncrementalCheckpointError::Recovery { .. })
        ));
        let mut w = writer();
        w.commit_epoch().unwrap();
        assert!(w.bulk_loader(10).is_err(), "nothing pushed yet");
    }
}
