//! The arena: segments of memory-mapped bytes holding state records.
//!
//! # Records
//!
//! Every update writes a record, 8-byte aligned, that never spans segments:
//!
//! ```text
//! 0        4          8           16        16+key_len           size
//! ├────────┼──────────┼───────────┼─────────┼──────────┼─────────┤
//! │ kind|  │ value_len│ seq       │ key     │ value    │ padding │
//! │key_len │ (u32)    │ (u64)     │         │          │ to 8    │
//! └────────┴──────────┴───────────┴─────────┴──────────┴─────────┘
//! ```
//!
//! `kind` (top two bits of the first word) is put, tombstone or commit.
//! `seq` is the changelog position after the push that last referenced the
//! record (0 for a record no entry references): once Ring 1 has finished
//! with that many entries, nothing outside Ring 0 will read the record again.
//! The arena is scratch memory, never persisted, so the header is native
//! endian.
//!
//! # Offsets
//!
//! An offset is `segment slot << shift | byte within segment`. Slots are
//! mapped on demand and never unmapped while the arena lives (they are
//! recycled instead), so a reader holding the shared half can turn any
//! offset it was handed into a pointer without locks. With fewer than 2^32
//! slots of at most 2^30 bytes, offsets are below 2^62; being 8-aligned,
//! they fit in 59 bits (the index packs a key tag above them).
//!
//! # Ownership
//!
//! [`Arena`] (the producer side, in Ring 0) owns segment bookkeeping and is
//! the only writer. [`ArenaReader`] (Ring 1) shares the mappings and reads
//! records named by changelog entries it has not yet released.
//!
//! # Soundness
//!
//! This file is where memory safety of the arena is decided. Every access
//! checks that its bytes lie inside one mapped segment, so no offset, right
//! or wrong, reaches outside the mappings; a wrong one panics. What a check
//! cannot see is Ring 1 reading a record while Ring 0 writes it, so the
//! functions that write bytes Ring 1 may read are `unsafe fn`, each with the
//! rule its caller keeps, all one rule in the end:
//!
//! **Naming rule.** Changelog entries are numbered from 1 in push order. An
//! entry numbered `n` may name a record only if Ring 0 told the arena `n`
//! (or more) for that record, when writing it ([`Arena::write`]) or when
//! overwriting its value ([`Arena::overwrite_value`]). The arena keeps,
//! per segment, the highest number it was told (`last_ref`), and recycles a
//! segment only once Ring 1 has released that many entries; a value is
//! overwritten in place only when every entry naming the record has been
//! released. So a record Ring 1 may still read is never written.
//!
//! Space for a new record is a [`Fresh`] value that only
//! [`allocate`](Arena::allocate) makes: fresh space is named by no entry,
//! so writing it races with nothing.

use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};

use memmap2::MmapMut;

use super::config::{ArenaBacking, ArenaConfig};
use super::prepare::{Memory, Preparer, Purpose, Taken};
use crate::error::{IncrementalCheckpointError, Result};

/// Bytes of a record header.
pub(crate) const HEADER_LEN: usize = 16;
const KIND_SHIFT: u32 = 30;
const KEY_LEN_MASK: u32 = (1 << KIND_SHIFT) - 1;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// A key and its value.
    Put = 0,
    /// A deleted key.
    Tombstone = 1,
    /// An epoch's commit payload (in the key bytes).
    Commit = 2,
}

/// Size in bytes of a record with these lengths, padding included.
#[inline]
pub(crate) const fn record_size(key_len: usize, value_len: usize) -> usize {
    (HEADER_LEN + key_len + value_len + 7) & !7
}

/// Records promised arena space but not yet written, in the order they will
/// be allocated: an update that moves another record first must leave room
/// for them ([`Arena::reserve`]).
pub(crate) trait Promised {
    /// Their sizes, all together.
    fn bytes(&self) -> usize;
    /// Their sizes ([`record_size`]), in allocation order.
    fn sizes(&self) -> impl Iterator<Item = usize> + '_;
}

