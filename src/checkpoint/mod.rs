//! The checkpoint store: incremental checkpoints of the state, published
//! atomically, retained and garbage-collected.
//!
//! # Files
//!
//! * `data_file.rs`: sorted entry files (base, delta), their writer and
//!   checked reader.
//! * `manifest.rs`: the manifest that publishes a checkpoint and names its
//!   chain.
//! * `delta.rs`: the last write per key over a range of epochs, from the WAL.
//! * `merge.rs`: k-way merge of sorted sources, newest wins.
//! * `store.rs`: [`CheckpointStore`], the storage trait, and its local
//!   directory implementation.
//! * `reader.rs`: reading published checkpoints back: the store's
//!   manifests, a chain's files checked against its manifest, their
//!   entries.
//! * `checkpointer.rs`: the task that takes checkpoints: builds the delta
//!   or base, publishes it, applies retention, truncates the WAL.
//!
//! # A checkpoint
//!
//! A checkpoint at epoch E is a manifest plus the data files of its chain:
//! one base (every live key at some epoch) followed by deltas (the keys
//! changed in the epochs since the previous file, tombstones for deletes).
//! Its delta is derived from the WAL records of the epochs after its
//! parent's, last write per key; the first checkpoint, and one whose chain
//! would grow too long or whose deltas would outweigh the base, is a base
//! written by merging the chain and the new changes. The format is
//! specified in `docs/format.md`.

pub(crate) mod checkpointer;
pub(crate) mod data_file;
pub(crate) mod delta;
pub(crate) mod manifest;
pub(crate) mod merge;
mod metadata;
pub(crate) mod reader;
pub(crate) mod store;

use std::path::Path;

pub use metadata::IncrementalCheckpointMetadata;
pub use store::{CheckpointStore, FileContents, LocalDirStore};

use crate::error::IncrementalCheckpointError;

/// What is wrong with a checkpoint file's bytes, and where.
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

    /// The crate error naming `file`.
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

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod tests;
