//! The crate's errors: [`IncrementalCheckpointError`], which every public
//! operation returns, and the typed detail some of its variants carry
//! ([`WalError`], [`RecoveryFailure`], [`SkippedCheckpoint`]).
//!
//! This module sits at the bottom of the crate's layers: it imports
//! nothing from the crate, and every layer reports through it.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

mod recovery;
mod wal;

pub use recovery::{RecoveryFailure, SkippedCheckpoint};
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
    /// The state could not be rebuilt consistently from checkpoints and
    /// WAL (at open or recovery), or a checkpoint found the WAL disagreeing
    /// with the state it would write (nothing is published then).
    #[error("recovery failed: {reason}")]
    Recovery {
        /// Why.
        reason: RecoveryFailure,
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
    /// A durability wait for an epoch that was never committed: it would
    /// wait forever. `committed` is the newest committed epoch at the call.
    #[error("epoch {epoch} was never committed (the newest committed epoch is {committed})")]
    EpochNotCommitted {
        /// The epoch waited for.
        epoch: u64,
        /// The newest epoch committed when the wait was asked for.
        committed: u64,
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
    /// This manager lost ownership of its shared checkpoint store: another
    /// process (a replacement node) claimed it. The manager publishes and
    /// deletes nothing more there; every later checkpoint fails with this
    /// error. Its Ring 0 and WAL go on, but its state is no longer the
    /// store's: shut it down. See
    /// [`CheckpointStore`](crate::incremental::CheckpointStore), "Ownership".
    #[error(
        "fenced out of the checkpoint store: generation {successor} claimed it from generation {generation}"
    )]
    Fenced {
        /// The generation this manager held.
        generation: u64,
        /// The generation that claimed the store after it.
        successor: u64,
    },
    /// A manifest of this checkpoint id already exists in the store: two
    /// writers raced to publish it and the other won. Nothing was
    /// published by this one.
    #[error("checkpoint {id} was already published by another writer")]
    CheckpointConflict {
        /// The checkpoint id.
        id: u64,
    },
    /// The checkpoint asked for (to restore from, or to pin) is not among
    /// the store's retained checkpoints.
    #[error("checkpoint {id} is not retained in the checkpoint store")]
    CheckpointNotRetained {
        /// The checkpoint id.
        id: u64,
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
    /// Whether retrying the same call later can succeed: backpressure
    /// ([`BufferOverflow`](Self::BufferOverflow), a transient
    /// [`ArenaFull`](Self::ArenaFull)). Everything else fails the same way
    /// again until something changes.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::BufferOverflow { .. } => true,
            Self::ArenaFull { transient, .. } => *transient,
            Self::Wal(e) => e.is_transient(),
            Self::CheckpointFailed { cause } => cause.is_transient(),
            _ => false,
        }
    }

    /// Whether the error reports damaged bytes on disk: a
    /// [`Corruption`](Self::Corruption) or [`CrcMismatch`](Self::CrcMismatch)
    /// naming file and offset, or the WAL's own
    /// ([`WalError::is_corruption`]).
    pub fn is_corruption(&self) -> bool {
        match self {
            Self::Corruption { .. } | Self::CrcMismatch { .. } => true,
            Self::Wal(e) => e.is_corruption(),
            Self::CheckpointFailed { cause } => cause.is_corruption(),
            _ => false,
        }
    }

    /// The operating system's error underneath, through every wrapping:
    /// [`Io`](Self::Io), [`Wal`](Self::Wal)`(`[`WalError::Io`]`)`,
    /// [`Failed`](Self::Failed) (the error that stopped Ring 1),
    /// [`CheckpointFailed`](Self::CheckpointFailed) and the cause of a
    /// [`Recovery`](Self::Recovery) failure, and an error of this crate
    /// that a [`CheckpointStore`](crate::incremental::CheckpointStore)
    /// carried inside an `io::Error`. `None` for errors that are not I/O
    /// failures, and for a poisoned WAL writer, which keeps only the
    /// error's kind: use [`io_error_kind`](Self::io_error_kind) for "is the
    /// disk full?".
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Self::Io { source, .. } => match carried(source) {
                Some(inner) => inner.io_error(),
                None => Some(source),
            },
            Self::Wal(e) => e.io_error(),
            Self::Failed { cause } => cause.io_error(),
            Self::CheckpointFailed { cause } => cause.io_error(),
            Self::Recovery {
                reason: RecoveryFailure::CheckpointsUnusable { cause, .. },
            } => cause.io_error(),
            _ => None,
        }
    }

    /// The kind of the operating system's error underneath, through every
    /// wrapping (as [`io_error`](Self::io_error), and also for a WAL writer
    /// poisoned by an earlier failure). A full disk is
    /// [`io::ErrorKind::StorageFull`]:
    ///
    /// ```
    /// # use laminar_storage::IncrementalCheckpointError;
    /// fn disk_full(e: &IncrementalCheckpointError) -> bool {
    ///     e.io_error_kind() == Some(std::io::ErrorKind::StorageFull)
    /// }
    /// # assert!(!disk_full(&IncrementalCheckpointError::Ring1Gone));
    /// ```
    pub fn io_error_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Self::Io { source, .. } => match carried(source) {
                Some(inner) => inner.io_error_kind(),
                None => Some(source.kind()),
            },
            Self::Wal(e) => e.io_error_kind(),
            Self::Failed { cause } => cause.io_error_kind(),
            Self::CheckpointFailed { cause } => cause.io_error_kind(),
            Self::Recovery {
                reason: RecoveryFailure::CheckpointsUnusable { cause, .. },
            } => cause.io_error_kind(),
            _ => None,
        }
    }
}

