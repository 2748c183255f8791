//! The crate's top-level error. Each layer has its own error type
//! (e.g. [`WalError`]) that converts into this one.

use std::path::PathBuf;
use std::sync::Arc;

mod wal;

pub use wal::WalError;

/// Every error the public API returns.
///
/// Match on the variant when you need to react to a specific failure, or use
/// [`is_transient`](Self::is_transient) (retry later: backpressure) and
/// [`is_corruption`](Self::is_corruption) (bytes on disk are damaged).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IncrementalCheckpointError {
    /// An I/O operation failed outside the write-ahead log.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The write-ahead log failed or is damaged.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A file or checkpoint that was asked for does not exist.
    #[error("not found: {path}")]
    NotFound {
        /// What was looked for.
        path: PathBuf,
    },
    /// Bytes read from disk are not a valid instance of their format.
    #[error("corruption in {file} at byte {offset}: {reason}")]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage within the file.
        offset: u64,
        /// What is wrong there.
        reason: &'static str,
    },
    /// A stored checksum does not match the bytes it covers.
    #[error("CRC mismatch in {file} at byte {offset}: stored {expected:#010x}, computed {actual:#010x}")]
    CrcMismatch {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the checksummed region within the file.
        offset: u64,
        /// The checksum stored in the file.
        expected: u32,
        /// The checksum of the bytes as read.
        actual: u32,
    },
    /// A file written by a newer format version than this build reads.
    /// Never treated as damage: nothing is skipped or deleted because of it.
    #[error("{file} has format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// Its version.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// Recovery could not produce a consistent state.
    #[error("recovery failed: {reason}")]
    Recovery {
        /// Why.
        reason: String,
    },
    /// Backpressure: the changelog ring is full because Ring 1 has not
    /// drained it yet. Nothing was applied; retry after Ring 1 catches up.
    #[error("changelog buffer full in epoch {epoch}: Ring 1 has not drained it yet")]
    BufferOverflow {
        /// The open epoch the rejected update belonged to.
        epoch: u64,
    },
    /// Backpressure or exhaustion: the state arena reached its configured
    /// size limit. Nothing was applied. Transient when Ring 1 has not yet
    /// drained the records that hold space; permanent when live data alone
    /// fills the limit.
    #[error("state arena full: {live_bytes} live bytes, {limit_bytes} byte limit")]
    ArenaFull {
        /// Bytes of live records (latest value of every key).
        live_bytes: u64,
        /// The configured arena limit.
        limit_bytes: u64,
        /// Whether waiting for Ring 1 can free space.
        transient: bool,
    },
    /// A batch of updates is longer than the changelog ring, so it could
    /// never be applied at once. Nothing was applied; split the batch.
    #[error("batch of {len} updates is longer than the changelog ring ({max} entries)")]
    BatchTooLarge {
        /// Updates in the batch.
        len: usize,
        /// The most a batch may hold: the changelog's capacity.
        max: usize,
    },
    /// A key or value is larger than the arena can hold in one record.
    #[error("record too large: key {key_len} + value {value_len} bytes, at most {max} per record")]
    RecordTooLarge {
        /// Key length in bytes.
        key_len: usize,
        /// Value length in bytes.
        value_len: usize,
        /// The largest record the configured arena accepts.
        max: usize,
    },
    /// Ring 1 stopped after an I/O error. Nothing after the failure is
    /// acknowledged (a failed `fsync` is never retried: the kernel may have
    /// dropped the dirty pages). Reopen to recover what was durable.
    #[error("the write-ahead log failed, nothing after it is acknowledged: {cause}")]
    Failed {
        /// The first error.
        cause: Arc<WalError>,
    },
    /// The manager has shut down; an epoch not durable by then never will be.
    #[error("the manager has shut down (epochs up to {durable_epoch} are durable)")]
    ShutDown {
        /// The highest durable epoch at shutdown.
        durable_epoch: u64,
    },
    /// The Ring 1 task ended without reporting why (it panicked, or its
    /// runtime shut down). Reopen to recover what was durable.
    #[error("the Ring 1 task ended unexpectedly")]
    Ring1Gone,
    /// A checkpoint failed; the error is shared by every `checkpoint()` call
    /// the checkpoint would have served. The published checkpoints are
    /// intact.
    #[error("checkpoint failed: {cause}")]
    CheckpointFailed {
        /// What went wrong.
        cause: Arc<IncrementalCheckpointError>,
    },
    /// Another manager has these directories open.
    #[error("{path} is locked by another open manager")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The configuration is invalid; nothing was opened.
    #[error("invalid configuration: {field}: {reason}")]
    InvalidConfig {
        /// The offending setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl IncrementalCheckpointError {
    /// Whether retrying the same call later can succeed (backpressure).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::BufferOverflow { .. } => true,
            Self::ArenaFull { transient, .. } => *transient,
            Self::Wal(e) => e.is_transient(),
            Self::CheckpointFailed { cause } => cause.is_transient(),
            _ => false,
        }
    }

    /// Whether the error reports damaged bytes on disk.
    pub fn is_corruption(&self) -> bool {
        match self {
            Self::Corruption { .. } | Self::CrcMismatch { .. } => true,
            Self::Wal(e) => e.is_corruption(),
            Self::CheckpointFailed { cause } => cause.is_corruption(),
            _ => false,
        }
    }
}

/// Shorthand used throughout the crate.
pub(crate) type Result<T, E = IncrementalCheckpointError> = std::result::Result<T, E>;

/// Runs file work `f` (`what`, on `path`) on tokio's blocking pool, off the
/// runtime's worker threads. A task that panicked or was cancelled becomes
/// an [`Io`](IncrementalCheckpointError::Io) error naming it.
pub(crate) async fn blocking<T, E>(
    what: &'static str,
    path: &std::path::Path,
    f: impl FnOnce() -> std::result::Result<T, E> + Send + 'static,
) -> Result<T>
where
    T: Send + 'static,
    E: Into<IncrementalCheckpointError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Into::into),
        Err(join) => Err(IncrementalCheckpointError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(format!("{what} task failed: {join}")),
        }),
    }
}
