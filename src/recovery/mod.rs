//! Recovery: the newest checkpoint whose whole chain validates, plus the
//! WAL replayed after its epoch to the last complete epoch.
//!
//! # Choosing the checkpoint
//!
//! Manifests are tried newest first. A manifest that cannot be read, or
//! whose chain has a missing file, a file of the wrong size or checksum, or
//! any damaged byte, is skipped (and reported): the next older one is
//! tried, and the WAL, which retention keeps from the oldest retained
//! checkpoint on, fills in the epochs since (contract 5). A manifest of a
//! newer format version stops recovery with an error instead: a newer
//! build's checkpoints are not damage. With no usable checkpoint, the whole
//! WAL is replayed, which works as long as it still starts at epoch 1.
//!
//! # Cost
//!
//! Loading reads each file of the chain once, by memory map, merging base
//! and deltas on the fly (memory grows with the state loaded, not with the
//! chain); the WAL replayed is the part after the checkpoint's epoch.
//!
//! [`RecoveryManager::recover`] reads and never writes: a torn WAL tail is
//! reported, and repaired only by a manager opening the directories.

mod load;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use load::{Recovery, recover_with};

use crate::checkpoint::merge::Merge;
use crate::checkpoint::reader::{chain_sources, read_chain, read_manifest};
use crate::checkpoint::{CheckpointStore, IncrementalCheckpointMetadata, LocalDirStore};
pub use crate::error::SkippedCheckpoint;
use crate::error::{IncrementalCheckpointError, Result, blocking};
use crate::io::{StdFs, lock_dirs};
use crate::state::{StateConfig, StateWriter};
use crate::wal::WalRecoveryMode;

/// Where to recover from and how.
///
/// | setting | default |
/// | --- | --- |
/// | checkpoint directory, WAL directory | given to [`new`](Self::new) |
/// | [`recovery_mode`](Self::with_recovery_mode) | [`WalRecoveryMode::TolerateCorruptedTailRecords`] |
/// | [`state`](Self::with_state) | [`StateConfig::new`] (sizes of the state the recovered data is loaded into) |
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    pub(crate) checkpoint_dir: PathBuf,
    pub(crate) wal_dir: PathBuf,
    pub(crate) recovery_mode: WalRecoveryMode,
    pub(crate) state: StateConfig,
    pub(crate) store: Option<Arc<dyn CheckpointStore>>,
}

impl RecoveryConfig {
    /// Recovery of the checkpoints in `checkpoint_dir` and the WAL in
    /// `wal_dir`.
    pub fn new(checkpoint_dir: impl AsRef<Path>, wal_dir: impl AsRef<Path>) -> Self {
        Self {
            checkpoint_dir: checkpoint_dir.as_ref().to_path_buf(),
            wal_dir: wal_dir.as_ref().to_path_buf(),
            recovery_mode: WalRecoveryMode::default(),
            state: StateConfig::new(),
            store: None,
        }
    }

    /// What replay does with damaged WAL records; see [`WalRecoveryMode`].
    pub fn with_recovery_mode(mut self, mode: WalRecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// Sizes of the state the recovered data is loaded into.
    pub fn with_state(mut self, state: StateConfig) -> Self {
        self.state = state;
        self
    }

    /// Reads checkpoints from `store` instead of the local checkpoint
    /// directory (which then only names files in errors).
    pub fn with_store(mut self, store: Arc<dyn CheckpointStore>) -> Self {
        self.store = Some(store);
        self
    }

    pub(crate) fn store(&self) -> Arc<dyn CheckpointStore> {
        self.store
            .clone()
            .unwrap_or_else(|| Arc::new(LocalDirStore::new(&self.checkpoint_dir)))
    }
}

/// A torn record dropped from the end of the WAL (a crash artefact).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// The WAL segment.
    pub file: PathBuf,
    /// Offset of the first dropped byte.
    pub offset: u64,
    /// Bytes dropped.
    pub bytes: u64,
}

