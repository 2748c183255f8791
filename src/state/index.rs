//! The Ring 0 index: an open-addressing table of 32-byte slots, one per
//! live key, that finds a key's arena record without reading the arena.
//!
//! # Layout
//!
//! The slots are one flat array in anonymous memory, two to a 64-byte
//! cache line, probed linearly from the first slot of the key's home line
//! (`hash & mask`, rounded down to a line). A slot is empty when its `loc`
//! word is zero, so fresh pages from the kernel are an empty table and
//! nothing is written to clear one. A key is found by comparing whole
//! slots: no separate control bytes, so a lookup of a key in its home line
//! touches that one cache line, and a prefetch of it is all a later update
//! of the key needs. That line is the first thing an update waits for once
//! the state outgrows the caches, so it is what this layout optimises. The
//! table is kept at most three-quarters full, and usually much less (it
//! doubles past that): at W1's 38%, 93% of keys are in their home line and
//! 99.7% within the two after it. A lookup that cannot wait for memory
//! goes in steps ([`probe_prefetched`](Index::probe_prefetched)), each
//! prefetching the lines the next one reads.
//!
//! # Fingerprints
//!
//! Beside the slots, one byte per bucket holds 7 bits of the hash of the
//! key in that slot (0: empty): 1/32 of the slots' size, so it stays in
//! the cache when they do not (512 KiB at W1). Updates never read it; a
//! read ([`may_hold`](Index::may_hold)) scans it from the key's home first
//! and, for a key the table does not hold, almost always answers without
//! touching a slot, so a lookup that misses costs no DRAM access.
//!
//! # Deletes
//!
//! A delete shifts the slots after it back into the hole (backward-shift
//! deletion), as far as their home slots allow: the table never holds
//! tombstones, so endless inserts and deletes of changing keys keep
//! lookups as short as a fresh table's. A slot's home is recomputed from
//! the key it holds; only deletes and growth rehash.
//!
//! # Buckets
//!
//! A slot's position (its bucket) is stable until the next insert (which
//! may grow the table) or delete (which may shift slots back). Callers
//! that keep a bucket across updates keep it as a hint, and check that the
//! slot still holds their key before using it.

use std::hash::BuildHasher;
use std::io;

use memmap2::{MmapMut, MmapOptions};

use super::prefetch::prefetch;

/// Keys up to this long are held in their slot itself.
pub(crate) const INLINE_KEY: usize = 16;
/// [`Slot::loc`] keeps the key tag above this bit and the offset below.
const TAG_SHIFT: u32 = 59;
/// The key tag of a key longer than [`INLINE_KEY`]. A shorter key is tagged
/// with its length plus one; tag 0 marks an empty slot.
pub(crate) const LONG_KEY: u64 = 31;

/// The fewest slots a table has: one page.
const MIN_BUCKETS: usize = 4096 / std::mem::size_of::<Slot>();
/// Slots in a 64-byte cache line (the table starts on a page).
const LINE_SLOTS: usize = 64 / std::mem::size_of::<Slot>();

/// One index entry: where a key's live put record is, and enough of the
/// record that a put of the key can decide to overwrite it in place, and a
/// get can return its value, without reading the record. At W1 scale the
/// arena is far larger than the caches, so that read would be a cache miss
/// after the one on the slot itself. 32 bytes, aligned, so that a slot
/// never straddles two cache lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(32))]
pub(crate) struct Slot {
    /// A key of up to [`INLINE_KEY`] bytes, zero-padded; for a longer key,
    /// `hash | len << 64` as a native-endian `u128` (the key itself is
    /// compared in the arena).
    pub(crate) key: [u8; INLINE_KEY],
    /// `tag << TAG_SHIFT | offset >> 3`; 0 in an empty slot. Arena offsets
    /// are 8-aligned and below 2^62 (fewer than 2^32 segments of at most
    /// 2^30 bytes), so 59 bits hold them.
    loc: u64,
    /// The record's value length.
    pub(crate) value_len: u32,
    /// The low 32 bits of the record's changelog position (`seq`).
    pub(crate) seq_lo: u32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 32);

impl Slot {
    const EMPTY: Slot = Slot {
        key: [0; INLINE_KEY],
        loc: 0,
        value_len: 0,
        seq_lo: 0,
    };

