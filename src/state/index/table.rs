//! [`Table`]: one open-addressing table of [`Slot`]s with a fingerprint
//! byte per bucket, probed linearly. It never grows; the
//! [`Index`](super::Index) grows by moving slots into a larger one.

use std::hash::BuildHasher;
use std::io;
use std::ptr::NonNull;
use std::sync::Arc;

use memmap2::MmapMut;

use super::slot::{LINE_SLOTS, LineProbe, Slot, fingerprint};
use crate::state::prefetch::prefetch;
use crate::state::prepare::{Mapping, Memory};

/// The fewest slots a table has: one page.
pub(super) const MIN_BUCKETS: usize = 4096 / std::mem::size_of::<Slot>();

/// A power of two of [`Slot`]s and as many fingerprints, in anonymous
/// memory: zero is empty, so a fresh mapping is an empty table.
pub(super) struct Table {
    /// The slots, `mask + 1` of them, in `maps[0]`.
    slots: NonNull<Slot>,
    /// One [`fingerprint`] per bucket, 0 where the slot is empty, in
    /// `maps[1]`.
    prints: NonNull<u8>,
    /// Buckets minus one.
    mask: usize,
    len: usize,
    /// The mappings the pointers point into. Shared only with the helper
    /// thread, which faults pages in (`MADV_POPULATE_WRITE`: it never
    /// reads or writes their bytes) and unmaps them once the table is
    /// retired; every access to the bytes goes through this table.
    maps: [Mapping; 2],
}

// SAFETY: the table owns what its pointers point into (kept alive by
// `maps`); it is moved between threads as a whole, and shared only as
// `&Table`, through which the bytes are only read (writes take
// `&mut self`), like a `Vec`.
unsafe impl Send for Table {}
// SAFETY: as above.
unsafe impl Sync for Table {}

