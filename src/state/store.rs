//! The Ring 0 key-value store: an open-addressing index over arena records.
//!
//! # Where bytes go
//!
//! A put of a key whose current record Ring 1 has released, and whose value
//! pads to the same record size, overwrites the value in place: no garbage,
//! no index change. Otherwise the put appends a new record and the old one
//! becomes garbage. Deletes append a tombstone (Ring 1 needs the key).
//!
//! # The index
//!
//! An open-addressing table of 32-byte slots, one per live key (see
//! [`index`](super::index) for its layout). Besides the record's
//! offset, a slot holds the key itself when it is at most 16 bytes long
//! (else its hash and length), the value length and the low bits of the
//! record's changelog position. That is everything a put of an existing key
//! needs to find it and decide to overwrite it in place, and everything a
//! get needs to return the value: neither reads the record before using it.
//! At W1 scale (200,000 keys, a 27 MB arena) the record is almost never in
//! the cache, so this saves a dependent cache miss per operation. The price
//! is index memory: 32 bytes per bucket, at most three-quarters full (16 MiB
//! at W1, sized for its keys). Only a key longer than 16 bytes whose hash
//! and length match is compared in the arena.
//!
//! # Reclaiming memory
//!
//! When garbage exceeds half the live data (and is at least a segment), the
//! store picks the sealed segment with the fewest live bytes (if it is at
//! most two-thirds live) and evacuates it a little at a time: each update
//! also scans up to [`COMPACTION_SCAN_FACTOR`] times its own size of the
//! victim, moving the records still live to the active segment. An evacuated
//! segment is recycled once Ring 1 has released every changelog entry that
//! names a record in it (appends and in-place overwrites alike), so a record
//! is never overwritten while Ring 1 may still read it. Garbage grows at most
//! as fast as updates write, and evacuating a segment at most two-thirds
//! live frees at least a third of what it scans, so a scan factor above 3
//! keeps up: the arena settles below twice the live data, plus what Ring 1
//! has not yet released, plus a few segments of granularity.

use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Arc;

use super::arena::{Arena, ArenaReader, Promised, RecordKind, RecordRef, record_size};
use super::config::ArenaConfig;
use super::index::{Index, LineProbe, Slot};
use super::prefetch::prefetch;
use super::prepare::Preparer;
use super::probe::Probe;
use crate::error::{IncrementalCheckpointError, Result};

/// Each update scans up to this many times its own size of the victim.
pub(crate) const COMPACTION_SCAN_FACTOR: usize = 4;

/// How far the changelog has come, as the store needs to know it to decide
/// what Ring 1 may still read.
///
/// # Safety
///
/// The store hands these numbers to the arena's `unsafe fn`s, so an
/// implementation promises what the arena's naming rule needs (see
/// [`arena`](super::arena)): the entry of the update in progress, if it
/// pushes one, is numbered [`next_seq`](Self::next_seq), and no entry is
/// pushed between the store's call and that one; `next_seq` is 0 only if
/// no entry will ever name the update's record; and the `released_*`
/// counts never exceed the entries Ring 1 has actually released.
pub(crate) unsafe trait Progress {
    /// Entries pushed so far.
    fn pushed(&self) -> u64;
    /// The number the update in progress will push its entry as: the
    /// arena tags the update's record with it. 0 means no entry will name
    /// the record (recovered state loaded before Ring 1 starts).
    fn next_seq(&self) -> u64 {
        self.pushed() + 1
    }
    /// Entries Ring 1 has released, as last observed (may lag).
    fn released_cached(&self) -> u64;
    /// Entries Ring 1 has released, read now.
    fn released_now(&mut self) -> u64;
    /// Whether the updates load recovered state, before Ring 1 starts: no
    /// one waits on a single update then, so the index grows at once, on
    /// huge pages, instead of a few slots per update.
    const LOADING: bool = false;
}

/// The segment being evacuated and how far.
#[derive(Debug, Clone, Copy)]
struct Victim {
    slot: u32,
    cursor: u32,
    end: u32,
}

/// Whether Ring 1 has released every changelog entry that names the record
/// in `slot`, so that it may be overwritten in place.
///
/// The entries Ring 1 has not released are those after `released`, up to
/// the one the update in progress will push (`next`); the record was last
/// named by entry `seq`, `next - seq` entries back. The slot keeps `seq`
/// modulo 2^32 only, which gives a lower bound of that distance: when even
/// the bound reaches past `released`, the record is released. Otherwise the
/// record is recent or older by a multiple of 2^32 entries, and its header
/// tells which (a rare arena read).
#[inline]
fn released(arena: &Arena, slot: &Slot, progress: &mut impl Progress) -> bool {
    let next = progress.pushed().wrapping_add(1);
    let back = u64::from((next as u32).wrapping_sub(slot.seq_lo));
    if back >= next.saturating_sub(progress.released_cached()) {
        return true;
    }
    let released = progress.released_now();
    back >= next.saturating_sub(released) || arena.record(slot.offset()).seq <= released
}