/// Records of these sizes; `&[]` promises none.
impl<const N: usize> Promised for [usize; N] {
    fn bytes(&self) -> usize {
        self.iter().sum()
    }
    fn sizes(&self) -> impl Iterator<Item = usize> + '_ {
        self.iter().copied()
    }
}

/// Space for one record of `size` bytes just taken by
/// [`Arena::allocate`], not yet written. Only the allocator makes one, so
/// holding it proves the space is inside a mapped segment and named by no
/// changelog entry; [`Arena::write`] and [`Arena::copy_record`] consume it.
#[derive(Debug)]
#[must_use = "allocated arena space is lost unless written"]
pub(crate) struct Fresh {
    offset: u64,
    size: usize,
}

/// A record as read from the arena.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordRef<'a> {
    pub(crate) kind: RecordKind,
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
    pub(crate) seq: u64,
}

impl RecordRef<'_> {
    pub(crate) fn size(&self) -> usize {
        record_size(self.key.len(), self.value.len())
    }
}

/// The segment slot of arena offset `offset`, and the byte within that
/// segment, for segments of `1 << shift` bytes.
#[inline]
fn split_offset(offset: u64, shift: u32) -> (usize, usize) {
    ((offset >> shift) as usize, (offset & ((1 << shift) - 1)) as usize)
}

/// The mappings, shared by the writer and the reader.
struct Mappings {
    shift: u32,
    /// Base pointer of each mapped segment slot; null until mapped.
    bases: Box<[AtomicPtr<u8>]>,
    /// Owns the mappings; locked only when a segment is mapped.
    maps: Mutex<Vec<MmapMut>>,
}

impl std::fmt::Debug for Mappings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mappings")
            .field("segment_size", &(1usize << self.shift))
            .field("slots", &self.bases.len())
            .finish()
    }
}

impl Mappings {
    /// A pointer to the `len` bytes at `offset`, with `ordering` for the
    /// load of the segment's base.
    ///
    /// # Panics
    ///
    /// Unless the bytes lie inside one mapped segment: an offset no
    /// allocation made (a corrupted index or entry) stops here.
    #[inline]
    fn bytes_at(&self, offset: u64, len: usize, ordering: Ordering) -> *mut u8 {
        let (slot, within) = split_offset(offset, self.shift);
        let base = self.bases[slot].load(ordering);
        assert!(
            !base.is_null() && len <= (1 << self.shift) - within,
            "arena range {offset:#x} + {len} is not inside one mapped segment"
        );
        // SAFETY: `within < 1 << shift`, the segment's length, so the
        // pointer stays inside the segment's mapping.
        unsafe { base.add(within) }
    }

    /// Reads the record at `offset`, 8-aligned, inside one mapped segment
    /// (checked: see [`bytes_at`](Self::bytes_at)).
    ///
    /// # Safety
    ///
    /// No one may write the record's bytes while this reads them or while
    /// the returned borrow lives (a record completely written before this
    /// call, whose write happens-before it, is read as written).
    #[inline]
    unsafe fn record(&self, offset: u64, ordering: Ordering) -> RecordRef<'_> {
        assert!(
            offset.is_multiple_of(8),
            "arena offset {offset:#x} is not 8-aligned"
        );
        let p = self.bytes_at(offset, HEADER_LEN, ordering);
        // SAFETY: the header's 16 bytes are inside a mapped segment (checked
        // above) and aligned for `u32`/`u64` (an 8-aligned offset on a
        // page-aligned base); mapped memory is always initialised, and the
        // caller excludes a concurrent write.
        let (word, value_len, seq) = unsafe {
            (
                p.cast::<u32>().read(),
                p.add(4).cast::<u32>().read() as usize,
                p.add(8).cast::<u64>().read(),
            )
        };
        let key_len = (word & KEY_LEN_MASK) as usize;
        let kind = match word >> KIND_SHIFT {
            0 => RecordKind::Put,
            1 => RecordKind::Tombstone,
            _ => RecordKind::Commit,
        };
        let p = self.bytes_at(offset, HEADER_LEN + key_len + value_len, Ordering::Relaxed);
        // SAFETY: key and value are inside the same mapped segment (checked
        // just above, the base already loaded with `ordering`); initialised
        // and not written concurrently, as above.
        unsafe {
            RecordRef {
                kind,
                key: std::slice::from_raw_parts(p.add(HEADER_LEN), key_len),
                value: std::slice::from_raw_parts(p.add(HEADER_LEN + key_len), value_len),
                seq,
            }
        }
    }
}