/// Damage in the WAL that the recovery mode accepted:
/// [`PointInTimeRecovery`](crate::wal::WalRecoveryMode::PointInTimeRecovery)
/// stops at it, [`SkipAnyCorruptedRecords`](crate::wal::WalRecoveryMode::SkipAnyCorruptedRecords)
/// passes over it. (The default modes refuse it with an error instead.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalDamage {
    /// The WAL segment (for a missing segment, the name it should have).
    pub file: PathBuf,
    /// Offset of the damage in `file`.
    pub offset: u64,
    /// Bytes skipped or dropped from there in `file`.
    pub bytes: u64,
    /// What is wrong.
    pub reason: &'static str,
    /// Replay stopped here: nothing after it was recovered.
    pub stopped: bool,
}

/// The state recovery rebuilt: the data, and where it came from.
///
/// Returned by [`RecoveryManager::recover`]; the manager's `open` loads the
/// same into its writer.
#[derive(Debug)]
#[non_exhaustive]
pub struct RecoveredState {
    /// The last complete epoch (0: none).
    pub epoch: u64,
    /// The checkpoint it started from (`None`: the WAL alone).
    pub checkpoint_id: Option<u64>,
    /// Source offsets committed with `epoch`.
    pub source_offsets: HashMap<String, u64>,
    /// Watermark committed with `epoch`.
    pub watermark: Option<i64>,
    /// Puts and deletes replayed from the WAL after the checkpoint.
    pub wal_entries_replayed: u64,
    /// Records of an unfinished epoch at the end of the WAL, dropped.
    pub wal_entries_discarded: u64,
    /// A torn record dropped from the end of the WAL, if any.
    pub torn_tail: Option<TornTail>,
    /// Newer checkpoints that failed validation and were passed over.
    pub checkpoints_skipped: Vec<SkippedCheckpoint>,
    /// WAL damage the recovery mode accepted (always empty under the
    /// default modes, which refuse damage with an error).
    pub wal_damage: Vec<WalDamage>,
    pub(crate) writer: StateWriter,
}

impl RecoveredState {
    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.writer.get(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.writer.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.writer.is_empty()
    }

    /// Every key and value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.writer.iter()
    }
}

/// Recovers state from checkpoint and WAL directories without opening a
/// manager (to inspect, verify or export it).
#[derive(Debug, Clone)]
pub struct RecoveryManager {
    config: RecoveryConfig,
}

impl RecoveryManager {
    /// A recovery with `config`.
    pub fn new(config: RecoveryConfig) -> Self {
        Self { config }
    }

    /// Recovers: newest valid checkpoint chain, then the WAL after it. Takes
    /// the directories' lock while it reads (a running manager holds it).
    ///
    /// # Errors
    ///
    /// [`Locked`](IncrementalCheckpointError::Locked) while a manager has
    /// the directories open; [`UnsupportedVersion`](IncrementalCheckpointError::UnsupportedVersion)
    /// for a checkpoint of a newer format; the WAL's errors under the
    /// configured recovery mode (corruption names file and offset), e.g.
    /// [`EpochGap`](crate::incremental::WalError::EpochGap) when no usable
    /// checkpoint is left and the WAL no longer starts at epoch 1;
    /// [`Io`](IncrementalCheckpointError::Io) when reading fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads. Dropping the future lets a blocking
    /// step in progress finish in the background; the lock is released
    /// when it does.
    pub async fn recover(&self) -> Result<RecoveredState> {
        let locks = lock_dirs(&self.config.checkpoint_dir, &self.config.wal_dir)?;
        let store = self.config.store();
        let recovery = recover_with(&self.config, Arc::new(StdFs), store.as_ref()).await?;
        drop(locks);
        Ok(recovery.state)
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
    let chain = read_chain(&store, &dir, &manifest.files).await?;
    let manifest_path = path.to_path_buf();
    blocking("checkpoint validation", path, move || {
        let mut keys = 0u64;
        for entry in Merge::new(chain_sources(&chain, &dir), true) {
            entry?;
            keys += 1;
        }
        if keys != manifest.key_count {
            return Err(IncrementalCheckpointError::Corruption {
                file: manifest_path,
                offset: 0,
                reason: "the chain's key count differs from the manifest's",
            });
        }
        Ok(manifest.metadata())
    })
    .await
}
