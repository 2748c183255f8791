//! [`RecoveryConfig`]: where recovery reads from and how.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::{CheckpointStore, LocalDirStore};
use crate::state::StateConfig;
use crate::wal::WalRecoveryMode;

/// Where to recover from and how: what [`RecoveryManager`](super::RecoveryManager)
/// reads. You need it to recover (inspect, verify, export) state without
/// opening a manager; [`From<&CheckpointConfig>`](#impl-From%3C%26CheckpointConfig%3E-for-RecoveryConfig)
/// gives the recovery a manager with that configuration would make at open.
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
    pub(crate) restore_from: Option<u64>,
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
            restore_from: None,
        }
    }

    /// Restores checkpoint `id` instead of the newest one: see
    /// [`CheckpointConfig::with_restore_from`](crate::incremental::CheckpointConfig::with_restore_from).
    pub fn with_restore_from(mut self, id: u64) -> Self {
        self.restore_from = Some(id);
        self
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
    /// directory (which then only names files in errors), as
    /// [`CheckpointConfig::with_checkpoint_store`](crate::incremental::CheckpointConfig::with_checkpoint_store)
    /// writes them there.
    pub fn with_checkpoint_store(mut self, store: Arc<dyn CheckpointStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The old name of [`with_checkpoint_store`](Self::with_checkpoint_store).
    #[deprecated(
        since = "0.1.0",
        note = "renamed `with_checkpoint_store`, as on `CheckpointConfig`"
    )]
    pub fn with_store(self, store: Arc<dyn CheckpointStore>) -> Self {
        self.with_checkpoint_store(store)
    }

    /// The checkpoint directory.
    pub fn checkpoint_dir(&self) -> &Path {
        &self.checkpoint_dir
    }

    /// The directory of WAL segments.
    pub fn wal_path(&self) -> &Path {
        &self.wal_dir
    }

    /// What replay does with damaged WAL records.
    pub fn recovery_mode(&self) -> WalRecoveryMode {
        self.recovery_mode
    }

    pub(crate) fn store(&self) -> Arc<dyn CheckpointStore> {
        self.store
            .clone()
            .unwrap_or_else(|| Arc::new(LocalDirStore::new(&self.checkpoint_dir)))
    }
}
