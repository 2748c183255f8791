//! Read-only inspection of a state's directories: what an operator (or a
//! program) needs to see what is on disk without opening a manager.
//!
//! [`Inspector`] lists the checkpoints and WAL segments, checks every
//! checksum, runs a dry-run recovery, dumps a checkpoint's entries or a
//! range of the WAL's epochs, and sums up sizes and value sizes. The
//! `laminar-inspect` binary is a thin command line over it.
//!
//! # Files
//!
//! * `list.rs`: [`Listing`]: checkpoints, their chains, WAL segments.
//! * `validate.rs`: [`Validation`]: every checksum of every file.
//! * `dump.rs`: [`DumpItem`]s of a checkpoint or of WAL epochs, and
//!   [`Stats`].
//!
//! # Read-only, also beside a live manager
//!
//! Nothing here creates, locks, renames, truncates or deletes a file; it
//! works on a read-only mount. It takes no lock, so it also works while a
//! manager has the directories open: each command then sees published
//! checkpoints (immutable once published) and the WAL up to its last
//! complete commit at the moment each segment is read. A checkpoint that
//! the manager's retention deletes during the read shows as missing (a
//! listing or validation taken at that moment reports it; a dry run reads
//! again, as [`RecoveryManager::recover`](crate::RecoveryManager::recover)
//! does).

mod dump;
mod list;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use dump::{DumpItem, DumpVisitor, DumpedCommit, SizeHistogram, Stats};
pub use list::{CheckpointInfo, DataFileBlocks, DataFileInfo, DataFileKind, Listing, SegmentInfo};
pub use validate::{Problem, Validation};

use crate::checkpoint::IncrementalCheckpointMetadata;
use crate::error::{IncrementalCheckpointError, Result, blocking};
use crate::io::StdFs;
use crate::recovery::{RecoveredState, RecoveryConfig, recover_read_only, require_dirs};
use crate::wal::{
    ReplayFrom, ReplayRange, ReplayReport, WalError, WalRecoveryMode, replay_range, segment_file_name,
};

/// Reads a state's checkpoint and WAL directories without changing them:
/// listing, validation, dry-run recovery, dumps and statistics. See the
/// [module documentation](self) for what it sees beside a live manager.
///
/// ```no_run
/// # async fn f() -> Result<(), laminar_storage::IncrementalCheckpointError> {
/// use laminar_storage::inspect::Inspector;
///
/// let inspector = Inspector::new("state", "state/wal");
/// let validation = inspector.validate().await?;
/// for problem in &validation.problems {
///     eprintln!("{problem}");
/// }
/// let dry_run = inspector.dry_run().await?;
/// println!("would recover epoch {} with {} keys", dry_run.state.epoch, dry_run.state.len());
/// # Ok(()) }
/// ```
///
/// A checkpoint store other than the local directory (object storage, say)
/// plugs in through [`RecoveryConfig::with_checkpoint_store`] and
/// [`from_config`](Self::from_config).
#[derive(Clone)]
pub struct Inspector {
    config: RecoveryConfig,
    progress: Option<ProgressFn>,
}

/// The progress callback.
type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

impl fmt::Debug for Inspector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inspector")
            .field("config", &self.config)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// A long step starting, handed to the [`Inspector::with_progress`]
/// callback (the binary prints it on stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// Reading every byte of a checkpoint's chain.
    Checkpoint {
        /// The checkpoint.
        id: u64,
        /// Files in its chain.
        files: usize,
        /// Their bytes.
        bytes: u64,
    },
    /// Scanning the WAL.
    Wal {
        /// Segment files.
        segments: usize,
        /// Their bytes (preallocated size).
        bytes: u64,
    },
    /// A dry-run recovery.
    Recovery,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Checkpoint { id, files, bytes } => {
                write!(f, "reading checkpoint {id}: {files} file(s), {bytes} bytes")
            }
            Self::Wal { segments, bytes } => {
                write!(f, "scanning the WAL: {segments} segment(s), {bytes} bytes")
            }
            Self::Recovery => f.write_str("recovering (dry run)"),
        }
    }
}

/// What a dry-run recovery would do: [`Inspector::dry_run`].
#[derive(Debug)]
#[non_exhaustive]
pub struct DryRun {
    /// The recovered state and its report: the checkpoint used
    /// ([`checkpoint_id`](crate::RecoveryReport::checkpoint_id)), the ones
    /// skipped and why, the WAL records replayed, the torn tail, the
    /// resulting epoch, source offsets and watermark.
    pub state: RecoveredState,
    /// The metadata of the checkpoint used, if any.
    pub checkpoint: Option<IncrementalCheckpointMetadata>,
    /// Complete epochs replayed from the WAL after the checkpoint.
    pub wal_epochs_replayed: u64,
    /// WAL segment files read.
    pub wal_segments_read: u64,
    /// The epoch a manager opening these directories would write next.
    pub next_epoch: u64,
    /// How long the recovery took.
    pub elapsed: Duration,
}

