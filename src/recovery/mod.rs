//! Recovery: the newest checkpoint whose whole chain validates, plus the
//! WAL replayed after its epoch to the last complete epoch
//! (`load.rs`), shared by [`RecoveryManager`] and the manager's `open`.
//! What users need to know of it is on [`RecoveryManager`].

mod config;
mod load;
mod read_only;
mod report;

use std::path::Path;

pub use config::RecoveryConfig;
pub(crate) use load::{Recovery, recover_with, torn_tail_of, wal_damage_of};
pub(crate) use read_only::{recover_read_only, require_dirs};
#[allow(deprecated)]
pub use report::RecoverySummary;
pub use report::{RecoveredState, RecoveryReport, SkippedCheckpoints, TornTail, WalDamage};

use crate::checkpoint::reader::{check_chain, read_manifest};
use crate::checkpoint::{IncrementalCheckpointMetadata, LocalDirStore};
pub use crate::error::SkippedCheckpoint;
use crate::error::{IncrementalCheckpointError, Result};

/// Recovers state from checkpoint and WAL directories without opening a
/// manager: you need it to inspect, verify or export state (a manager's
/// [`open`](crate::incremental::IncrementalCheckpointManager::open) runs
/// the same recovery and reports it in
/// [`recovery`](crate::incremental::IncrementalCheckpointManager::recovery)).
///
/// # What recovery guarantees
///
/// The state returned is that of a complete epoch, the last one the WAL
/// holds whole, with exactly the source offsets and watermark committed
/// with it (contracts 1 and 2 in `docs/design.md`). Under the default
/// [`WalRecoveryMode`](crate::incremental::WalRecoveryMode), a torn record
/// at the end of the newest WAL segment (a crash artefact) is dropped and
/// reported in [`RecoveryReport::torn_tail`]; damage anywhere else is an
/// error naming the file and offset (contract 3).
///
/// # Choosing the checkpoint
///
/// Manifests are tried newest first. A manifest that cannot be read, or
/// whose chain has a missing file, a file of the wrong size or checksum, or
/// any damaged byte, is skipped (and reported in
/// [`RecoveryReport::checkpoints_skipped`]): the next older one is tried,
/// and the WAL, which retention keeps from the oldest retained checkpoint
/// on, fills in the epochs since (contract 5). A manifest of a newer format
/// version stops recovery with an error instead: a newer build's
/// checkpoints are not damage. With no usable checkpoint, the whole WAL is
/// replayed, which works as long as it still starts at epoch 1.
///
/// # Cost
///
/// Loading reads each file of the chain once, by memory map, merging base
/// and deltas on the fly (memory grows with the state loaded, not with the
/// chain); the WAL replayed is the part after the checkpoint's epoch.
///
/// # Read-only
///
/// [`recover`](Self::recover) only reads: it creates no directory and no
/// lock file, renames, truncates and deletes nothing, so it works on a
/// read-only mount of a backup. A torn WAL tail is reported, and repaired
/// only by a manager opening the directories. A directory that does not
/// exist is an error naming it, never an empty state.
///
/// It takes no lock either, so it also works while a manager has the
/// directories open, and then returns the state of the newest published
/// checkpoint plus the WAL up to its last complete commit at the moment of
/// reading: a consistent epoch the manager had written, possibly older
/// than its newest (an epoch being written is not complete, and a record
/// half written shows as a torn tail). If the manager's retention deletes
/// a file being read, recovery reads the directories again (see
/// `src/recovery/read_only.rs`).
#[derive(Debug, Clone)]
pub struct RecoveryManager {
    config: RecoveryConfig,
}

impl RecoveryManager {
    /// A recovery with `config`.
    pub fn new(config: RecoveryConfig) -> Self {
        Self { config }
    }

    /// Recovers: newest valid checkpoint chain, then the WAL after it. Only
    /// reads (see [Read-only](Self#read-only)).
    ///
    /// # Errors
    ///
    /// * [`NotFound`](IncrementalCheckpointError::NotFound) naming the
    ///   checkpoint directory (when no
    ///   [store](RecoveryConfig::with_checkpoint_store) is configured) or
    ///   the WAL directory, if it does not exist.
    /// * [`Wal`](IncrementalCheckpointError::Wal): the WAL's errors under
    ///   the configured recovery mode (corruption names file and offset),
    ///   e.g. [`EpochGap`](crate::incremental::WalError::EpochGap) when no
    ///   usable checkpoint is left and the WAL no longer starts at epoch 1.
    /// * [`UnsupportedVersion`](IncrementalCheckpointError::UnsupportedVersion):
    ///   a checkpoint of a newer format.
    /// * [`Recovery`](IncrementalCheckpointError::Recovery): checkpoints and
    ///   WAL do not make a consistent state (see
    ///   [`RecoveryFailure`](crate::incremental::RecoveryFailure)).
    /// * [`InvalidConfig`](IncrementalCheckpointError::InvalidConfig),
    ///   [`RecordTooLarge`](IncrementalCheckpointError::RecordTooLarge),
    ///   [`ArenaFull`](IncrementalCheckpointError::ArenaFull): the
    ///   configured [`StateConfig`](crate::incremental::StateConfig) is
    ///   invalid or too small for what is recovered.
    /// * [`Io`](IncrementalCheckpointError::Io): reading failed.
    ///
    /// A damaged checkpoint is not an error when an older one and the WAL
    /// make up for it: it is reported in
    /// [`RecoveryReport::checkpoints_skipped`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads. Dropping the future lets a blocking
    /// step in progress finish in the background.
    pub async fn recover(&self) -> Result<RecoveredState> {
        Ok(recover_read_only(&self.config).await?.state)
    }
}

/// Reads and CRC-checks the checkpoint whose manifest is at `path`
/// (`<checkpoint dir>/checkpoint_{id:016x}`) and every file of its chain,
/// merging them to check the key count; returns its metadata.
///
/// # Errors
///
/// [`NotFound`](IncrementalCheckpointError::NotFound) for a missing
/// manifest or data file; [`Corruption`](IncrementalCheckpointError::Corruption)
/// or [`CrcMismatch`](IncrementalCheckpointError::CrcMismatch) naming the
/// file and offset of the first damage;
/// [`UnsupportedVersion`](IncrementalCheckpointError::UnsupportedVersion);
/// [`Io`](IncrementalCheckpointError::Io) when reading fails.
///
/// # Cancel safety
///
/// Cancel safe: it only reads.
pub async fn validate_checkpoint(path: impl AsRef<Path>) -> Result<IncrementalCheckpointMetadata> {
    let path = path.as_ref();
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let name =
        path.file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| IncrementalCheckpointError::NotFound {
                path: path.to_path_buf(),
            })?;
    let store = LocalDirStore::new(&dir);
    let manifest = read_manifest(&store, &dir, name).await?;
    check_chain(&store, &dir, &manifest).await?;
    Ok(manifest.metadata())
}
