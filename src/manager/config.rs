//! [`CheckpointConfig`]: everything `IncrementalCheckpointManager::open` needs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::{CheckpointStore, Compression};
use crate::error::{IncrementalCheckpointError, Result};
use crate::recovery::RecoveryConfig;
use crate::state::StateConfig;
use crate::wal::{WalConfig, WalError, WalRecoveryMode, WalSyncMode};

/// Configuration of a manager: where state is kept and how durability is
/// traded against throughput.
///
/// | setting | default |
/// | --- | --- |
/// | checkpoint directory | given to [`new`](Self::new) |
/// | [`wal_path`](Self::with_wal_path) | `<checkpoint directory>/wal` |
/// | [`sync_mode`](Self::with_sync_mode) | [`WalSyncMode::Always`]: an epoch is acknowledged after its `fdatasync` |
/// | [`recovery_mode`](Self::with_recovery_mode) | [`WalRecoveryMode::TolerateCorruptedTailRecords`] |
/// | [`wal_segment_size`](Self::with_wal_segment_size) | 16 MiB, preallocated; a log starts at 1 MiB and doubles up to it |
/// | [`state`](Self::with_state) | [`StateConfig::new`] |
/// | [`interval`](Self::with_interval) | 60 s between scheduled checkpoints |
/// | [`wal_size_threshold`](Self::with_wal_size_threshold) | 256 MiB of WAL written since the last checkpoint triggers one |
/// | [`automatic_checkpoints`](Self::with_automatic_checkpoints) | off: checkpoints are taken when asked, or by a [`CheckpointScheduler`](crate::incremental::CheckpointScheduler) you poll |
/// | [`create_if_missing`](Self::with_create_if_missing) | on: missing directories are created |
/// | [`slow_fsync_threshold`](Self::with_slow_fsync_threshold) | 500 ms: a slower WAL `fdatasync` logs a warning |
/// | [`max_retained`](Self::with_max_retained) | 3 checkpoints kept |
/// | [`max_chain_length`](Self::with_max_chain_length) | 8 files (a base and 7 deltas) before a new base |
/// | [`checkpoint_store`](Self::with_checkpoint_store) | [`LocalDirStore`](crate::incremental::LocalDirStore) in the checkpoint directory |
/// | [`restore_from`](Self::with_restore_from) | the newest valid checkpoint (and the local WAL after it) |
/// | [`compression`](Self::with_compression) | [`Compression::Lz4`]: data file blocks LZ4-compressed where that makes them smaller |
///
/// Settings are checked by `open`, which fails with
/// [`InvalidConfig`](IncrementalCheckpointError::InvalidConfig) naming the
/// setting.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// Where state is kept and how it is recovered at open: the
    /// directories, the recovery mode, Ring 0's sizes, the store.
    pub(crate) recovery: RecoveryConfig,
    pub(crate) sync_mode: WalSyncMode,
    pub(crate) wal: WalConfig,
    pub(crate) interval: Duration,
    pub(crate) wal_size_threshold: u64,
    pub(crate) max_retained: usize,
    pub(crate) max_chain_length: usize,
    pub(crate) automatic_checkpoints: bool,
    pub(crate) create_if_missing: bool,
    pub(crate) slow_fsync_threshold: Duration,
    pub(crate) compression: Compression,
}

impl CheckpointConfig {
    /// A configuration keeping state under `checkpoint_dir`.
    pub fn new(checkpoint_dir: impl AsRef<Path>) -> Self {
        let checkpoint_dir = checkpoint_dir.as_ref();
        Self {
            recovery: RecoveryConfig::new(checkpoint_dir, checkpoint_dir.join("wal")),
            sync_mode: WalSyncMode::Always,
            wal: WalConfig::new(),
            interval: Duration::from_secs(60),
            wal_size_threshold: 256 << 20,
            max_retained: 3,
            max_chain_length: 8,
            automatic_checkpoints: false,
            create_if_missing: true,
            slow_fsync_threshold: Duration::from_millis(500),
            compression: Compression::default(),
        }
    }

    /// Whether the manager takes checkpoints on its own, on the configured
    /// [`interval`](Self::with_interval) and
    /// [`WAL growth`](Self::with_wal_size_threshold) (default: off).
    ///
    /// On, `open` spawns a scheduler task beside Ring 1. It holds no
    /// manager handle (it ends when the last one is dropped, and does not
    /// keep the state open), times each interval from the newest
    /// checkpoint's timestamp, not from `open` (so a process that restarts
    /// more often than the interval still checkpoints: the first one is due
    /// at once if the newest is older than the interval), skips intervals
    /// with no new epoch, and logs failed checkpoints as warnings (the next
    /// interval tries again). Don't also poll a
    /// [`CheckpointScheduler`](crate::incremental::CheckpointScheduler).
    pub fn with_automatic_checkpoints(mut self, on: bool) -> Self {
        self.automatic_checkpoints = on;
        self
    }