/// Ring 1's read-only view of the arena.
#[derive(Debug, Clone)]
pub(crate) struct ArenaReader {
    maps: Arc<Mappings>,
}

impl ArenaReader {
    /// Reads the record a changelog entry names.
    ///
    /// # Panics
    ///
    /// If `offset` is not inside a mapped segment (an entry Ring 0 did not
    /// make).
    ///
    /// # Safety
    ///
    /// The entry naming `offset` must have been popped from the changelog
    /// and not yet released (its slot not yet handed back by the consumer),
    /// and the returned borrow must end before it is released: by the
    /// naming rule (module docs), the writer then neither overwrites nor
    /// recycles the record meanwhile.
    #[inline]
    pub(crate) unsafe fn record(&self, offset: u64) -> RecordRef<'_> {
        // SAFETY: no concurrent write, by the caller's guarantee; the
        // Acquire load of the segment base pairs with its Release store
        // when the segment was mapped.
        unsafe { self.maps.record(offset, Ordering::Acquire) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegState {
    /// Reusable.
    Free,
    /// Receiving appends.
    Active,
    /// Full; may hold live records.
    Sealed,
    /// No live records left; waits until Ring 1 has released every entry
    /// that names a record in it.
    Pending,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    state: SegState,
    /// Bytes appended.
    used: u32,
    /// Bytes of live put records (the latest version of a key).
    live: u32,
    /// Highest changelog entry naming a record in the segment: raised by
    /// every append and in-place overwrite, sealed or not, so the segment is
    /// recycled only after Ring 1 has released every entry that reads it.
    last_ref: u64,
}

/// Ring 0's side of the arena: allocation, writes, bookkeeping.
#[derive(Debug)]
pub(crate) struct Arena {
    maps: Arc<Mappings>,
    /// `maps.shift`, kept here too: every update computes with it, and
    /// this copy needs no load through the `Arc`.
    shift: u32,
    /// What a segment is: anonymous memory or a scratch file there.
    memory: Memory,
    /// Maps the next segment ahead of need; `None` if there is no helper.
    prep: Option<Arc<Preparer>>,
    /// Whether the next segment has been asked of the helper.
    asked: bool,
    /// Segments Ring 0 had to map itself, the helper's not being ready.
    inline_maps: u64,
    segments: Vec<Segment>,
    /// Slots free for reuse (capacity reserved for every slot).
    free: Vec<u32>,
    active: u32,
    /// Sum of `used` over non-free segments.
    used_bytes: u64,
    /// Sum of `live` over all segments.
    live_bytes: u64,
}

impl Arena {
    /// An arena with its first segment mapped and faulted in. `prep`, if
    /// any, maps later segments ahead of need.
    pub(crate) fn new(config: &ArenaConfig, prep: Option<Arc<Preparer>>) -> Result<Self> {
        config.validate()?;
        let size = config.segment_size;
        let slots = config.slots();
        let shift = size.trailing_zeros();
        let memory = match &config.backing {
            ArenaBacking::Anonymous => Memory::Anonymous {
                len: size,
                huge_pages: true,
            },
            ArenaBacking::File(dir) => Memory::File {
                dir: dir.as_path().into(),
                len: size,
            },
        };
        let mut arena = Self {
            shift,
            maps: Arc::new(Mappings {
                shift,
                bases: (0..slots).map(|_| AtomicPtr::new(ptr::null_mut())).collect(),
                maps: Mutex::new(Vec::with_capacity(slots)),
            }),
            memory,
            prep,
            asked: false,
            inline_maps: 0,
            segments: Vec::with_capacity(slots),
            free: Vec::with_capacity(slots),
            active: 0,
            used_bytes: 0,
            live_bytes: 0,
        };
        let first = arena.memory.map(true).map_err(|e| arena.map_error(e))?;
        arena.active = arena.install(first);
        arena.segments[0].state = SegState::Active;
        arena.ask_ahead();
        Ok(arena)
    }

    pub(crate) fn reader(&self) -> ArenaReader {
        ArenaReader {
            maps: Arc::clone(&self.maps),
        }
    }

    pub(crate) fn segment_size(&self) -> usize {
        1 << self.shift
    }

    /// Largest record the arena accepts.
    pub(crate) fn max_record(&self) -> usize {
        self.segment_size()
    }

    /// Bytes of mapped segments.
    pub(crate) fn mapped_bytes(&self) -> u64 {
        (self.segments.len() as u64) << self.shift
    }

    pub(crate) fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Bytes in use that no longer hold the latest version of anything.
    pub(crate) fn dead_bytes(&self) -> u64 {
        self.used_bytes - self.live_bytes
    }

    fn limit_bytes(&self) -> u64 {
        (self.maps.bases.len() as u64) << self.shift
    }

    #[inline]
    fn slot_of(&self, offset: u64) -> usize {
        split_offset(offset, self.shift).0
    }

    /// Segments Ring 0 mapped itself after the first, because the
    /// helper's was not ready (each a system call or more on an update).
    pub(crate) fn inline_maps(&self) -> u64 {
        self.inline_maps
    }

    fn map_error(&self, source: std::io::Error) -> IncrementalCheckpointError {
        IncrementalCheckpointError::Io {
            path: match &self.memory {
                Memory::Anonymous { .. } => PathBuf::from("<anonymous arena segment>"),
                Memory::File { dir, .. } => dir.to_path_buf(),
            },
            source,
        }
    }

    /// Maps a new segment, free for appends: the one the helper prepared
    /// if it is ready, else one mapped here; then asks the helper for the
    /// next. Returns its slot.
    fn map_segment(&mut self) -> Result<u32> {
        let prepared = match (&self.prep, std::mem::take(&mut self.asked)) {
            (Some(prep), true) => match prep.take(Purpose::Segment) {
                Taken::Ready([Some(map), None]) if map.len() == self.segment_size() => Some(map),
                Taken::Ready(_) | Taken::None => None,
                Taken::Pending => {
                    // Still mapping it: collected and used next time.
                    self.asked = true;
                    None
                }
            },
            _ => None,
        };
        let map = match prepared {
            Some(map) => map,
            None => {
                // On 4 KiB pages: each first touch then costs an append a
                // microsecond or so, where a huge page's would stall one
                // for a tenth of a millisecond or more.
                self.inline_maps += 1;
                let memory = self.memory.clone().with_huge_pages(false);
                memory.map(false).map_err(|e| self.map_error(e))?
            }
        };
        let slot = self.install(map);
        self.ask_ahead();
        Ok(slot)
    }

    /// Adds `map` as the next segment slot, free.
    fn install(&mut self, mut map: MmapMut) -> u32 {
        let slot = self.segments.len();
        self.maps.bases[slot].store(map.as_mut_ptr(), Ordering::Release);
        self.maps
            .maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(map);
        self.segments.push(Segment {
            state: SegState::Free,
            used: 0,
            live: 0,
            last_ref: 0,
        });
        slot as u32
    }

    /// Asks the helper for the next segment, unless one is asked for
    /// already or the address space has no room for another.
    fn ask_ahead(&mut self) {
        if let Some(prep) = &self.prep
            && !self.asked
            && self.segments.len() + 1 < self.maps.bases.len()
        {
            // Busy: asked again when the next segment is mapped.
            self.asked = prep.ask(Purpose::Segment, [Some(self.memory.clone()), None]);
        }
    }

    /// Takes `size` bytes (a multiple of 8, at most a segment) for a new
    /// record.
    ///
    /// When the active segment is full, it is sealed and appends move to a
    /// free segment: a recycled one whose entries Ring 1 has all released
    /// (`released` is asked for only then), or a newly mapped one. Nothing
    /// changes when it fails.
    pub(crate) fn allocate(&mut self, size: usize, released: &mut impl FnMut() -> u64) -> Result<Fresh> {
        assert!(
            size <= self.segment_size() && size.is_multiple_of(8),
            "arena allocation of {size} bytes"
        );
        let active = &self.segments[self.active as usize];
        if active.used as usize + size > self.segment_size() {
            let next = self.take_free_segment(released)?;
            let old = &mut self.segments[self.active as usize];
            old.state = if old.live == 0 {
                SegState::Pending
            } else {
                SegState::Sealed
            };
            self.segments[next as usize].state = SegState::Active;
            self.active = next;
        }
        let seg = &mut self.segments[self.active as usize];
        let offset = ((self.active as u64) << self.shift) | seg.used as u64;
        seg.used += size as u32;
        self.used_bytes += size as u64;
        Ok(Fresh { offset, size })
    }

    fn take_free_segment(&mut self, released: &mut impl FnMut() -> u64) -> Result<u32> {
        if self.free.is_empty() {
            self.reclaim_pending(released());
        }
        if let Some(slot) = self.free.pop() {
            return Ok(slot);
        }
        if self.segments.len() < self.maps.bases.len() {
            return self.map_segment();
        }
        Err(self.full())
    }

    fn full(&self) -> IncrementalCheckpointError {
        // Waiting helps if Ring 1 has yet to release a pending segment, or
        // if there is a segment's worth of garbage for compaction to free.
        let transient = self.dead_bytes() >= self.segment_size() as u64
            || self.segments.iter().any(|s| s.state == SegState::Pending);
        IncrementalCheckpointError::ArenaFull {
            live_bytes: self.live_bytes,
            limit_bytes: self.limit_bytes(),
            transient,
        }
    }

    /// Makes sure that records of `sizes` (`total` bytes in all), allocated
    /// in this order, will all get space: takes the released pending
    /// segments and maps new ones onto the free list, as many as the
    /// records will move on to. Until anything else allocates, those
    /// allocations cannot fail. Segments mapped before an error stay free
    /// for later; nothing else changes.
    #[inline]
    pub(crate) fn reserve(
        &mut self,
        total: usize,
        sizes: impl Iterator<Item = usize>,
        released: &mut impl FnMut() -> u64,
    ) -> Result<()> {
        let segment = self.segment_size();
        let mut room = segment - self.segments[self.active as usize].used as usize;
        if total <= room {
            return Ok(());
        }
        // The records that do not fit in the active segment go on to the
        // next one; if even all of them fit in one, a free segment is
        // enough, whatever their sizes. (Single updates queued behind each
        // other land here on every update once the active segment is
        // nearly full.)
        if total <= segment && !self.free.is_empty() {
            return Ok(());
        }
        // The segments `allocate` will move to, record by record.
        let mut needed = 0;
        for size in sizes {
            if size > room {
                needed += 1;
                room = segment;
            }
            room -= size;
        }
        if self.free.len() < needed {
            self.reclaim_pending(released());
        }
        while self.free.len() < needed {
            if self.segments.len() >= self.maps.bases.len() {
                return Err(self.full());
            }
            let slot = self.map_segment()?;
            // Capacity for every slot is reserved: no allocation.
            self.free.push(slot);
        }
        Ok(())
    }

    /// Frees pending segments whose every entry Ring 1 has released.
    fn reclaim_pending(&mut self, released: u64) {
        for (slot, seg) in self.segments.iter_mut().enumerate() {
            if seg.state == SegState::Pending && seg.last_ref <= released {
                self.used_bytes -= seg.used as u64;
                *seg = Segment {
                    state: SegState::Free,
                    used: 0,
                    live: 0,
                    last_ref: 0,
                };
                self.free.push(slot as u32);
            }
        }
    }

    /// Writes a record into the space `at`, to be named by changelog entry
    /// `seq` (0: by none), and returns its offset.
    ///
    /// # Panics
    ///
    /// If the record is larger than the space.
    ///
    /// # Safety
    ///
    /// The naming rule (module docs): no changelog entry numbered above
    /// `seq` may name the record, unless a later
    /// [`overwrite_value`](Self::overwrite_value) is told that number.
    #[inline]
    pub(crate) unsafe fn write(
        &mut self,
        at: Fresh,
        kind: RecordKind,
        key: &[u8],
        value: &[u8],
        seq: u64,
    ) -> u64 {
        let size = record_size(key.len(), value.len());
        assert!(
            size <= at.size && key.len() <= KEY_LEN_MASK as usize,
            "record of {size} bytes written into {} bytes",
            at.size
        );
        self.referenced(at.offset, seq);
        let base = self.maps.bytes_at(at.offset, at.size, Ordering::Relaxed);
        // SAFETY: `at` is space `allocate` took, inside a mapped segment
        // (and checked again above), 8-aligned, at least `size` bytes.
        // Fresh space is named by no changelog entry, so Ring 1 does not
        // read it, and `&mut self` excludes every other borrow of it.
        unsafe {
            base.cast::<u32>()
                .write(key.len() as u32 | (kind as u32) << KIND_SHIFT);
            base.add(4).cast::<u32>().write(value.len() as u32);
            base.add(8).cast::<u64>().write(seq);
            ptr::copy_nonoverlapping(key.as_ptr(), base.add(HEADER_LEN), key.len());
            ptr::copy_nonoverlapping(value.as_ptr(), base.add(HEADER_LEN + key.len()), value.len());
        }
        at.offset
    }

    /// Overwrites the value of the put record at `offset`, whose key is
    /// `key_len` bytes long, in place, to be named by changelog entry `seq`.
    ///
    /// # Panics
    ///
    /// If the record's bytes are not inside one mapped segment.
    ///
    /// # Safety
    ///
    /// * Every changelog entry that has named the record so far has been
    ///   released: Ring 1 reads it no more.
    /// * The record at `offset` is a put record of a `key_len`-byte key
    ///   whose size is `record_size(key_len, value.len())`, so the new value
    ///   ends where the old one did, give or take padding.
    /// * The naming rule, as for [`write`](Self::write).
    #[inline]
    pub(crate) unsafe fn overwrite_value(&mut self, offset: u64, key_len: usize, value: &[u8], seq: u64) {
        self.referenced(offset, seq);
        let base = self
            .maps
            .bytes_at(offset, HEADER_LEN + key_len + value.len(), Ordering::Relaxed);
        // SAFETY: the bytes are inside one mapped segment (checked above),
        // the header 8-aligned; they are the record's own (caller), which
        // Ring 1 no longer reads (caller) and `&mut self` excludes any
        // other borrow of.
        unsafe {
            base.add(4).cast::<u32>().write(value.len() as u32);
            base.add(8).cast::<u64>().write(seq);
            ptr::copy_nonoverlapping(value.as_ptr(), base.add(HEADER_LEN + key_len), value.len());
        }
    }

    #[inline]
    fn referenced(&mut self, offset: u64, seq: u64) {
        let slot = self.slot_of(offset);
        let seg = &mut self.segments[slot];
        seg.last_ref = seg.last_ref.max(seq);
    }

    /// Copies the record at `from` into the space `to`, tagged as named by
    /// no entry, and returns the copy's offset.
    ///
    /// # Panics
    ///
    /// If `from` is not a record inside one mapped segment that fits `to`.
    ///
    /// # Safety
    ///
    /// The naming rule: no changelog entry may name the copy, unless a
    /// later [`overwrite_value`](Self::overwrite_value) is told its number.
    pub(crate) unsafe fn copy_record(&mut self, from: u64, to: Fresh) -> u64 {
        let size = self.record(from).size();
        assert!(
            size <= to.size,
            "record of {size} bytes copied into {} bytes",
            to.size
        );
        let src = self.maps.bytes_at(from, size, Ordering::Relaxed);
        let dst = self.maps.bytes_at(to.offset, to.size, Ordering::Relaxed);
        // SAFETY: both ranges are inside mapped segments (checked above);
        // they do not overlap, `to` being fresh space; Ring 1 may read
        // `from` (reads do not race) but not the fresh `to`; `&mut self`
        // excludes other borrows.
        unsafe {
            ptr::copy_nonoverlapping(src, dst, size);
            dst.add(8).cast::<u64>().write(0);
        }
        to.offset
    }

    /// The address of `offset`, for a prefetch hint only: never
    /// dereferenced, so any offset will do.
    #[inline]
    pub(crate) fn address(&self, offset: u64) -> usize {
        let (slot, within) = split_offset(offset, self.shift);
        let base = self
            .maps
            .bases
            .get(slot)
            .map_or(ptr::null_mut(), |b| b.load(Ordering::Relaxed));
        base.addr().wrapping_add(within)
    }

    /// Reads a record this arena wrote.
    ///
    /// # Panics
    ///
    /// If `offset` is not 8-aligned inside a mapped segment, or the record
    /// there reaches past it: only a corrupted index could ask for that.
    #[inline]
    pub(crate) fn record(&self, offset: u64) -> RecordRef<'_> {
        // SAFETY: only Ring 0 writes arena bytes, and it cannot while
        // `&self` is borrowed; Ring 1 only reads.
        unsafe { self.maps.record(offset, Ordering::Relaxed) }
    }

    /// The value of the put record at `offset`, given its key and value
    /// lengths (the index keeps them), without reading the record's header.
    ///
    /// # Panics
    ///
    /// If the lengths reach past the record's segment, which only a
    /// corrupted index could ask for.
    #[inline]
    pub(crate) fn value(&self, offset: u64, key_len: usize, value_len: usize) -> &[u8] {
        let base = self
            .maps
            .bytes_at(offset, HEADER_LEN + key_len + value_len, Ordering::Relaxed);
        // SAFETY: the range lies inside one mapped segment (checked above),
        // whose bytes are always initialised; only Ring 0 writes them, and
        // it cannot while `&self` is borrowed.
        unsafe { std::slice::from_raw_parts(base.add(HEADER_LEN + key_len), value_len) }
    }

    /// Counts `size` bytes at `offset` as live.
    pub(crate) fn add_live(&mut self, offset: u64, size: usize) {
        let slot = self.slot_of(offset);
        self.segments[slot].live += size as u32;
        self.live_bytes += size as u64;
    }

    /// Counts the `size` live bytes at `offset` as dead.
    pub(crate) fn kill(&mut self, offset: u64, size: usize) {
        let slot = self.slot_of(offset);
        let seg = &mut self.segments[slot];
        seg.live -= size as u32;
        self.live_bytes -= size as u64;
        if seg.live == 0 && seg.state == SegState::Sealed {
            seg.state = SegState::Pending;
        }
    }

    /// The sealed segment with the fewest live bytes, if any.
    pub(crate) fn compaction_victim(&self) -> Option<(u32, u32)> {
        self.segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == SegState::Sealed)
            .min_by_key(|(_, s)| s.live)
            .map(|(slot, s)| (slot as u32, s.used))
    }

