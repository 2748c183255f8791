//! [`CheckpointConfig`]: everything `IncrementalCheckpointManager::open` needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{IncrementalCheckpointError, Result};
use crate::state::StateConfig;
use crate::wal::{WalConfig, WalRecoveryMode, WalSyncMode};

/// Configuration of a manager: where state is kept and how durability is
/// traded against throughput.
///
/// | setting | default |
/// | --- | --- |
/// | checkpoint directory | given to [`new`](Self::new) |
/// | [`wal_path`](Self::with_wal_path) | `<checkpoint directory>/wal` |
/// | [`sync_mode`](Self::with_sync_mode) | [`WalSyncMode::Always`]: an epoch is acknowledged after its `fdatasync` |
/// | [`recovery_mode`](Self::with_recovery_mode) | [`WalRecoveryMode::TolerateCorruptedTailRecords`] |
/// | [`wal_segment_size`](Self::with_wal_segment_size) | 64 MiB, preallocated |
/// | [`state`](Self::with_state) | [`StateConfig::new`] |
///
/// Settings are checked by `open`, which fails with
/// [`InvalidConfig`](IncrementalCheckpointError::InvalidConfig) naming the
/// setting.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    pub(crate) checkpoint_dir: PathBuf,
    pub(crate) wal_dir: PathBuf,
    pub(crate) sync_mode: WalSyncMode,
    pub(crate) recovery_mode: WalRecoveryMode,
    pub(crate) wal: WalConfig,
    pub(crate) state: StateConfig,
}

impl CheckpointConfig {
    /// A configuration keeping state under `checkpoint_dir`.
    pub fn new(checkpoint_dir: impl AsRef<Path>) -> Self {
        let checkpoint_dir = checkpoint_dir.as_ref().to_path_buf();
        Self {
            wal_dir: checkpoint_dir.join("wal"),
            checkpoint_dir,
            sync_mode: WalSyncMode::Always,
            recovery_mode: WalRecoveryMode::default(),
            wal: WalConfig::new(),
            state: StateConfig::new(),
        }
    }

    /// The directory of WAL segments (put it on the fastest durable disk).
    pub fn with_wal_path(mut self, wal_dir: impl AsRef<Path>) -> Self {
        self.wal_dir = wal_dir.as_ref().to_path_buf();
        self
    }

    /// When Ring 1 calls `fdatasync`, and so what an acknowledged epoch
    /// survives; see [`WalSyncMode`].
    pub fn with_sync_mode(mut self, mode: WalSyncMode) -> Self {
        self.sync_mode = mode;
        self
    }

    /// What recovery does with damaged WAL records; see [`WalRecoveryMode`].
    pub fn with_recovery_mode(mut self, mode: WalRecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// Size of a WAL segment. Segments are preallocated (zero-filled and
    /// synced ahead of need, off the hot path) and rotated at record
    /// boundaries; a record must fit in one.
    pub fn with_wal_segment_size(mut self, bytes: u64) -> Self {
        self.wal = self.wal.with_segment_size(bytes);
        self
    }

    /// Ring 0's sizes: changelog ring, arena, index.
    pub fn with_state(mut self, state: StateConfig) -> Self {
        self.state = state;
        self
    }

    /// The checkpoint directory.
    pub fn checkpoint_dir(&self) -> &Path {
        &self.checkpoint_dir
    }

    /// The WAL directory.
    pub fn wal_dir(&self) -> &Path {
        &self.wal_dir
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.checkpoint_dir.as_os_str().is_empty() {
            return Err(IncrementalCheckpointError::InvalidConfig {
                field: "checkpoint_dir",
                reason: "empty path".into(),
            });
        }
        if self.wal_dir.as_os_str().is_empty() {
            return Err(IncrementalCheckpointError::InvalidConfig {
                field: "wal_path",
                reason: "empty path".into(),
            });
        }
        if let WalSyncMode::Interval(every) = self.sync_mode
            && every == Duration::ZERO
        {
            return Err(IncrementalCheckpointError::InvalidConfig {
                field: "sync_mode",
                reason: "Interval(0): use WalSyncMode::Always".into(),
            });
        }
        Ok(())
    }
}