/// Keys to arena records. `S` hashes keys (tests substitute one that
/// collides).
#[derive(Debug)]
pub(crate) struct StateStore<S = foldhash::fast::RandomState> {
    arena: Arena,
    /// One slot per live key, hashed by key.
    index: Index,
    hasher: S,
    victim: Option<Victim>,
    /// Arena bytes in use when a victim search last found nothing worth it.
    quiet_until: u64,
}

/// The error of an index that cannot grow.
fn index_error(source: std::io::Error) -> IncrementalCheckpointError {
    IncrementalCheckpointError::Io {
        path: PathBuf::from("<anonymous state index>"),
        source,
    }
}

/// Where an update landed, for its changelog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) offset: u64,
    pub(crate) key_hash: u64,
}

impl StateStore {
    pub(crate) fn new(config: &ArenaConfig, expected_keys: usize) -> Result<Self> {
        Self::with_hasher(config, expected_keys, foldhash::fast::RandomState::default())
    }
}

impl<S: BuildHasher> StateStore<S> {
    /// A store whose index has room for `expected_keys` keys before it
    /// grows. It starts the helper thread that prepares its memory
    /// (`prepare.rs`).
    pub(crate) fn with_hasher(config: &ArenaConfig, expected_keys: usize, hasher: S) -> Result<Self> {
        config.validate()?;
        let prep = Preparer::start().map(Arc::new);
        Ok(Self {
            arena: Arena::new(config, prep.clone())?,
            index: Index::with_capacity(expected_keys, prep).map_err(index_error)?,
            hasher,
            victim: None,
            quiet_until: 0,
        })
    }

    pub(crate) fn reader(&self) -> ArenaReader {
        self.arena.reader()
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn arena(&self) -> &Arena {
        &self.arena
    }

    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    #[inline]
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The bucket of the slot holding `probe`'s key.
    #[inline]
    fn find(&self, probe: &Probe<'_>) -> Option<usize> {
        let (probe, arena) = (*probe, &self.arena);
        self.index
            .find(probe.hash(), move |slot| probe.matches(slot, arena))
    }

    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.get_hashed(key, self.hash(key))
    }

    /// [`get`](Self::get) with the key's [`hash`](Self::hash) known.
    #[inline]
    pub(crate) fn get_hashed(&self, key: &[u8], hash: u64) -> Option<&[u8]> {
        if !self.index.may_hold(hash) {
            return None;
        }
        let probe = Probe::new(key, hash);
        let arena = &self.arena;
        // The closure owns its copy of the probe: lookups outside a
        // growth then keep it in registers.
        let slot = self
            .index
            .find_slot(hash, move |slot| probe.matches(slot, arena))?;
        Some(
            self.arena
                .value(slot.offset(), key.len(), slot.value_len as usize),
        )
    }

    /// Whether the store holds `key`, whose [`hash`](Self::hash) is `hash`.
    #[inline]
    pub(crate) fn contains_hashed(&self, key: &[u8], hash: u64) -> bool {
        self.index.may_hold(hash) && self.find(&Probe::new(key, hash)).is_some()
    }

    /// Checks that a record fits, before anything is changed.
    pub(crate) fn check_size(&self, key_len: usize, value_len: usize) -> Result<usize> {
        let size = record_size(key_len, value_len);
        if size > self.arena.max_record() || key_len >= 1 << 30 || value_len > u32::MAX as usize {
            return Err(IncrementalCheckpointError::RecordTooLarge {
                key_len,
                value_len,
                max: self.arena.max_record(),
            });
        }
        Ok(size)
    }