    /// Whether `open` creates the checkpoint and WAL directories when they
    /// do not exist (default: on). Off, a missing directory is an error
    /// ([`NotFound`](IncrementalCheckpointError::NotFound) naming it), so
    /// that a mistyped path does not silently start an empty state at
    /// offset 0. (RocksDB's `create_if_missing` defaults to off; ours stays
    /// on so that existing code keeps working.)
    pub fn with_create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// A WAL `fdatasync` that takes at least this long is logged as a
    /// `tracing` warning with its duration (default: 500 ms): a slow disk
    /// shows up in the logs before it shows up as backpressure.
    pub fn with_slow_fsync_threshold(mut self, threshold: Duration) -> Self {
        self.slow_fsync_threshold = threshold;
        self
    }

    /// Whether the manager takes checkpoints on its own.
    pub fn automatic_checkpoints(&self) -> bool {
        self.automatic_checkpoints
    }

    /// Whether `open` creates missing directories.
    pub fn create_if_missing(&self) -> bool {
        self.create_if_missing
    }

    /// How often the [`CheckpointScheduler`](crate::incremental::CheckpointScheduler)
    /// takes a checkpoint.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// WAL bytes written since the last checkpoint that make the
    /// [`CheckpointScheduler`](crate::incremental::CheckpointScheduler)
    /// take one before the interval is up (bounds replay time and the
    /// WAL's size).
    pub fn with_wal_size_threshold(mut self, bytes: u64) -> Self {
        self.wal_size_threshold = bytes;
        self
    }

    /// How many published checkpoints to keep (at least 1). Older ones are
    /// deleted, with every file and WAL segment only they need; the kept
    /// ones are the fallbacks if the newest fails validation.
    ///
    /// With 2 or more, a few more are kept so that damage to any one file
    /// of the newest checkpoint's chain loses nothing: for each of its
    /// files, the newest older checkpoint that does not use it. For the
    /// base every delta shares, that is the newest checkpoint of the
    /// previous chain (its files and the WAL after it stay until the next
    /// base is written); in the very first chain it is the empty state and
    /// the whole WAL, which is then not truncated. With 1, the WAL is
    /// truncated up to the only checkpoint, and damage to it is an error.
    pub fn with_max_retained(mut self, n: usize) -> Self {
        self.max_retained = n;
        self
    }

    /// Most files in a checkpoint chain (a base and its deltas, at least
    /// 1): a checkpoint that would make it longer is written as a new base,
    /// merged from the chain, so recovery reads a bounded number of files.
    /// A new base is also written when the deltas would outweigh the base.
    pub fn with_max_chain_length(mut self, n: usize) -> Self {
        self.max_chain_length = n;
        self
    }

    /// How checkpoint data files store their blocks (default:
    /// [`Compression::Lz4`]). LZ4 shrinks the bytes a checkpoint writes,
    /// uploads and keeps by what its values share, for a little CPU when it
    /// is written and restored; see [`Compression`] for the trade-off.
    /// Only new files follow it: files already written, compressed or not,
    /// are read either way.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Keeps checkpoints in `store` instead of the checkpoint directory
    /// (which then only names files in errors). See [`CheckpointStore`] for
    /// what a store must guarantee.
    pub fn with_checkpoint_store(mut self, store: Arc<dyn CheckpointStore>) -> Self {
        self.recovery = self.recovery.with_checkpoint_store(store);
        self
    }

    /// Opens from retained checkpoint `id` instead of the newest one
    /// (Flink's `-s`): the state, source offsets and watermark are that
    /// checkpoint's, and it becomes the newest (a copy of its manifest is
    /// published under a new id when newer ones exist), so checkpoints
    /// taken after it continue from there. The WAL directory must hold no
    /// segment (a fresh node, or the old WAL moved aside): its epochs
    /// belong to the abandoned history.
    ///
    /// `open` fails with
    /// [`CheckpointNotRetained`](IncrementalCheckpointError::CheckpointNotRetained)
    /// if the store has no checkpoint `id`, with its damage if it is
    /// damaged (there is no falling back from an explicit choice), and with
    /// [`InvalidConfig`](IncrementalCheckpointError::InvalidConfig)
    /// (`restore_from`) if the WAL directory holds segments.
    pub fn with_restore_from(mut self, id: u64) -> Self {
        self.recovery = self.recovery.with_restore_from(id);
        self
    }

