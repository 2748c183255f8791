//! [`StateWriter`]: Ring 0, the single producer of state updates, and its
//! path for single updates (write-behind). Batches are in `batch.rs`,
//! epochs and commits in `epoch.rs`, recovery's loading in `load.rs`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};

use tokio::sync::Notify;

use super::arena::record_size;
use super::config::StateConfig;
use super::drain::StateDrain;
use super::epoch::Epochs;
use super::pending::{DEPTH, LOCATE_STAGE, Pending, RETRY_STAGE, Update, fits};
use super::probe::Probe;
use super::publish::Publisher;
use super::store::{StateStore, Written};
use crate::changelog::{StateChangelogBuffer, StateChangelogEntry, StateOp};
use crate::error::{IncrementalCheckpointError, Result};
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
/// [`BufferOverflow`](crate::incremental::IncrementalCheckpointError::BufferOverflow) and changes
/// nothing. In async code, await [`ready`](Self::ready) before a group of
/// updates instead: it returns once the changelog has room for them, woken
/// by Ring 1 as it drains (no polling, no spinning, and on a
/// `current_thread` runtime the wait is what lets Ring 1 run), after which
/// those updates cannot overflow. [`StateSink`](crate::incremental::StateSink)
/// does this for a stream of updates.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), laminar_storage::IncrementalCheckpointError> {
/// # let dir = tempfile::tempdir().expect("a temporary directory");
/// use laminar_storage::{CheckpointConfig, IncrementalCheckpointManager};
///
/// let (manager, mut writer) = IncrementalCheckpointManager::open(CheckpointConfig::new(dir.path())).await?;
/// for i in 0..100_000u32 {
///     writer.ready(1).await?; // waits only while Ring 1 is a whole ring behind
///     writer.put(&i.to_be_bytes(), b"value")?; // cannot overflow now
///     if i % 1_000 == 999 {
///         writer.ready(1).await?;
///         writer.commit_epoch()?;
///     }
/// }
/// manager.shutdown().await?;
/// # Ok(())
/// # }
/// ```
///
/// # After shutdown
///
/// Once the manager was asked to shut down, or Ring 1 stopped on an I/O
/// error, every update and commit returns an error at once, having changed
/// nothing: [`ShutDown`](crate::incremental::IncrementalCheckpointError::ShutDown) or
/// [`Failed`](crate::incremental::IncrementalCheckpointError::Failed) (an update that could
/// never become durable is not accepted). The check is one relaxed load of
/// a flag Ring 1 sets.
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
/// # Growth
///
/// The state may grow without bound (up to the arena's limit), and no
/// single update pays for it. When the index must grow, it maps a table
/// twice as large and moves its slots into it a few at a time: each update
/// moves the slots of 4 index buckets, and lookups meanwhile find a key in
/// either table. The arena's next segment, and the index's next table, are
/// mapped and their pages faulted in ahead of need by a helper thread
/// (`laminar-ring0-prep`, one per writer; it also unmaps the table an
/// index has moved out of), so an update finds memory ready instead of
/// making system calls and page faults: with transparent huge pages, a
/// first touch of fresh memory stalls for 0.1 to 0.5 ms. Should the helper
/// be late (a machine short of CPU), the index fills past three-quarters
/// while it finishes, and past seven-eighths an update maps the memory
/// itself on 4 KiB pages, whose first touches cost microseconds, not
/// milliseconds; [`StateWriterStats::maps_not_prepared`] counts those.
/// [`StateConfig::with_expected_keys`] says what sizing the index up front
/// still buys.
///
/// # Allocation and system calls
///
/// After warm-up (the first updates have been made, every source name has
/// been seen once), puts, deletes, batches, gets and commits allocate
/// nothing, also while the index grows. They make no system call, except
/// that a commit may wake the Ring 1 task, and that asking the helper
/// thread for the next arena segment or index table wakes it (once per
/// segment and per growth).
pub struct StateWriter {
    pub(super) store: StateStore,
    /// The changelog's producing end.
    pub(super) log: Publisher,
    /// Single updates accepted but not yet applied (write-behind).
    pub(super) pending: Pending,
    /// How many updates `pending` holds at most: [`DEPTH`], or the
    /// changelog's capacity if smaller (every queued update has a slot
    /// waiting for it).
    depth: usize,
    pub(super) epochs: Epochs,
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
    /// [`InvalidConfig`](crate::incremental::IncrementalCheckpointError::InvalidConfig) for an
    /// invalid setting; [`Io`](crate::incremental::IncrementalCheckpointError::Io) when the
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
        let depth = DEPTH.min(producer.capacity());
        let writer = StateWriter {
            store,
            log: Publisher::new(producer, doorbell),
            pending: Pending::new(),
            depth,
            epochs: Epochs::new(epoch),
        };
        Ok((writer, drain))
    }

    /// Attaches Ring 1's status (the manager does this).
    pub(crate) fn attach_ring1(&mut self, ring1: Ring1Watch) {
        self.log.attach_ring1(ring1);
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
    /// [`BufferOverflow`](crate::incremental::IncrementalCheckpointError::BufferOverflow) when the
    /// changelog is full (backpressure);
    /// [`ArenaFull`](crate::incremental::IncrementalCheckpointError::ArenaFull) at the arena's
    /// size limit; [`RecordTooLarge`](crate::incremental::IncrementalCheckpointError::RecordTooLarge)
    /// when key and value do not fit in one arena segment;
    /// [`Io`](crate::incremental::IncrementalCheckpointError::Io) when a new arena segment,
    /// or the larger index a new key needs, cannot be mapped;
    /// [`ShutDown`](crate::incremental::IncrementalCheckpointError::ShutDown) or
    /// [`Failed`](crate::incremental::IncrementalCheckpointError::Failed) once the manager was
    /// asked to shut down or Ring 1 stopped (see "After shutdown" above).
    #[inline]
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.log.is_closed() {
            return Err(self.log.stopped());
        }
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
        let epoch = self.epochs.open();
        self.log.reserve_slot(epoch)?;
        let size = self.store.check_size(key.len(), value.map_or(0, <[u8]>::len))?;
        let probe = Probe::new(key, self.store.hash(key));
        let (pushed, garbage) =
            apply_update(&mut self.store, &mut self.log, epoch, (&probe, value, size), None)?;
        self.store.compact(garbage, &mut self.log, &[]);
        self.log.publish();
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
        if !self.log.has_room_for(self.pending.len() + 1) {
            return Err(self.log.refuse(self.epochs.open(), 1));
        }
        let sizes = self.pending.record_sizes().chain(std::iter::once(size));
        self.store.reserve_updates(
            self.pending.len() + 1,
            self.pending.record_bytes() + size,
            sizes,
            &mut self.log,
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
            &mut self.log,
            self.epochs.open(),
            (&probe, value, size),
            hint,
        )
        .expect("room reserved when the update was queued");
        self.pending.pop();
        if garbage > 0 {
            self.store.compact(garbage, &mut self.log, &self.pending);
        }
        if self.log.pushed().is_multiple_of(DEPTH as u64) {
            self.log.publish();
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
        self.log.publish();
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
        if self.log.is_closed() {
            return Err(self.log.stopped());
        }
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
        self.epochs.set_source_offset(source, offset);
    }

    /// The offset last set for `source`, or recovered for it.
    pub fn source_offset(&self, source: &str) -> Option<u64> {
        self.epochs.source_offset(source)
    }

    /// Records the event-time watermark, committed with the epoch.
    pub fn set_watermark(&mut self, watermark: i64) {
        self.epochs.set_watermark(watermark);
    }

    /// The watermark last set or recovered.
    pub fn watermark(&self) -> Option<i64> {
        self.epochs.watermark()
    }

    /// The open epoch: the one updates are going into now.
    pub fn epoch(&self) -> u64 {
        self.epochs.open()
    }

    /// Closes the open epoch with the current source offsets and watermark,
    /// and returns its number; later updates go to the next epoch.
    ///
    /// # Errors
    ///
    /// Nothing is changed on error (the epoch stays open).
    /// [`BufferOverflow`](crate::incremental::IncrementalCheckpointError::BufferOverflow) and
    /// [`ArenaFull`](crate::incremental::IncrementalCheckpointError::ArenaFull) as for
    /// [`put`](Self::put); [`Wal`](crate::incremental::IncrementalCheckpointError::Wal) when a
    /// source name is longer than 65,535 bytes;
    /// [`Failed`](crate::incremental::IncrementalCheckpointError::Failed) or
    /// [`ShutDown`](crate::incremental::IncrementalCheckpointError::ShutDown) when the manager's
    /// Ring 1 has stopped, since the epoch could never become durable.
    pub fn commit_epoch(&mut self) -> Result<u64> {
        if self.log.is_closed() {
            return Err(self.log.stopped());
        }
        self.log.check_ring1()?;
        // Every update of the epoch goes before its commit.
        self.flush();
        let epoch = self.epochs.open();
        self.log.reserve_slot(epoch)?;
        let payload = self.epochs.commit_payload(self.store.len() as u64)?;
        let offset = self.store.commit_record(payload, &mut self.log)?;
        self.log
            .push(StateChangelogEntry::new(epoch, 0, offset, 0, StateOp::Commit));
        self.log.ring_doorbell();
        self.epochs.closed();
        Ok(epoch)
    }

    /// The last committed epoch, shared with the manager.
    pub(crate) fn committed_epoch(&self) -> Arc<AtomicU64> {
        self.epochs.committed()
    }

    /// Restores what a recovered epoch committed; the next epoch follows it.
    pub(crate) fn restore_commit(&mut self, epoch: u64, watermark: Option<i64>, sources: &[(String, u64)]) {
        self.epochs.restore(epoch, watermark, sources);
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
            changelog_pushed: self.log.pushed(),
            changelog_pending: self.log.unreleased(),
            changelog_overflows: self.log.overflow_count(),
            index_capacity: self.store.index().capacity() as u64,
            index_keys_to_move: self.store.index().keys_to_move() as u64,
            maps_not_prepared: arena.inline_maps() + self.store.index().inline_maps(),
        }
    }

    /// Waits until the changelog has room for `n` more entries, then
    /// returns: the next `n` updates and commits cannot fail with
    /// [`BufferOverflow`](crate::incremental::IncrementalCheckpointError::BufferOverflow).
    ///
    /// Ready at once when there is room, which is nearly always: then it
    /// costs a comparison and does not yield. Otherwise it makes every
    /// update made so far visible to Ring 1, wakes it, and sleeps until
    /// Ring 1 has drained enough (Ring 1 wakes it; nothing polls). Room
    /// only grows while the writer waits, and only this writer uses it, so
    /// the room it found stays reserved for it: each update takes one entry
    /// (a delete of an absent key none, a commit one). On a
    /// `current_thread` runtime, awaiting this is what lets Ring 1 run while
    /// a producer outruns the disk.
    ///
    /// Other limits still apply: the arena's size limit
    /// ([`ArenaFull`](crate::incremental::IncrementalCheckpointError::ArenaFull)) and record
    /// sizes are checked by the update itself.
    ///
    /// # Errors
    ///
    /// [`BatchTooLarge`](crate::incremental::IncrementalCheckpointError::BatchTooLarge) when
    /// `n` exceeds the ring ([`max_batch_len`](Self::max_batch_len)), which
    /// no wait could satisfy; [`ShutDown`](crate::incremental::IncrementalCheckpointError::ShutDown),
    /// [`Failed`](crate::incremental::IncrementalCheckpointError::Failed) or
    /// [`Ring1Gone`](crate::incremental::IncrementalCheckpointError::Ring1Gone) once the
    /// manager was asked to shut down or Ring 1 stopped, including while
    /// it waits.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes no state, so dropping it and calling it
    /// again later loses nothing.
    pub fn ready(&mut self, n: usize) -> impl Future<Output = Result<()>> + Send + '_ {
        std::future::poll_fn(move |cx| self.poll_ready(n, cx))
    }

    /// [`ready`](Self::ready) as a poll function, for hand-written futures
    /// and sinks: `Ready(Ok(()))` once the changelog has room for `n` more
    /// entries; otherwise `cx`'s waker is woken when Ring 1 has drained.
    ///
    /// # Errors
    ///
    /// As for [`ready`](Self::ready).
    pub fn poll_ready(&mut self, n: usize, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let max = self.log.capacity();
        if n > max {
            return Poll::Ready(Err(IncrementalCheckpointError::BatchTooLarge { len: n, max }));
        }
        if self.log.is_closed() {
            return Poll::Ready(Err(self.log.stopped()));
        }
        // Updates still queued have their slots reserved already.
        if self.log.has_room_for(self.pending.len() + n) {
            return Poll::Ready(Ok(()));
        }
        // Apply them so that Ring 1 can drain them (and `n` alone then
        // counts), and let Ring 1 see everything there is to drain.
        self.flush();
        self.log.ring_doorbell();
        if let Err(stopped) = self.log.check_ring1() {
            return Poll::Ready(Err(stopped));
        }
        match self.log.poll_room(n, cx) {
            Poll::Ready(()) if self.log.is_closed() => Poll::Ready(Err(self.log.stopped())),
            Poll::Ready(()) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
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
pub(super) fn apply_update(
    store: &mut StateStore,
    log: &mut Publisher,
    epoch: u64,
    (probe, value, size): (&Probe<'_>, Option<&[u8]>, usize),
    hint: Option<usize>,
) -> Result<(bool, usize)> {
    match value {
        Some(value) => {
            let (Written { offset, key_hash }, earned) = store.put_hashed(probe, value, size, log, hint)?;
            log.push_unpublished(StateChangelogEntry::new(
                epoch,
                key_hash,
                offset,
                value.len() as u32,
                StateOp::Put,
            ));
            Ok((true, earned))
        }
        None => match store.delete_hashed(probe, size, log, hint)? {
            (Some(Written { offset, key_hash }), earned) => {
                log.push_unpublished(StateChangelogEntry::new(
                    epoch,
                    key_hash,
                    offset,
                    0,
                    StateOp::Delete,
                ));
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
        self.log.ring_doorbell();
    }
}

impl std::fmt::Debug for StateWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWriter")
            .field("epoch", &self.epochs.open())
            .field("keys", &self.store.len())
            .field("watermark", &self.epochs.watermark())
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
    /// Keys the index holds before it grows again.
    pub index_capacity: u64,
    /// Keys still to move from the index's previous table to its current
    /// one: above 0 while the index grows (see "Growth" on
    /// [`StateWriter`]).
    pub index_keys_to_move: u64,
    /// Arena segments and index tables an update had to map itself because
    /// the helper thread had not prepared them in time: each cost that
    /// update a system call and page faults. 0 is the norm.
    pub maps_not_prepared: u64,
}
