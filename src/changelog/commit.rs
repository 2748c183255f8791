//! The epoch-commit payload: epoch, watermark, live key count and source
//! offsets. A [`Commit`](super::StateOp::Commit) entry names an arena record
//! holding it, and the WAL stores it as the body of its commit record.
//!
//! It lives with the changelog because it is part of what Ring 0 hands to
//! Ring 1: Ring 0 encodes it, Ring 1 logs it, replay decodes it.
//!
//! Ring 0 encodes it straight into its arena, so the encode side allocates
//! nothing: [`commit_payload_len`] sizes the buffer, [`encode_commit_payload`]
//! fills it. [`CommitRecord::decode`] is used by replay on bytes read from
//! disk: it never panics and bounds every count by the bytes remaining.
//!
//! Layout (little-endian; see `docs/format.md`):
//!
//! ```text
//! 0  u8   payload version (1)
//! 1  u8   flags: bit 0 = watermark present; other bits must be 0
//! 2  u64  epoch
//! 10 i64  watermark (0 when absent)
//! 18 u64  live keys in the state once the epoch is applied
//! 26 u32  source count n
//! 30 n ×  { u16 name length, name (UTF-8), u64 offset }
//! ```

const COMMIT_VERSION: u8 = 1;
const FLAG_WATERMARK: u8 = 1;
const FIXED_LEN: usize = 30;
/// Bytes of one source entry besides its name.
const ENTRY_FIXED_LEN: usize = 2 + 8;

/// The longest source name a commit can carry, in bytes.
pub(crate) const MAX_SOURCE_NAME_LEN: usize = u16::MAX as usize;

/// Why a commit payload cannot be encoded. The WAL reports these as its own
/// errors (`WalError::SourceNameTooLong` and so on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitEncodeError {
    /// A source name longer than [`MAX_SOURCE_NAME_LEN`] bytes.
    SourceNameTooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// More sources than a payload can count, or a payload longer than
    /// memory can address.
    TooLarge,
    /// The buffer does not have the length [`commit_payload_len`] returned
    /// for the same sources.
    BufferLength {
        /// The buffer's length.
        len: usize,
    },
}

/// The exact payload length for these sources.
///
/// # Errors
///
/// [`CommitEncodeError::SourceNameTooLong`] if a name exceeds
/// [`MAX_SOURCE_NAME_LEN`] bytes, [`CommitEncodeError::TooLarge`] if there
/// are more than `u32::MAX` sources.
pub(crate) fn commit_payload_len<'a>(
    sources: impl Iterator<Item = (&'a str, u64)>,
) -> Result<usize, CommitEncodeError> {
    let mut len = FIXED_LEN;
    let mut count: u64 = 0;
    for (name, _) in sources {
        if name.len() > MAX_SOURCE_NAME_LEN {
            return Err(CommitEncodeError::SourceNameTooLong {
                len: name.len(),
                max: MAX_SOURCE_NAME_LEN,
            });
        }
        count += 1;
        len = len
            .checked_add(ENTRY_FIXED_LEN + name.len())
            .ok_or(CommitEncodeError::TooLarge)?;
    }
    if count > u64::from(u32::MAX) {
        return Err(CommitEncodeError::TooLarge);
    }
    Ok(len)
}

/// Encodes a commit payload into `out`, which must be exactly
/// [`commit_payload_len`] bytes for the same sources. Allocates nothing.
///
/// # Errors
///
/// [`CommitEncodeError::SourceNameTooLong`] as for [`commit_payload_len`],
/// and [`CommitEncodeError::BufferLength`] if `out` does not have exactly
/// the length the sources need (nothing meaningful is written then).
pub(crate) fn encode_commit_payload<'a>(
    out: &mut [u8],
    epoch: u64,
    watermark: Option<i64>,
    live_keys: u64,
    sources: impl Iterator<Item = (&'a str, u64)>,
) -> Result<(), CommitEncodeError> {
    let out_len = out.len();
    if out_len < FIXED_LEN {
        return Err(CommitEncodeError::BufferLength { len: out_len });
    }
    let (head, mut rest) = out.split_at_mut(FIXED_LEN);
    let mut count: u32 = 0;
    for (name, offset) in sources {
        let name_len = u16::try_from(name.len()).map_err(|_| CommitEncodeError::SourceNameTooLong {
            len: name.len(),
            max: MAX_SOURCE_NAME_LEN,
        })?;
        let need = ENTRY_FIXED_LEN + name.len();
        let Some((entry, tail)) = rest.split_at_mut_checked(need) else {
            return Err(CommitEncodeError::BufferLength { len: out_len });
        };
        entry[0..2].copy_from_slice(&name_len.to_le_bytes());
        entry[2..2 + name.len()].copy_from_slice(name.as_bytes());
        entry[2 + name.len()..].copy_from_slice(&offset.to_le_bytes());
        rest = tail;
        count = count.checked_add(1).ok_or(CommitEncodeError::TooLarge)?;
    }
    if !rest.is_empty() {
        return Err(CommitEncodeError::BufferLength { len: out_len });
    }
    head[0] = COMMIT_VERSION;
    head[1] = if watermark.is_some() { FLAG_WATERMARK } else { 0 };
    head[2..10].copy_from_slice(&epoch.to_le_bytes());
    head[10..18].copy_from_slice(&watermark.unwrap_or(0).to_le_bytes());
    head[18..26].copy_from_slice(&live_keys.to_le_bytes());
    head[26..30].copy_from_slice(&count.to_le_bytes());
    Ok(())
}