/// An error of the crate carried inside an `io::Error` (a checkpoint
/// store passes what a file's contents failed with through `io::Error`).
fn carried(source: &io::Error) -> Option<&IncrementalCheckpointError> {
    source.get_ref()?.downcast_ref::<IncrementalCheckpointError>()
}

// Ring 0 returns `Result<(), IncrementalCheckpointError>` from every update:
// keep the error no larger than it is (a few words), so that the return
// stays cheap. A variant that needs more boxes its detail.
const _: () = assert!(size_of::<IncrementalCheckpointError>() <= 56);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn enospc() -> io::Error {
        io::Error::from_raw_os_error(28)
    }

    fn wal_io() -> WalError {
        WalError::Io {
            op: "fdatasync",
            path: PathBuf::from("wal/wal_0000000000000001.log"),
            source: enospc(),
        }
    }

    /// "Is the disk full?" is one call, whatever wraps the I/O error.
    #[test]
    fn the_io_error_kind_is_found_through_every_wrapping() {
        let full = Some(io::ErrorKind::StorageFull);
        let poisoned = || WalError::Poisoned {
            op: "write",
            kind: io::ErrorKind::StorageFull,
            raw_os_error: Some(28),
        };
        let io = || IncrementalCheckpointError::Io {
            path: PathBuf::from("cp/data_0000000000000001.base"),
            source: enospc(),
        };
        let mut cases: Vec<(&str, IncrementalCheckpointError, bool)> = vec![
            ("Io", io(), true),
            ("Wal(Io)", IncrementalCheckpointError::Wal(wal_io()), true),
            (
                "Wal(Poisoned)",
                IncrementalCheckpointError::Wal(poisoned()),
                false,
            ),
            (
                "Failed(Io)",
                IncrementalCheckpointError::Failed {
                    cause: Arc::new(wal_io()),
                },
                true,
            ),
            (
                "Failed(Poisoned)",
                IncrementalCheckpointError::Failed {
                    cause: Arc::new(poisoned()),
                },
                false,
            ),
            (
                "CheckpointFailed(Io)",
                IncrementalCheckpointError::CheckpointFailed {
                    cause: Arc::new(io()),
                },
                true,
            ),
            (
                "CheckpointFailed(Failed(Io))",
                IncrementalCheckpointError::CheckpointFailed {
                    cause: Arc::new(IncrementalCheckpointError::Failed {
                        cause: Arc::new(wal_io()),
                    }),
                },
                true,
            ),
            (
                "Recovery(CheckpointsUnusable(Wal(Io)))",
                IncrementalCheckpointError::Recovery {
                    reason: RecoveryFailure::CheckpointsUnusable {
                        skipped: Vec::new(),
                        cause: Box::new(IncrementalCheckpointError::Wal(wal_io())),
                    },
                },
                true,
            ),
        ];
        cases.push((
            "Io(carrying CheckpointFailed(Io))",
            IncrementalCheckpointError::Io {
                path: PathBuf::from("cp/data_0000000000000002.base"),
                source: io::Error::other(IncrementalCheckpointError::CheckpointFailed {
                    cause: Arc::new(io()),
                }),
            },
            true,
        ));
        for (what, e, has_source) in &cases {
            assert_eq!(e.io_error_kind(), full, "{what}");
            assert_eq!(e.io_error().is_some(), *has_source, "{what}");
            if let Some(source) = e.io_error() {
                assert_eq!(source.raw_os_error(), Some(28), "{what}");
            }
            assert!(!e.is_transient() && !e.is_corruption(), "{what}");
        }
        for not_io in [
            IncrementalCheckpointError::Ring1Gone,
            IncrementalCheckpointError::BufferOverflow { epoch: 3 },
            IncrementalCheckpointError::Wal(WalError::MissingSegment {
                dir: PathBuf::from("wal"),
                segment: 2,
            }),
            IncrementalCheckpointError::Recovery {
                reason: RecoveryFailure::KeysOutOfOrder,
            },
            // A corruption carried through a store's `io::Error` is no I/O
            // failure.
            IncrementalCheckpointError::Io {
                path: PathBuf::from("cp"),
                source: io::Error::other(IncrementalCheckpointError::Corruption {
                    file: PathBuf::from("cp/data_0000000000000001.base"),
                    offset: 40,
                    reason: "block length runs past the data",
                }),
            },
        ] {
            assert_eq!(not_io.io_error_kind(), None, "{not_io}");
            assert!(not_io.io_error().is_none(), "{not_io}");
        }
    }

    #[test]
    fn typed_recovery_reasons_read_as_before() {
        let skipped = vec![SkippedCheckpoint {
            id: 0x2a,
            reason: Arc::new(IncrementalCheckpointError::NotFound {
                path: PathBuf::from("cp/data_000000000000002a.base"),
            }),
        }];
        let e = IncrementalCheckpointError::Recovery {
            reason: RecoveryFailure::CheckpointsUnusable {
                skipped,
                cause: Box::new(IncrementalCheckpointError::Wal(WalError::MissingSegment {
                    dir: PathBuf::from("wal"),
                    segment: 1,
                })),
            },
        };
        assert_eq!(
            e.to_string(),
            "recovery failed: 1 checkpoint(s) failed validation (000000000000002a: not found: \
             cp/data_000000000000002a.base), and the WAL cannot make up for them: WAL segment \
             0000000000000001 is missing from wal"
        );
        let e = IncrementalCheckpointError::Recovery {
            reason: RecoveryFailure::KeyCountMismatch {
                wal_dir: PathBuf::from("wal"),
                epoch: 7,
                found: 3,
                committed: 4,
            },
        };
        assert_eq!(
            e.to_string(),
            "recovery failed: after replaying the WAL in wal to epoch 7, the state holds 3 keys but \
             that epoch committed 4"
        );
    }
}