    /// A slot for a key in its index form (`key`, `tag`: see
    /// [`inline_tag`] and [`LONG_KEY`]) whose record is at `offset`.
    #[inline]
    pub(crate) fn new(key: [u8; INLINE_KEY], tag: u64, offset: u64, value_len: usize, seq: u64) -> Self {
        debug_assert!(tag != 0 && tag <= LONG_KEY);
        let mut slot = Slot {
            key,
            loc: tag << TAG_SHIFT,
            value_len: value_len as u32,
            seq_lo: seq as u32,
        };
        slot.set_offset(offset);
        slot
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.loc == 0
    }

    #[inline]
    pub(crate) fn offset(&self) -> u64 {
        (self.loc & ((1 << TAG_SHIFT) - 1)) << 3
    }

    #[inline]
    pub(crate) fn set_offset(&mut self, offset: u64) {
        debug_assert!(offset.is_multiple_of(8) && offset < 1 << 62);
        self.loc = self.loc & !((1 << TAG_SHIFT) - 1) | offset >> 3;
    }

    #[inline]
    pub(crate) fn tag(&self) -> u64 {
        self.loc >> TAG_SHIFT
    }

    /// The key's hash, as the store computed it with `hasher`, without
    /// reading the arena (for deletes and growth, which move slots).
    pub(crate) fn rehash(&self, hasher: &impl BuildHasher) -> u64 {
        match self.tag() {
            LONG_KEY => u128::from_ne_bytes(self.key) as u64,
            tag => hasher.hash_one(&self.key[..(tag as usize - 1).min(INLINE_KEY)]),
        }
    }
}

/// The tag of a key of `len` bytes, at most [`INLINE_KEY`].
#[inline]
pub(crate) const fn inline_tag(len: usize) -> u64 {
    len as u64 + 1
}

/// How far [`Index::probe_prefetched`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineProbe {
    /// The slot in this bucket matched.
    Found(usize),
    /// An empty slot came first: the table does not hold the key.
    Absent,
    /// The lines ended first; the probe goes on from this bucket, whose
    /// line and the next are on their way into the cache.
    Next(usize),
}

impl LineProbe {
    /// The bucket where the key was found, if it was.
    #[inline]
    pub(crate) fn found(self) -> Option<usize> {
        match self {
            LineProbe::Found(bucket) => Some(bucket),
            _ => None,
        }
    }
}

/// The table: a power of two of [`Slot`]s in anonymous memory.
#[derive(Debug)]
pub(crate) struct Index {
    map: MmapMut,
    /// One [`fingerprint`] per bucket, 0 where the slot is empty.
    fingerprints: MmapMut,
    /// Buckets minus one.
    mask: usize,
    len: usize,
    /// How many keys fit before the table grows: three-quarters of it
    /// (kept, not computed: every update checks it).
    max_len: usize,
}

