//! The Ring 0 key-value store: an open-addressing index over arena records.
//!
//! # Where bytes go
//!
//! A put of a key whose current record Ring 1 has released, and whose value
//! pads to the same record size, overwrites the value in place: no garbage,
//! no index change. Otherwise the put appends a new record and the old one
//! becomes garbage. Deletes append a tombstone (Ring 1 needs the key).
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

use hashbrown::HashTable;

use super::arena::{Arena, ArenaConfig, ArenaReader, RecordKind, RecordRef, record_size};
use crate::error::{IncrementalCheckpointError, Result};

/// Each update scans up to this many times its own size of the victim.
pub(crate) const COMPACTION_SCAN_FACTOR: usize = 4;

/// How far the changelog has come, as the store needs to know it to decide
/// what Ring 1 may still read.
pub(crate) trait Progress {
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
}

/// The segment being evacuated and how far.
#[derive(Debug, Clone, Copy)]
struct Victim {
    slot: u32,
    cursor: u32,
    end: u32,
}

/// Keys to arena records.
#[derive(Debug)]
pub(crate) struct StateStore {
    arena: Arena,
    /// Arena offsets of the live put records, hashed by key.
    index: HashTable<u64>,
    hasher: foldhash::fast::RandomState,
    victim: Option<Victim>,
    /// Arena bytes in use when a victim search last found nothing worth it.
    quiet_until: u64,
}

/// Where an update landed, for its changelog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) offset: u64,
    pub(crate) key_hash: u64,
}