impl Inspector {
    /// Inspects the checkpoints in `checkpoint_dir` and the WAL in
    /// `wal_dir`, with the default recovery settings.
    pub fn new(checkpoint_dir: impl AsRef<Path>, wal_dir: impl AsRef<Path>) -> Self {
        Self::from_config(RecoveryConfig::new(checkpoint_dir, wal_dir))
    }

    /// Inspects what `config` recovers from, as it recovers (its
    /// [`WalRecoveryMode`], state sizes and checkpoint store).
    pub fn from_config(config: RecoveryConfig) -> Self {
        Self {
            config,
            progress: None,
        }
    }

    /// Calls `f` as each long step starts (reading a checkpoint, scanning
    /// the WAL), e.g. to print progress. `f` runs on the blocking pool or
    /// the caller's task; keep it short.
    pub fn with_progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// The configuration inspected.
    pub fn config(&self) -> &RecoveryConfig {
        &self.config
    }

    fn progress(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(&p);
        }
    }

    /// Recovers as [`RecoveryManager::recover`](crate::RecoveryManager::recover)
    /// would (read-only), times it, and says what it did. The state is
    /// returned too, e.g. to dump it.
    ///
    /// # Errors
    ///
    /// As [`RecoveryManager::recover`](crate::RecoveryManager::recover).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn dry_run(&self) -> Result<DryRun> {
        self.progress(Progress::Recovery);
        let started = Instant::now();
        let recovery = recover_read_only(&self.config).await?;
        let elapsed = started.elapsed();
        let next_epoch = recovery.state.writer.epoch();
        Ok(DryRun {
            checkpoint: recovery.checkpoint.as_ref().map(|m| m.metadata()),
            wal_epochs_replayed: recovery.report.epochs_applied,
            wal_segments_read: recovery.report.segments_read,
            next_epoch,
            elapsed,
            state: recovery.state,
        })
    }

    /// Scans the WAL from `from` in `mode` without applying anything:
    /// every record's checksum and sequence number is checked.
    async fn scan_wal(&self, mode: WalRecoveryMode, from: ReplayFrom) -> Result<ReplayReport> {
        let dir = self.config.wal_dir.clone();
        let task_dir = dir.clone();
        blocking("WAL scan", &dir, move || {
            // No epoch is after `u64::MAX`: nothing is applied, and no gap
            // or missing epoch start is an error.
            let range = ReplayRange {
                from,
                after_epoch: u64::MAX,
                until_epoch: None,
            };
            replay_range(&StdFs, &task_dir, mode, range, |_| Ok(()))
        })
        .await
    }

    /// The WAL's segment files: number, path and length.
    async fn wal_files(&self) -> Result<Vec<(u64, PathBuf, u64)>> {
        let dir = self.config.wal_dir.clone();
        let task_dir = dir.clone();
        blocking("WAL listing", &dir, move || -> Result<_> {
            let mut out = Vec::new();
            for segment in crate::wal::list_segments(&StdFs, &task_dir)? {
                let path = task_dir.join(segment_file_name(segment));
                let len = match std::fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(IncrementalCheckpointError::Io { path, source }),
                };
                out.push((segment, path, len));
            }
            Ok(out)
        })
        .await
    }

    /// Announces a WAL scan of `files`.
    fn announce_wal(&self, files: &[(u64, PathBuf, u64)]) {
        self.progress(Progress::Wal {
            segments: files.len(),
            bytes: files.iter().map(|f| f.2).sum(),
        });
    }

    async fn require_dirs(&self) -> Result<()> {
        require_dirs(&self.config).await
    }
}

impl From<RecoveryConfig> for Inspector {
    fn from(config: RecoveryConfig) -> Self {
        Self::from_config(config)
    }
}

/// The file and byte offset an error names, if any.
pub(crate) fn error_location(e: &IncrementalCheckpointError) -> (Option<PathBuf>, Option<u64>) {
    use IncrementalCheckpointError as E;
    match e {
        E::Io { path, .. } | E::NotFound { path } | E::Locked { path } => (Some(path.clone()), None),
        E::Corruption { file, offset, .. } | E::CrcMismatch { file, offset, .. } => {
            (Some(file.clone()), Some(*offset))
        }
        E::UnsupportedVersion { file, .. } => (Some(file.clone()), None),
        E::Wal(w) => match w {
            WalError::Io { path, .. } => (Some(path.clone()), None),
            WalError::Corruption { file, offset, .. }
            | WalError::TornTail { file, offset, .. }
            | WalError::EpochGap { file, offset, .. } => (Some(file.clone()), Some(*offset)),
            WalError::MissingSegment { dir, segment } => (Some(dir.join(segment_file_name(*segment))), None),
            WalError::EpochStartMissing { file, .. } | WalError::UnsupportedVersion { file, .. } => {
                (Some(file.clone()), None)
            }
            _ => (None, None),
        },
        E::CheckpointFailed { cause } => error_location(cause),
        _ => (None, None),
    }
}
