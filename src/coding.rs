//! The byte codec every on-disk structure is written and read with
//! (`docs/format.md` draws the structures): explicit little-endian,
//! fixed-width fields, and one error for bytes that are not what their
//! format says, [`FormatError`], which names the offset of the damage.
//!
//! * Writing: [`Encode`], implemented by each structure, appends it to a
//!   buffer through [`PutLe`].
//! * Reading: [`Decode`], implemented by each structure, reads it from a
//!   [`Decoder`], a cursor that knows its offset in the file, so every
//!   error says where. Reading never panics and never allocates more than
//!   the bytes it was given.
//! * Hot loops that read in place (a data file's entries, a WAL frame's
//!   header) use [`le_u32`] and [`le_u64`] at offsets they have checked.

use std::path::Path;

use crate::error::IncrementalCheckpointError;

/// What is wrong with a file's bytes, and where. The caller, who knows the
/// file, turns it into the crate's error with [`in_file`](Self::in_file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormatError {
    /// Invalid content at `offset`.
    Corrupt { offset: u64, reason: &'static str },
    /// A checksum over the region starting at `offset` does not match.
    Crc { offset: u64, expected: u32, actual: u32 },
    /// Written by a format version this build does not read.
    Version { found: u32, supported: u32 },
}

impl FormatError {
    pub(crate) const fn corrupt(offset: u64, reason: &'static str) -> Self {
        Self::Corrupt { offset, reason }
    }

    /// Where the damage is.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn offset(&self) -> u64 {
        match self {
            Self::Corrupt { offset, .. } | Self::Crc { offset, .. } => *offset,
            Self::Version { .. } => 8,
        }
    }

    /// The crate error naming `file`:
    /// [`Corruption`](IncrementalCheckpointError::Corruption),
    /// [`CrcMismatch`](IncrementalCheckpointError::CrcMismatch) or
    /// [`UnsupportedVersion`](IncrementalCheckpointError::UnsupportedVersion).
    pub(crate) fn in_file(self, file: &Path) -> IncrementalCheckpointError {
        let file = file.to_path_buf();
        match self {
            Self::Corrupt { offset, reason } => {
                IncrementalCheckpointError::Corruption { file, offset, reason }
            }
            Self::Crc {
                offset,
                expected,
                actual,
            } => IncrementalCheckpointError::CrcMismatch {
                file,
                offset,
                expected,
                actual,
            },
            Self::Version { found, supported } => IncrementalCheckpointError::UnsupportedVersion {
                file,
                found,
                supported,
            },
        }
    }
}

/// A structure that can be written in its on-disk form.
pub(crate) trait Encode {
    /// Appends the encoded form to `out`.
    fn encode_into(&self, out: &mut Vec<u8>);
}

/// A structure that can be read from its on-disk form.
pub(crate) trait Decode<'a>: Sized {
    /// Reads one from `d`, which is left after it.
    ///
    /// # Errors
    ///
    /// A [`FormatError`] naming the offset of what is wrong.
    fn decode_from(d: &mut Decoder<'a>) -> Result<Self, FormatError>;
}

/// Little-endian fixed-width writes onto a buffer.
pub(crate) trait PutLe {
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
}

impl PutLe for Vec<u8> {
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
}

/// A cursor over bytes read from disk that knows where in the file it is.
/// Running out of bytes is a [`FormatError::Corrupt`] at the offset where
/// the missing field starts, with the reason the reader gave.
#[derive(Debug, Clone)]
pub(crate) struct Decoder<'a> {
    rest: &'a [u8],
    offset: usize,
    truncated: &'static str,
}

impl<'a> Decoder<'a> {
    /// Reads `bytes`, which start at byte `offset` of their file; running
    /// out of them is reported as `truncated`.
    pub(crate) fn new(bytes: &'a [u8], offset: usize, truncated: &'static str) -> Self {
        Self {
            rest: bytes,
            offset,
            truncated,
        }
    }

    /// The offset in the file of the next byte.
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    /// Bytes left.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Whether every byte was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or(FormatError::corrupt(self.offset as u64, self.truncated))?;
        self.rest = tail;
        self.offset += n;
        Ok(head)
    }

    /// The next `N` bytes.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FormatError> {
        self.array().map(u64::from_le_bytes)
    }

    /// A value of type `T`.
    pub(crate) fn decode<T: Decode<'a>>(&mut self) -> Result<T, FormatError> {
        T::decode_from(self)
    }

    /// A [`FormatError::Corrupt`] at `offset` (an offset this decoder
    /// reported earlier, where the field at fault starts).
    pub(crate) fn corrupt_at(&self, offset: usize, reason: &'static str) -> FormatError {
        FormatError::corrupt(offset as u64, reason)
    }
}

/// The little-endian `u32` at `bytes[at..at + 4]`, for readers that check
/// lengths before reading in place; 0 past the end (never a panic).
#[inline]
pub(crate) fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = bytes.get(at..at.wrapping_add(4)) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

/// The little-endian `u64` at `bytes[at..at + 8]`; as [`le_u32`].
#[inline]
pub(crate) fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = bytes.get(at..at.wrapping_add(8)) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_tracks_offsets_and_reports_truncation_where_it_starts() {
        let mut out = Vec::new();
        out.put_u32(7);
        out.put_u64(u64::MAX - 1);
        out.put_u64(-3i64 as u64);
        out.push(9);
        let mut d = Decoder::new(&out, 100, "thing truncated");
        assert_eq!(d.u32(), Ok(7));
        assert_eq!(d.offset(), 104);
        assert_eq!(d.u64(), Ok(u64::MAX - 1));
        assert_eq!(d.u64().map(|v| v as i64), Ok(-3));
        assert_eq!(d.remaining(), 1);
        assert_eq!(d.u32(), Err(FormatError::corrupt(120, "thing truncated")));
        // A failed read consumes nothing.
        assert_eq!(d.bytes(1), Ok(&[9u8][..]));
        assert!(d.is_empty());
        assert_eq!(d.bytes(1), Err(FormatError::corrupt(121, "thing truncated")));
    }

    #[test]
    fn in_place_reads_never_panic() {
        let b = [1u8, 0, 0, 0, 2, 0, 0, 0, 0];
        assert_eq!(le_u32(&b, 0), 1);
        assert_eq!(le_u64(&b, 1), 2 << 24);
        assert_eq!(le_u32(&b, 6), 0);
        assert_eq!(le_u64(&b, usize::MAX - 2), 0);
    }
}