impl StateStore {
    pub(crate) fn new(config: &ArenaConfig, expected_keys: usize) -> Result<Self> {
        Ok(Self {
            arena: Arena::new(config)?,
            index: HashTable::with_capacity(expected_keys),
            hasher: foldhash::fast::RandomState::default(),
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

    #[inline]
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn find(&self, hash: u64, key: &[u8]) -> Option<u64> {
        let arena = &self.arena;
        self.index.find(hash, |&o| arena.record(o).key == key).copied()
    }

    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let offset = self.find(self.hash(key), key)?;
        Some(self.arena.record(offset).value)
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
        let key_hash = self.hash(key);
        let seq = progress.next_seq();
        let old = self.find(key_hash, key);
        if let Some(old) = old {
            let rec = self.arena.record(old);
            if rec.size() == size
                && (rec.seq <= progress.released_cached() || rec.seq <= progress.released_now())
            {
                self.arena.overwrite_value(old, key.len(), value, seq);
                return Ok(Written {
                    offset: old,
                    key_hash,
                });
            }
        }
        let offset = self.append(RecordKind::Put, key, value, seq, size, progress)?;
        self.arena.add_live(offset, size);
        match old {
            Some(old) => {
                let old_size = self.arena.record(old).size();
                self.arena.kill(old, old_size);
                self.set_index(key_hash, old, offset);
            }
            None => {
                let (arena, hasher) = (&self.arena, &self.hasher);
                self.index
                    .insert_unique(key_hash, offset, |&o| hasher.hash_one(arena.record(o).key));
            }
        }
        self.compact(COMPACTION_SCAN_FACTOR * size, progress);
        Ok(Written { offset, key_hash })
    }

    /// Removes `key`, writing a tombstone for Ring 1. `Ok(None)` when the key
    /// is absent (nothing to log). Nothing changes on error.
    pub(crate) fn delete(&mut self, key: &[u8], progress: &mut impl Progress) -> Result<Option<Written>> {
        let size = self.check_size(key.len(), 0)?;
        let key_hash = self.hash(key);
        let Some(old) = self.find(key_hash, key) else {
            return Ok(None);
        };
        let seq = progress.next_seq();
        let offset = self.append(RecordKind::Tombstone, key, &[], seq, size, progress)?;
        let old_size = self.arena.record(old).size();
        self.arena.kill(old, old_size);
        if let Ok(entry) = self.index.find_entry(key_hash, |&o| o == old) {
            entry.remove();
        }
        self.compact(COMPACTION_SCAN_FACTOR * size, progress);
        Ok(Some(Written { offset, key_hash }))
    }

    /// Writes an epoch's commit payload for Ring 1. Nothing changes on error.
    pub(crate) fn commit_record(&mut self, payload: &[u8], progress: &mut impl Progress) -> Result<u64> {
        let size = self.check_size(payload.len(), 0)?;
        let seq = progress.next_seq();
        self.append(RecordKind::Commit, payload, &[], seq, size, progress)
    }

    fn append(
        &mut self,
        kind: RecordKind,
        key: &[u8],
        value: &[u8],
        seq: u64,
        size: usize,
        progress: &mut impl Progress,
    ) -> Result<u64> {
        let offset = self.arena.allocate(size, &mut || progress.released_now())?;
        self.arena.write(offset, kind, key, value, seq);
        Ok(offset)
    }

    fn set_index(&mut self, key_hash: u64, old: u64, new: u64) {
        if let Some(slot) = self.index.find_mut(key_hash, |&o| o == old) {
            *slot = new;
        }
    }

    /// Evacuates live records from the emptiest sealed segment, scanning at
    /// most `budget` bytes of it.
    fn compact(&mut self, mut budget: usize, progress: &mut impl Progress) {
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
                let key_hash = self.hash(rec.key);
                let live =
                    rec.kind == RecordKind::Put && self.index.find(key_hash, |&o| o == offset).is_some();
                if live && !self.relocate(offset, key_hash, size, progress) {
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

    /// Moves the live record at `offset` to the active segment. `false` when
    /// the arena has no room for the copy.
    fn relocate(&mut self, offset: u64, key_hash: u64, size: usize, progress: &mut impl Progress) -> bool {
        let Ok(to) = self.arena.allocate(size, &mut || progress.released_now()) else {
            return false;
        };
        self.arena.copy_record(offset, to, size);
        self.arena.add_live(to, size);
        self.arena.kill(offset, size);
        self.set_index(key_hash, offset, to);
        true
    }

    /// Every live key and value, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.index.iter().map(|&o| {
            let RecordRef { key, value, .. } = self.arena.record(o);
            (key, value)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::state::arena::ArenaBacking;

    /// A changelog whose consumer keeps up instantly.
    #[derive(Default)]
    struct Instant(u64);
    impl Progress for Instant {
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

    fn small_store() -> StateStore {
        let config = ArenaConfig {
            segment_size: 64 * 1024,
            max_bytes: 64 << 20,
            backing: ArenaBacking::Anonymous,
        };
        StateStore::new(&config, 16).unwrap()
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

    proptest! {
        /// The store agrees with a `HashMap` after any sequence of updates,
        /// whether Ring 1 keeps up or lags, through compaction and recycling.
        #[test]
        fn matches_a_hashmap(ops in proptest::collection::vec(op(), 1..3000), lag in 0u64..64) {
            struct Lagging { pushed: u64, lag: u64 }
            impl Progress for Lagging {
                fn pushed(&self) -> u64 { self.pushed }
                fn released_cached(&self) -> u64 { self.pushed.saturating_sub(self.lag) }
                fn released_now(&mut self) -> u64 { self.pushed.saturating_sub(self.lag) }
            }
            let mut s = small_store();
            let mut p = Lagging { pushed: 0, lag };
            let mut model = HashMap::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        let key = [k; 9];
                        s.put(&key, &v, &mut p).unwrap();
                        p.pushed += 1;
                        model.insert(key.to_vec(), v);
                    }
                    Op::Delete(k) => {
                        let key = [k; 9];
                        if s.delete(&key, &mut p).unwrap().is_some() {
                            p.pushed += 1;
                        }
                        model.remove(&key[..]);
                    }
                }
            }
            prop_assert_eq!(s.len(), model.len());
            for (k, v) in &model {
                prop_assert_eq!(s.get(k), Some(&v[..]));
            }
            let listed: HashMap<Vec<u8>, Vec<u8>> = s.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            prop_assert_eq!(listed, model);
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
    }
}
