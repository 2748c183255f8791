//! [`Slot`]: one index entry, 32 bytes, two to a cache line.

use std::hash::BuildHasher;

/// Keys up to this long are held in their slot itself.
pub(crate) const INLINE_KEY: usize = 16;
/// [`Slot::loc`] keeps the key tag above this bit and the offset below.
const TAG_SHIFT: u32 = 59;
/// The key tag of a key longer than [`INLINE_KEY`]. A shorter key is tagged
/// with its length plus one; tag 0 marks an empty slot.
pub(crate) const LONG_KEY: u64 = 31;

/// Slots in a 64-byte cache line (a table starts on a page).
pub(super) const LINE_SLOTS: usize = 64 / std::mem::size_of::<Slot>();

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
    pub(super) const EMPTY: Slot = Slot {
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
    pub(super) fn is_empty(&self) -> bool {
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

/// How far [`Index::probe_prefetched`](super::Index::probe_prefetched) got.
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

/// The fingerprint of a key whose hash is `hash`: 7 bits of it, never 0.
/// The top bits, which a home bucket (the low bits) does not use.
#[inline]
pub(super) fn fingerprint(hash: u64) -> u8 {
    (hash >> 57) as u8 | 0x80
}