/// Why a commit payload read from disk is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CommitDecodeError {
    /// Fewer bytes than the fixed part or than an entry announces.
    #[error("commit payload truncated")]
    Truncated,
    /// A payload version this build does not know.
    #[error("unknown commit payload version {0}")]
    UnknownVersion(u8),
    /// Flag bits this build does not know.
    #[error("unknown commit flags {0:#04x}")]
    UnknownFlags(u8),
    /// More sources than the remaining bytes can hold.
    #[error("commit source count exceeds the payload")]
    CountTooLarge,
    /// A source name that is not UTF-8.
    #[error("commit source name is not UTF-8")]
    NameNotUtf8,
    /// Bytes after the last entry.
    #[error("trailing bytes after the commit payload")]
    TrailingBytes,
}

impl CommitDecodeError {
    /// A static description, for corruption errors that name file and offset.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Truncated => "commit payload truncated",
            Self::UnknownVersion(_) => "unknown commit payload version",
            Self::UnknownFlags(_) => "unknown commit payload flags",
            Self::CountTooLarge => "commit source count exceeds the payload",
            Self::NameNotUtf8 => "commit source name is not UTF-8",
            Self::TrailingBytes => "trailing bytes after the commit payload",
        }
    }
}

/// A decoded epoch commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommitRecord {
    /// The epoch this record closes.
    pub(crate) epoch: u64,
    /// The watermark committed with it.
    pub(crate) watermark: Option<i64>,
    /// Live keys in the state once the epoch is applied: recovery checks
    /// the state it rebuilt against it.
    pub(crate) live_keys: u64,
    /// Source offsets committed with it, in encoded order.
    pub(crate) sources: Vec<(String, u64)>,
}

fn take<'b>(bytes: &mut &'b [u8], n: usize) -> Result<&'b [u8], CommitDecodeError> {
    let (head, tail) = bytes.split_at_checked(n).ok_or(CommitDecodeError::Truncated)?;
    *bytes = tail;
    Ok(head)
}

fn take_array<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], CommitDecodeError> {
    let head = take(bytes, N)?;
    let mut out = [0u8; N];
    out.copy_from_slice(head);
    Ok(out)
}

impl CommitRecord {
    /// Decodes a payload read from disk.
    ///
    /// # Errors
    ///
    /// A [`CommitDecodeError`] saying what is wrong; never panics, and the
    /// only allocations are bounded by `bytes.len()`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CommitDecodeError> {
        let mut rest = bytes;
        let [version] = take_array::<1>(&mut rest)?;
        if version != COMMIT_VERSION {
            return Err(CommitDecodeError::UnknownVersion(version));
        }
        let [flags] = take_array::<1>(&mut rest)?;
        if flags & !FLAG_WATERMARK != 0 {
            return Err(CommitDecodeError::UnknownFlags(flags));
        }
        let epoch = u64::from_le_bytes(take_array(&mut rest)?);
        let watermark_raw = i64::from_le_bytes(take_array(&mut rest)?);
        let live_keys = u64::from_le_bytes(take_array(&mut rest)?);
        let count = u32::from_le_bytes(take_array(&mut rest)?);
        let count = usize::try_from(count).map_err(|_| CommitDecodeError::CountTooLarge)?;
        if count > rest.len() / ENTRY_FIXED_LEN {
            return Err(CommitDecodeError::CountTooLarge);
        }
        let mut sources = Vec::with_capacity(count);
        for _ in 0..count {
            let name_len = usize::from(u16::from_le_bytes(take_array(&mut rest)?));
            let name = std::str::from_utf8(take(&mut rest, name_len)?)
                .map_err(|_| CommitDecodeError::NameNotUtf8)?;
            let offset = u64::from_le_bytes(take_array(&mut rest)?);
            sources.push((name.to_owned(), offset));
        }
        if !rest.is_empty() {
            return Err(CommitDecodeError::TrailingBytes);
        }
        Ok(Self {
            epoch,
            watermark: (flags & FLAG_WATERMARK != 0).then_some(watermark_raw),
            live_keys,
            sources,
        })
    }
}

