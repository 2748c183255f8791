//! What recovery reports when it cannot produce a consistent state
//! ([`RecoveryFailure`]), and the checkpoints it passed over
//! ([`SkippedCheckpoint`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::IncrementalCheckpointError;

/// A checkpoint recovery passed over, and why: a damaged or missing file
/// of its chain, or a manifest that could not be read. Recovery then
/// started from an older one (contract 5 in `docs/design.md`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SkippedCheckpoint {
    /// Its id.
    pub id: u64,
    /// The error that made it unusable: a corruption error naming the file
    /// and offset ([`is_corruption`](IncrementalCheckpointError::is_corruption)),
    /// or [`NotFound`](IncrementalCheckpointError::NotFound) for a missing
    /// file.
    pub reason: Arc<IncrementalCheckpointError>,
}

/// Why the state could not be rebuilt consistently: the reason inside
/// [`IncrementalCheckpointError::Recovery`].
///
/// Recovery reports it when checkpoints and WAL cannot be put together
/// into the state of a committed epoch; a checkpoint reports it (and
/// publishes nothing) when the WAL it is derived from disagrees with the
/// state it would write. Either way nothing was changed on disk.
#[derive(Debug)]
#[non_exhaustive]
pub enum RecoveryFailure {
    /// Newer checkpoints failed validation, and the WAL no longer holds
    /// what replaying from an older starting point needs (`cause`).
    CheckpointsUnusable {
        /// The checkpoints passed over, newest first.
        skipped: Vec<SkippedCheckpoint>,
        /// Why the WAL cannot make up for them.
        cause: Box<IncrementalCheckpointError>,
    },
    /// After the WAL was replayed, the state holds a different number of
    /// keys from the one its last epoch committed: records were lost or
    /// invented. Not reported under
    /// [`SkipAnyCorruptedRecords`](crate::incremental::WalRecoveryMode::SkipAnyCorruptedRecords),
    /// which loses records by design.
    KeyCountMismatch {
        /// The WAL directory.
        wal_dir: PathBuf,
        /// The last epoch replayed.
        epoch: u64,
        /// Keys in the rebuilt state.
        found: u64,
        /// Keys the epoch committed.
        committed: u64,
    },
    /// A checkpoint's new base, merged from its parent's chain and the
    /// WAL, holds a different number of keys from the one its epoch
    /// committed; it was not published.
    MergedBaseMismatch {
        /// The checkpoint being taken.
        checkpoint_id: u64,
        /// Its epoch.
        epoch: u64,
        /// Keys the merge produced.
        merged: u64,
        /// Keys the epoch committed.
        committed: u64,
    },
    /// The WAL does not hold the commit of the epoch a checkpoint was to
    /// be taken at (its segments are gone or damaged).
    CommitMissing {
        /// The WAL directory.
        wal_dir: PathBuf,
        /// The epoch.
        epoch: u64,
    },
    /// A checkpoint chain yielded keys out of order while being loaded.
    KeysOutOfOrder,
    /// A checkpoint chain was to be loaded into a state that is not empty.
    StateNotEmpty,
}

impl fmt::Display for RecoveryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CheckpointsUnusable { skipped, cause } => {
                write!(f, "{} checkpoint(s) failed validation (", skipped.len())?;
                for (i, s) in skipped.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "; " };
                    write!(f, "{sep}{:016x}: {}", s.id, s.reason)?;
                }
                write!(f, "), and the WAL cannot make up for them: {cause}")
            }
            Self::KeyCountMismatch {
                wal_dir,
                epoch,
                found,
                committed,
            } => write!(
                f,
                "after replaying the WAL in {} to epoch {epoch}, the state holds {found} keys but that epoch committed {committed}",
                wal_dir.display()
            ),
            Self::MergedBaseMismatch {
                checkpoint_id,
                epoch,
                merged,
                committed,
            } => write!(
                f,
                "checkpoint {checkpoint_id} at epoch {epoch}: the merged base holds {merged} keys but the epoch committed {committed} live keys"
            ),
            Self::CommitMissing { wal_dir, epoch } => write!(
                f,
                "the WAL in {} does not hold the commit of epoch {epoch} to checkpoint",
                wal_dir.display()
            ),
            Self::KeysOutOfOrder => f.write_str("bulk-loaded keys must strictly increase"),
            Self::StateNotEmpty => f.write_str("a checkpoint chain is bulk-loaded only into an empty state"),
        }
    }
}

impl std::error::Error for RecoveryFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::CheckpointsUnusable { cause, .. } => Some(&**cause),
            _ => None,
        }
    }
}