    /// The checkpoint interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The WAL size that triggers a checkpoint.
    pub fn wal_size_threshold(&self) -> u64 {
        self.wal_size_threshold
    }

    /// The directory of WAL segments (put it on the fastest durable disk).
    pub fn with_wal_path(mut self, wal_dir: impl AsRef<Path>) -> Self {
        self.recovery.wal_dir = wal_dir.as_ref().to_path_buf();
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
        self.recovery = self.recovery.with_recovery_mode(mode);
        self
    }

    /// Size of a WAL segment. Segments are preallocated (zero-filled and
    /// synced ahead of need, off the hot path) and rotated at record
    /// boundaries; a record must fit in one. A log starts with a 1 MiB
    /// segment (or this size, if smaller) and each next one is twice the
    /// previous, up to this size, so a small state keeps a small footprint.
    /// At least 256 bytes.
    pub fn with_wal_segment_size(mut self, bytes: u64) -> Self {
        self.wal = self.wal.with_segment_size(bytes);
        self
    }

    /// Ring 0's sizes: changelog ring, arena, index.
    pub fn with_state(mut self, state: StateConfig) -> Self {
        self.recovery = self.recovery.with_state(state);
        self
    }

    /// The checkpoint directory.
    pub fn checkpoint_dir(&self) -> &Path {
        self.recovery.checkpoint_dir()
    }

    /// The directory of WAL segments (set by [`with_wal_path`](Self::with_wal_path)).
    pub fn wal_path(&self) -> &Path {
        self.recovery.wal_path()
    }

    /// The old name of [`wal_path`](Self::wal_path).
    #[deprecated(since = "0.1.0", note = "renamed `wal_path`, after `with_wal_path`")]
    pub fn wal_dir(&self) -> &Path {
        self.wal_path()
    }

    /// The checkpoint store set by
    /// [`with_checkpoint_store`](Self::with_checkpoint_store), if any.
    pub(crate) fn custom_store(&self) -> Option<&Arc<dyn CheckpointStore>> {
        self.recovery.store.as_ref()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.checkpoint_dir().as_os_str().is_empty() {
            return Err(IncrementalCheckpointError::InvalidConfig {
                field: "checkpoint_dir",
                reason: "empty path".into(),
            });
        }
        if self.wal_path().as_os_str().is_empty() {
            return Err(IncrementalCheckpointError::InvalidConfig {
                field: "wal_path",
                reason: "empty path".into(),
            });
        }
        if self.max_retained == 0 {
            return Err(IncrementalCheckpointError::InvalidConfig {
                field: "max_retained",
                reason: "0: at least one checkpoint must be kept".into(),
            });
        }
        if self.max_chain_length == 0 {
            return Err(IncrementalCheckpointError::InvalidConfig {
                field: "max_chain_length",
                reason: "0: a chain holds at least its base".into(),
            });
        }
        if self.interval == Duration::ZERO {
            return Err(IncrementalCheckpointError::InvalidConfig {
                field: "interval",
                reason: "0".into(),
            });
        }
        if self.wal_size_threshold == 0 {
            return Err(IncrementalCheckpointError::InvalidConfig {
                field: "wal_size_threshold",
                reason: "0".into(),
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
        self.wal.validate().map_err(|e| match e {
            WalError::InvalidConfig { reason, .. } => IncrementalCheckpointError::InvalidConfig {
                field: "wal_segment_size",
                reason: reason.into(),
            },
            other => other.into(),
        })?;
        self.recovery.state.validate()
    }
}

/// The recovery a manager opened with this configuration makes: same
/// directories, recovery mode, state sizes and checkpoint store. To
/// inspect what `open` would recover, without opening:
///
/// ```no_run
/// # async fn f() -> Result<(), laminar_storage::IncrementalCheckpointError> {
/// use laminar_storage::{CheckpointConfig, RecoveryConfig, RecoveryManager};
///
/// let config = CheckpointConfig::new("/var/lib/app/state");
/// let recovered = RecoveryManager::new(RecoveryConfig::from(&config)).recover().await?;
/// println!("epoch {} from checkpoint {:?}", recovered.epoch, recovered.checkpoint_id);
/// # Ok(())
/// # }
/// ```
impl From<&CheckpointConfig> for RecoveryConfig {
    fn from(config: &CheckpointConfig) -> Self {
        config.recovery.clone()
    }
}