impl Index {
    /// A table with room for `keys` keys before it grows.
    pub(crate) fn with_capacity(keys: usize) -> io::Result<Self> {
        let buckets = buckets_for(keys);
        Ok(Self {
            map: map_slots(buckets)?,
            fingerprints: map_fingerprints(buckets)?,
            mask: buckets - 1,
            len: 0,
            max_len: buckets - buckets / 4,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn buckets(&self) -> usize {
        self.mask + 1
    }

    #[inline]
    fn slots(&self) -> &[Slot] {
        let slots = self.map.as_ptr().cast::<Slot>();
        // SAFETY: the map is page-aligned (so aligned for `Slot` and not
        // null: telling the compiler saves a test on every lookup) and
        // `buckets * 32` bytes long; a `Slot` is plain integers with no
        // padding, valid for any bytes; the borrow of `self` keeps the map
        // alive and unaliased by a mutable view.
        unsafe {
            std::hint::assert_unchecked(!slots.is_null());
            std::slice::from_raw_parts(slots, self.buckets())
        }
    }

    #[inline]
    fn slots_mut(&mut self) -> &mut [Slot] {
        let buckets = self.buckets();
        let slots = self.map.as_mut_ptr().cast::<Slot>();
        // SAFETY: as in `slots`; the mutable borrow of `self` makes this
        // the only view of the map.
        unsafe {
            std::hint::assert_unchecked(!slots.is_null());
            std::slice::from_raw_parts_mut(slots, buckets)
        }
    }

    /// Where the probe for `hash` starts: the first slot of its home line.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask & !(LINE_SLOTS - 1)
    }

    /// The bucket of the first slot, probing from `hash`'s home, for which
    /// `eq` holds; `None` at the first empty slot.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(&Slot) -> bool) -> Option<usize> {
        let slots = self.slots();
        let mut bucket = self.home(hash);
        // The table is never full, so the probe meets an empty slot.
        loop {
            let slot = &slots[bucket];
            if slot.is_empty() {
                return None;
            }
            if eq(slot) {
                return Some(bucket);
            }
            bucket = (bucket + 1) & self.mask;
        }
    }

    /// Whether the table may hold a key whose hash is `hash`: `false` when
    /// no fingerprint from its home to the first empty bucket matches, so
    /// that a lookup of an absent key reads no slot. Reads only the
    /// fingerprints.
    #[inline]
    pub(crate) fn may_hold(&self, hash: u64) -> bool {
        let wanted = fingerprint(hash);
        let mut bucket = self.home(hash);
        loop {
            match self.fingerprints[bucket] {
                0 => return false,
                seen if seen == wanted => return true,
                _ => bucket = (bucket + 1) & self.mask,
            }
        }
    }

    /// [`find`](Self::find) for a caller that must not wait for memory,
    /// in steps that read only lines already on their way into the cache:
    /// the first step (`from` is `None`) probes `hash`'s home line, which
    /// [`prefetch`](Self::prefetch) loaded; a later one probes the two
    /// lines from `from`, which the step before loaded. A step that runs
    /// off its lines starts loading the next two and says where to go on.
    /// `from` may be stale (from before the table changed): the answer is
    /// then merely useless.
    ///
    /// A step tests every slot of its lines, with no branch per slot, and
    /// then takes the first that matches or is empty: which slot of a line
    /// holds a key is random, so a branch on it would be mispredicted about
    /// every other time. `eq` is therefore called on every slot of the
    /// lines, empty or not, and must be a pure comparison; an empty slot
    /// never matches, whatever `eq` says.
    #[inline(always)]
    pub(crate) fn probe_prefetched(
        &self,
        hash: u64,
        from: Option<usize>,
        eq: impl FnMut(&Slot) -> bool,
    ) -> LineProbe {
        match from {
            None => self.probe_lines::<LINE_SLOTS>(self.home(hash), eq),
            Some(from) => self.probe_lines::<{ 2 * LINE_SLOTS }>(from & self.mask, eq),
        }
    }

    /// One step of [`probe_prefetched`](Self::probe_prefetched): the `N`
    /// slots from `first`.
    #[inline(always)]
    fn probe_lines<const N: usize>(&self, first: usize, mut eq: impl FnMut(&Slot) -> bool) -> LineProbe {
        let slots = self.slots();
        // Bit `i`: the slot `i` buckets on from `first` matches / is empty.
        let (mut matched, mut empty) = (0u32, 0u32);
        let mut test = |i: usize, slot: &Slot| {
            empty |= u32::from(slot.is_empty()) << i;
            matched |= u32::from(eq(slot)) << i;
        };
        match slots.get(first..).and_then(<[Slot]>::first_chunk::<N>) {
            Some(lines) => lines.iter().enumerate().for_each(|(i, slot)| test(i, slot)),
            // The lines wrap around the end of the table.
            None => (0..N).for_each(|i| test(i, &slots[(first + i) & self.mask])),
        }
        let ends = (matched & !empty) | empty;
        if ends == 0 {
            let next = (first + N) & self.mask;
            prefetch(std::ptr::from_ref(&slots[next]).addr());
            prefetch(std::ptr::from_ref(&slots[(next + LINE_SLOTS) & self.mask]).addr());
            return LineProbe::Next(next);
        }
        let at = ends.trailing_zeros();
        if empty >> at & 1 == 0 {
            LineProbe::Found((first + at as usize) & self.mask)
        } else {
            LineProbe::Absent
        }
    }

    /// The slot in `bucket`, if the bucket exists and holds one.
    #[inline]
    pub(crate) fn get(&self, bucket: usize) -> Option<&Slot> {
        self.slots().get(bucket).filter(|slot| !slot.is_empty())
    }

    /// [`find`](Self::find), trying first `hint`, a bucket where the key
    /// was seen: its bucket and its slot, to change in place. A slot for
    /// which `eq` holds is the key's only one, so a hint made stale by
    /// later changes or by the table's growth is merely not taken.
    #[inline(always)]
    pub(crate) fn find_mut(
        &mut self,
        hash: u64,
        hint: Option<usize>,
        mut eq: impl FnMut(&Slot) -> bool,
    ) -> Option<(usize, &mut Slot)> {
        let bucket = match hint {
            Some(bucket) if self.get(bucket).is_some_and(&mut eq) => bucket,
            _ => self.find(hash, eq)?,
        };
        self.slots_mut().get_mut(bucket).map(|slot| (bucket, slot))
    }

    /// The slot in `bucket`, if the bucket exists and holds one.
    #[inline]
    pub(crate) fn get_mut(&mut self, bucket: usize) -> Option<&mut Slot> {
        self.slots_mut().get_mut(bucket).filter(|slot| !slot.is_empty())
    }

    /// Whether a key can be added without growing the table (and so
    /// without mapping memory, which can fail).
    #[inline]
    pub(crate) fn has_room_for(&self, additional: usize) -> bool {
        additional <= self.max_len - self.len
    }

    /// Adds `slot`, whose key the table must not hold and whose hash is
    /// `hash`; returns its bucket. The caller has made room with
    /// [`reserve`](Self::reserve).
    ///
    /// # Panics
    ///
    /// If the table is full (a missing `reserve`: a bug).
    #[inline]
    pub(crate) fn insert(&mut self, hash: u64, slot: Slot) -> usize {
        debug_assert!(!slot.is_empty());
        assert!(self.has_room_for(1), "index insert without reserve");
        let bucket = self.first_empty_from(hash);
        self.slots_mut()[bucket] = slot;
        self.fingerprints[bucket] = fingerprint(hash);
        self.len += 1;
        bucket
    }

    /// The first empty bucket from `hash`'s home on (the table is never
    /// full).
    #[inline]
    fn first_empty_from(&self, hash: u64) -> usize {
        let slots = self.slots();
        let mut bucket = self.home(hash);
        while !slots[bucket].is_empty() {
            bucket = (bucket + 1) & self.mask;
        }
        bucket
    }

    /// Removes the slot in `bucket` (which must hold one), shifting the
    /// slots after it back towards their homes, as `hasher` gives them.
    pub(crate) fn remove(&mut self, bucket: usize, hasher: &impl BuildHasher) {
        debug_assert!(self.get(bucket).is_some());
        let mask = self.mask;
        let mut hole = bucket;
        let mut next = bucket;
        loop {
            next = (next + 1) & mask;
            let slot = self.slots()[next];
            if slot.is_empty() {
                break;
            }
            // The slot may fill the hole unless its home lies after the
            // hole (cyclically, up to the slot itself): then the probe for
            // its key, which starts at home, would not pass the hole.
            let home = self.home(slot.rehash(hasher));
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots_mut()[hole] = slot;
                self.fingerprints[hole] = self.fingerprints[next];
                hole = next;
            }
        }
        self.slots_mut()[hole] = Slot::EMPTY;
        self.fingerprints[hole] = 0;
        self.len -= 1;
    }