    /// Sets `key` to `value`; the record is tagged as referenced by the
    /// update's changelog entry (`progress.next_seq()`). Nothing changes on
    /// error.
    #[inline]
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8], progress: &mut impl Progress) -> Result<Written> {
        let size = self.check_size(key.len(), value.len())?;
        let (written, garbage) =
            self.put_hashed(&Probe::new(key, self.hash(key)), value, size, progress, None)?;
        self.compact(garbage, progress, &[]);
        Ok(written)
    }

    /// [`put`](Self::put) of `probe`'s key, with its record size
    /// ([`check_size`](Self::check_size)) already known, and without
    /// compacting: returns the compaction budget the update earned (0 for
    /// an overwrite in place), for the caller to spend with
    /// [`compact`](Self::compact). `hint` is where
    /// [`locate`](Self::locate) saw the key, if it did.
    /// Nothing changes on error.
    #[inline]
    pub(crate) fn put_hashed<P: Progress>(
        &mut self,
        probe: &Probe<'_>,
        value: &[u8],
        size: usize,
        progress: &mut P,
        hint: Option<usize>,
    ) -> Result<(Written, usize)> {
        // Every update moves a few slots of a growing index along.
        self.index.migrate(&self.hasher);
        let (key, key_hash) = (probe.key(), probe.hash());
        let seq = progress.next_seq();
        let arena = &self.arena;
        let found = self
            .index
            .find_mut(key_hash, hint, |slot| probe.matches(slot, arena));
        let mut old = None;
        if let Some((bucket, slot)) = found {
            let old_size = record_size(key.len(), slot.value_len as usize);
            let offset = slot.offset();
            if old_size == size && released(&self.arena, slot, progress) {
                // SAFETY: `released` saw every entry naming the record
                // released; the slot says it is a put record of this key
                // whose size is `size`, the new value's; `seq` is the
                // number of the entry this update pushes (`Progress`).
                unsafe { self.arena.overwrite_value(offset, key.len(), value, seq) };
                slot.value_len = value.len() as u32;
                slot.seq_lo = seq as u32;
                return Ok((Written { offset, key_hash }, 0));
            }
            old = Some((bucket, offset, old_size));
        } else if P::LOADING {
            self.reserve_loading(1)?;
        } else {
            // A new key: make room in the index before anything changes.
            self.reserve(1)?;
        }
        let offset = self.append(RecordKind::Put, key, value, seq, size, progress)?;
        self.arena.add_live(offset, size);
        let slot = probe.slot(offset, value.len(), seq);
        match old {
            Some((bucket, old_offset, old_size)) => {
                self.arena.kill(old_offset, old_size);
                if let Some(old) = self.index.get_mut(bucket) {
                    *old = slot;
                }
            }
            None => {
                self.index.insert(key_hash, slot);
            }
        }
        Ok((Written { offset, key_hash }, COMPACTION_SCAN_FACTOR * size))
    }

    /// Starts loading into the cache what an update or a get of the key
    /// with this [`hash`](Self::hash) will read first: the index slots
    /// where its probe starts. A hint only: it changes nothing and cannot
    /// fail.
    #[inline]
    pub(crate) fn prefetch(&self, key_hash: u64) {
        self.index.prefetch(key_hash);
    }

    /// One step of looking up `probe`'s key ahead of its update, reading
    /// only index lines [`prefetch`](Self::prefetch) or the previous step
    /// started loading ([`Index::probe_prefetched`]): from `from` (`None`:
    /// the key's home).
    /// If the key is there, starts loading its arena record, which the
    /// update will overwrite; if the lines end first, the next step goes on
    /// from [`LineProbe::Next`]. The bucket found is a hint for the update.
    /// Changes nothing and cannot fail.
    #[inline(always)]
    pub(crate) fn locate(&self, probe: &Probe<'_>, from: Option<usize>) -> LineProbe {
        let step = self
            .index
            .probe_prefetched(probe.hash(), from, |slot| probe.may_match(slot));
        if let LineProbe::Found(bucket) = step
            && let Some(slot) = self.index.get(bucket)
        {
            let start = self.arena.address(slot.offset());
            let end = start + record_size(probe.key().len(), slot.value_len as usize);
            let mut line = start & !63;
            while line < end {
                prefetch(line);
                line += 64;
            }
        }
        step
    }

    /// Makes room for `count` updates, whose records have `sizes` (the
    /// bytes [`check_size`](Self::check_size) returned, `total` in all) and
    /// are appended in this order: index slots in case every key is new,
    /// and the arena segments the records will need, taken now. After this
    /// succeeds, those updates cannot fail for lack of room until
    /// [`compact`](Self::compact) runs (it allocates too). Nothing visible
    /// changes on error.
    #[inline]
    pub(crate) fn reserve_updates(
        &mut self,
        count: usize,
        total: usize,
        sizes: impl Iterator<Item = usize>,
        progress: &mut impl Progress,
    ) -> Result<()> {
        self.reserve(count)?;
        self.arena.reserve(total, sizes, &mut || progress.released_now())
    }

    /// Makes room in the index for `additional` more keys: until then,
    /// adding that many cannot fail.
    ///
    /// # Errors
    ///
    /// [`Io`](IncrementalCheckpointError::Io) when the larger index cannot
    /// be mapped; nothing changes then.
    #[inline]
    pub(crate) fn reserve(&mut self, additional: usize) -> Result<()> {
        self.index.reserve(additional, &self.hasher).map_err(index_error)
    }

    /// [`reserve`](Self::reserve) for loading recovered state: a growth
    /// happens at once, into a table on huge pages, and leaves nothing to
    /// move for the updates after recovery.
    ///
    /// # Errors
    ///
    /// As for [`reserve`](Self::reserve).
    pub(crate) fn reserve_loading(&mut self, additional: usize) -> Result<()> {
        self.index
            .reserve_at_once(additional, &self.hasher)
            .map_err(index_error)
    }

    /// Adds `key`, which the store must not hold, without looking it up:
    /// for loading a checkpoint chain, whose merged keys are distinct
    /// ([`StateWriter::bulk_loader`](super::StateWriter) guarantees it by
    /// refusing keys that do not increase). Creates no garbage, so it
    /// never compacts. Nothing changes on error.
    #[inline]
    pub(crate) fn insert_new(
        &mut self,
        key: &[u8],
        value: &[u8],
        key_hash: u64,
        progress: &mut impl Progress,
    ) -> Result<()> {
        let size = self.check_size(key.len(), value.len())?;
        debug_assert!(self.get(key).is_none(), "insert_new of a key the store holds");
        let probe = Probe::new(key, key_hash);
        let seq = progress.next_seq();
        self.reserve_loading(1)?;
        let offset = self.append(RecordKind::Put, key, value, seq, size, progress)?;
        self.arena.add_live(offset, size);
        self.index.insert(key_hash, probe.slot(offset, value.len(), seq));
        Ok(())
    }

    /// Removes `key`, writing a tombstone for Ring 1. `Ok(None)` when the key
    /// is absent (nothing to log). Nothing changes on error.
    pub(crate) fn delete(&mut self, key: &[u8], progress: &mut impl Progress) -> Result<Option<Written>> {
        let size = self.check_size(key.len(), 0)?;
        let (written, garbage) =
            self.delete_hashed(&Probe::new(key, self.hash(key)), size, progress, None)?;
        self.compact(garbage, progress, &[]);
        Ok(written)
    }

    /// [`delete`](Self::delete) of `probe`'s key, with its tombstone size known,
    /// and without compacting; returns the compaction budget earned, as
    /// [`put_hashed`](Self::put_hashed) does, `hint` included. Nothing
    /// changes on error.
    #[inline]
    pub(crate) fn delete_hashed(
        &mut self,
        probe: &Probe<'_>,
        size: usize,
        progress: &mut impl Progress,
        hint: Option<usize>,
    ) -> Result<(Option<Written>, usize)> {
        self.index.migrate(&self.hasher);
        let (key, key_hash) = (probe.key(), probe.hash());
        let arena = &self.arena;
        let Some((bucket, &mut old)) = self
            .index
            .find_mut(key_hash, hint, |slot| probe.matches(slot, arena))
        else {
            return Ok((None, 0));
        };
        let seq = progress.next_seq();
        let offset = self.append(RecordKind::Tombstone, key, &[], seq, size, progress)?;
        self.arena
            .kill(old.offset(), record_size(key.len(), old.value_len as usize));
        self.index.remove(bucket, &self.hasher);
        Ok((Some(Written { offset, key_hash }), COMPACTION_SCAN_FACTOR * size))
    }

    /// Writes an epoch's commit payload for Ring 1. Nothing changes on error.
    pub(crate) fn commit_record(&mut self, payload: &[u8], progress: &mut impl Progress) -> Result<u64> {
        let size = self.check_size(payload.len(), 0)?;
        let seq = progress.next_seq();
        self.append(RecordKind::Commit, payload, &[], seq, size, progress)
    }

    /// Writes a record of `size` bytes for the update in progress, named by
    /// entry `seq` (its `progress.next_seq()`).
    fn append(
        &mut self,
        kind: RecordKind,
        key: &[u8],
        value: &[u8],
        seq: u64,
        size: usize,
        progress: &mut impl Progress,
    ) -> Result<u64> {
        let at = self.arena.allocate(size, &mut || progress.released_now())?;
        // SAFETY: `seq` is `progress.next_seq()`: the entry naming the
        // record, if any, is that one (`Progress`'s contract).
        Ok(unsafe { self.arena.write(at, kind, key, value, seq) })
    }

    /// Evacuates live records from the emptiest sealed segment, scanning at
    /// most `budget` bytes of it. A record moves only if the arena keeps
    /// room for the `queued` updates' records after it, which their
    /// admission promised them (`&[]`: none).
    pub(crate) fn compact(
        &mut self,
        mut budget: usize,
        progress: &mut impl Progress,
        queued: &impl Promised,
    ) {
        let segment = self.arena.segment_size() as u64;
        while budget > 0 {
            let mut victim = match self.victim {
                Some(v) => v,
                None => {
                    let dead = self.arena.dead_bytes();
                    let used = dead + self.arena.live_bytes();
                    if 2 * dead <= self.arena.live_bytes() || dead < segment || used < self.quiet_until {
                        return;
                    }
                    match self.arena.compaction_victim() {
                        // Evacuate only a segment at most two-thirds live:
                        // copying more than twice what it frees does not pay.
                        Some((slot, used)) if self.arena.segment_live(slot) <= used / 3 * 2 => Victim {
                            slot,
                            cursor: 0,
                            end: used,
                        },
                        _ => {
                            // Look again once another segment's worth is used.
                            self.quiet_until = used + segment;
                            return;
                        }
                    }
                }
            };
            while victim.cursor < victim.end && budget > 0 && self.arena.segment_live(victim.slot) > 0 {
                let offset = self.arena.offset(victim.slot, victim.cursor);
                let rec = self.arena.record(offset);
                let size = rec.size();
                let live = match rec.kind {
                    RecordKind::Put => self.index.find(self.hash(rec.key), |s| s.offset() == offset),
                    _ => None,
                };
                if let Some(bucket) = live
                    && !self.relocate(offset, bucket, size, progress, queued)
                {
                    // No room to move it now; try again on a later update.
                    self.victim = Some(victim);
                    return;
                }
                victim.cursor += size as u32;
                budget = budget.saturating_sub(size);
            }
            let done = victim.cursor >= victim.end || self.arena.segment_live(victim.slot) == 0;
            self.victim = if done { None } else { Some(victim) };
        }
    }

    /// Moves the live record at `offset`, whose slot is in `bucket`, to the
    /// active segment. `false` when the arena has no room for the copy, and
    /// for the `queued` updates' records after it.
    fn relocate(
        &mut self,
        offset: u64,
        bucket: usize,
        size: usize,
        progress: &mut impl Progress,
        queued: &impl Promised,
    ) -> bool {
        if queued.bytes() > 0 {
            let sizes = std::iter::once(size).chain(queued.sizes());
            let reserved = self
                .arena
                .reserve(size + queued.bytes(), sizes, &mut || progress.released_now());
            if reserved.is_err() {
                return false;
            }
        }
        let Ok(fresh) = self.arena.allocate(size, &mut || progress.released_now()) else {
            return false;
        };
        // SAFETY: the slot below is given seq 0 (named by no entry), so
        // the copy is named by no entry until an in-place overwrite tells
        // the arena the entry's number.
        let to = unsafe { self.arena.copy_record(offset, fresh) };
        self.arena.add_live(to, size);
        self.arena.kill(offset, size);
        if let Some(slot) = self.index.get_mut(bucket) {
            slot.set_offset(to);
            // The copy is named by no entry (`copy_record` tagged it 0).
            slot.seq_lo = 0;
        }
        true
    }

    /// Every live key and value, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.index.iter().map(|slot| {
            let RecordRef { key, value, .. } = self.arena.record(slot.offset());
            (key, value)
        })
    }
}

