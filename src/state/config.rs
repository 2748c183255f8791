//! Ring 0 configuration: [`StateConfig`], and the arena's part of it.

use std::path::PathBuf;

use crate::error::{IncrementalCheckpointError, Result};

/// The smallest segment, and so the smallest largest record, a valid
/// configuration has.
pub(crate) const MIN_SEGMENT_SIZE: usize = 4096;

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
    pub(super) fn slots(&self) -> usize {
        (self.max_bytes / self.segment_size.max(1) as u64).min(u32::MAX as u64) as usize
    }
}

/// Sizes and backing of Ring 0: the changelog ring, the arena and the index.
///
/// | setting | default |
/// | --- | --- |
/// | [`changelog_capacity`](Self::with_changelog_capacity) | 65,536 entries (2 MiB) |
/// | [`arena_segment_size`](Self::with_arena_segment_size) | 4 MiB; also the largest record (key + value + 16 bytes) |
/// | [`arena_max_bytes`](Self::with_arena_max_bytes) | 64 GiB of address space (only touched pages cost memory) |
/// | [`arena_backing`](Self::with_arena_backing) | anonymous memory |
/// | [`expected_keys`](Self::with_expected_keys) | 1,024 |
///
/// Invalid values are reported when the writer is built, and by
/// [`IncrementalCheckpointManager::open`](crate::incremental::IncrementalCheckpointManager::open)
/// before it touches the disk.
#[derive(Debug, Clone)]
pub struct StateConfig {
    pub(crate) changelog_capacity: usize,
    pub(crate) arena: ArenaConfig,
    pub(crate) expected_keys: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            changelog_capacity: 1 << 16,
            arena: ArenaConfig {
                segment_size: 4 << 20,
                max_bytes: 64 << 30,
                backing: ArenaBacking::Anonymous,
            },
            expected_keys: 1024,
        }
    }
}

impl StateConfig {
    /// The defaults above.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries the changelog ring holds (rounded up to a power of two).
    /// A full ring makes updates return
    /// [`BufferOverflow`](crate::incremental::IncrementalCheckpointError::BufferOverflow).
    pub fn with_changelog_capacity(mut self, entries: usize) -> Self {
        self.changelog_capacity = entries;
        self
    }

    /// Size of one arena segment: a power of two from 4 KiB to 1 GiB. A
    /// record (key + value + 16 bytes of header, padded to 8) must fit in one.
    pub fn with_arena_segment_size(mut self, bytes: usize) -> Self {
        self.arena.segment_size = bytes;
        self
    }

    /// Upper bound on arena memory; updates that would exceed it return
    /// [`ArenaFull`](crate::incremental::IncrementalCheckpointError::ArenaFull).
    pub fn with_arena_max_bytes(mut self, bytes: u64) -> Self {
        self.arena.max_bytes = bytes;
        self
    }

    /// Anonymous memory (default) or scratch files for state larger than RAM.
    pub fn with_arena_backing(mut self, backing: ArenaBacking) -> Self {
        self.arena.backing = backing;
        self
    }

    /// Keys the index makes room for up front.
    ///
    /// Without it the index starts small and grows as keys arrive, a few
    /// slots per update (see "Growth" on
    /// [`StateWriter`](crate::incremental::StateWriter)): no update stalls
    /// for it, and recovery sizes the index for the state it loads. What
    /// sizing up front still buys, for a state that will reach that many
    /// keys:
    ///
    /// * no growth: no update does migration work (while the index grows,
    ///   an update costs tens of nanoseconds more, and a lookup may look in
    ///   two tables), and the index never holds two tables at once (during
    ///   a growth, the old table and one twice its size: 3x the memory of
    ///   the old one, briefly);
    /// * the index's memory taken once, at the start: the helper thread
    ///   faults the table in right after the writer is built (so it costs
    ///   its full memory, 33 bytes per bucket, from then on, about 44 to 88
    ///   bytes per expected key).
    ///
    /// The arena grows the same way either way.
    pub fn with_expected_keys(mut self, keys: usize) -> Self {
        self.expected_keys = keys;
        self
    }

    /// Checks every setting without allocating or mapping anything.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.changelog_capacity < 2 || self.changelog_capacity > 1 << 30 {
            return Err(IncrementalCheckpointError::InvalidConfig {
                field: "changelog_capacity",
                reason: format!("{} is not between 2 and 2^30 entries", self.changelog_capacity),
            });
        }
        self.arena.validate()
    }
}