/// Encodes into a fresh `Vec` (tests and tools; Ring 0 uses the two-step API).
#[cfg(test)]
pub(crate) fn encode_commit_vec(
    epoch: u64,
    watermark: Option<i64>,
    live_keys: u64,
    sources: &[(&str, u64)],
) -> Vec<u8> {
    let len = commit_payload_len(sources.iter().copied()).expect("valid names");
    let mut out = vec![0u8; len];
    encode_commit_payload(&mut out, epoch, watermark, live_keys, sources.iter().copied()).expect("sized");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_every_truncation() {
        let sources = [("orders-0", 42u64), ("", 0), ("ünïcode", u64::MAX)];
        let bytes = encode_commit_vec(7, Some(-5), 3, &sources);
        let rec = CommitRecord::decode(&bytes).unwrap();
        assert_eq!(rec.epoch, 7);
        assert_eq!(rec.watermark, Some(-5));
        assert_eq!(rec.live_keys, 3);
        assert_eq!(
            rec.sources,
            sources
                .iter()
                .map(|(n, o)| (n.to_string(), *o))
                .collect::<Vec<_>>()
        );
        for cut in 0..bytes.len() {
            assert!(CommitRecord::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let none = encode_commit_vec(1, None, 0, &[]);
        assert_eq!(none.len(), FIXED_LEN);
        assert_eq!(CommitRecord::decode(&none).unwrap().watermark, None);
    }

    #[test]
    fn encode_rejects_wrong_buffer_and_long_names() {
        let mut small = [0u8; FIXED_LEN + 3];
        assert!(matches!(
            encode_commit_payload(&mut small, 1, None, 0, [("abcd", 1u64)].into_iter()),
            Err(CommitEncodeError::BufferLength { .. })
        ));
        let mut big = [0u8; FIXED_LEN + 30];
        assert!(matches!(
            encode_commit_payload(&mut big, 1, None, 0, [("abcd", 1u64)].into_iter()),
            Err(CommitEncodeError::BufferLength { .. })
        ));
        let long = "x".repeat(MAX_SOURCE_NAME_LEN + 1);
        assert!(matches!(
            commit_payload_len([(long.as_str(), 1u64)].into_iter()),
            Err(CommitEncodeError::SourceNameTooLong { .. })
        ));
    }

    #[test]
    fn huge_count_is_rejected_without_allocating() {
        let mut bytes = encode_commit_vec(1, None, 0, &[]);
        bytes[26..30].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            CommitRecord::decode(&bytes),
            Err(CommitDecodeError::CountTooLarge)
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = CommitRecord::decode(&bytes);
        }

        #[test]
        fn round_trips(epoch: u64, wm: Option<i64>,
                       srcs in proptest::collection::vec(("[a-z0-9ü-]{0,20}", any::<u64>()), 0..8)) {
            let refs: Vec<(&str, u64)> = srcs.iter().map(|(n, o)| (n.as_str(), *o)).collect();
            let bytes = encode_commit_vec(epoch, wm, 5, &refs);
            let rec = CommitRecord::decode(&bytes).unwrap();
            prop_assert_eq!(rec.epoch, epoch);
            prop_assert_eq!(rec.watermark, wm);
            prop_assert_eq!(rec.sources, srcs.clone());
            for cut in 0..bytes.len() {
                prop_assert!(CommitRecord::decode(&bytes[..cut]).is_err());
            }
            // Flipping any byte yields Ok or an error, never a panic.
            for i in 0..bytes.len() {
                let mut b = bytes.clone();
                b[i] ^= 0x5a;
                let _ = CommitRecord::decode(&b);
            }
        }
    }
}