#[cfg(test)]
impl<S: BuildHasher> StateStore<S> {
    /// Panics unless every slot agrees with the record it names, finds its
    /// way back to itself, and the live bytes are exactly the slots' records.
    fn check_index(&self) {
        let mut live = 0;
        for slot in self.index.iter() {
            let rec = self.arena.record(slot.offset());
            assert_eq!(rec.kind, RecordKind::Put);
            assert_eq!(rec.value.len(), slot.value_len as usize);
            assert_eq!(rec.seq as u32, slot.seq_lo, "slot seq of {:?}", rec.key);
            let hash = self.hash(rec.key);
            let probe = Probe::new(rec.key, hash);
            assert!(probe.may_match(slot), "slot key of {:?}", rec.key);
            assert_eq!(slot.rehash(&self.hasher), hash);
            let bucket = self.find(&probe).expect("slot's key is found");
            assert_eq!(self.index.get(bucket).map(Slot::offset), Some(slot.offset()));
            assert_eq!(self.get(rec.key), Some(rec.value));
            live += rec.size() as u64;
        }
        assert_eq!(live, self.arena.live_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::state::config::ArenaBacking;

    /// A changelog whose consumer keeps up instantly.
    #[derive(Default)]
    struct Instant(u64);
    // SAFETY: no Ring 1 reads this test's arena; the tests push (count)
    // one entry per update, after it.
    unsafe impl Progress for Instant {
        fn pushed(&self) -> u64 {
            self.0
        }
        fn released_cached(&self) -> u64 {
            self.0
        }
        fn released_now(&mut self) -> u64 {
            self.0
        }
    }

    /// A changelog whose positions the test sets.
    #[derive(Default)]
    struct Manual {
        pushed: u64,
        released: u64,
    }
    // SAFETY: as for `Instant`: no Ring 1 reads the arena.
    unsafe impl Progress for Manual {
        fn pushed(&self) -> u64 {
            self.pushed
        }
        fn released_cached(&self) -> u64 {
            self.released
        }
        fn released_now(&mut self) -> u64 {
            self.released
        }
    }

    /// Hashes every key to the same value: every lookup probes every slot,
    /// and long keys of one length agree on everything but their bytes.
    #[derive(Debug, Clone, Copy, Default)]
    struct Colliding;
    impl BuildHasher for Colliding {
        type Hasher = Colliding;
        fn build_hasher(&self) -> Colliding {
            Colliding
        }
    }
    impl std::hash::Hasher for Colliding {
        fn finish(&self) -> u64 {
            0x5eed_5eed_5eed_5eed
        }
        fn write(&mut self, _: &[u8]) {}
    }

    fn small_config() -> ArenaConfig {
        ArenaConfig {
            segment_size: 64 * 1024,
            max_bytes: 64 << 20,
            backing: ArenaBacking::Anonymous,
        }
    }

    fn small_store() -> StateStore {
        StateStore::new(&small_config(), 16).unwrap()
    }

    fn colliding_store() -> StateStore<Colliding> {
        StateStore::with_hasher(&small_config(), 16, Colliding).unwrap()
    }

    /// Keys that look alike to a careless index: zero-padded prefixes of
    /// each other, inline and long keys sharing their first 16 bytes, long
    /// keys differing only in their last byte.
    fn lookalike_keys() -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        for len in [0, 1, 2, 7, 8, 9, 15, 16, 17, 24, 40] {
            for fill in [0u8, 0xaa] {
                for last in 0..3u8 {
                    let mut key = vec![fill; len];
                    if let Some(b) = key.last_mut() {
                        *b = last;
                    }
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
            }
        }
        keys
    }

    /// Puts, overwrites (same size, then another size) and deletes every
    /// lookalike key, checking every key against a model after each step.
    fn lookalikes_stay_apart<S: BuildHasher>(mut s: StateStore<S>) {
        let keys = lookalike_keys();
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut p = Instant::default();
        let check = |s: &StateStore<S>, model: &HashMap<Vec<u8>, Vec<u8>>| {
            for key in &keys {
                assert_eq!(s.get(key), model.get(key).map(Vec::as_slice), "key {key:?}");
            }
            assert_eq!(s.len(), model.len());
            s.check_index();
        };
        for round in 0..3u8 {
            for (i, key) in keys.iter().enumerate() {
                let value = vec![round ^ i as u8; 3 + usize::from(round) * 20 + i % 5];
                s.put(key, &value, &mut p).unwrap();
                p.0 += 1;
                model.insert(key.clone(), value);
            }
            check(&s, &model);
        }
        for key in keys.iter().step_by(2) {
            assert!(s.delete(key, &mut p).unwrap().is_some());
            p.0 += 1;
            model.remove(key);
        }
        check(&s, &model);
    }

    #[test]
    fn inline_and_long_lookalike_keys_stay_apart() {
        lookalikes_stay_apart(small_store());
    }

    #[test]
    fn lookalike_keys_stay_apart_when_every_hash_collides() {
        lookalikes_stay_apart(colliding_store());
    }

    /// The in-place decision from the slot's 32 seq bits, near and across a
    /// 2^32 wrap of the changelog position: never in place while Ring 1 may
    /// read the record, in place once released.
    #[test]
    fn in_place_overwrite_waits_for_release_across_seq_wrap() {
        for start in [0, (1 << 32) - 3, 5 << 32] {
            let mut s = small_store();
            let mut p = Manual {
                pushed: start,
                released: start,
            };
            let first = s.put(b"key", b"v1", &mut p).unwrap().offset;
            p.pushed += 1;
            // Entry `start + 1` names the record and is not released.
            let moved = s.put(b"key", b"v2", &mut p).unwrap().offset;
            assert_ne!(moved, first, "overwrote a record Ring 1 may read");
            p.pushed += 1;
            p.released = p.pushed;
            let kept = s.put(b"key", b"v3", &mut p).unwrap().offset;
            assert_eq!(kept, moved, "released record not overwritten in place");
            p.pushed += 1;
            // Exactly 2^32 entries later, with a window wide enough to look
            // unreleased from the low bits alone: the header decides.
            p.pushed += 1 << 32;
            p.released = p.pushed - 10;
            let again = s.put(b"key", b"v4", &mut p).unwrap().offset;
            assert_eq!(again, kept, "an old record looked unreleased");
            p.pushed += 1;
            // That entry is not released yet: no overwrite.
            let later = s.put(b"key", b"v5", &mut p).unwrap().offset;
            assert_ne!(later, again);
            assert_eq!(s.get(b"key"), Some(&b"v5"[..]));
            s.check_index();
        }
    }

    /// After `reserve_updates`, updates of those sizes find arena room even
    /// when Ring 1 releases nothing; a reservation the limit cannot meet
    /// fails and changes no record.
    #[test]
    fn reserved_records_cannot_run_out_of_arena() {
        let config = ArenaConfig {
            max_bytes: 5 * 64 * 1024,
            ..small_config()
        };
        let mut s = StateStore::new(&config, 16).unwrap();
        let mut p = Manual::default();
        let value = [3u8; 1000];
        let size = record_size(8, 1000);
        assert_eq!(size, 1024);
        let put = |s: &mut StateStore, k: u64, p: &mut Manual| {
            s.put(&k.to_le_bytes(), &value, p).unwrap();
            p.pushed += 1;
        };
        for k in 0..64 * 3 + 10 {
            put(&mut s, k, &mut p);
        }
        // 54 more fit the active segment; 54 + 64 + 1 need two new
        // segments and one is left.
        s.reserve_updates(54, 54 * size, std::iter::repeat_n(size, 54), &mut p)
            .unwrap();
        let live = s.arena().live_bytes();
        let err = s
            .reserve_updates(119, 119 * size, std::iter::repeat_n(size, 119), &mut p)
            .unwrap_err();
        assert!(
            matches!(err, IncrementalCheckpointError::ArenaFull { .. }),
            "{err}"
        );
        assert_eq!((s.arena().live_bytes(), s.len()), (live, 64 * 3 + 10));
        // 118 fit exactly: they go in with nothing released.
        s.reserve_updates(118, 118 * size, std::iter::repeat_n(size, 118), &mut p)
            .unwrap();
        for k in 1000..1118 {
            put(&mut s, k, &mut p);
        }
        assert_eq!(s.len(), 64 * 3 + 10 + 118);
        assert!(s.put(b"one more", &value, &mut p).is_err());
        s.check_index();
    }

    #[test]
    fn put_get_delete_and_sizes() {
        let mut s = small_store();
        let mut p = Instant::default();
        s.put(b"a", b"1", &mut p).unwrap();
        s.put(b"", b"", &mut p).unwrap();
        assert_eq!(s.get(b"a"), Some(&b"1"[..]));
        assert_eq!(s.get(b""), Some(&b""[..]));
        assert_eq!(s.get(b"b"), None);
        assert!(s.delete(b"a", &mut p).unwrap().is_some());
        assert!(s.delete(b"a", &mut p).unwrap().is_none());
        assert_eq!(s.get(b"a"), None);
        assert_eq!(s.len(), 1);
        let too_big = vec![0u8; 64 * 1024];
        assert!(matches!(
            s.put(b"k", &too_big, &mut p),
            Err(IncrementalCheckpointError::RecordTooLarge { .. })
        ));
        let largest = vec![7u8; 64 * 1024 - 16 - 1];
        s.put(b"k", &largest, &mut p).unwrap();
        assert_eq!(s.get(b"k"), Some(&largest[..]));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, Vec<u8>),
        Delete(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(k, v)| Op::Put(k, v)),
            1 => any::<u8>().prop_map(Op::Delete),
        ]
    }

