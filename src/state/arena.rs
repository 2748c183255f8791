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

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};

use memmap2::{MmapMut, MmapOptions};

use crate::error::{IncrementalCheckpointError, Result};

/// Bytes of a record header.
pub(crate) const HEADER_LEN: usize = 16;
/// The smallest segment, and so the smallest largest record, a valid
/// configuration has.
pub(crate) const MIN_SEGMENT_SIZE: usize = 4096;
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

/// Where segments live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ArenaBacking {
    /// Anonymous memory (the default): fastest, bounded by RAM plus swap.
    #[default]
    Anonymous,
    /// Scratch files in this directory, for state larger than RAM: the
    /// kernel pages cold records out to them. The files are unlinked as soon
    /// as they are mapped, so nothing is left behind, even after a crash.
    /// They are not durable; durability comes from the WAL and checkpoints.
    File(PathBuf),
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
    /// Reads the record at `offset`.
    ///
    /// # Safety
    ///
    /// `offset` must name a record completely written before this call (its
    /// write happens-before this read), whose bytes no one overwrites while
    /// the returned borrow lives.
    #[inline]
    unsafe fn record<'a>(&'a self, offset: u64) -> RecordRef<'a> {
        let (slot, within) = split_offset(offset, self.shift);
        let base = self.bases[slot].load(Ordering::Acquire);
        assert!(
            !base.is_null(),
            "arena offset {offset:#x} names an unmapped segment"
        );
        // SAFETY: the caller guarantees a complete record at `offset`; a
        // record lies within one segment of `1 << shift` mapped bytes, and
        // records are 8-aligned on a page-aligned base.
        unsafe {
            let p = base.add(within);
            let word = p.cast::<u32>().read();
            let value_len = p.add(4).cast::<u32>().read() as usize;
            let seq = p.add(8).cast::<u64>().read();
            let key_len = (word & KEY_LEN_MASK) as usize;
            let kind = match word >> KIND_SHIFT {
                0 => RecordKind::Put,
                1 => RecordKind::Tombstone,
                _ => RecordKind::Commit,
            };
            debug_assert!(within + record_size(key_len, value_len) <= 1 << self.shift);
            let key = std::slice::from_raw_parts(p.add(HEADER_LEN), key_len);
            let value = std::slice::from_raw_parts(p.add(HEADER_LEN + key_len), value_len);
            RecordRef {
                kind,
                key,
                value,
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
    /// # Safety
    ///
    /// The entry naming `offset` must have been popped from the changelog
    /// and not yet released (its slot not yet handed back by the consumer):
    /// the writer then neither overwrites nor recycles the record.
    #[inline]
    pub(crate) unsafe fn record(&self, offset: u64) -> RecordRef<'_> {
        // SAFETY: forwarded to the caller.
        unsafe { self.maps.record(offset) }
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

/// Arena limits.
#[derive(Debug, Clone)]
pub(crate) struct ArenaConfig {
    pub(crate) segment_size: usize,
    pub(crate) max_bytes: u64,
    pub(crate) backing: ArenaBacking,
}

impl ArenaConfig {
    /// Checks the limits without mapping anything.
    pub(crate) fn validate(&self) -> Result<()> {
        let size = self.segment_size;
        if !size.is_power_of_two() || !(MIN_SEGMENT_SIZE..=1 << 30).contains(&size) {
            return Err(IncrementalCheckpointError::InvalidConfig {
                field: "arena_segment_size",
                reason: format!("{size} is not a power of two between 4 KiB and 1 GiB"),
            });
        }
        if self.slots() < 2 {
            return Err(IncrementalCheckpointError::InvalidConfig {
                field: "arena_max_bytes",
                reason: format!(
                    "{} must hold at least two segments of {size} bytes",
                    self.max_bytes
                ),
            });
        }
        Ok(())
    }

    /// Segments the address space holds.
    fn slots(&self) -> usize {
        (self.max_bytes / self.segment_size.max(1) as u64).min(u32::MAX as u64) as usize
    }
}

/// Ring 0's side of the arena: allocation, writes, bookkeeping.
#[derive(Debug)]
pub(crate) struct Arena {
    maps: Arc<Mappings>,
    /// `maps.shift`, kept here too: every update computes with it, and
    /// this copy needs no load through the `Arc`.
    shift: u32,
    backing: ArenaBacking,
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
    pub(crate) fn new(config: &ArenaConfig) -> Result<Self> {
        config.validate()?;
        let size = config.segment_size;
        let slots = config.slots();
        let shift = size.trailing_zeros();
        let mut arena = Self {
            shift,
            maps: Arc::new(Mappings {
                shift,
                bases: (0..slots).map(|_| AtomicPtr::new(ptr::null_mut())).collect(),
                maps: Mutex::new(Vec::with_capacity(slots)),
            }),
            backing: config.backing.clone(),
            segments: Vec::with_capacity(slots),
            free: Vec::with_capacity(slots),
            active: 0,
            used_bytes: 0,
            live_bytes: 0,
        };
        arena.active = arena.map_segment()?;
        arena.segments[0].state = SegState::Active;
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

    fn map_segment(&mut self) -> Result<u32> {
        let size = self.segment_size();
        let slot = self.segments.len();
        let mut map = match &self.backing {
            ArenaBacking::Anonymous => MmapOptions::new().len(size).map_anon().inspect(|map| {
                // Random access over many megabytes misses the TLB on 4 KiB
                // pages; transparent huge pages (where the kernel allows
                // them) cut that. Only a hint: failure changes nothing.
                #[cfg(target_os = "linux")]
                let _ = map.advise(memmap2::Advice::HugePage);
                #[cfg(not(target_os = "linux"))]
                let _ = map;
            }),
            ArenaBacking::File(dir) => map_scratch_file(dir, slot, size),
        }
        .map_err(|source| IncrementalCheckpointError::Io {
            path: match &self.backing {
                ArenaBacking::Anonymous => PathBuf::from("<anonymous arena segment>"),
                ArenaBacking::File(dir) => dir.clone(),
            },
            source,
        })?;
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
        Ok(slot as u32)
    }

    /// Reserves `size` bytes for a new record and returns its offset.
    ///
    /// When the active segment is full, it is sealed and appends move to a
    /// free segment: a recycled one whose entries Ring 1 has all released
    /// (`released` is asked for only then), or a newly mapped one. Nothing
    /// changes when it fails.
    pub(crate) fn allocate(&mut self, size: usize, released: &mut impl FnMut() -> u64) -> Result<u64> {
        debug_assert!(size <= self.segment_size() && size.is_multiple_of(8));
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
        Ok(offset)
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

    /// Writes a record at an offset returned by [`allocate`](Self::allocate),
    /// to be named by changelog entry `seq`.
    pub(crate) fn write(&mut self, offset: u64, kind: RecordKind, key: &[u8], value: &[u8], seq: u64) {
        self.referenced(offset, seq);
        let base = self.base(offset);
        debug_assert!(key.len() <= KEY_LEN_MASK as usize);
        // SAFETY: `allocate` reserved `record_size(key, value)` bytes at
        // `offset` inside a mapped segment; no entry referencing them has
        // been pushed yet and no borrow of them exists (we hold `&mut self`),
        // so nothing else reads them.
        unsafe {
            base.cast::<u32>()
                .write(key.len() as u32 | (kind as u32) << KIND_SHIFT);
            base.add(4).cast::<u32>().write(value.len() as u32);
            base.add(8).cast::<u64>().write(seq);
            ptr::copy_nonoverlapping(key.as_ptr(), base.add(HEADER_LEN), key.len());
            ptr::copy_nonoverlapping(value.as_ptr(), base.add(HEADER_LEN + key.len()), value.len());
        }
    }

    /// Overwrites the value of the put record at `offset` in place.
    ///
    /// The caller guarantees the new value pads to the same record size and
    /// that Ring 1 has released every entry referencing the record
    /// (`record.seq <= released`).
    #[inline]
    pub(crate) fn overwrite_value(&mut self, offset: u64, key_len: usize, value: &[u8], seq: u64) {
        self.referenced(offset, seq);
        let base = self.base(offset);
        // SAFETY: the record at `offset` is ours (`&mut self`) and no longer
        // read by Ring 1 (caller's guarantee); the new value fits its size.
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

    /// Copies the record at `from` to `to` (both reserved), marking the copy
    /// as referenced by no entry.
    pub(crate) fn copy_record(&mut self, from: u64, to: u64, size: usize) {
        let (src, dst) = (self.base(from), self.base(to));
        // SAFETY: both ranges were reserved by `allocate` and lie in mapped
        // segments; they do not overlap (`to` is fresh space); `&mut self`
        // excludes other borrows; Ring 1 only reads `from`, never `to`.
        unsafe {
            ptr::copy_nonoverlapping(src, dst, size);
            dst.add(8).cast::<u64>().write(0);
        }
    }

    #[inline]
    fn base(&self, offset: u64) -> *mut u8 {
        let (slot, within) = split_offset(offset, self.shift);
        let base = self.maps.bases[slot].load(Ordering::Relaxed);
        // SAFETY: only offsets handed out by `allocate` reach here; their
        // segment is mapped and `within` is inside it.
        unsafe { base.add(within) }
    }

    /// The address of `offset`, for a prefetch hint only (never
    /// dereferenced through this).
    #[inline]
    pub(crate) fn address(&self, offset: u64) -> usize {
        self.base(offset).addr()
    }

    /// Reads a record this arena wrote.
    #[inline]
    pub(crate) fn record(&self, offset: u64) -> RecordRef<'_> {
        // SAFETY: only Ring 0 writes, and it cannot while `&self` is
        // borrowed; `offset` came from `allocate` and was written.
        unsafe { self.maps.record(offset) }
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
        let (_, within) = split_offset(offset, self.shift);
        let start = within + HEADER_LEN + key_len;
        assert!(
            start + value_len <= self.segment_size(),
            "arena value at {offset:#x} ({key_len} + {value_len} bytes) crosses its segment"
        );
        let base = self.base(offset);
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

/// Sizes a scratch file and, where the platform can, allocates its blocks
/// now: a sparse file's pages are allocated when Ring 0 first writes them
/// through the map, and on a full file system that write is a SIGBUS that
/// kills the process instead of an error. (glibc's `posix_fallocate`
/// writes the blocks itself on file systems without `fallocate`; where it
/// is refused as unsupported, the file stays sparse.)
fn allocate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    file.set_len(len)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::unix::io::AsRawFd;
        let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
        // SAFETY: a valid open descriptor; the call only reads its
        // integer arguments.
        let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        if r != 0 && r != libc::EOPNOTSUPP && r != libc::ENOSYS {
            return Err(std::io::Error::from_raw_os_error(r));
        }
    }
    Ok(())
}

fn map_scratch_file(dir: &std::path::Path, slot: usize, size: usize) -> std::io::Result<MmapMut> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("arena-{}-{slot}.seg", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    if let Err(e) = allocate(&file, size as u64) {
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    // SAFETY: the file was just created by us and is unlinked below (on
    // Unix) before anyone else can open it, so no other process or handle
    // modifies the mapped bytes.
    let map = unsafe { MmapOptions::new().len(size).map_mut(&file) };
    #[cfg(unix)]
    std::fs::remove_file(&path)?;
    map
}