    /// Offset of byte `within` of segment `slot`.
    pub(crate) fn offset(&self, slot: u32, within: u32) -> u64 {
        (slot as u64) << self.shift | within as u64
    }

    /// Whether segment `slot` still holds live records.
    pub(crate) fn segment_live(&self, slot: u32) -> u32 {
        self.segments[slot as usize].live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::config::MIN_SEGMENT_SIZE;

    fn arena() -> Arena {
        Arena::new(
            &ArenaConfig {
                segment_size: MIN_SEGMENT_SIZE,
                max_bytes: 64 * MIN_SEGMENT_SIZE as u64,
                backing: ArenaBacking::Anonymous,
            },
            None,
        )
        .unwrap()
    }

    fn never() -> u64 {
        0
    }

    /// Writes `key`/`value` as a put named by entry `seq`.
    fn put(a: &mut Arena, key: &[u8], value: &[u8], seq: u64) -> u64 {
        let at = a
            .allocate(record_size(key.len(), value.len()), &mut never)
            .unwrap();
        // SAFETY: no Ring 1 reads this arena.
        unsafe { a.write(at, RecordKind::Put, key, value, seq) }
    }

    #[test]
    fn records_read_back_as_written_across_segments() {
        let mut a = arena();
        let mut written = Vec::new();
        for i in 0..200u32 {
            let key = i.to_le_bytes();
            let value = vec![i as u8; (i as usize * 7) % 300];
            written.push((put(&mut a, &key, &value, u64::from(i)), key, value));
        }
        assert!(
            a.mapped_bytes() > MIN_SEGMENT_SIZE as u64,
            "the records span segments"
        );
        for (offset, key, value) in &written {
            let rec = a.record(*offset);
            assert_eq!(
                (rec.kind, rec.key, rec.value),
                (RecordKind::Put, &key[..], &value[..])
            );
            assert_eq!(a.value(*offset, key.len(), value.len()), &value[..]);
        }
        // In place: same offset, new value and seq.
        let (offset, key, _) = &written[3];
        // SAFETY: no Ring 1 reads this arena; the new value has the old
        // one's record size.
        unsafe { a.overwrite_value(*offset, key.len(), &[9; 21], 500) };
        assert_eq!(
            (a.record(*offset).value, a.record(*offset).seq),
            (&[9u8; 21][..], 500)
        );
        // A copy is tagged as named by no entry.
        let size = a.record(*offset).size();
        let to = a.allocate(size, &mut never).unwrap();
        // SAFETY: no Ring 1 reads this arena.
        let copy = unsafe { a.copy_record(*offset, to) };
        assert_eq!((a.record(copy).value, a.record(copy).seq), (&[9u8; 21][..], 0));
    }

    #[test]
    #[should_panic(expected = "not inside one mapped segment")]
    fn an_offset_in_an_unmapped_segment_panics() {
        let a = arena();
        a.record(5 * MIN_SEGMENT_SIZE as u64);
    }

    #[test]
    #[should_panic(expected = "not inside one mapped segment")]
    fn a_value_reaching_past_its_segment_panics() {
        let mut a = arena();
        let offset = put(&mut a, b"k", b"v", 1);
        a.value(offset, 1, MIN_SEGMENT_SIZE);
    }

    #[test]
    #[should_panic(expected = "not inside one mapped segment")]
    fn a_header_announcing_more_than_its_segment_panics() {
        let mut a = arena();
        // The last 16 bytes of the segment, as a record whose header says
        // its key is 1,000 bytes long.
        let at = a.allocate(MIN_SEGMENT_SIZE - 16, &mut never).unwrap();
        // SAFETY: no Ring 1 reads this arena.
        unsafe { a.write(at, RecordKind::Put, b"", b"", 1) };
        let at = a.allocate(16, &mut never).unwrap();
        let offset = at.offset;
        // SAFETY: as above.
        unsafe { a.write(at, RecordKind::Put, b"", b"", 2) };
        let p = a.maps.bytes_at(offset, HEADER_LEN, Ordering::Relaxed);
        // SAFETY: the header is inside the mapped segment; nothing reads it.
        unsafe { p.cast::<u32>().write(1000) };
        a.record(offset);
    }

    #[test]
    #[should_panic(expected = "written into")]
    fn a_record_larger_than_its_space_panics() {
        let mut a = arena();
        let at = a.allocate(32, &mut never).unwrap();
        // SAFETY: no Ring 1 reads this arena.
        unsafe { a.write(at, RecordKind::Put, b"key", &[0; 40], 1) };
    }
}