    /// Makes room for `additional` more keys, growing (and rehashing with
    /// `hasher`) if needed.
    ///
    /// # Errors
    ///
    /// When the larger table cannot be mapped; nothing changes then.
    #[inline]
    pub(crate) fn reserve(&mut self, additional: usize, hasher: &impl BuildHasher) -> io::Result<()> {
        if self.has_room_for(additional) {
            return Ok(());
        }
        self.grow(self.len.saturating_add(additional), hasher)
    }

    #[cold]
    fn grow(&mut self, keys: usize, hasher: &impl BuildHasher) -> io::Result<()> {
        let mut grown = Index::with_capacity(keys)?;
        for slot in self.iter() {
            grown.insert(slot.rehash(hasher), *slot);
        }
        *self = grown;
        Ok(())
    }

    /// Every slot, in bucket order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.slots().iter().filter(|slot| !slot.is_empty())
    }

    /// Starts loading into the cache the line a lookup of `hash` reads
    /// first, its home line, where most keys are. A hint only: it changes
    /// nothing and cannot fail.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        prefetch(self.map.as_ptr().addr() + self.home(hash) * std::mem::size_of::<Slot>());
    }
}

/// The fingerprint of a key whose hash is `hash`: 7 bits of it, never 0.
/// The top bits, which the home bucket (the low bits) does not use.
#[inline]
fn fingerprint(hash: u64) -> u8 {
    (hash >> 57) as u8 | 0x80
}