    /// Key `k` of a test run: 9-byte keys as before, or, with `lookalikes`,
    /// one of [`lookalike_keys`].
    fn test_key(k: u8, lookalikes: &[Vec<u8>]) -> Vec<u8> {
        match lookalikes.len() {
            0 => vec![k; 9],
            n => lookalikes[usize::from(k) % n].clone(),
        }
    }

    /// Applies `ops` to `s` and to a `HashMap`, Ring 1 lagging `lag`
    /// entries behind, and compares them.
    fn run_against_a_hashmap<S: BuildHasher>(
        mut s: StateStore<S>,
        ops: Vec<Op>,
        lag: u64,
        lookalikes: &[Vec<u8>],
    ) -> std::result::Result<(), TestCaseError> {
        struct Lagging {
            pushed: u64,
            lag: u64,
        }
        // SAFETY: as for `Instant`: no Ring 1 reads the arena.
        unsafe impl Progress for Lagging {
            fn pushed(&self) -> u64 {
                self.pushed
            }
            fn released_cached(&self) -> u64 {
                self.pushed.saturating_sub(self.lag)
            }
            fn released_now(&mut self) -> u64 {
                self.pushed.saturating_sub(self.lag)
            }
        }
        let mut p = Lagging { pushed: 0, lag };
        let mut model = HashMap::new();
        // Each key's last record and the entry that named it.
        let mut last: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    let key = test_key(k, lookalikes);
                    let seq = p.next_seq();
                    let offset = s.put(&key, &v, &mut p).unwrap().offset;
                    if let Some(&(before, named_by)) = last.get(&key) {
                        // Same place: overwritten in place (or the memory
                        // came back through recycling); either way Ring 1
                        // must have released what named it.
                        prop_assert!(offset != before || named_by <= p.released_cached());
                    }
                    last.insert(key.clone(), (offset, seq));
                    p.pushed += 1;
                    model.insert(key, v);
                }
                Op::Delete(k) => {
                    let key = test_key(k, lookalikes);
                    if s.delete(&key, &mut p).unwrap().is_some() {
                        p.pushed += 1;
                    }
                    model.remove(&key);
                }
            }
        }
        prop_assert_eq!(s.len(), model.len());
        for (k, v) in &model {
            prop_assert_eq!(s.get(k), Some(&v[..]));
        }
        let listed: HashMap<Vec<u8>, Vec<u8>> = s.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(listed, model);
        s.check_index();
        Ok(())
    }

    proptest! {
        /// The store agrees with a `HashMap` after any sequence of updates,
        /// whether Ring 1 keeps up or lags, through compaction and recycling.
        #[test]
        fn matches_a_hashmap(ops in proptest::collection::vec(op(), 1..3000), lag in 0u64..64) {
            run_against_a_hashmap(small_store(), ops, lag, &[])?;
        }

        /// The same with inline and long keys that look alike, hashed
        /// normally and with every hash colliding.
        #[test]
        fn matches_a_hashmap_with_lookalike_keys(
            ops in proptest::collection::vec(op(), 1..2000),
            lag in 0u64..64,
            collide in any::<bool>(),
        ) {
            let keys = lookalike_keys();
            if collide {
                run_against_a_hashmap(colliding_store(), ops, lag, &keys)?;
            } else {
                run_against_a_hashmap(small_store(), ops, lag, &keys)?;
            }
        }
    }

    /// Values of changing size defeat in-place updates, and cold keys
    /// scattered through every early segment keep those segments from dying
    /// on their own: only compaction can bound the arena here.
    #[test]
    fn compaction_bounds_the_arena_under_scattered_cold_keys() {
        let mut s = small_store();
        let mut p = Instant::default();
        let mut cold = 0u64;
        for i in 0..400_000u64 {
            if i % 20 == 0 && cold < 5_000 {
                s.put(&(1_000_000 + cold).to_le_bytes(), &cold.to_le_bytes(), &mut p)
                    .unwrap();
                cold += 1;
            } else {
                let value = vec![i as u8; 8 + (i % 97) as usize * 8];
                s.put(&(i % 500).to_le_bytes(), &value, &mut p).unwrap();
            }
            p.0 += 1;
        }
        let live = s.arena().live_bytes();
        let mapped = s.arena().mapped_bytes();
        assert!(
            mapped <= 2 * live + 4 * s.arena().segment_size() as u64,
            "mapped {mapped} for {live} live bytes"
        );
        for k in 0..500u64 {
            assert!(s.get(&k.to_le_bytes()).is_some());
        }
        for c in 0..cold {
            assert_eq!(s.get(&(1_000_000 + c).to_le_bytes()), Some(&c.to_le_bytes()[..]));
        }
        s.check_index();
    }

    /// Compaction moves cold records, short and long keyed, while Ring 1
    /// lags: each moved slot names the copy, keeps its key and value length,
    /// and, the copy being named by no entry, allows an in-place overwrite
    /// at once.
    #[test]
    fn relocation_keeps_slots_right() {
        let mut s = small_store();
        let mut p = Manual::default();
        let cold_key = |c: u64| {
            let mut key = c.to_le_bytes().repeat(1 + (c % 4) as usize);
            key.push(c as u8);
            key
        };
        let mut cold = Vec::new();
        let mut hot_seen = 0;
        for i in 0..200_000u64 {
            if i % 20 == 0 && cold.len() < 2_000 {
                let key = cold_key(cold.len() as u64);
                let value = vec![key.len() as u8; 1 + cold.len() % 50];
                s.put(&key, &value, &mut p).unwrap();
                cold.push((key, value));
            } else {
                let value = vec![i as u8; 8 + (i % 97) as usize * 8];
                let key = (i % 300).to_le_bytes().repeat(1 + (i % 300 % 3) as usize);
                s.put(&key, &value, &mut p).unwrap();
                hot_seen += 1;
            }
            p.pushed += 1;
            p.released = p.pushed.saturating_sub(100);
        }
        assert!(hot_seen > 0 && s.arena().live_bytes() > 0);
        s.check_index();
        let relocated: Vec<_> = cold
            .iter()
            .filter(|(key, _)| {
                let bucket = s.find(&Probe::new(key, s.hash(key)));
                bucket
                    .and_then(|b| s.index.get(b))
                    .is_some_and(|slot| slot.seq_lo == 0)
            })
            .collect();
        assert!(
            relocated.len() > cold.len() / 2,
            "compaction moved only {} cold keys",
            relocated.len()
        );
        for (key, value) in &cold {
            assert_eq!(s.get(key), Some(&value[..]));
        }
        for (key, value) in relocated {
            let at = s.get(key).map(<[u8]>::as_ptr);
            let new: Vec<u8> = value.iter().map(|b| !b).collect();
            s.put(key, &new, &mut p).unwrap();
            p.pushed += 1;
            assert_eq!(
                s.get(key).map(<[u8]>::as_ptr),
                at,
                "a moved record was not overwritten in place"
            );
            assert_eq!(s.get(key), Some(&new[..]));
        }
        s.check_index();
    }
}