impl Table {
    /// The memory a table of `buckets` buckets maps: its slots (on huge
    /// pages where granted: lookups land at random across them) and its
    /// fingerprints.
    pub(super) fn memory(buckets: usize) -> io::Result<[Option<Memory>; 2]> {
        let len = buckets
            .checked_mul(std::mem::size_of::<Slot>())
            .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "index too large"))?;
        Ok([
            Some(Memory::Anonymous {
                len,
                huge_pages: true,
            }),
            Some(Memory::Anonymous {
                len: buckets,
                huge_pages: false,
            }),
        ])
    }

    /// Maps an empty table of `buckets` buckets (a power of two, at least
    /// [`MIN_BUCKETS`]); the kernel provides its pages as they are first
    /// touched. `huge_pages`: on transparent huge pages where granted (a
    /// first touch then zeroes 2 MiB at once, which takes a long while).
    pub(super) fn map(buckets: usize, huge_pages: bool) -> io::Result<Self> {
        let [slots, prints] = Self::memory(buckets)?;
        let slots = slots.map(|m| m.with_huge_pages(huge_pages));
        let map = |m: Option<Memory>| m.map_or(Ok(None), |m| m.map(false).map(Some));
        Self::from_maps(buckets, [map(slots)?, map(prints)?])
            .map_err(|_| io::Error::other("index mapping of the wrong size"))
    }

    /// A table of `buckets` buckets in `maps` (as [`memory`](Self::memory)
    /// describes them, zeroed); the maps back if they are not that.
    pub(super) fn from_maps(
        buckets: usize,
        maps: [Option<MmapMut>; 2],
    ) -> Result<Self, [Option<MmapMut>; 2]> {
        let fits = buckets.is_power_of_two()
            && buckets >= MIN_BUCKETS
            && maps[0].as_ref().map(|m| m.len()) == Some(buckets * std::mem::size_of::<Slot>())
            && maps[1].as_ref().map(|m| m.len()) == Some(buckets);
        let [Some(mut slots), Some(mut prints)] = maps else {
            return Err(maps);
        };
        // A mapping's pointer is page-aligned, so aligned for `Slot`, and
        // never null.
        match (
            fits,
            NonNull::new(slots.as_mut_ptr().cast::<Slot>()),
            NonNull::new(prints.as_mut_ptr()),
        ) {
            (true, Some(slot_ptr), Some(print_ptr)) => Ok(Self {
                slots: slot_ptr,
                prints: print_ptr,
                mask: buckets - 1,
                len: 0,
                maps: [Mapping::Owned(slots), Mapping::Owned(prints)],
            }),
            _ => Err([Some(slots), Some(prints)]),
        }
    }

    /// The table, its mappings now shared, and handles on them for the
    /// helper to fault in. Allocates.
    pub(super) fn shared(self) -> (Self, [Arc<MmapMut>; 2]) {
        let [slots, prints] = self.maps;
        let ((slots, a), (prints, b)) = (slots.shared(), prints.shared());
        (
            Self {
                maps: [slots, prints],
                ..self
            },
            [a, b],
        )
    }

    /// Gives up the table, keeping only its mappings (to unmap).
    pub(super) fn into_maps(self) -> [Mapping; 2] {
        self.maps
    }

    pub(super) fn buckets(&self) -> usize {
        self.mask + 1
    }

    pub(super) fn mask(&self) -> usize {
        self.mask
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(super) fn slots(&self) -> &[Slot] {
        // SAFETY: `slots` points to `buckets` slots in `maps[0]`, which
        // lives as long as `self`; mapped memory is initialised, and a
        // `Slot` (plain integers, no padding) is valid for any bytes; the
        // borrow of `self` excludes a mutable view.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr(), self.buckets()) }
    }

    #[inline]
    fn slots_mut(&mut self) -> &mut [Slot] {
        // SAFETY: as in `slots`; `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.slots.as_ptr(), self.buckets()) }
    }

    #[inline]
    pub(super) fn prints(&self) -> &[u8] {
        // SAFETY: as in `slots`, for the `buckets` bytes of `maps[1]`.
        unsafe { std::slice::from_raw_parts(self.prints.as_ptr(), self.buckets()) }
    }

    #[inline]
    fn prints_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `slots_mut`.
        unsafe { std::slice::from_raw_parts_mut(self.prints.as_ptr(), self.buckets()) }
    }

    /// The slot in bucket `bucket` modulo the table: no bounds check,
    /// since the mask keeps it inside (a probe loop pays nothing per step).
    #[inline(always)]
    pub(super) fn slot_at(&self, bucket: usize) -> &Slot {
        let i = bucket & self.mask;
        debug_assert!(i < self.buckets());
        // SAFETY: `i <= mask`, and the table has `mask + 1` slots at
        // `slots`, alive as long as `self` and initialised (see `slots`).
        unsafe { &*self.slots.as_ptr().add(i) }
    }

    /// The fingerprint of bucket `bucket` modulo the table, unchecked as
    /// in [`slot_at`](Self::slot_at).
    #[inline(always)]
    fn print_at(&self, bucket: usize) -> u8 {
        let i = bucket & self.mask;
        debug_assert!(i < self.buckets());
        // SAFETY: as in `slot_at`, for the `mask + 1` bytes at `prints`.
        unsafe { *self.prints.as_ptr().add(i) }
    }

    /// Where the probe for `hash` starts: the first slot of its home line.
    #[inline]
    pub(super) fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask & !(LINE_SLOTS - 1)
    }

    /// The bucket of the first slot from `start` for which `eq` holds;
    /// `None` at the first empty slot.
    #[inline]
    pub(super) fn probe(&self, start: usize, mut eq: impl FnMut(&Slot) -> bool) -> Option<usize> {
        let mut bucket = start & self.mask;
        // The table is never full, so the probe meets an empty slot.
        loop {
            let slot = self.slot_at(bucket);
            if slot.is_empty() {
                return None;
            }
            if eq(slot) {
                return Some(bucket);
            }
            bucket = (bucket + 1) & self.mask;
        }
    }

    /// Whether a fingerprint from `start` to the first empty bucket is
    /// `hash`'s; reads only the fingerprints.
    #[inline]
    pub(super) fn may_hold_from(&self, start: usize, hash: u64) -> bool {
        let wanted = fingerprint(hash);
        let mut bucket = start & self.mask;
        loop {
            match self.print_at(bucket) {
                0 => return false,
                seen if seen == wanted => return true,
                _ => bucket = (bucket + 1) & self.mask,
            }
        }
    }

    /// One step of a lookup that must not wait for memory: the `N` slots
    /// from `first`, tested with no branch per slot (which slot of a line
    /// holds a key is random, so a branch on it would be mispredicted
    /// about every other time). `eq` is called on every one of them, empty
    /// or not, and must be a pure comparison; an empty slot never matches.
    /// A step that runs off its slots starts loading the next two lines.
    #[inline(always)]
    pub(super) fn probe_lines<const N: usize>(
        &self,
        first: usize,
        mut eq: impl FnMut(&Slot) -> bool,
    ) -> LineProbe {
        let slots = self.slots();
        let first = first & self.mask;
        // Bit `i`: the slot `i` buckets on from `first` matches / is empty.
        let (mut matched, mut empty) = (0u32, 0u32);
        let mut test = |i: usize, slot: &Slot| {
            empty |= u32::from(slot.is_empty()) << i;
            matched |= u32::from(eq(slot)) << i;
        };
        match slots.get(first..).and_then(<[Slot]>::first_chunk::<N>) {
            Some(lines) => lines.iter().enumerate().for_each(|(i, slot)| test(i, slot)),
            // The lines wrap around the end of the table.
            None => (0..N).for_each(|i| test(i, self.slot_at(first + i))),
        }
        let ends = (matched & !empty) | empty;
        if ends == 0 {
            let next = (first + N) & self.mask;
            prefetch(self.line_address(next));
            prefetch(self.line_address(next + LINE_SLOTS));
            return LineProbe::Next(next);
        }
        let at = ends.trailing_zeros();
        if empty >> at & 1 == 0 {
            LineProbe::Found((first + at as usize) & self.mask)
        } else {
            LineProbe::Absent
        }
    }

    /// The address of bucket `bucket`'s slot (taken modulo the table), for
    /// a prefetch.
    #[inline]
    pub(super) fn line_address(&self, bucket: usize) -> usize {
        self.slots.as_ptr().addr() + (bucket & self.mask) * std::mem::size_of::<Slot>()
    }

    /// The address of bucket `bucket`'s fingerprint, for a prefetch.
    #[inline]
    pub(super) fn print_address(&self, bucket: usize) -> usize {
        self.prints.as_ptr().addr() + (bucket & self.mask)
    }

    /// The slot in `bucket`, if the bucket exists and holds one.
    #[inline]
    pub(super) fn get(&self, bucket: usize) -> Option<&Slot> {
        self.slots().get(bucket).filter(|slot| !slot.is_empty())
    }

    /// The slot in `bucket`, if the bucket exists and holds one.
    #[inline]
    pub(super) fn get_mut(&mut self, bucket: usize) -> Option<&mut Slot> {
        self.slots_mut().get_mut(bucket).filter(|slot| !slot.is_empty())
    }

    /// The bucket of the first slot from `start` for which `eq` holds, and
    /// that slot, to change in place; `hint`, a bucket where the key was
    /// seen, is tried first (a stale one is merely not taken).
    #[inline(always)]
    pub(super) fn find_mut(
        &mut self,
        start: usize,
        hint: Option<usize>,
        mut eq: impl FnMut(&Slot) -> bool,
    ) -> Option<(usize, &mut Slot)> {
        let bucket = match hint {
            Some(bucket) if self.get(bucket).is_some_and(&mut eq) => bucket,
            _ => self.probe(start, eq)?,
        };
        self.slots_mut().get_mut(bucket).map(|slot| (bucket, slot))
    }

    /// Adds `slot`, whose key the table does not hold and whose hash is
    /// `hash`, in the first empty bucket from its home; returns that
    /// bucket. The caller keeps the table below full.
    #[inline]
    pub(super) fn insert(&mut self, hash: u64, slot: Slot) -> usize {
        debug_assert!(!slot.is_empty() && self.len < self.mask);
        let bucket = self.first_empty_from(self.home(hash));
        self.slots_mut()[bucket] = slot;
        self.prints_mut()[bucket] = fingerprint(hash);
        self.len += 1;
        bucket
    }

    /// The first empty bucket from `start` on (the table is never full).
    /// Reads the slots, not the fingerprints: an insert has just probed
    /// the same run of slots, which the cache holds.
    #[inline]
    pub(super) fn first_empty_from(&self, start: usize) -> usize {
        let mut bucket = start & self.mask;
        while !self.slot_at(bucket).is_empty() {
            bucket = (bucket + 1) & self.mask;
        }
        bucket
    }

    /// Empties `bucket` and returns its slot, without moving the slots
    /// after it (an index migrating out of this table keeps its probes
    /// right in another way).
    #[inline]
    pub(super) fn take(&mut self, bucket: usize) -> Option<Slot> {
        let slot = *self.get(bucket)?;
        self.slots_mut()[bucket] = Slot::EMPTY;
        self.prints_mut()[bucket] = 0;
        self.len -= 1;
        Some(slot)
    }

    /// Removes the slot in `bucket` (which must hold one), shifting the
    /// slots after it back towards their homes, as `hasher` gives them
    /// (backward-shift deletion: the table never holds tombstones).
    pub(super) fn remove(&mut self, bucket: usize, hasher: &impl BuildHasher) {
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
                self.prints_mut()[hole] = self.prints()[next];
                hole = next;
            }
        }
        self.slots_mut()[hole] = Slot::EMPTY;
        self.prints_mut()[hole] = 0;
        self.len -= 1;
    }

    /// Every slot, in bucket order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.slots().iter().filter(|slot| !slot.is_empty())
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("buckets", &self.buckets())
            .field("len", &self.len)
            .finish()
    }
}