/// The buckets a table needs to hold `keys` keys at most three-quarters
/// full: a power of two, at least a page of slots.
fn buckets_for(keys: usize) -> usize {
    keys.saturating_add(keys / 3)
        .saturating_add(1)
        .checked_next_power_of_two()
        .unwrap_or(1 << (usize::BITS - 1))
        .max(MIN_BUCKETS)
}

/// Maps `buckets` empty slots: anonymous memory is zero, and a zero slot is
/// empty. The kernel provides the pages as they are first touched.
fn map_slots(buckets: usize) -> io::Result<MmapMut> {
    let len = buckets
        .checked_mul(std::mem::size_of::<Slot>())
        .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "index too large"))?;
    let map = MmapOptions::new().len(len).map_anon()?;
    // Lookups land at random across the table, so beyond a few megabytes
    // nearly every one misses the TLB with 4 KiB pages; huge pages, where
    // the system grants them (`madvise` mode), avoid that. Only advice: a
    // refusal changes nothing.
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    Ok(map)
}

/// Maps `buckets` zero (empty) fingerprints.
fn map_fingerprints(buckets: usize) -> io::Result<MmapMut> {
    MmapOptions::new().len(buckets).map_anon()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// A hasher that sends every key to the same few homes, so probes,
    /// wrap-around and backward shifts run long.
    #[derive(Clone, Copy)]
    struct Crowded;

    impl BuildHasher for Crowded {
        type Hasher = CrowdedHasher;
        fn build_hasher(&self) -> CrowdedHasher {
            CrowdedHasher(0)
        }
    }

    struct CrowdedHasher(u64);

    impl std::hash::Hasher for CrowdedHasher {
        fn finish(&self) -> u64 {
            // Homes in the last few buckets of any table, so probes wrap.
            (self.0 % 7).wrapping_sub(8)
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = self.0.wrapping_mul(31).wrapping_add(u64::from(b));
            }
        }
    }

    fn slot_for(key: u64, offset: u64) -> Slot {
        let mut inline = [0; INLINE_KEY];
        inline[..8].copy_from_slice(&key.to_le_bytes());
        Slot::new(inline, inline_tag(8), offset, 1, 0)
    }

    fn hash_of(hasher: &impl BuildHasher, key: u64) -> u64 {
        hasher.hash_one(&key.to_le_bytes()[..])
    }

    fn find(index: &Index, hasher: &impl BuildHasher, key: u64) -> Option<u64> {
        let want = slot_for(key, 0).key;
        let bucket = index.find(hash_of(hasher, key), |slot| slot.key == want)?;
        index.get(bucket).map(Slot::offset)
    }

    #[test]
    fn find_mut_takes_a_hint_only_where_the_key_is() {
        let hasher = Crowded;
        let mut index = Index::with_capacity(100).unwrap();
        for key in 0..50 {
            index.reserve(1, &hasher).unwrap();
            index.insert(hash_of(&hasher, key), slot_for(key, key * 8));
        }
        let empty = (0..index.buckets()).find(|&b| index.get(b).is_none());
        for key in 0..60u64 {
            let want = slot_for(key, 0).key;
            let hash = hash_of(&hasher, key);
            let bucket = index.find(hash, |s| s.key == want);
            let other = index.find(hash_of(&hasher, (key + 1) % 50), |_| true);
            // Right, stale (another key's slot, an empty slot, past the
            // table) or no hint: the same slot, or none for an absent key.
            for hint in [bucket, other, empty, Some(usize::MAX), None] {
                let found = index.find_mut(hash, hint, |s| s.key == want);
                assert_eq!(
                    found.as_ref().map(|(b, _)| *b),
                    bucket,
                    "key {key}, hint {hint:?}"
                );
                if let Some((_, slot)) = found {
                    assert_eq!(slot.offset(), key * 8);
                }
            }
        }
        // The slot it returns is the one in the table.
        let want = slot_for(7, 0).key;
        let (bucket, slot) = index
            .find_mut(hash_of(&hasher, 7), None, |s| s.key == want)
            .unwrap();
        slot.set_offset(4096);
        assert_eq!(index.get(bucket).map(Slot::offset), Some(4096));
        check(&index, &hasher);
    }

    /// Every slot can be found from its home without crossing an empty
    /// slot, and the count is right.
    fn check(index: &Index, hasher: &impl BuildHasher) {
        let mut seen = 0;
        for (bucket, slot) in index.slots().iter().enumerate() {
            if slot.is_empty() {
                continue;
            }
            seen += 1;
            let hash = slot.rehash(hasher);
            let found = index.find(hash, |s| s == slot);
            assert_eq!(found, Some(bucket), "slot in bucket {bucket} is unreachable");
            assert_eq!(index.fingerprints[bucket], fingerprint(hash), "bucket {bucket}");
            assert!(index.may_hold(hash));
        }
        assert_eq!(seen, index.len());
        let occupied = index.fingerprints.iter().filter(|&&f| f != 0).count();
        assert_eq!(occupied, seen, "a fingerprint without a slot");
        assert!(index.len() < index.buckets(), "the table must keep an empty slot");
    }

    fn run_model(hasher: impl BuildHasher, ops: &[(bool, u64)]) {
        let mut index = Index::with_capacity(0).unwrap();
        let mut model = HashMap::new();
        for (step, &(insert, key)) in ops.iter().enumerate() {
            let hash = hash_of(&hasher, key);
            let present = find(&index, &hasher, key);
            assert_eq!(present, model.get(&key).copied(), "key {key} at step {step}");
            match (insert, present) {
                (true, None) => {
                    let offset = step as u64 * 8;
                    index.reserve(1, &hasher).unwrap();
                    index.insert(hash, slot_for(key, offset));
                    model.insert(key, offset);
                }
                (true, Some(_)) => {
                    let bucket = index.find(hash, |s| s.key == slot_for(key, 0).key).unwrap();
                    index.get_mut(bucket).unwrap().set_offset(step as u64 * 8);
                    model.insert(key, step as u64 * 8);
                }
                (false, Some(_)) => {
                    let bucket = index.find(hash, |s| s.key == slot_for(key, 0).key).unwrap();
                    index.remove(bucket, &hasher);
                    model.remove(&key);
                }
                (false, None) => {}
            }
        }
        check(&index, &hasher);
        for (key, offset) in &model {
            assert_eq!(find(&index, &hasher, *key), Some(*offset));
        }
    }

    proptest! {
        /// Inserts, updates and deletes agree with a `HashMap`, with a real
        /// hash and with one that crowds every key into a few homes at the
        /// end of the table (long probes that wrap around, long shifts).
        #[test]
        fn agrees_with_a_map(ops in prop::collection::vec((any::<bool>(), 0u64..300), 0..2000)) {
            run_model(foldhash::fast::FixedState::with_seed(7), &ops);
            run_model(Crowded, &ops);
        }
    }

    /// Stepping with `probe_prefetched` (home line, then two lines at a
    /// time) ends where `find` does: at the key's bucket, or absent.
    fn check_steps(index: &Index, hasher: &impl BuildHasher, keys: std::ops::Range<u64>) -> usize {
        let mut longest = 0;
        for key in keys {
            let want = slot_for(key, 0).key;
            let hash = hash_of(hasher, key);
            let (mut from, mut steps) = (None, 1);
            let end = loop {
                match index.probe_prefetched(hash, from, |s| s.key == want) {
                    LineProbe::Next(next) => (from, steps) = (Some(next), steps + 1),
                    end => break end,
                }
            };
            let expected = match index.find(hash, |s| s.key == want) {
                Some(bucket) => LineProbe::Found(bucket),
                None => LineProbe::Absent,
            };
            assert_eq!(end, expected, "key {key}");
            longest = longest.max(steps);
        }
        longest
    }

    #[test]
    fn stepwise_probes_end_where_find_does() {
        let real = foldhash::fast::FixedState::with_seed(5);
        let mut index = Index::with_capacity(3000).unwrap();
        for key in 0..3000u64 {
            index.insert(hash_of(&real, key), slot_for(key, key * 8));
        }
        // Present keys and absent ones, the table 73% full (3,000 of 4,096
        // slots), near the most it holds before it grows.
        check_steps(&index, &real, 0..6000);
        // Long chains that wrap around the table's end take many steps.
        let mut crowded = Index::with_capacity(100).unwrap();
        for key in 0..100u64 {
            crowded.insert(hash_of(&Crowded, key), slot_for(key, key * 8));
        }
        assert!(check_steps(&crowded, &Crowded, 0..200) > 10);
    }

    /// The fingerprints answer most lookups of absent keys without a slot,
    /// even with the table nearly full; every present key passes.
    #[test]
    fn fingerprints_turn_away_absent_keys() {
        let hasher = foldhash::fast::FixedState::with_seed(6);
        let mut index = Index::with_capacity(3000).unwrap();
        for key in 0..3000u64 {
            index.insert(hash_of(&hasher, key), slot_for(key, 0));
        }
        assert!((0..3000).all(|key| index.may_hold(hash_of(&hasher, key))));
        let passed = (3000..13_000)
            .filter(|&key| index.may_hold(hash_of(&hasher, key)))
            .count();
        assert!(
            passed < 500,
            "{passed} of 10,000 absent keys passed the fingerprints"
        );
    }

    #[test]
    fn grows_past_three_quarters_and_keeps_every_key() {
        let hasher = foldhash::fast::FixedState::with_seed(1);
        let mut index = Index::with_capacity(0).unwrap();
        assert_eq!(index.buckets(), MIN_BUCKETS);
        for key in 0..10_000u64 {
            assert!(index.len() * 4 <= index.buckets() * 3);
            index.reserve(1, &hasher).unwrap();
            index.insert(hash_of(&hasher, key), slot_for(key, key * 8));
        }
        assert_eq!(index.len(), 10_000);
        assert_eq!(index.buckets(), 16_384);
        check(&index, &hasher);
        for key in 0..10_000u64 {
            assert_eq!(find(&index, &hasher, key), Some(key * 8));
        }
    }

    #[test]
    fn with_capacity_holds_that_many_keys_without_growing() {
        let hasher = foldhash::fast::FixedState::with_seed(2);
        for keys in [0, 1, 95, 96, 97, 200_000] {
            let mut index = Index::with_capacity(keys).unwrap();
            let buckets = index.buckets();
            assert!(index.has_room_for(keys));
            for key in 0..keys as u64 {
                index.reserve(1, &hasher).unwrap();
                index.insert(hash_of(&hasher, key), slot_for(key, 0));
            }
            assert_eq!(index.buckets(), buckets, "{keys} keys grew the table");
        }
    }

    /// Endless churn of changing keys: with backward-shift deletes the
    /// table does not fill with tombstones, so it never grows past what
    /// the live keys need.
    #[test]
    fn churn_keeps_the_table_at_its_size() {
        let hasher = foldhash::fast::FixedState::with_seed(3);
        let mut index = Index::with_capacity(1000).unwrap();
        let buckets = index.buckets();
        for key in 0..200_000u64 {
            index.reserve(1, &hasher).unwrap();
            index.insert(hash_of(&hasher, key), slot_for(key, 0));
            if key >= 1000 {
                let old = key - 1000;
                let want = slot_for(old, 0).key;
                let bucket = index.find(hash_of(&hasher, old), |s| s.key == want).unwrap();
                index.remove(bucket, &hasher);
            }
        }
        assert_eq!(index.len(), 1000);
        assert_eq!(index.buckets(), buckets);
        check(&index, &hasher);
    }

    #[test]
    fn an_empty_key_and_offset_zero_make_an_occupied_slot() {
        let hasher = foldhash::fast::FixedState::with_seed(4);
        let mut index = Index::with_capacity(1).unwrap();
        let slot = Slot::new([0; INLINE_KEY], inline_tag(0), 0, 0, 0);
        let bucket = index.insert(hasher.hash_one(&b""[..]), slot);
        assert_eq!(index.get(bucket), Some(&slot));
        assert_eq!(slot.rehash(&hasher), hasher.hash_one(&b""[..]));
        assert_eq!(index.iter().count(), 1);
    }
}
