//! [`WalError`]: the errors of the write-ahead log.

use std::io;
use std::path::PathBuf;

/// An error of the write-ahead log, inside
/// [`IncrementalCheckpointError::Wal`](crate::incremental::IncrementalCheckpointError::Wal)
/// (from `open`, recovery and checkpoints) and
/// [`IncrementalCheckpointError::Failed`](crate::incremental::IncrementalCheckpointError::Failed)
/// (the error that stopped Ring 1, shared by every waiter).
///
/// Match on it to tell what went wrong with the log; for the usual
/// questions, [`is_corruption`](Self::is_corruption) (damaged bytes: file
/// and offset are named) and [`io_error_kind`](Self::io_error_kind) (the
/// disk failed: which way) answer without a match.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A file operation failed. From the writer, this poisons it.
    #[error("WAL I/O error: {op} {path}: {source}")]
    Io {
        /// The operation (`write`, `fdatasync`, `rename`, ...).
        op: &'static str,
        /// The file or directory it was on.
        path: PathBuf,
        /// The operating system's error (ENOSPC for a full disk).
        #[source]
        source: io::Error,
    },
    /// An earlier I/O error poisoned the writer: nothing more is written or
    /// synced through it, because after a failed `fsync` the kernel may have
    /// dropped the dirty pages and a retry could report false success.
    #[error("WAL writer poisoned by an earlier {op} error ({kind}, os error {raw_os_error:?})")]
    Poisoned {
        /// The operation that first failed.
        op: &'static str,
        /// Its error kind.
        kind: io::ErrorKind,
        /// Its OS error code, if any (5 = EIO, 28 = ENOSPC on Linux).
        raw_os_error: Option<i32>,
    },
    /// Bytes in a segment are not a valid record where one must be.
    #[error("WAL corruption in {file} at byte {offset}: {reason}")]
    Corruption {
        /// The damaged segment.
        file: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong there.
        reason: &'static str,
    },
    /// A torn tail, rejected because the recovery mode is
    /// `AbsoluteConsistency`.
    #[error("torn WAL tail in {file} at byte {offset} ({bytes} bytes), rejected by AbsoluteConsistency")]
    TornTail {
        /// The newest segment.
        file: PathBuf,
        /// Offset of the first damaged byte.
        offset: u64,
        /// Bytes from there to the end of the written data.
        bytes: u64,
    },
    /// A gap in segment numbers.
    #[error("WAL segment {segment:016x} is missing from {dir}")]
    MissingSegment {
        /// The WAL directory.
        dir: PathBuf,
        /// The first missing segment number.
        segment: u64,
    },
    /// The oldest remaining segment starts in the middle of an epoch that
    /// recovery needs (it is after `after_epoch`): the segments holding its
    /// start were removed too early.
    #[error(
        "the WAL no longer holds the start of epoch {epoch} (needed after epoch {after_epoch}); \
         its oldest segment {file} begins mid-epoch"
    )]
    EpochStartMissing {
        /// The oldest segment.
        file: PathBuf,
        /// The epoch whose start is missing.
        epoch: u64,
        /// The `after_epoch` replay was asked for.
        after_epoch: u64,
    },
    /// The first epoch the log holds after `expected - 1` is not
    /// `expected`: the epochs in between are gone (segments removed, or a
    /// checkpoint older than the log's start).
    #[error("the WAL skips from epoch {} to {found} at {file} byte {offset}", expected - 1)]
    EpochGap {
        /// The segment holding the commit of `found`.
        file: PathBuf,
        /// Byte offset of that commit record.
        offset: u64,
        /// The epoch recovery needed next.
        expected: u64,
        /// The epoch found instead.
        found: u64,
    },
    /// A segment written by a format version this build does not read.
    #[error("WAL segment {file} has format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The segment.
        file: PathBuf,
        /// Its version.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The replay callback failed; replay stopped there. Internal: the
    /// crate's own callbacks' errors are unwrapped before they reach the
    /// public API.
    #[doc(hidden)]
    #[error("WAL replay callback failed: {0}")]
    Apply(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The directory does not match the resume position the writer was
    /// opened with.
    #[error("cannot resume the WAL in {dir}: {reason}")]
    Resume {
        /// The WAL directory.
        dir: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// Invalid WAL configuration. Internal: `open` checks the
    /// configuration first and reports
    /// [`InvalidConfig`](crate::incremental::IncrementalCheckpointError::InvalidConfig).
    #[doc(hidden)]
    #[error("invalid WAL configuration: {field}: {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A source name longer than a commit record can carry.
    #[error("source name of {len} bytes is longer than the {max} bytes a commit can carry")]
    SourceNameTooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// More sources than a commit record can carry.
    #[error("commit payload too large")]
    CommitTooLarge,
    /// The buffer given to the commit encoder does not have the length
    /// `commit_payload_len` returned for the same sources. Internal: Ring 0
    /// sizes the buffer itself, so this is never returned.
    #[doc(hidden)]
    #[error("commit payload buffer of {len} bytes does not match its sources")]
    CommitBufferLength {
        /// The buffer's length.
        len: usize,
    },
    /// A batch whose framing is inconsistent (an internal bug, not disk
    /// damage); nothing was written. Internal: Ring 1 builds every batch
    /// whole, so this is never returned.
    #[doc(hidden)]
    #[error("malformed WAL batch")]
    InvalidBatch,
}

impl WalError {
    /// Whether retrying the same call later can succeed. No WAL error is:
    /// a failed writer is poisoned, damaged bytes stay damaged.
    pub fn is_transient(&self) -> bool {
        false
    }

    /// Whether the error reports damaged bytes on disk (the log's content
    /// or its sequence of segments and epochs), naming the file.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Self::Corruption { .. }
                | Self::TornTail { .. }
                | Self::MissingSegment { .. }
                | Self::EpochStartMissing { .. }
                | Self::EpochGap { .. }
        )
    }

    /// The operating system's error, for [`Io`](Self::Io).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The kind of the operating system's error, for [`Io`](Self::Io) and
    /// for [`Poisoned`](Self::Poisoned) (the kind of the error that
    /// poisoned the writer). [`io::ErrorKind::StorageFull`] is a full disk.
    pub fn io_error_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Self::Io { source, .. } => Some(source.kind()),
            Self::Poisoned { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}
