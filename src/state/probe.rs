//! A key in the form the index compares it: [`Probe`], built once per
//! update from the key and its hash.

use super::arena::Arena;
use super::index::{INLINE_KEY, LONG_KEY, Slot, inline_tag};

/// A key with its [`hash`](super::store::StateStore::hash), in the form slots hold it:
/// built once per update (a queued update keeps its parts and rebuilds it
/// for free, see [`Probe::from_padded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe<'k> {
    key: &'k [u8],
    hash: u64,
    /// [`Slot::key`] for this key.
    inline: [u8; INLINE_KEY],
    /// [`Slot::tag`] for this key.
    tag: u64,
}

impl<'k> Probe<'k> {
    #[inline]
    pub(crate) fn new(key: &'k [u8], hash: u64) -> Self {
        match zero_padded(key) {
            Some(inline) => Self::from_padded(key, hash, inline),
            None => Self::long(key, hash),
        }
    }

    /// [`new`](Self::new) for a key whose [`zero_padded`] form is known:
    /// `padded`, which is not read for a key longer than [`INLINE_KEY`].
    #[inline]
    pub(crate) fn from_padded(key: &'k [u8], hash: u64, padded: [u8; INLINE_KEY]) -> Self {
        if key.len() > INLINE_KEY {
            return Self::long(key, hash);
        }
        Probe {
            key,
            hash,
            inline: padded,
            tag: inline_tag(key.len()),
        }
    }

    /// The key itself.
    #[inline]
    pub(crate) fn key(&self) -> &'k [u8] {
        self.key
    }

    /// The key's [`hash`](super::store::StateStore::hash).
    #[inline]
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// A key longer than [`INLINE_KEY`]: its slot holds its hash and length.
    #[inline]
    fn long(key: &'k [u8], hash: u64) -> Self {
        Probe {
            key,
            hash,
            inline: (u128::from(hash) | (key.len() as u128) << 64).to_ne_bytes(),
            tag: LONG_KEY,
        }
    }

    /// The slot for this key, whose record is at `offset`.
    #[inline]
    pub(crate) fn slot(&self, offset: u64, value_len: usize, seq: u64) -> Slot {
        Slot::new(self.inline, self.tag, offset, value_len, seq)
    }

    /// Whether `slot` may hold this key, without reading the arena: exact
    /// for an inline key, hash and length for a long one. For hints only.
    #[inline]
    pub(crate) fn may_match(&self, slot: &Slot) -> bool {
        slot.key == self.inline && slot.tag() == self.tag
    }

    /// Whether `slot` holds this key. Only a long key whose hash and length
    /// match reads the arena.
    #[inline]
    pub(crate) fn matches(&self, slot: &Slot, arena: &Arena) -> bool {
        slot.key == self.inline
            && slot.tag() == self.tag
            && (self.tag != LONG_KEY || arena.record(slot.offset()).key == self.key)
    }
}

/// `key` zero-padded to [`INLINE_KEY`] bytes, if it fits.
///
/// Every update builds this, so it avoids the call to
/// `memcpy` a copy of a variable length compiles to: two loads of a fixed
/// width, overlapping when the key is shorter than both together, cover
/// the key exactly, and OR-ing them is exact because the overlap holds the
/// same bytes twice. All shifts are of 64-bit words (one instruction each).
#[inline]
pub(crate) fn zero_padded(key: &[u8]) -> Option<[u8; INLINE_KEY]> {
    let n = key.len();
    // Fixed-width little-endian loads; the ranges are in bounds by the
    // match arms below.
    let word = |at: usize| u64::from_le_bytes(key[at..at + 8].try_into().expect("8 bytes"));
    let half = |at: usize| u64::from(u32::from_le_bytes(key[at..at + 4].try_into().expect("4 bytes")));
    let (low, high) = match n {
        // The first eight bytes, and the bytes after them: the top `n - 8`
        // bytes of the last eight (none for `n == 8`: a shift by 64).
        8..=INLINE_KEY => (
            word(0),
            word(n - 8)
                .checked_shr(((INLINE_KEY - n) * 8) as u32)
                .unwrap_or(0),
        ),
        4..=7 => (half(0) | half(n - 4) << ((n - 4) * 8), 0),
        1..=3 => {
            let byte = |at: usize| u64::from(key[at]) << (at * 8);
            (byte(0) | byte(n / 2) | byte(n - 1), 0)
        }
        0 => (0, 0),
        _ => return None,
    };
    Some((u128::from(low) | u128::from(high) << 64).to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_padded_copies_every_short_key_exactly() {
        let source: Vec<u8> = (1..=40).collect();
        for start in 0..8 {
            for len in 0..=24 {
                let key = &source[start..start + len];
                let expected = (len <= INLINE_KEY).then(|| {
                    let mut inline = [0u8; INLINE_KEY];
                    inline[..len].copy_from_slice(key);
                    inline
                });
                assert_eq!(zero_padded(key), expected, "key of {len} bytes at {start}");
            }
        }
    }
}
