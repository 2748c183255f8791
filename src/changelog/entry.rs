//! The changelog entry: what Ring 0 tells Ring 1 about one update.

/// The kind of update a [`StateChangelogEntry`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum StateOp {
    /// A key was set to a value.
    Put = 1,
    /// A key was removed.
    Delete = 2,
    /// The entry's epoch was closed; the arena record holds the epoch's
    /// source offsets and watermark.
    Commit = 3,
}

impl StateOp {
    /// Decodes the op byte; `None` for an unknown value.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Put),
            2 => Some(Self::Delete),
            3 => Some(Self::Commit),
            _ => None,
        }
    }
}

/// One update, as pushed by Ring 0 and drained by Ring 1: exactly 32 bytes,
/// `Copy`, no pointers.
///
/// The key and value themselves stay in Ring 0's memory-mapped arena;
/// `mmap_offset` locates the arena record that holds them (a delete's record
/// holds the key), so the consumer can read both without a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct StateChangelogEntry {
    /// The epoch the update belongs to.
    pub epoch: u64,
    /// Hash of the key (Ring 0's index hash).
    pub key_hash: u64,
    /// Location of the update's record in the arena.
    pub mmap_offset: u64,
    /// Length of the value in bytes (0 for a delete).
    pub value_len: u32,
    /// The [`StateOp`] as its byte; see [`op`](Self::op).
    op: u8,
    /// Zero. Two fields, not a `[u8; 3]`: a byte array is moved byte by
    /// byte, through the stack, on every push.
    _padding: u8,
    _padding_wide: u16,
}

const _: () = assert!(std::mem::size_of::<StateChangelogEntry>() == 32);
const _: () = assert!(std::mem::align_of::<StateChangelogEntry>() == 8);

impl StateChangelogEntry {
    /// Builds an entry.
    pub const fn new(epoch: u64, key_hash: u64, mmap_offset: u64, value_len: u32, op: StateOp) -> Self {
        Self {
            epoch,
            key_hash,
            mmap_offset,
            value_len,
            op: op as u8,
            _padding: 0,
            _padding_wide: 0,
        }
    }

    /// The kind of update.
    pub const fn op(&self) -> StateOp {
        match StateOp::from_u8(self.op) {
            Some(op) => op,
            // The field is private and only ever set from a `StateOp`.
            None => unreachable!(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_32_bytes_and_round_trips_its_op() {
        assert_eq!(std::mem::size_of::<StateChangelogEntry>(), 32);
        for op in [StateOp::Put, StateOp::Delete, StateOp::Commit] {
            let e = StateChangelogEntry::new(7, 9, 11, 13, op);
            assert_eq!(e.op(), op);
            assert_eq!((e.epoch, e.key_hash, e.mmap_offset, e.value_len), (7, 9, 11, 13));
        }
        assert_eq!(StateOp::from_u8(0), None);
        assert_eq!(StateOp::from_u8(4), None);
    }
}
